"""A reward function that raises stops the run with its own error (patches R1, R2).

the pinned OpenRLHF calls the ``--reward.remote_url`` Python function inside ``SingleTurnAgentExecutor.execute``'s
``try: ... except Exception: logger.info(...)``: a reward function that raises leaves the reward None, and
the run dies later with "reward_model_group is required when rewards are not precomputed", the cause logged
at INFO in a Ray actor. R1 wraps the executor's ``reward_func`` to remember the exception; R2 re-raises it
as :class:`lens_openrlhf.errors.RewardFunctionError` after that block. These run in the vLLM engine actors.
"""

from __future__ import annotations

from .. import patching
from ..errors import RewardFunctionError


def _executor_init(self, *args, **kwargs):
    """``SingleTurnAgentExecutor.__init__``, then its ``reward_func`` wrapped to remember an exception.

    the pinned OpenRLHF calls the reward inside ``execute``'s ``try: ... except Exception: logger.info(...)``: a
    reward function that raises leaves the reward None, and the run dies later with "reward_model_group is
    required when rewards are not precomputed", the cause logged at INFO in a Ray actor. Recording the error
    here lets :func:`_executor_execute` re-raise it after that block.
    """
    patching.original("coupling", "R1")(self, *args, **kwargs)
    fn = getattr(self, "reward_func", None)
    if fn is None:
        return
    where = self.reward_endpoints[0]

    def reward_func(*a, **k):
        try:
            return fn(*a, **k)
        except Exception as e:
            self._lens_reward_error = (where, e)
            raise

    self.reward_func = reward_func


async def _executor_execute(self, *args, **kwargs):
    """``SingleTurnAgentExecutor.execute``, raising the reward function's own error if it raised."""
    out = await patching.original("coupling", "R2")(self, *args, **kwargs)
    failed = getattr(self, "_lens_reward_error", None)
    if failed is not None:
        where, e = failed
        raise RewardFunctionError(f"the reward function in {where} raised {type(e).__name__}: {e}") from e
    return out
