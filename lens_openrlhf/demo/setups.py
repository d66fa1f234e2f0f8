"""What the demo runs: its setups, each a model, data, a reward and the sizes of the training job.

- :data:`ANSWERS` (the default): a tiny Qwen2 warm-started on reasoning-gym arithmetic of levels 1-3, each answer
  after its worked steps and boxed, every digit a token, and 30% of the boxed answer's digits replaced at random in
  the warm-up targets: its greedy answers are right far more often than its samples, on held-out questions as on
  training ones, so a habit shared by every question (copying the result into the box) is there for RL to remove.
  LENS PPO on 1,536 distinct problems of levels 1-3 (no problem twice); the held-out table reports pass@1, pass@k,
  the boxed share, accuracy among boxed answers and greedy pass@1.
- :data:`FORMAT_LESSON` (``--format-lesson``): the same, but half the warm-up answers read ``The answer is N.``
  (which the reward scores 0): RL's first lesson is to box the answer. Shows how much of a pass@1 rise can be
  the format alone.
- :data:`ALL_NEGATIVE` (``--all-negative``): a random tiny model on the synthetic arithmetic set with the
  Math-Verify reward: every group is all-incorrect, where GRPO's advantages are all zero and LENS's are not.

:func:`prepare` writes a setup's data and model (the warm start is cached in ``<out>/warm_start``) and returns
the :class:`Inputs` of its training job; :func:`job_flags` the flags of that job (:func:`lens_openrlhf.recipes.cpu`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from lens_openrlhf.demo.warmstart import DEFAULT as DEFAULT_WARMUP
from lens_openrlhf.demo.warmstart import DEFAULT_MAX_NEW_TOKENS, WarmStartConfig


@dataclass(frozen=True)
class Setup:
    name: str
    what: str  # one line for the console
    steps: int
    prompts: int  # per PPO step
    n_samples: int  # G
    updates_per_step: int  # PPO-clipped optimizer steps per rollout
    lr: float
    max_new_tokens: int
    eval_every: Optional[int] = None  # training-time vLLM eval of the held-out file (None: none)
    eval_n: int = 8  # samples per held-out problem (vLLM eval and the before/after table)
    gym: bool = True
    train_levels: Tuple[int, ...] = (1, 2, 3)
    train_pool: int = 32  # training problems per task and level; revisited until `steps` are done
    warmup: Optional[WarmStartConfig] = field(default_factory=WarmStartConfig)


ANSWERS = Setup(
    name="answers",
    what="a tiny Qwen2 that knows its sums but slips when sampling; RL on reasoning-gym arithmetic, levels 1-3",
    steps=48,
    prompts=32,
    n_samples=8,
    updates_per_step=4,
    lr=1e-4,
    max_new_tokens=DEFAULT_MAX_NEW_TOKENS,  # worked steps, then the boxed answer
    eval_every=12,
    train_pool=400,  # per task and level (Level 1 has fewer distinct questions): enough that no problem comes twice
    warmup=DEFAULT_WARMUP,
)
FORMAT_LESSON = replace(
    ANSWERS,
    name="format_lesson",
    what="the warm start boxes half its answers ('The answer is N.' scores 0): RL learns the format first",
    max_new_tokens=12,
    train_pool=32,
    warmup=WarmStartConfig(boxed_fraction=0.5),
)
ALL_NEGATIVE = Setup(
    name="all_negative",
    what="a random tiny model, Math-Verify reward: every group is all-incorrect (GRPO's advantages are 0)",
    steps=3,
    prompts=4,
    n_samples=4,
    updates_per_step=1,
    lr=1e-3,
    max_new_tokens=24,
    gym=False,
    warmup=None,
)


@dataclass
class Inputs:
    model: Path
    train: Path
    reward: Path
    test: Optional[Path] = None  # held-out problems (gym setups)
    max_samples: Optional[int] = None


def prepare(setup: Setup, out: Path, seed: int = 0, log: Callable[[str], None] = print, dtype: str = "auto") -> Inputs:
    """Data, model and reward of ``setup`` under ``out`` (``seed``: the data and warm-start seed; ``dtype``: the
    warm start's compute dtype, ``lens_openrlhf.cpu.dtype``)."""
    from lens_openrlhf.data import files as D
    from lens_openrlhf.localrun.tiny import build_tiny_model

    if not setup.gym:
        model = build_tiny_model(out / "model", seed=0)
        train = D.write_math_dataset(out / "data" / "train.jsonl", setup.steps * setup.prompts, seed=seed)
        return Inputs(model, train, D.reward_path("math_reward"))
    from lens_openrlhf.demo import warmstart

    files = D.prepare_gym_data(out / "data", seed=seed, train_per_level=setup.train_pool)
    pool = [r for r in D.read_jsonl(files["train"]) if int(r["level"]) in setup.train_levels]
    train = D.write_rows(out / "data" / "train_rl.jsonl", prompt_stream(pool, setup.steps * setup.prompts, seed))
    warm = warmstart.warm_start(out / "warm_start", D.read_jsonl(files["warmup"]), setup.warmup, log=log, dtype=dtype)
    return Inputs(
        warmstart.model_dir(warm),
        train,
        D.reward_path("gym_reward"),
        test=files["test"],
        max_samples=setup.steps * setup.prompts,
    )


def prompt_stream(pool: List[dict], count: int, seed: int) -> List[dict]:
    """``count`` training prompts from ``pool``: its first ``count`` rows when it has that many, else the pool
    repeated, each repetition in its own shuffled order (seeded), and cut at ``count``. One pass over the result is
    the run: ``steps`` x ``prompts`` prompts give exactly ``steps`` PPO steps, whether or not the pool's size divides
    them (OpenRLHF's episodes would round up to whole passes over the pool)."""
    import random

    if len(pool) >= count:
        return pool[:count]
    rng, out = random.Random(seed), []
    while len(out) < count:
        again = list(pool)
        rng.shuffle(again)
        out += again
    return out[:count]


def job_flags(
    setup: Setup, inputs: Inputs, out: Path, estimator: str = "lens", seed: int = 42, evaluate: bool = True
) -> List[str]:
    """The training job's flags (:func:`lens_openrlhf.recipes.cpu`) for ``setup`` on ``inputs``."""
    from lens_openrlhf import recipes

    with_eval = evaluate and inputs.test is not None and setup.eval_every
    return recipes.cpu(
        inputs.model,
        inputs.train,
        inputs.reward,
        out,
        estimator=estimator,
        steps=setup.steps,
        prompts=setup.prompts,
        n_samples=setup.n_samples,
        updates_per_step=setup.updates_per_step,
        max_new_tokens=setup.max_new_tokens,
        lr=setup.lr,
        seed=seed,
        max_samples=inputs.max_samples,
        eval_file=inputs.test if with_eval else None,
        eval_every=setup.eval_every,
        eval_n=setup.eval_n,
        run_name=f"lens_cpu_demo_{setup.name}",
    )
