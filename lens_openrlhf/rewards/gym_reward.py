"""reasoning-gym reward for the pinned OpenRLHF: the task's own ``score_answer``, with a hard per-answer time limit.

Use it as OpenRLHF's reward function on data written by ``python -m lens_openrlhf.data gym``::

    --reward.remote_url /path/to/lens_openrlhf/rewards/gym_reward.py

Same contract as ``math_reward.py``: ``reward_func(queries, prompts, labels)`` returns ``{"rewards",
"scores", "extra_logs"}`` with one reason per sample in ``extra_logs`` (``reward/<reason>``, 0/1 tensors).

How an answer is scored
-----------------------
1. The response is the query minus its prompt; the answer is the content of its LAST ``\\boxed{...}``
   (the prompts ask for it; ``answers.boxed_answer``).
2. The label is the JSON string ``{"task", "answer", "metadata"}`` that ``lens_openrlhf.data.gym`` writes;
   the entry ``{"answer", "metadata"}`` is rebuilt from it and the task's ``score_answer(answer, entry)``
   (reasoning-gym's own scorer: ``chain_sum`` tolerates signs, leading zeros and commas; ``basic_arithmetic``
   takes the exact string) runs in a worker process.
3. Rewards are binary (LENS needs rewards in {0, 1}): 1.0 iff ``score_answer`` returns 1.0. reasoning-gym's
   partial credit (e.g. the oracle answer inside a longer string) scores 0 and is counted as ``partial``.

Reasons: ``correct``, ``partial``, ``wrong``, ``no_boxed``, ``empty_boxed``, ``timeout`` (past the
deadline: the worker is killed and replaced), ``worker_error`` (the worker died on an answer, or the
task's scorer raised on it; logged at ERROR).

Fails loudly (raises, never scores 0) when the scorer cannot run: reasoning-gym not importable here or in
the worker processes (``WorkerStartError``), a label that is not such a JSON string (``ValueError`` naming
``--label_key``), a task reasoning-gym does not know.

Configuration (environment): ``LENS_GYM_TIMEOUT_S`` (deadline per answer, default 5), ``LENS_GYM_WORKERS``
(default 1: scoring an arithmetic answer takes microseconds), ``LENS_GYM_MP_CONTEXT`` (forkserver or spawn),
``LENS_GYM_STARTUP_TIMEOUT_S`` (default 120). The worker pool is ``math_reward.VerifierPool`` with this
module's worker body. No ``from __future__ import annotations`` (OpenRLHF execs this file by path).
"""

import atexit
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)

REASONS = ("correct", "partial", "wrong", "no_boxed", "empty_boxed", "timeout", "worker_error")
_CANONICAL_NAME = "lens_openrlhf.rewards.gym_reward"

if __name__ != _CANONICAL_NAME:  # loaded by file path: make the package importable for the canonical module
    _root = str(Path(__file__).resolve().parents[2])
    if _root not in sys.path:
        sys.path.insert(0, _root)

from lens_openrlhf.rewards.answers import boxed_answer  # noqa: E402
from lens_openrlhf.rewards.outcome import outcome_reward, use_package_module, verdicts  # noqa: E402
from lens_openrlhf.rewards.verifier import ProcessPool, RewardConfig, VerifierPool, WorkerStartError  # noqa: E402
from lens_openrlhf.rewards.verify_worker import serve_worker  # noqa: E402


class ScorerUnavailable(RuntimeError):
    """reasoning-gym (the scorer) cannot be imported or does not know a label's task."""


def import_reasoning_gym():
    try:
        import reasoning_gym
    except Exception as e:  # noqa: BLE001 - any import failure means no scorer
        raise ScorerUnavailable(
            f"gym_reward: reasoning-gym cannot be imported ({type(e).__name__}: {e}); the reward cannot score "
            "anything. Install it (pip install reasoning-gym, see requirements/cpu.txt)."
        ) from e
    return reasoning_gym


def parse_label(label: Any) -> dict:
    """``{"task", "answer", "metadata"}`` from a label written by ``lens_openrlhf.data.gym``; ValueError otherwise."""
    if isinstance(label, dict):
        d = label
    else:
        try:
            d = json.loads(label)
        except (TypeError, ValueError):
            d = None
    if not isinstance(d, dict) or not isinstance(d.get("task"), str) or "answer" not in d:
        raise ValueError(
            f"gym_reward: label {str(label)[:80]!r} is not a reasoning-gym label (a JSON string with 'task' and "
            "'answer'); build the data with `python -m lens_openrlhf.data gym` and pass --label_key label"
        )
    return {"task": d["task"], "answer": str(d["answer"]), "metadata": d.get("metadata") or {}}


def score_one(datasets: dict, gold: str, pred: str) -> str:
    """The reason for one answer (runs in a worker process). ``datasets``: task -> dataset cache."""
    import reasoning_gym

    entry = json.loads(gold)
    task = entry["task"]
    ds = datasets.get(task)
    if ds is None:
        ds = datasets[task] = reasoning_gym.create_dataset(task, size=1, seed=0)
    score = ds.score_answer(pred, {"question": "", "answer": entry["answer"], "metadata": entry["metadata"]})
    if score is not None and float(score) >= 1.0:
        return "correct"
    return "partial" if score and float(score) > 0 else "wrong"


_LOCAL_DATASETS: dict = {}


def score_text(response: str, label: Any) -> float:
    """1.0 / 0.0 for one response, scored IN THIS PROCESS (no time limit): for offline evaluation of short
    answers (the warm start's before/after table). Training uses :func:`reward_func` (worker processes)."""
    import_reasoning_gym()
    p = parse_label(label)
    answer = boxed_answer(response)
    if answer is None:
        return 0.0
    reason = score_one(_LOCAL_DATASETS, json.dumps(p, sort_keys=True, default=list), answer)
    return 1.0 if reason == "correct" else 0.0


def _import_reasoning_gym_in_worker() -> None:
    import reasoning_gym  # noqa: F401  (import cost paid before "ready")


def _gym_worker_main(conn, inner_timeout_s: int) -> None:
    """Worker body (math_reward's protocol): ``(task_id, label_json, answer)`` -> ``(task_id, reason, seconds)``."""
    datasets: dict = {}
    serve_worker(
        conn,
        _import_reasoning_gym_in_worker,
        lambda gold, pred: score_one(datasets, gold, pred),
        "lens gym scorer",
        startup_prefix="reasoning-gym cannot be imported in the scorer process: ",
    )


class GymScorerPool(VerifierPool):
    """``VerifierPool`` whose workers run reasoning-gym's ``score_answer`` (same deadline and replacement)."""

    worker_target = staticmethod(_gym_worker_main)


def config_from_env(environ: Optional[dict] = None) -> RewardConfig:
    """The pool settings from ``LENS_GYM_*`` (one worker by default)."""
    return RewardConfig.from_env(environ, prefix="LENS_GYM", workers=1)


_KNOWN_TASKS: Optional[set] = None
_PROCESS_POOL = ProcessPool(lambda: GymScorerPool(config_from_env()))
get_pool = _PROCESS_POOL.get
shutdown_pool = _PROCESS_POOL.shutdown


def known_tasks() -> set:
    """reasoning-gym's registered task names (imports it here: ScorerUnavailable when it cannot)."""
    global _KNOWN_TASKS
    if _KNOWN_TASKS is None:
        rg = import_reasoning_gym()
        from reasoning_gym.factory import DATASETS

        _KNOWN_TASKS = set(DATASETS)
        del rg
    return _KNOWN_TASKS


def score_responses(responses: Sequence[str], labels: Sequence[Any], pool: Optional[VerifierPool] = None) -> list:
    """One ``Verdict`` per response. Raises (never scores 0) when the scorer cannot run."""
    if len(responses) != len(labels):
        raise ValueError(f"{len(responses)} responses but {len(labels)} labels")
    tasks = known_tasks()
    parsed = [parse_label(lb) for lb in labels]
    for p in parsed:
        if p["task"] not in tasks:
            raise ScorerUnavailable(f"gym_reward: reasoning-gym has no task {p['task']!r} (label {p})")
    golds = [json.dumps(p, sort_keys=True, default=list) for p in parsed]
    got = verdicts(responses, golds, lambda todo: (pool or get_pool()).verify_many(todo))
    if any(v.reason == "worker_error" for v in got):  # WorkerStartError propagates: no scorer, no reward
        logger.error("gym_reward: the scorer failed on an answer (worker_error); it scores 0 and is counted")
    return got


def reward_func(queries, prompts, labels, *, pool: Optional[VerifierPool] = None) -> dict:
    """OpenRLHF's ``reward_func``: 1.0 iff reasoning-gym's ``score_answer`` gives the last boxed answer full marks.

    Returns ``{"rewards": float tensor [B], "scores": same, "extra_logs": {"reward/<reason>": 0/1 tensors,
    "reward/prompt_not_prefix", "reward/verify_seconds"}}``. Raises when the scorer cannot run (see module doc).
    """

    def score(responses, labels):
        try:
            return score_responses(responses, labels, pool=pool)
        except (ScorerUnavailable, WorkerStartError, ValueError) as e:
            logger.error("gym_reward: cannot score (%s); raising instead of scoring 0", e)
            raise

    return outcome_reward(queries, prompts, labels, score, REASONS)


if __name__ == _CANONICAL_NAME:
    atexit.register(shutdown_pool)
else:  # loaded by file path (OpenRLHF): the package module's pool, whose worker body pickles by module name
    use_package_module(
        globals(),
        _CANONICAL_NAME,
        ("reward_func", "score_responses", "get_pool", "shutdown_pool", "GymScorerPool", "score_text"),
    )
