"""reasoning-gym tasks as OpenRLHF prompt files: difficulty settings mapped to levels 1-5, held-out test sets.

    python -m lens_openrlhf.data gym --tasks basic_arithmetic chain_sum --train-per-level 200 \\
        --test-per-level 20 --seed 0 --out-dir data/gym

`reasoning-gym <https://github.com/open-thought/reasoning-gym>`_ generates procedural, verifiable tasks
offline (``reasoning_gym.create_dataset(name, size=, seed=, **config)``). Each task here has five
configurations of increasing difficulty (``LEVELS``); a row's ``datasource`` is ``<task>_level<L>``, which
OpenRLHF passes to the eval and lens_openrlhf reads the level from (per-level pass@k, Levels 4-5).

Rows (jsonl), the keys OpenRLHF reads (``--input_key prompt --label_key label``) plus:

- ``prompt``: the task's question followed by ``ANSWER_INSTRUCTION`` (a plain string; train with
  ``--apply_chat_template`` on a chat model);
- ``label``: a JSON string ``{"task", "answer", "metadata"}``: what ``lens_openrlhf/rewards/gym_reward.py``
  needs to call the task's own ``score_answer(answer, entry)``;
- ``datasource`` (``<task>_level<L>``), ``level`` (1-5), ``task``, ``problem`` (the question), ``answer``,
  ``id``, ``source`` (``reasoning_gym``).

The held-out test set is drawn first (its own seed), its questions removed from the training draw (and
duplicates within each file), so train and test share no question; both are deterministic in ``--seed``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ANSWER_INSTRUCTION = "Put the final answer in \\boxed{}."

# task -> level -> the task's config (reasoning_gym's dataclass fields). Level 1 is what a tiny model
# learns in a short warm-up; Level 5 is far beyond it.
LEVELS: Dict[str, Dict[int, dict]] = {
    "chain_sum": {
        1: dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
        2: dict(min_terms=3, max_terms=3, min_digits=1, max_digits=1),
        3: dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2),
        4: dict(min_terms=3, max_terms=3, min_digits=2, max_digits=2),
        5: dict(min_terms=4, max_terms=5, min_digits=2, max_digits=3),
    },
    "basic_arithmetic": {
        1: dict(
            min_terms=2,
            max_terms=2,
            min_digits=1,
            max_digits=1,
            operators=("+", "-"),
            allow_parentheses=False,
            allow_negation=False,
        ),
        2: dict(
            min_terms=2,
            max_terms=2,
            min_digits=1,
            max_digits=1,
            operators=("+", "-", "*"),
            allow_parentheses=False,
            allow_negation=False,
        ),
        3: dict(
            min_terms=3,
            max_terms=3,
            min_digits=1,
            max_digits=1,
            operators=("+", "-", "*"),
            allow_parentheses=False,
            allow_negation=False,
        ),
        4: dict(
            min_terms=2,
            max_terms=3,
            min_digits=2,
            max_digits=2,
            operators=("+", "-", "*"),
            allow_parentheses=False,
            allow_negation=False,
        ),
        5: dict(
            min_terms=3,
            max_terms=4,
            min_digits=2,
            max_digits=2,
            operators=("+", "-", "*"),
            allow_parentheses=True,
            allow_negation=False,
        ),
    },
}
TASKS = tuple(LEVELS)


class GymDataError(ValueError):
    """A bad task name, level or size (the message names the flag)."""


def _gym():
    try:
        import reasoning_gym
    except ImportError as e:  # a clear message, not a traceback from deep inside
        raise GymDataError(
            f"reasoning-gym is not installed ({e}); install it: pip install reasoning-gym (see requirements/cpu.txt)"
        ) from e
    return reasoning_gym


def make_prompt(question: str) -> str:
    return f"{question} {ANSWER_INSTRUCTION}"


def make_label(task: str, entry: dict) -> str:
    """The ``label`` of a row: what the gym reward needs to rebuild ``entry`` for ``score_answer``."""
    return json.dumps(
        {"task": task, "answer": entry["answer"], "metadata": entry.get("metadata", {})}, sort_keys=True, default=list
    )


def question_key(task: str, question: str) -> str:
    return f"{task}\x00{' '.join(question.split())}"


def generate(
    task: str, level: int, n: int, seed: int, exclude: Optional[set] = None, max_draw_factor: int = 20
) -> List[dict]:
    """Up to ``n`` distinct entries of ``task`` at ``level`` not in ``exclude`` (question keys), deterministic in
    ``seed``.

    Draws ``reasoning_gym.create_dataset(task, size=..., seed=seed, **LEVELS[task][level])`` in order, skipping
    repeats; stops after ``n * max_draw_factor`` draws (small problem spaces, e.g. two one-digit terms, run out).
    """
    if task not in LEVELS:
        raise GymDataError(f"--tasks: unknown task {task!r}; known: {', '.join(TASKS)}")
    if level not in LEVELS[task]:
        raise GymDataError(f"--levels: level must be 1..5, got {level}")
    exclude = set() if exclude is None else exclude
    out: List[dict] = []
    seen = set()
    size = max(n * max_draw_factor, 1)
    ds = _gym().create_dataset(task, size=size, seed=seed, **LEVELS[task][level])
    for i in range(size):
        entry = ds[i]
        key = question_key(task, entry["question"])
        if key in seen or key in exclude:
            continue
        seen.add(key)
        out.append(entry)
        if len(out) == n:
            break
    return out


def _seed(base: int, task: str, level: int, split: str) -> int:
    """A distinct, stable seed per (task, level, split): str hash() is salted per process, so no hash()."""
    t = TASKS.index(task) if task in TASKS else sum(map(ord, task))
    return base * 1_000_003 + t * 10_007 + level * 101 + {"train": 0, "test": 50, "warmup": 75}[split]


def row(task: str, level: int, entry: dict, split: str, i: int) -> dict:
    return {
        "prompt": make_prompt(entry["question"]),
        "label": make_label(task, entry),
        "datasource": f"{task}_level{level}",
        "level": level,
        "task": task,
        "problem": entry["question"],
        "answer": entry["answer"],
        "id": f"{task}/level{level}/{split}/{i}",
        "source": "reasoning_gym",
    }


def build(
    tasks: Sequence[str] = TASKS,
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    train_per_level: int = 200,
    test_per_level: int = 20,
    seed: int = 0,
    warmup_per_level: int = 0,
    warmup_levels: Sequence[int] = (1, 2, 3),
) -> Dict[str, List[dict]]:
    """``{"train", "test", "warmup"}`` rows: the test sets are drawn first (no question twice across tasks and
    levels); train and warm-up sets (the supervised warm-up's own draw, ``warmup_per_level`` per task and
    level in ``warmup_levels``) contain no test question. Train and warm-up rows are shuffled."""
    if train_per_level < 0 or test_per_level < 0:
        raise GymDataError(
            f"--train-per-level / --test-per-level must be >= 0, got {train_per_level} / {test_per_level}"
        )
    for t in tasks:
        if t not in LEVELS:
            raise GymDataError(f"--tasks: unknown task {t!r}; known: {', '.join(TASKS)}")
    for lv in list(levels) + list(warmup_levels):
        if lv not in (1, 2, 3, 4, 5):
            raise GymDataError(f"--levels: level must be 1..5, got {lv}")
    train, test, warmup = [], [], []
    test_keys: set = set()  # across tasks and levels: a question in two levels' configs is held out once
    for task in tasks:
        for level in levels:
            held = generate(task, level, test_per_level, _seed(seed, task, level, "test"), exclude=test_keys)
            test_keys |= {question_key(task, e["question"]) for e in held}
            test += [row(task, level, e, "test", i) for i, e in enumerate(held)]
    taken = set(test_keys)
    for split, per_level, split_levels in (
        ("train", train_per_level, levels),
        ("warmup", warmup_per_level, warmup_levels),
    ):
        rows = []
        for task in tasks:
            for level in split_levels:
                kept = generate(task, level, per_level, _seed(seed, task, level, split), exclude=taken)
                if split == "train":  # warm-up rows may repeat training questions, never test ones
                    taken |= {question_key(task, e["question"]) for e in kept}
                rows += [row(task, level, e, split, i) for i, e in enumerate(kept)]
        (train if split == "train" else warmup).extend(rows)
        if split == "train":
            taken = set(test_keys)
    random.Random(seed).shuffle(train)
    random.Random(seed + 1).shuffle(warmup)
    return {"train": train, "test": test, "warmup": warmup}


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def counts(rows: Sequence[dict]) -> Dict[str, int]:
    c: Dict[str, int] = {}
    for r in rows:
        c[r["datasource"]] = c.get(r["datasource"], 0) + 1
    return dict(sorted(c.items()))


def write(out_dir, **kw) -> dict:
    """Write ``train.jsonl``, ``test.jsonl`` and ``report.json`` (rows per ``<task>_level<L>``) into ``out_dir``."""
    out_dir = Path(out_dir)
    sets = build(**kw)
    train = write_jsonl(out_dir / "train.jsonl", sets["train"])
    test = write_jsonl(out_dir / "test.jsonl", sets["test"])
    warmup = write_jsonl(out_dir / "warmup.jsonl", sets["warmup"]) if sets["warmup"] else None
    keys = {k: {question_key(r["task"], r["problem"]) for r in sets[k]} for k in sets}
    overlap = (keys["train"] | keys["warmup"]) & keys["test"]
    report = {
        "kind": "reasoning_gym",
        "config": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in kw.items()},
        "levels": {
            t: {
                str(lv): {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
                for lv, cfg in LEVELS[t].items()
            }
            for t in kw.get("tasks", TASKS)
        },
        "train": {"path": str(train), "rows": len(sets["train"]), "by_datasource": counts(sets["train"])},
        "test": {"path": str(test), "rows": len(sets["test"]), "by_datasource": counts(sets["test"])},
        "warmup": {
            "path": str(warmup) if warmup else None,
            "rows": len(sets["warmup"]),
            "by_datasource": counts(sets["warmup"]),
        },
        "train_test_overlap": len(overlap),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
