"""Reward functions for OpenRLHF (``--reward.remote_url <file>.py``) and what they share.

=================== ===================================================================================
module              concern
=================== ===================================================================================
``math_reward``     the reward entry for MATH-style data: Math-Verify on the last ``\\boxed{}``
``gym_reward``      the reward entry for reasoning-gym data: the task's own ``score_answer``
``outcome``         the verdict loop and OpenRLHF's reward dict, shared by both entries
``answers``         text: the last ``\\boxed{}``, the response cut out of a query, a label's gold answer
``verifier``        the worker-process pool with a hard per-answer deadline (parent side)
``verify_worker``   the worker side: Math-Verify calls with its own timeouts on
=================== ===================================================================================

Importing this package is light: neither torch nor Math-Verify is imported.
"""
