"""The tests' commands: short CPU-mode training jobs (the demo's recipe, ``lens_openrlhf.recipes.cpu``, at smoke-test
size, :func:`train_command`) and the argv of a command a test only parses (:func:`job_argv`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from lens_openrlhf import recipes
from lens_openrlhf.data.files import reward_path as _reward_path
from lens_openrlhf.data.files import write_math_dataset  # noqa: F401 - the tests' data
from lens_openrlhf.localrun.job import REPO, command, job_env  # noqa: F401 - used by the tests
from lens_openrlhf.tblogs import read_tensorboard  # noqa: F401 - used by the tests


def job_argv(
    *extra,
    estimator: Optional[str] = "lens",
    model="/tmp/none",
    reward="/tmp/r.py",
    engines: int = 1,
    n_samples: int = 4,
    kl: Optional[float] = None,
) -> List[str]:
    """The argv of a test that parses a command (no job runs it): the flags every such command needs, in the pinned
    release's dotted spelling, then what the test is about. Tests of OpenRLHF <= 0.10's flat flags, and commands typed
    as a user types them (``test_ray_job_submit.py``), spell their flags out on purpose. Real jobs:
    :func:`train_command`.

    ``--actor.model_name_or_path MODEL --reward.remote_url REWARD [--algo.advantage.estimator E]
    --vllm.num_engines N --rollout.n_samples_per_prompt G [--algo.kl.init_coef KL] EXTRA...`` (``estimator=None``:
    OpenRLHF's default estimator; ``kl=None``: OpenRLHF's default KL coefficient)."""
    argv = ["--actor.model_name_or_path", str(model), "--reward.remote_url", str(reward)]
    if estimator is not None:
        argv += ["--algo.advantage.estimator", estimator]
    argv += ["--vllm.num_engines", str(engines), "--rollout.n_samples_per_prompt", str(n_samples)]
    if kl is not None:
        argv += ["--algo.kl.init_coef", str(kl)]
    return argv + [str(x) for x in extra]


def train_command(
    out: Path,
    model: Path,
    data: Path,
    reward: Path,
    *,
    estimator: str = "lens",
    steps: int = 3,
    prompts: int = 4,
    n_samples: int = 4,
    max_new_tokens: int = 24,
    lr: float = 1e-3,
    seed: int = 42,
    eval_data: Optional[Path] = None,
    eval_steps: Optional[int] = None,
    eval_n_samples: Optional[int] = None,
    micro_train_batch_size: int = 8,
    prompt_max_len: int = 96,
    updates_per_step: int = 1,
    extra: Sequence[str] = (),
) -> List[str]:
    """``python -m lens_openrlhf.train_ppo_ray`` with :func:`recipes.cpu` flags: ``steps`` PPO steps of ``prompts`` x
    ``n_samples`` (micro-batches of ``micro_train_batch_size``), then ``extra``."""
    flags = recipes.cpu(
        model,
        data,
        reward,
        out,
        estimator=estimator,
        steps=steps,
        prompts=prompts,
        n_samples=n_samples,
        updates_per_step=updates_per_step,
        max_new_tokens=max_new_tokens,
        prompt_max_len=prompt_max_len,
        lr=lr,
        seed=seed,
        eval_file=eval_data,
        eval_every=eval_steps,
        eval_n=eval_n_samples,
        chat_template=True,
    )
    micro = min(micro_train_batch_size, prompts * n_samples // updates_per_step)
    return command(flags + ["--train.micro_batch_size", str(micro)] + list(extra))


def math_reward() -> Path:
    return _reward_path("math_reward")
