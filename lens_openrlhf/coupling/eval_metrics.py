"""Eval metrics: OpenRLHF's ``compute_eval_metrics`` plus unbiased pass@k per level (patch E1)."""

from __future__ import annotations

import re
from typing import Dict

import torch

from .. import patching
from ..evaluation.passk import ProblemResult, build_report

LEVEL_RE = re.compile(r"level[_ -]?([1-5])\b", re.IGNORECASE)


def unbiased_eval_logs(eval_dataloader, samples_list, n_samples_per_prompt: int) -> Dict[str, float]:
    """Unbiased pass@k (k = 1, 2, 4, 8, 16, k <= n) overall, per MATH level and for Levels 4-5.

    the pinned OpenRLHF's eval reports only the max reward over n samples (pass@n) and the mean (pass@1)
    per datasource. A sample counts as correct when its reward is > 0.5. The level of a prompt comes
    from its datasource (``python -m lens_openrlhf.data`` writes ``"datasource": "math_level4"``);
    prompts without one are 'unknown' (overall only). Keys: ``unbiased_pass@k``,
    ``unbiased_levels_4_5_pass@k``, ``unbiased_level_<L>_pass@k`` (logged as ``eval/<key>``).
    """
    prompt_level = {}
    for datasources, prompts, _labels, _images in eval_dataloader:
        for prompt, ds in zip(prompts, datasources):
            m = LEVEL_RE.search(str(ds))
            prompt_level[prompt] = int(m.group(1)) if m else None
    prompts = [p for s in samples_list for p in s.prompts]
    rewards = torch.cat([torch.as_tensor(s.rewards).reshape(-1).float() for s in samples_list])
    n = n_samples_per_prompt
    if rewards.numel() != len(prompts) or len(prompts) % n:
        raise RuntimeError(f"eval: {len(prompts)} prompts, {rewards.numel()} rewards, n_samples_per_prompt {n}")
    correct = (rewards > 0.5).view(-1, n)
    results = []
    for i in range(correct.shape[0]):
        group = prompts[i * n : (i + 1) * n]
        if any(p != group[0] for p in group):
            raise RuntimeError("eval: the samples of one prompt are not contiguous; cannot compute pass@k")
        results.append(ProblemResult(id=str(i), n=n, c=int(correct[i].sum()), level=prompt_level.get(group[0])))
    report = build_report(results)
    logs: Dict[str, float] = {}
    for k in report["ks"]:
        logs[f"unbiased_pass@{k}"] = report["overall"][f"pass@{k}"]
        if report["levels_4_5"] is not None:
            logs[f"unbiased_levels_4_5_pass@{k}"] = report["levels_4_5"][f"pass@{k}"]
        for level, summary in report["by_level"].items():
            if level != "unknown":
                logs[f"unbiased_level_{level}_pass@{k}"] = summary[f"pass@{k}"]
    return logs


def compute_eval_metrics(eval_dataloader, samples_list, n_samples_per_prompt):
    """OpenRLHF's ``compute_eval_metrics`` plus :func:`unbiased_eval_logs`."""
    logs = patching.original("coupling", "E1")(eval_dataloader, samples_list, n_samples_per_prompt)
    if samples_list:
        logs.update(unbiased_eval_logs(eval_dataloader, samples_list, n_samples_per_prompt))
    return logs
