"""vLLM log-probs of the sampled tokens for LENS's pbar.

With ``--algo.lens.logprob_source vllm`` (the default) every rollout asks vLLM for the sampled token's log-prob
(``logprobs=1``, set on each request by S2, :mod:`.rollout_seeds`, in the trainer that holds the args) and the
engines run in ``processed_logprobs`` mode (the distribution vLLM sampled from; V2, in the driver, applied with the
``rollout_logprobs`` tag), even with OpenRLHF's importance-sampling correction off, which is when OpenRLHF asks for
neither.
"""

from __future__ import annotations

from .. import patching
from ..estimators import ADV_ESTIMATORS, LOGPROB_SOURCE


def logprob_source(args) -> str:
    """``--algo.lens.logprob_source`` of ``args`` (``vllm`` or ``actor``; unset: the registry default)."""
    lens = getattr(getattr(args, "algo", None), "lens", None)
    return getattr(lens, "logprob_source", None) or LOGPROB_SOURCE.default


def wants_rollout_logprobs(args) -> bool:
    """Whether the run of ``args`` reads pbar from vLLM's log-probs: a registry estimator that needs log-probs, with
    ``--algo.lens.logprob_source vllm``. The driver's checks, the launcher (V2) and S2 all ask this."""
    spec = ADV_ESTIMATORS.get(args.algo.advantage.estimator)
    return spec is not None and spec.needs_log_probs and logprob_source(args) == "vllm"


def _create_vllm_engines_processed_logprobs(*args, **kwargs):
    """``create_vllm_engines`` with ``logprobs_mode='processed_logprobs'`` (12th positional argument)."""
    args = list(args)
    if len(args) > 11:
        args[11] = args[11] or "processed_logprobs"
    else:
        kwargs["logprobs_mode"] = kwargs.get("logprobs_mode") or "processed_logprobs"
    return patching.original("coupling", "V2")(*args, **kwargs)
