"""A reward file for tests that need no verifier pool: 1.0 iff the last boxed answer equals the label as text.

Loaded by path by OpenRLHF (``--reward.remote_url``); the box parser is the rewards' own
(``lens_openrlhf.rewards.answers.boxed_answer``).
"""

import torch

from lens_openrlhf.rewards.answers import boxed_answer, split_response


def reward_func(queries, prompts, labels):
    r = [
        1.0 if boxed_answer(split_response(q, p)[0]) == str(lb).strip() else 0.0
        for q, p, lb in zip(queries, prompts, labels)
    ]
    r = torch.tensor(r, dtype=torch.float32)
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
