"""Short CPU-mode training jobs for the tests: the demo's recipe (``lens_openrlhf.recipes.cpu``) at smoke-test size."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from lens_openrlhf import recipes
from lens_openrlhf.data.files import reward_path as _reward_path
from lens_openrlhf.data.files import write_math_dataset  # noqa: F401 - the tests' data
from lens_openrlhf.localrun.job import REPO, command, job_env  # noqa: F401 - used by the tests
from lens_openrlhf.tblogs import read_tensorboard  # noqa: F401 - used by the tests


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
