"""Pure-torch ``flash_attn.utils.distributed.all_gather`` (CPU shim, see lens_openrlhf/cpu_shims)."""

import torch
import torch.distributed as dist


class _AllGather(torch.autograd.Function):
    """Gather along dim 0 in forward, reduce-scatter the gradient in backward (as flash-attn does)."""

    @staticmethod
    def forward(ctx, input_, process_group):
        ctx.process_group = process_group
        world = dist.get_world_size(process_group)
        out = torch.empty(world * input_.shape[0], *input_.shape[1:], dtype=input_.dtype, device=input_.device)
        dist.all_gather_into_tensor(out, input_.contiguous(), group=process_group)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        world = dist.get_world_size(ctx.process_group)
        grad_input = torch.empty(
            grad_output.shape[0] // world, *grad_output.shape[1:], dtype=grad_output.dtype, device=grad_output.device
        )
        dist.reduce_scatter_tensor(grad_input, grad_output.contiguous(), group=ctx.process_group)
        return grad_input, None


def all_gather(input_: torch.Tensor, process_group) -> torch.Tensor:
    return _AllGather.apply(input_, process_group)
