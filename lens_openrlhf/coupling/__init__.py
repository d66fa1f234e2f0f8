"""The coupling to the pinned OpenRLHF: everything that knows OpenRLHF's internals, one concern per module.

What it reuses, unmodified: OpenRLHF's own argparse parser, its validation and ``train(args)`` (all in
``openrlhf/cli/train_ppo_ray.py``, the parser and validation inside ``if __name__ == "__main__":``), its Ray
placement, DeepSpeed engine, vLLM engines, PPO losses, ``compute_reward`` and ``get_cumulative_returns``.

=================== ===================================================================================
module              concern
=================== ===================================================================================
``version``         the pinned OpenRLHF release and its check
``parser``          OpenRLHF's parser + the registry's estimators + ``--algo.lens.*``; flat flags of <= 0.10
``validation``      readable errors before Ray starts (flags)
``inputs``          the paths and files a job names, checked before Ray starts (datasets read in full)
``advantages``      A1: the registry's estimators inside ``compute_advantages_and_returns``
``sample_selection`` B1 (and A1's marking): PSR / NSR train on the kept class only, as the code of arXiv 2506.01347
``run_plan``        the run's estimator (spec, resolved options), looked up once per process by A1 and B1
``eval_metrics``    E1: unbiased pass@k per level in the eval logs
``rollout_logprobs`` V2 (and S2's request): vLLM returns the sampled tokens' log-probs (LENS's pbar)
``vllm_dtype``      V3: ``--lens.vllm_dtype``, the vLLM engines' dtype (OpenRLHF hard-codes bfloat16)
``reward_errors``   R1, R2: a reward function that raises stops the run with its own error
``preemption``      T1, T2 and the driver side: SIGTERM/SIGINT checkpoint the step and stop
``patches``         the table of A1, B1, ..., V3 (:class:`lens_openrlhf.patching.PatchTable`)
``launch``          ``main``: checks, Ray with the worker hook, OpenRLHF's ``__main__``
=================== ===================================================================================

GPU placement is :mod:`lens_openrlhf.placement` (shared with CPU mode and the demo); CPU mode is
:mod:`lens_openrlhf.cpu`. Heavy modules (openrlhf, ray, vllm) are imported inside functions only. The names
below are the coupling's public interface.
"""

from ..placement import gpus_needed
from .parser import FLAT_FLAGS, build_parser, parse_args, translate_flat_flags
from .eval_metrics import LEVEL_RE, unbiased_eval_logs
from .launch import ENV_EXTRA_HOOKS, main, ray_worker_setup, require_gpus, runtime_env
from .patches import COUPLING, install_patches, patches_installed
from .inputs import check_inputs, check_paths
from .rollout_logprobs import wants_rollout_logprobs
from .validation import LOGPROB_SOURCES, validate, validate_parallelism
from .version import OPENRLHF_VERSION, check_openrlhf_version

__all__ = [
    "COUPLING",
    "ENV_EXTRA_HOOKS",
    "FLAT_FLAGS",
    "LEVEL_RE",
    "LOGPROB_SOURCES",
    "OPENRLHF_VERSION",
    "build_parser",
    "check_inputs",
    "check_paths",
    "check_openrlhf_version",
    "gpus_needed",
    "install_patches",
    "main",
    "wants_rollout_logprobs",
    "parse_args",
    "patches_installed",
    "ray_worker_setup",
    "require_gpus",
    "runtime_env",
    "translate_flat_flags",
    "unbiased_eval_logs",
    "validate",
    "validate_parallelism",
]
