"""The errors lens_openrlhf raises or exits with. A leaf module: it imports nothing of the package.

Every refusal a person sees is one line (or one short block) naming the flag, file or variable and what to
do, printed by :func:`exit_with`; every error that crosses a Ray actor boundary is a class here, so the
driver and the tests can tell them apart.
"""

from __future__ import annotations

import sys

PROG = "lens_openrlhf.train_ppo_ray"


def exit_with(message: str, code: int = 2, prog: str = PROG):
    """Print ``<prog>: error: <message>`` to stderr and exit (argparse's style; 2 = usage error)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class RewardFunctionError(RuntimeError):
    """The ``--reward.remote_url`` Python reward function raised: the run stops with its error."""


class UpstreamChanged(RuntimeError):
    """An OpenRLHF / vLLM / DeepSpeed attribute a patch replaces is not what the patch was written for."""


class RolloutLogProbsMissing(RuntimeError):
    """LENS needed vLLM's rollout log-probs and the experience carries none (the worker patch is not active)."""
