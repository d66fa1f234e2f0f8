"""Local data files: the reasoning-gym sets of the demo, JSONL rows, the reward files, the synthetic arithmetic set
(the CPU tests' and ``--all-negative``'s)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, Sequence

#: the tasks of the embedded default (``lens_openrlhf.data.gym.LEVELS`` defines their five difficulty levels)
GYM_TASKS = ("basic_arithmetic", "chain_sum")
LEVEL_NAMES = {1: "Level 1", 2: "Level 2", 3: "Level 3", 4: "Level 4", 5: "Level 5"}


def prepare_gym_data(
    data_dir: Path,
    seed: int = 0,
    train_per_level: int = 64,
    test_per_level: int = 10,
    warmup_per_level: int = 1000,
    tasks: Sequence[str] = GYM_TASKS,
) -> Dict[str, Path]:
    """train.jsonl / test.jsonl / warmup.jsonl of reasoning-gym tasks at levels 1-5 (as ``python -m
    lens_openrlhf.data gym`` writes them); no test question is in the other files."""
    from lens_openrlhf.data import gym

    rep = gym.write(
        data_dir,
        tasks=tasks,
        levels=(1, 2, 3, 4, 5),
        train_per_level=train_per_level,
        test_per_level=test_per_level,
        seed=seed,
        warmup_per_level=warmup_per_level,
        warmup_levels=(1, 2, 3),
    )
    if rep["train_test_overlap"]:
        raise RuntimeError(f"reasoning-gym data: {rep['train_test_overlap']} questions in both train and test")
    return {k: Path(rep[k]["path"]) for k in ("train", "test", "warmup")}


def read_jsonl(path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_rows(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_path(name: str) -> Path:
    """The file of reward ``name`` (``gym_reward`` or ``math_reward``) for ``--reward.remote_url``, after checking
    that it can score here (before Ray starts)."""
    if name == "gym_reward":
        from lens_openrlhf.rewards import gym_reward as module

        module.known_tasks()  # reasoning-gym importable, or a clear error now
    elif name == "math_reward":
        from lens_openrlhf.rewards import math_reward as module
    else:
        raise ValueError(f"unknown reward {name!r}")
    return Path(module.__file__).resolve()


# ----------------------------------------------------------------------------------------------------
# the synthetic arithmetic set (``--all-negative`` and the CPU tests): Math-Verify labels, levels 1-5
# ----------------------------------------------------------------------------------------------------
def make_problem(rng: random.Random, level: int):
    """(expression, integer answer) of increasing difficulty."""
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        expr = f"{a} + {b}"
    elif level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        expr = f"{a} {rng.choice('+-')} {b}"
    elif level == 3:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        expr = f"{a} * {b}"
    elif level == 4:
        a, b, c = rng.randint(2, 19), rng.randint(2, 19), rng.randint(10, 99)
        expr = f"{a} * {b} {rng.choice('+-')} {c}"
    elif level == 5:
        a, b, c, d = (rng.randint(10, 99) for _ in range(4))
        expr = f"({a} + {b}) * ({c} - {d})"
    else:
        raise ValueError(f"level must be 1..5, got {level}")
    return expr, eval(expr)  # noqa: S307 - our own integer expressions


def write_math_dataset(path, n: int, seed: int = 0) -> Path:
    """``n`` problems cycling through levels 1..5, one json object per line: ``prompt``, ``label``, ``level``
    ("Level 1".."Level 5", as in MATH) and ``datasource`` ("math_level<L>": OpenRLHF passes it through to
    the eval, where lens_openrlhf reports pass@k per level)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        level = i % 5 + 1
        expr, value = make_problem(rng, level)
        rows.append(
            {
                "prompt": f"What is {expr}? Put the final answer in \\boxed{{}}.",
                "label": str(value),
                "level": LEVEL_NAMES[level],
                "datasource": f"math_level{level}",
            }
        )
    return write_rows(Path(path), rows)
