"""Every change lens_openrlhf makes to the pinned OpenRLHF (and vLLM's SamplingParams lookup), as one table.

Applied in the driver and, by the Ray worker hook (``launch.ray_worker_setup``), in every Ray worker: a
patch must live in the process where the patched code runs (the PPOTrainer, the policy ranks and the vLLM
engines are Ray actors). ``tests/test_patch_table.py`` recomputes each entry's fingerprint from the
installed packages and names the entries to re-review when one differs.

==== =========================================================== ===================================
id   replaces                                                    by
==== =========================================================== ===================================
A1   RemoteExperienceMaker.compute_advantages_and_returns        registry estimators (advantages.py)
B1   ActorPPOTrainer.ppo_train                                   PSR/NSR: kept class only (sample_selection.py)
E1   compute_eval_metrics (ppo_trainer and ppo_trainer_async)    + unbiased pass@k (eval_metrics.py)
R1   SingleTurnAgentExecutor.__init__                            remembers a reward error (reward_errors.py)
R2   SingleTurnAgentExecutor.execute                             re-raises it (reward_errors.py)
S1   SamplesGenerator._generate_vllm                             seed stream; groups in token order (rollout_seeds.py)
S2   SamplesGenerator._dispatch_prompts_to_vllm                  a seed per prompt request; logprobs=1 for pbar
S3   RolloutRayActor.generate_responses (+ Ray's)                a seed per sample (rollout_seeds.py)
T1   BasePPOTrainer.init_checkpoint_states (+ Ray subclasses)    preemption: register actors; seeds resume
T2   BasePPOTrainer.save_logs_and_checkpoints (+ Ray subclasses) preemption: checkpoint and stop; seed record
V2   openrlhf.trainer.ray.create_vllm_engines [rollout_logprobs] processed_logprobs mode
V3   RolloutRayActor.__init__ (+ Ray's class)  [tag vllm_dtype]  --lens.vllm_dtype, not bfloat16; on CPU no chunked
                                                                 prefill (seeded requests)
==== =========================================================== ===================================
"""

from __future__ import annotations

from ..patching import Patch, PatchTable
from . import (
    advantages,
    eval_metrics,
    preemption,
    reward_errors,
    rollout_logprobs,
    rollout_seeds,
    sample_selection,
    vllm_dtype,
)

_EM = "openrlhf.trainer.ppo_utils.experience_maker"
_PT = "openrlhf.trainer.ppo_trainer"
_PTA = "openrlhf.trainer.ppo_trainer_async"
_AGENT = "openrlhf.utils.agent"
_SG = "openrlhf.trainer.ppo_utils.samples_generator"
_ACTOR = "openrlhf.trainer.ray.ppo_actor"

#: tag of V2 (in the driver, where the engines are created): when the job's estimator takes pbar from vLLM's log-probs
ROLLOUT_LOGPROBS = "rollout_logprobs"
#: tag of V3: applied when --lens.vllm_dtype is given (the engines' processes get no args: the value comes in the env)
VLLM_DTYPE = "vllm_dtype"


def _eval_owners():
    import importlib

    return [importlib.import_module(_PT), importlib.import_module(_PTA)]


COUPLING = PatchTable(
    "coupling",
    (
        Patch(
            "A1",
            f"{_EM}:RemoteExperienceMaker.compute_advantages_and_returns",
            advantages.compute_advantages_and_returns,
            "registry estimators compute their advantages here; the others call this original",
            fingerprint="b1b8ca0e1b1c",
            # the per-token part we reuse as group_norm does, and the length penalties applied first; for PSR/NSR
            # the re-packing into one experience per data-parallel group: train_step hands the list (after the
            # rollout statistics) to async_run_method_batch, which gives the i-th of E to the i-th group
            watch=(
                f"{_EM}:RemoteExperienceMaker.compute_advantages_and_returns",
                "openrlhf.models.utils:compute_reward",
                "openrlhf.trainer.ppo_utils.length_penalty:apply_length_penalties",
                f"{_PT}:BasePPOTrainer.train_step",
                "openrlhf.trainer.ray.launcher:RayActorGroup.async_run_method_batch",
                "openrlhf.trainer.ppo_utils.experience:Experience.concat_experiences",
            ),
            tests=("tests/coupling/test_coupling.py", "tests/cpu/test_cpu_e2e.py"),
        ),
        Patch(
            "B1",
            f"{_ACTOR}:ActorPPOTrainer.ppo_train",
            sample_selection.ppo_train,
            "PSR/NSR train on the kept class only, as the code of arXiv 2506.01347: the other samples leave the replay "
            "buffer; micro-batches without drop_last; a last, shorter window ends in its own optimizer step",
            fingerprint="ecaec55a4ab3",
            # the loop we run over our micro-batches (DataLoader over self.replay_buffer, training_step(step)),
            # its window normaliser, the buffer items we filter, and fit() which clears the real buffer after
            watch=(
                f"{_ACTOR}:ActorPPOTrainer.ppo_train",
                f"{_ACTOR}:ActorPPOTrainer.training_step",
                f"{_ACTOR}:PolicyModelActor.fit",
                "openrlhf.utils.loss_utils:iter_grad_accum_global_norm",
                "openrlhf.trainer.ppo_utils.replay_buffer:NaiveReplayBuffer",
                "openrlhf.trainer.ppo_utils.experience:make_experience_batch",
            ),
            tests=("tests/coupling/test_sample_selection.py", "tests/coupling/test_coupling.py"),
        ),
        Patch(
            "E1",
            f"{_PT}:compute_eval_metrics",
            eval_metrics.compute_eval_metrics,
            "adds unbiased pass@k per level; both trainers call it by its module-level name",
            fingerprint="231be9a6b403",
            owners=_eval_owners,
            tests=("tests/coupling/test_coupling.py",),
        ),
        Patch(
            "R1",
            f"{_AGENT}:SingleTurnAgentExecutor.__init__",
            reward_errors._executor_init,
            "wraps reward_func to remember an exception that execute() would log at INFO and swallow",
            fingerprint="699e56df46c3",
            watch=(f"{_AGENT}:SingleTurnAgentExecutor.__init__", f"{_AGENT}:SingleTurnAgentExecutor.execute"),
            tests=("tests/coupling/test_coupling.py",),
        ),
        Patch(
            "R2",
            f"{_AGENT}:SingleTurnAgentExecutor.execute",
            reward_errors._executor_execute,
            "re-raises the reward function's own error (RewardFunctionError) after OpenRLHF's try/except",
            fingerprint="09ce939c6c64",
            tests=("tests/coupling/test_coupling.py",),
        ),
        Patch(
            "S1",
            f"{_SG}:SamplesGenerator._generate_vllm",
            rollout_seeds.generate_vllm,
            "evaluation prompts take seeds from their own stream, counted from 0 at each evaluation; the groups "
            "come back in token order, not ray.wait's completion order",
            fingerprint="41831d0a97a8",
            # the evaluation iterator S1 recognises, and the n-consecutive-samples-per-prompt layout it sorts by
            watch=(
                f"{_SG}:SamplesGenerator._generate_vllm",
                f"{_SG}:SamplesGenerator.generate_eval_samples",
                f"{_EM}:RemoteExperienceMaker.compute_advantages_and_returns",
            ),
            tests=("tests/coupling/test_rollout_seeds.py",),
            call_sites=(
                (f"{_SG}:SamplesGenerator.generate_eval_samples", "dataloader_iter=self._eval_dataloader_iter"),
            ),
        ),
        Patch(
            "S2",
            f"{_SG}:SamplesGenerator._dispatch_prompts_to_vllm",
            rollout_seeds.dispatch_prompts_to_vllm,
            "each prompt's generate_responses.remote(prompt=..., sampling_params=...) carries the prompt's seed and, "
            "for pbar from vLLM, logprobs=1; the dispatch calls it once per prompt, in order, on self.vllm_engines' "
            "handles, with the SamplingParams it builds (logprobs only for OpenRLHF's IS correction)",
            fingerprint="b9ae6b837eb0",
            # the call S2 seeds, the loop that counts prompts (dynamic filtering's replacements go through S2 too),
            # and the trainers' count of prompts drawn that resume_at continues from
            watch=(
                f"{_SG}:SamplesGenerator._dispatch_prompts_to_vllm",
                f"{_SG}:SamplesGenerator._generate_vllm",
                f"{_SG}:SamplesGenerator.generate_samples",
                f"{_PT}:PPOTrainer.fit",
            ),
            tests=("tests/coupling/test_rollout_seeds.py", "tests/coupling/test_rollout_logprobs.py"),
            call_sites=(
                (f"{_SG}:SamplesGenerator._dispatch_prompts_to_vllm", "llm_engine.generate_responses.remote"),
                (f"{_SG}:SamplesGenerator._dispatch_prompts_to_vllm", "self.vllm_engines[engine_indices[idx]]"),
                (f"{_SG}:SamplesGenerator._generate_vllm", "self._dispatch_prompts_to_vllm"),
            ),
        ),
        Patch(
            "S3",
            "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.generate_responses",
            rollout_seeds.generate_responses,
            "a seeded request of num_samples becomes num_samples one-sample requests, each with its own seed; "
            "the original gathers num_samples executor tasks that share one SamplingParams",
            fingerprint="2b1857eadce9",
            owners=vllm_dtype.engine_classes,
            tests=("tests/coupling/test_rollout_seeds.py",),
        ),
        Patch(
            "T1",
            f"{_PT}:BasePPOTrainer.init_checkpoint_states",
            preemption.init_checkpoint_states,
            "preemption: registers the job's actors with RunControl; stops before training if asked to; the "
            "rollout seeds continue at the checkpoint's total_consumed_prompts (rollout_seeds.on_fit_start)",
            fingerprint="dc599fd787e2",
            owners=preemption.trainer_classes,
            watch=(
                f"{_PT}:BasePPOTrainer.init_checkpoint_states",
                f"{_PT}:PPOTrainer.fit",
                f"{_PTA}:PPOTrainerAsync.fit",
            ),
            tests=("tests/coupling/test_preemption.py",),
            call_sites=(
                (f"{_PT}:PPOTrainer.fit", "self.init_checkpoint_states"),
                (f"{_PTA}:PPOTrainerAsync.fit", "self.trainer_actor.init_checkpoint_states.remote"),
                (f"{_PT}:PPOTrainer.fit", "checkpoint_states['total_consumed_prompts']"),
            ),
        ),
        Patch(
            "T2",
            f"{_PT}:BasePPOTrainer.save_logs_and_checkpoints",
            preemption.save_logs_and_checkpoints,
            "preemption: on a stop request, OpenRLHF's own checkpoint of this step, then StopRequested; the rollout "
            "seeding (rollout_seeds.with_seed_record) added to the client states every checkpoint saves",
            fingerprint="af6899a881c3",
            owners=preemption.trainer_classes,
            watch=(
                f"{_PT}:BasePPOTrainer.save_logs_and_checkpoints",
                f"{_PTA}:TrainingActor.fit",
                "openrlhf.trainer.ray.launcher:RayActorGroup._initiate_actors",
            ),
            tests=("tests/coupling/test_preemption.py",),
        ),
        Patch(
            "V2",
            "openrlhf.trainer.ray:create_vllm_engines",
            rollout_logprobs._create_vllm_engines_processed_logprobs,
            "engines in processed_logprobs mode; train() passes logprobs_mode as the 12th positional argument "
            "and imports the name from openrlhf.trainer.ray when the CLI module runs",
            fingerprint="daf6939d0f58",
            watch=("openrlhf.trainer.ray.vllm_engine:create_vllm_engines", "openrlhf.cli.train_ppo_ray:train"),
            tag=ROLLOUT_LOGPROBS,
            tests=("tests/coupling/test_rollout_logprobs.py",),
        ),
        Patch(
            "V3",
            "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.__init__",
            vllm_dtype.rollout_actor_init,
            'the engines\' dtype from --lens.vllm_dtype; create_vllm_engines hard-codes "dtype": "bfloat16" '
            "in the kwargs it passes to RolloutRayActor, which hands them to vllm.AsyncEngineArgs",
            fingerprint="c526236aad97",
            watch=(
                "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.__init__",
                "openrlhf.trainer.ray.vllm_engine:create_vllm_engines",
            ),
            owners=vllm_dtype.engine_classes,
            tag=VLLM_DTYPE,
            tests=("tests/coupling/test_vllm_dtype.py",),
        ),
    ),
)


def install_patches(rollout_logprobs: bool = False, vllm_dtype: bool = False) -> None:
    """Apply the coupling table in THIS process (idempotent); V2 only with ``rollout_logprobs``, V3 only with
    ``vllm_dtype``."""
    tags = (ROLLOUT_LOGPROBS,) * rollout_logprobs + (VLLM_DTYPE,) * vllm_dtype
    COUPLING.apply(tags=tags)


def patches_installed():
    """Entry id -> live in this process (tests, debugging)."""
    return COUPLING.status()
