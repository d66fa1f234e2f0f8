"""Reward functions for OpenRLHF (``--reward.remote_url <file>.py``).

``math_reward``: Math-Verify correctness of the last ``\\boxed{}`` answer, with a hard per-answer time
limit (worker processes). Importing this package is light: neither torch nor Math-Verify is imported.
"""

from lens_openrlhf.rewards.math_reward import (  # noqa: F401
    REASONS,
    RewardConfig,
    Verdict,
    VerifierPool,
    extract_last_boxed,
    reward_func,
    score_responses,
    split_response,
)

__all__ = [
    "REASONS",
    "RewardConfig",
    "Verdict",
    "VerifierPool",
    "extract_last_boxed",
    "reward_func",
    "score_responses",
    "split_response",
]
