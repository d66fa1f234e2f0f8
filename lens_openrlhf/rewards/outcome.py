"""The outcome reward every reward file shares: one verdict per answer, and OpenRLHF's reward dict.

A reward file (``math_reward``, ``gym_reward``) supplies only how a gold answer is read from a label and how
an answer is compared with it (its worker pool); the rest is here:

1. :func:`outcome_reward`: cut each response out of its query (``answers.split_response``), score them, and
   build ``{"rewards", "scores", "extra_logs"}`` with one ``reward/<reason>`` 0/1 tensor per reason,
   ``reward/prompt_not_prefix`` and ``reward/verify_seconds``.
2. :func:`verdicts`: the verdict loop. A response with no closed ``\\boxed{}`` is ``no_boxed``, an empty box
   ``empty_boxed`` (``answers.boxed_answer``), a label without a gold answer ``gold_error``; only the rest
   go to the pool, whose answer per pair is a :class:`Verdict`.

Pure Python at import time (torch is imported inside :func:`outcome_reward`).
"""

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from lens_openrlhf.rewards.answers import boxed_answer, extract_last_boxed, split_response


@dataclass(frozen=True)
class Verdict:
    """The result for one answer: ``score`` 1.0/0.0, its ``reason``, and worker seconds spent."""

    score: float
    reason: str
    seconds: float = 0.0


def verdicts(
    responses: Sequence[Any],
    golds: Sequence[Optional[str]],
    verify_many: Callable[[List[Tuple[str, str]]], List[Verdict]],
) -> List[Verdict]:
    """One :class:`Verdict` per response: ``no_boxed`` / ``empty_boxed`` / ``gold_error`` decided here, every
    other ``(gold, answer)`` pair by ``verify_many`` (a worker pool; its exceptions propagate: a reward that
    cannot score raises, it never scores 0)."""
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} labels")
    out: List[Optional[Verdict]] = [None] * len(responses)
    todo_idx, todo = [], []
    for i, (resp, gold) in enumerate(zip(responses, golds)):
        answer = boxed_answer(resp)
        if answer is None:
            has_box = extract_last_boxed(resp if isinstance(resp, str) else "") is not None
            out[i] = Verdict(0.0, "empty_boxed" if has_box else "no_boxed")
        elif gold is None:
            out[i] = Verdict(0.0, "gold_error")
        else:
            todo_idx.append(i)
            todo.append((gold, answer))
    if todo:
        for i, v in zip(todo_idx, verify_many(todo)):
            out[i] = v
    return out


def outcome_reward(queries, prompts, labels, score, reasons: Sequence[str]) -> dict:
    """OpenRLHF's reward dict for ``queries`` (prompt + response strings).

    ``score(responses, labels)`` returns one :class:`Verdict` per response. Returns ``{"rewards": float tensor
    [B], "scores": same, "extra_logs": {"reward/<reason>": [B] 0/1 for each of reasons,
    "reward/prompt_not_prefix": [B] 0/1, "reward/verify_seconds": [B]}}``.
    """
    import torch

    queries = list(queries)
    prompts = list(prompts) if prompts is not None else [""] * len(queries)
    labels = list(labels) if labels is not None else [None] * len(queries)
    if not (len(queries) == len(prompts) == len(labels)):
        raise ValueError(f"reward_func: {len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")

    responses, not_prefix = [], []
    for q, p in zip(queries, prompts):
        resp, found = split_response(q if isinstance(q, str) else "", p if isinstance(p, str) else "")
        responses.append(resp)
        not_prefix.append(0.0 if found else 1.0)
    got = score(responses, labels)
    rewards = torch.tensor([v.score for v in got], dtype=torch.float32)
    extra_logs = {
        f"reward/{r}": torch.tensor([1.0 if v.reason == r else 0.0 for v in got], dtype=torch.float32) for r in reasons
    }
    extra_logs["reward/prompt_not_prefix"] = torch.tensor(not_prefix, dtype=torch.float32)
    extra_logs["reward/verify_seconds"] = torch.tensor([v.seconds for v in got], dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": extra_logs}


def use_package_module(namespace: dict, canonical: str, names: Sequence[str]) -> None:
    """In a reward file loaded by path (OpenRLHF execs ``--reward.remote_url x.py`` without registering it):
    replace ``names`` in its ``namespace`` by the package module's, so that one pool singleton and one set of
    worker processes serve both, and the workers' target pickles by its module name."""
    import importlib

    module = importlib.import_module(canonical)
    namespace.update({name: getattr(module, name) for name in names})
