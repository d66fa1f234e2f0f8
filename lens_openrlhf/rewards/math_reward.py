"""Math-Verify reward for the pinned OpenRLHF, with a per-answer time limit that really holds.

Use it as OpenRLHF's reward function::

    --reward.remote_url /path/to/lens_openrlhf/rewards/math_reward.py

OpenRLHF loads this file by path and calls ``reward_func(queries, prompts, labels)`` through
``asyncio.to_thread`` inside an async Ray actor: NOT the main thread, where Math-Verify's
``signal.alarm`` timeouts raise ``ValueError``, and where a thread cannot interrupt an answer such as
``\\boxed{9^{9^{9^{9^9}}}}`` (with its timeouts off, Math-Verify held the GIL for over a minute on it).

How an answer is scored
-----------------------
1. The response is the query minus its prompt (``query[len(prompt):]`` when the query starts with the
   prompt; else the text after the prompt's first occurrence; else the whole query, counted as
   ``reward/prompt_not_prefix``).
2. The answer is the content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) of the response, braces
   balanced (``\\{`` and ``\\}`` are text, not structure). ``\\boxed 5`` (no braces) is read too.
3. Math-Verify compares it with the label: gold ``parse("$" + label + "$")``, prediction
   ``parse("$" + answer + "$")``, then ``verify(gold, pred)`` (order matters: gold first). A label that
   itself contains a ``\\boxed{}`` is reduced to that box first.
4. Score 1.0 when correct, else 0.0. Every answer gets exactly one reason, and each reason is a
   per-sample 0/1 tensor in ``extra_logs`` (``reward/<reason>``; OpenRLHF logs their means):

   ``correct``      verified equal
   ``wrong``        parsed, compared, not equal
   ``no_boxed``     the response has no (closed) ``\\boxed{}``
   ``empty_boxed``  the last box is empty
   ``parse_error``  Math-Verify extracted no mathematical expression from the answer
   ``gold_error``   the label is empty or Math-Verify could not parse it (and strings differ)
   ``timeout``      the answer ran out of time (Math-Verify's own timeout, or the outer deadline)
   ``worker_error`` the verifier process died or could not start (logged at ERROR)

The time limit and the pool
---------------------------
Math-Verify runs in worker PROCESSES with its own signal timeouts on, and each answer has an outer deadline
after which its worker is killed and replaced (reason ``timeout``): :mod:`lens_openrlhf.rewards.verifier`
(the pool, parent side) and :mod:`lens_openrlhf.rewards.verify_worker` (the worker side). Text handling
(boxes, cutting responses, labels) is :mod:`lens_openrlhf.rewards.answers`; the verdict loop and OpenRLHF's reward
dict are :mod:`lens_openrlhf.rewards.outcome`, shared with ``gym_reward``. This file is the reward entry.

Configuration (environment variables, read when the pool is first used):

``LENS_MATH_TIMEOUT_S``          outer deadline per answer, seconds (default 5)
``LENS_MATH_INNER_TIMEOUT_S``    Math-Verify's own timeout per parse/compare, whole seconds
                                 (default ``max(1, ceil(timeout_s) - 1)``: 4 s for the default 5 s)
``LENS_MATH_WORKERS``            worker processes (default ``min(8, max(2, n_cpus // 2))``)
``LENS_MATH_MP_CONTEXT``         ``forkserver`` (default) or ``spawn``
``LENS_MATH_STARTUP_TIMEOUT_S``  how long a worker may take to start (default 120)

This module imports neither torch nor Math-Verify at import time (the worker processes import the
package and must stay light); torch is imported inside ``reward_func``. It has no ``from __future__ import
annotations``: OpenRLHF execs the file without registering it in ``sys.modules``, and dataclasses with
string annotations then fail to build. Loaded by file path, it makes the package importable and hands out
the package module's functions, so the pool singleton and the worker processes are shared.
"""

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

REASONS = (
    "correct",
    "wrong",
    "no_boxed",
    "empty_boxed",
    "parse_error",
    "gold_error",
    "timeout",
    "worker_error",
)

_CANONICAL_NAME = "lens_openrlhf.rewards.math_reward"

if __name__ != _CANONICAL_NAME:  # loaded by file path (--reward.remote_url x.py): make the package importable
    _root = str(Path(__file__).resolve().parents[2])
    if _root not in sys.path:
        sys.path.insert(0, _root)

from lens_openrlhf.rewards.answers import normalize_label  # noqa: E402
from lens_openrlhf.rewards.outcome import outcome_reward, use_package_module, verdicts  # noqa: E402
from lens_openrlhf.rewards.verifier import VerifierPool, VerifierUnavailable, get_pool  # noqa: E402


def score_responses(responses: Sequence[str], labels: Sequence[Any], pool: Optional[VerifierPool] = None) -> list:
    """Score model responses (text after the prompt) against labels; one ``Verdict`` each.

    Raises ``WorkerStartError`` when the verifier processes cannot start.
    """
    if len(responses) != len(labels):
        raise ValueError(f"{len(responses)} responses but {len(labels)} labels")
    return verdicts(
        responses, [normalize_label(lb) for lb in labels], lambda todo: (pool or get_pool()).verify_many(todo)
    )


def reward_func(queries, prompts, labels, *, pool: Optional[VerifierPool] = None) -> dict:
    """OpenRLHF's ``reward_func``: Math-Verify correctness of the last boxed answer, 1.0 or 0.0.

    Args:
        queries: prompt + response strings (as OpenRLHF decodes them).
        prompts: the prompts (used to cut the response out of the query).
        labels: gold answers (``--data.label_key``).
        pool: a ``VerifierPool`` to use instead of the process-wide one (tests, benchmarks).

    Returns:
        ``{"rewards": float tensor [B], "scores": same, "extra_logs": {...}}`` where ``extra_logs``
        holds per-sample float tensors ``reward/<reason>`` (0/1, one reason per sample),
        ``reward/prompt_not_prefix`` (0/1) and ``reward/verify_seconds``.

    One answer's failure scores 0 with its reason counted (``timeout``, ``worker_error``, ...). When the
    verifier cannot run at all, raises :class:`VerifierUnavailable` naming the cause: scoring every answer
    0 would still train the model under LENS.
    """

    def score(responses, labels):
        try:
            return score_responses(responses, labels, pool=pool)
        except Exception as e:  # per-answer failures are verdicts; what reaches here is the verifier itself
            raise VerifierUnavailable(
                f"lens math reward: the Math-Verify verifier cannot run ({type(e).__name__}: {e}). Stopping instead "
                "of scoring every answer 0, which under LENS would still train the model"
            ) from e

    return outcome_reward(queries, prompts, labels, score, REASONS)


if __name__ != _CANONICAL_NAME:  # loaded by file path: one pool singleton and one set of workers
    use_package_module(globals(), _CANONICAL_NAME, ("reward_func", "score_responses"))
