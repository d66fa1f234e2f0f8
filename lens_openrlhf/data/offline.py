"""An offline stand-in for the paper's sources: small files in the real MATH, DAPO-Math-17k and NuminaMath-1.5 schemas.

``python -m lens_openrlhf.data all --out-dir DIR --offline-sample N`` writes them and builds the training mixes and
the test set from them through the same loaders, cleaning and formats as the real sources, with no network: for
rehearsing a cluster script on one machine (``examples/scripts/rehearse_on_cpu.sh``) and for CI. The problems are
integer arithmetic with known answers (``What is $a + b$?``), levels 1-5 by operand size; they are not the paper's
data and teach nothing about MATH.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List

from lens_openrlhf.data.schemas import DAPO_INSTRUCTION, DAPO_SUFFIX, normalize_problem

#: operand bound of each MATH level
LEVEL_BOUNDS = {1: 9, 2: 20, 3: 50, 4: 99, 5: 999}
_OPS = (("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("\\cdot", lambda a, b: a * b))


def _problems(n: int, rng: random.Random, seen: set) -> List[tuple]:
    """``n`` (problem, answer, level) triples, distinct after ``normalize_problem`` (which keeps letters and digits
    only: ``1 + 23`` and ``12 - 3`` would be one problem to the cleaning) and not in ``seen`` (which they join)."""
    out = []
    while len(out) < n:
        level = rng.randint(1, 5)
        a, b = rng.randint(0, LEVEL_BOUNDS[level]), rng.randint(0, LEVEL_BOUNDS[level])
        sym, fn = rng.choice(_OPS)
        problem = f"What is ${a} {sym} {b}$?"
        if normalize_problem(problem) not in seen:
            seen.add(normalize_problem(problem))
            out.append((problem, str(fn(a, b)), level))
    return out


def _write(path: Path, rows: List[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_sources(folder: Path, n: int, seed: int = 0) -> Dict[str, str]:
    """``n`` problems per source written under ``folder`` in each source's own schema; returns the
    ``--math-train``, ``--math-test``, ``--dapo`` and ``--numina`` values (dest names) that read them."""
    if n < 1:
        raise ValueError(f"--offline-sample must be >= 1, got {n}")
    rng, seen = random.Random(seed), set()
    folder.mkdir(parents=True, exist_ok=True)

    def math_rows(k):
        return [
            {"problem": p, "solution": f"It is $\\boxed{{{a}}}$.", "level": f"Level {lv}", "type": "Prealgebra"}
            for p, a, lv in _problems(k, rng, seen)
        ]

    dapo = [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": f'{DAPO_INSTRUCTION}\n\n{p}\n\n{DAPO_SUFFIX} "Answer:".'}],
            "ability": "MATH",
            "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"offline-{i}"},
        }
        for i, (p, a, _) in enumerate(_problems(n, rng, seen))
    ]
    numina = [
        {
            "problem": p,
            "solution": f"So the answer is $\\boxed{{{a}}}$.",
            "answer": a,
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "source": "offline_sample",
            "problem_is_valid": "Yes",
            "solution_is_valid": "Yes",
            "synthetic": True,
        }
        for p, a, _ in _problems(n, rng, seen)
    ]
    return {
        "math_train": _write(folder / "math_train.jsonl", math_rows(n)),
        "math_test": _write(folder / "math_test.jsonl", math_rows(n)),
        "dapo": _write(folder / "dapo.jsonl", dapo),
        "numina": _write(folder / "numina.jsonl", numina),
    }
