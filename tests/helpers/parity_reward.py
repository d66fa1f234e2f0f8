"""A reward file for tests that need mixed groups from a random model: 1.0 iff the response's characters sum to an
even number (a fixed, arbitrary, deterministic function of the text: about half the samples of any prompt).

Loaded by path by OpenRLHF (``--reward.remote_url``).
"""

import torch

from lens_openrlhf.rewards.answers import split_response


def reward_func(queries, prompts, labels):
    r = [1.0 if sum(map(ord, split_response(q, p)[0])) % 2 == 0 else 0.0 for q, p in zip(queries, prompts)]
    r = torch.tensor(r, dtype=torch.float32)
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
