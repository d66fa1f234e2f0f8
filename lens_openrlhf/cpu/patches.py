"""CPU mode's patch table (P1-P6) and its set-up in the driver and in every Ray worker."""

from __future__ import annotations

import os
from typing import Dict

from ..errors import exit_with
from ..patching import Patch, PatchTable, ray_actor_classes
from . import distributed, standins, weight_sync
from .profile import PREFIX, check_and_default_args, worker_env

#: Ray ``worker_process_setup_hook`` target (run before the coupling's patches in every Ray worker).
WORKER_HOOK = "lens_openrlhf.cpu.patches.worker_setup"

_DS = "openrlhf.utils.deepspeed.deepspeed"
_ACTOR = "openrlhf.trainer.ray.ppo_actor"

#: fingerprints of the modules whose global ``torch`` P1 replaces (their whole source: every use goes through it)
_P1_FINGERPRINTS = {
    "openrlhf.utils.deepspeed.deepspeed": "b0c205347925",
    "openrlhf.utils.deepspeed.deepspeed_utils": "27d09fc507dc",
    "openrlhf.trainer.ray.ppo_actor": "63361da5435e",
    "openrlhf.trainer.ray.ppo_critic": "377880799b82",
    "openrlhf.trainer.ray.launcher": "62b83eeae647",
    "openrlhf.trainer.ppo_utils.replay_buffer": "a7a91f24e2e9",
}

#: P2: the replaced function, as each importer holds it
_P2_FINGERPRINTS = {
    "openrlhf.utils.distributed_util": "0504ff7ec42c",
    "openrlhf.utils.deepspeed.deepspeed": "9f44ffa24eca",
    "openrlhf.trainer.ray.ppo_actor": "1430d8807c81",
}


def _rollout_actor_classes():
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    return ray_actor_classes(RolloutRayActor)


CPU = PatchTable(
    "cpu",
    tuple(
        Patch(
            f"P1.{i}",
            f"{m}:torch",
            standins.torch_cpu,
            "torch.cuda -> CPU stand-ins in this module",
            fingerprint=_P1_FINGERPRINTS[m],
            tests=("tests/cpu/test_cpu_mode_drift.py", "tests/cpu/test_cpu_e2e.py"),
        )
        for i, m in enumerate(standins.PROXIED_MODULES, 1)
    )
    + tuple(
        Patch(
            f"P2.{i}",
            f"{m}:torch_dist_barrier_and_cuda_sync",
            standins.torch_dist_barrier_and_cuda_sync,
            "barrier without torch.cuda.synchronize (imported by name here)",
            fingerprint=_P2_FINGERPRINTS[m],
            tests=("tests/cpu/test_cpu_mode_drift.py", "tests/cpu/test_cpu_e2e.py"),
        )
        for i, m in enumerate(standins.BARRIER_IMPORTERS, 1)
    )
    + (
        Patch(
            "P3a",
            f"{_DS}:init_device_mesh",
            distributed.init_device_mesh_cpu,
            "setup_distributed builds a 'cuda' device mesh; the same mesh on 'cpu'",
            fingerprint="57f881085736",
            watch=(f"{_DS}:DeepspeedStrategy.setup_distributed",),
            tests=("tests/cpu/test_cpu_e2e.py", "tests/cpu/test_cpu_mode_drift.py"),
        ),
        Patch(
            "P3b",
            f"{_DS}:DeepspeedStrategy.setup_distributed",
            distributed.setup_distributed_cpu,
            "torch.distributed on gloo first",
            fingerprint="57f881085736",
            tests=("tests/cpu/test_cpu_e2e.py", "tests/cpu/test_cpu_mode_drift.py"),
        ),
        Patch(
            "P4",
            f"{_DS}:DeepspeedStrategy.get_ds_train_config",
            distributed.get_ds_train_config_cpu,
            "torch's AdamW (torch_adam) instead of FusedAdam, which compiles on first use",
            fingerprint="76a3810b845f",
            tests=("tests/cpu/test_cpu_e2e.py", "tests/cpu/test_cpu_mode_drift.py"),
        ),
        Patch(
            "P5a",
            f"{_ACTOR}:ActorPPOTrainer._init_vllm_sync_group",
            weight_sync.init_vllm_sync_group_cpu,
            "no NCCL group with the engines",
            fingerprint="622ea35aa448",
            tests=("tests/cpu/test_cpu_e2e.py",),
        ),
        Patch(
            "P5b",
            f"{_ACTOR}:ActorPPOTrainer.broadcast_to_vllm",
            weight_sync.broadcast_to_vllm_cpu,
            "weights through Ray's object store; gathers as the original does (ZeRO-3, AutoTP)",
            fingerprint="eb8ee87cdb2c",
            tests=("tests/cpu/test_cpu_e2e.py",),
        ),
        Patch(
            "P5c",
            "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.update_weight",
            weight_sync.engine_update_weight,
            "reload the serialised weights in the engine process (set on Ray's class too, before it is pickled)",
            fingerprint="04ff1c2bd452",
            owners=_rollout_actor_classes,
            watch=(
                "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.update_weight",
                # the CPU packing that vllm_worker_reload_weights undoes and redoes
                "vllm.model_executor.layers.utils:dispatch_cpu_unquantized_gemm",
                "vllm.model_executor.layers.linear:UnquantizedLinearMethod.process_weights_after_loading",
            ),
            tests=("tests/cpu/test_cpu_e2e.py",),
        ),
        Patch(
            "P6",
            "openrlhf.utils.utils:convert_to_torch_dtype",
            distributed.convert_to_torch_dtype_cpu,
            "knows 'fp32' (--lens.cpu_dtype float32); Actor.__init__ imports it from its module at call time",
            fingerprint="ed1457fd4a11",
            watch=("openrlhf.utils.utils:convert_to_torch_dtype", "openrlhf.models.actor:Actor.__init__"),
            tests=("tests/cpu/test_cpu_dtype.py",),
        ),
    ),
)


def install() -> None:
    """Apply the CPU table in this process (idempotent)."""
    from ..cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()
    CPU.apply()


def installed() -> Dict[str, bool]:
    """Entry id -> live in this process (tests, debugging)."""
    return CPU.status()


def prepare_driver(args) -> None:
    """Validate/default the flags for CPU mode (in the hierarchized ``args``), set the environment and apply the
    table in the driver. Exits naming the flag when CPU mode cannot serve one.
    """
    errors, notes = check_and_default_args(args)
    if errors:
        exit_with("\n  " + "\n  ".join(errors))
    for note in notes:
        print(f"[{PREFIX}] {note}", flush=True)
    os.environ.update(worker_env())
    install()


def worker_setup() -> None:
    """Ray ``worker_process_setup_hook`` (via the coupling's hook): environment, flash-attn shim, patches."""
    for k, v in worker_env().items():
        os.environ.setdefault(k, v)
    install()
