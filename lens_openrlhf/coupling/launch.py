"""The entry point: parse and check in the driver, start Ray with our worker hook, run OpenRLHF's main.

``main`` = :func:`parser.parse_args` (OpenRLHF's parser + ours, :mod:`validation`) -> :mod:`inputs` (paths and
files, before Ray) -> CPU mode's driver set-up if asked -> ``ray.init`` with :func:`runtime_env` (the worker hook
applies the patch table in every Ray worker) -> the GPU check (:func:`lens_openrlhf.placement.gpus_needed`)
-> the patch table in the driver -> OpenRLHF's own ``__main__`` block (its validation, then ``train(args)``)
inside :class:`preemption.GracefulStop`.
"""

from __future__ import annotations

import importlib
import os
from typing import Dict, Optional, Sequence

from ..dotted import flatten
from ..errors import UpstreamChanged, exit_with
from ..placement import gpus_needed
from .parser import parse_args, run_openrlhf_main
from .patches import install_patches
from .preemption import ENV_NO_WORKER_PATCHES, GracefulStop
from .inputs import check_inputs, check_paths
from .rollout_logprobs import wants_rollout_logprobs
from .version import OPENRLHF_VERSION, version_problem
from .vllm_dtype import ENV_VLLM_DTYPE

#: Environment variable naming extra setup hooks (``module.function``, comma-separated) to run in every Ray worker
#: before the patch table: CPU mode's, and any the user's environment names (instrumentation, tests).
ENV_EXTRA_HOOKS = "LENS_OPENRLHF_WORKER_HOOKS"
WORKER_HOOK = "lens_openrlhf.coupling.launch.ray_worker_setup"


def ray_worker_setup() -> None:
    """Ray ``worker_process_setup_hook``: the OpenRLHF version check, extra hooks named in the env (CPU
    mode), then the patch table. A worker on another OpenRLHF release than the driver's fails here, by name."""
    if os.environ.get(ENV_NO_WORKER_PATCHES) == "1":
        return
    problem = version_problem()
    if problem:
        raise UpstreamChanged(
            f"Ray worker {os.getpid()}: {problem} (this node's Python environment differs "
            f"from the driver's, which runs OpenRLHF {OPENRLHF_VERSION})"
        )
    for hook in filter(None, os.environ.get(ENV_EXTRA_HOOKS, "").split(",")):
        module, _, fn = hook.rpartition(".")
        getattr(importlib.import_module(module), fn)()
    # V2 creates the engines in the driver; S1-S3 read the run's args where they run; V3's engines get no args
    install_patches(vllm_dtype=bool(os.environ.get(ENV_VLLM_DTYPE)))


def runtime_env(args, extra_env: Optional[Dict[str, str]] = None, extra_hooks: Sequence[str] = ()) -> dict:
    """The Ray runtime_env of a lens_openrlhf job: OpenRLHF's own env vars plus our worker hook."""
    env = {
        # the three OpenRLHF's train() sets when it starts Ray itself
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
    }
    if getattr(args.lens, "vllm_dtype", None):
        env[ENV_VLLM_DTYPE] = args.lens.vllm_dtype
    hooks = list(extra_hooks) + [h for h in os.environ.get(ENV_EXTRA_HOOKS, "").split(",") if h]
    if hooks:
        env[ENV_EXTRA_HOOKS] = ",".join(dict.fromkeys(hooks))
    env.update(extra_env or {})
    return {"worker_process_setup_hook": WORKER_HOOK, "env_vars": env}


def require_gpus(args, available: float) -> None:
    """Exit with a clear message when the Ray cluster lacks the GPUs the job needs (else Ray waits forever)."""
    need = gpus_needed(args)
    total = sum(need.values())
    if available + 1e-9 < total:
        parts = ", ".join(f"{k} {v}" for k, v in need.items() if v)
        exit_with(
            f"this job needs {total} GPUs in the Ray cluster ({parts}); the cluster has {available:g}. "
            "Add GPU nodes, lower --actor.num_gpus_per_node / --vllm.num_engines / --ref.num_gpus_per_node, "
            "colocate (--train.colocate_all), or try the pipeline on CPUs with --lens.cpu_mode (README).",
            code=1,
        )


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse (OpenRLHF's parser + ours), validate, start Ray with our worker hook, run OpenRLHF's main."""
    from ..cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()  # no-op where the real flash-attn is installed
    args = parse_args(argv)
    problems = check_paths(args) or check_inputs(args)
    if problems:
        exit_with("\n  ".join(problems) if len(problems) == 1 else "\n  " + "\n  ".join(problems))

    import ray

    extra_env, extra_hooks = {}, []
    if args.lens.cpu_mode:
        from .. import cpu

        cpu.prepare_driver(args)
        extra_env, extra_hooks = cpu.worker_env(), [cpu.WORKER_HOOK]
    if not ray.is_initialized():
        init_kwargs = {"runtime_env": runtime_env(args, extra_env, extra_hooks)}
        if args.lens.cpu_mode:
            init_kwargs.update(cpu.ray_init_kwargs(args))
        ray.init(**init_kwargs)
    if not args.lens.cpu_mode:
        require_gpus(args, ray.cluster_resources().get("GPU", 0))
    else:
        cpu.check_ray_resources(args)  # a `ray job submit` cluster needs fake GPUs
    install_patches(rollout_logprobs=wants_rollout_logprobs(args), vllm_dtype=bool(args.lens.vllm_dtype))

    # OpenRLHF's own __main__ block: its parser is rebuilt, its parse_args returns our namespace, then
    # its validation and train(args) run unchanged. GracefulStop: on SIGTERM/SIGINT the trainer finishes the
    # step and checkpoints, the job's actors are stopped, exit 128 + signum (coupling/preemption.py).
    with GracefulStop(args):
        run_openrlhf_main(lambda self, *a, **k: flatten(args))
