"""Scoring the sampled answers of :func:`lens_openrlhf.evaluation.sampling.sample_and_score`, for either backend.

``scorer``: ``"math"`` (Math-Verify through :mod:`lens_openrlhf.rewards.math_reward`, the paper's verifier; each
verdict has a reason) or ``"gym"`` (reasoning-gym's own ``score_answer``, :mod:`lens_openrlhf.rewards.gym_reward`, for
the rows ``python -m lens_openrlhf.data gym`` writes). Every answer is also checked for a non-empty ``\\boxed{}``
(``rewards.answers.boxed_answer``), so that a rise in pass@1 can be split into format and accuracy.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Sequence, Tuple

SCORERS = ("math", "gym")


def score(scorer: str, texts: Sequence[str], labels: Sequence) -> Tuple[List[bool], List[str]]:
    """``(correct, reasons)`` per text: ``reasons`` are Math-Verify's (``"gym"``: "correct" or "wrong")."""
    if scorer == "math":
        from lens_openrlhf.rewards.math_reward import score_responses

        verdicts = score_responses(list(texts), list(labels))
        return [v.score > 0 for v in verdicts], [v.reason for v in verdicts]
    if scorer == "gym":
        from lens_openrlhf.rewards.gym_reward import score_text

        correct = [bool(score_text(t, label)) for t, label in zip(texts, labels)]
        return correct, ["correct" if c else "wrong" for c in correct]
    raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")


def boxed_count(texts: Sequence[str]) -> int:
    """How many of ``texts`` carry a non-empty ``\\boxed{}`` answer."""
    from lens_openrlhf.rewards.answers import boxed_answer

    return sum(boxed_answer(t) is not None for t in texts)


def reason_counts(reasons: Sequence[str]) -> Dict[str, int]:
    """How many answers got each verdict, in the order the verdicts first occur."""
    return dict(Counter(reasons))
