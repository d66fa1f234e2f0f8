"""P3, P4, P6: DeepSpeed's distributed set-up on gloo, torch's AdamW, float32 models (see :mod:`lens_openrlhf.cpu`)."""

from __future__ import annotations

import torch

from .. import patching


def init_device_mesh_cpu(device_type, *args, **kwargs):
    """P3: OpenRLHF builds a "cuda" device mesh; on CPU the same mesh on "cpu" (gloo)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", *args, **kwargs)


def setup_distributed_cpu(self, *args, **kwargs):
    """P3: ``DeepspeedStrategy.setup_distributed`` with torch.distributed initialised on gloo first."""
    import deepspeed

    if not torch.distributed.is_initialized():
        timeout = kwargs.get("timeout", args[0] if args else None)
        deepspeed.init_distributed(dist_backend="gloo", **({"timeout": timeout} if timeout is not None else {}))
    return patching.original("cpu", "P3b")(self, *args, **kwargs)


def get_ds_train_config_cpu(self, *args, **kwargs):
    """P4: DeepSpeed AdamW -> torch's AdamW (``torch_adam``), no FusedAdam compile."""
    config = patching.original("cpu", "P4")(self, *args, **kwargs)
    optimizer = config.get("optimizer")
    if optimizer and optimizer.get("type", "").lower() in ("adam", "adamw"):
        optimizer.setdefault("params", {})["torch_adam"] = True
    return config


def convert_to_torch_dtype_cpu(param_dtype: str):
    """P6: ``convert_to_torch_dtype`` also knows ``fp32`` (CPU mode's float32 compute dtype, :mod:`.dtype`); DeepSpeed's
    config then has neither bf16 nor fp16 enabled, i.e. trains in float32."""
    if param_dtype == "fp32":
        return torch.float32
    return patching.original("cpu", "P6")(param_dtype)
