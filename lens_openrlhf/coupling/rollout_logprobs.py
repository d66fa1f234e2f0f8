"""vLLM log-probs of the sampled tokens for LENS's pbar (patches V1, V2; applied with the ``rollout_logprobs`` tag).

With ``--algo.lens.logprob_source vllm`` (the default) every rollout asks vLLM for the sampled token's
log-prob (``logprobs=1``) and the engines run in ``processed_logprobs`` mode (the distribution vLLM sampled
from), even with OpenRLHF's importance-sampling correction off, which is when OpenRLHF asks for neither.
"""

from __future__ import annotations

from .. import patching


def _sampling_params_with_logprobs(*args, **kwargs):
    """``vllm.SamplingParams`` that always asks for the sampled token's log-prob (``logprobs=1``)."""
    if kwargs.get("logprobs") is None:
        kwargs["logprobs"] = 1
    return patching.original("coupling", "V1")(*args, **kwargs)


def _create_vllm_engines_processed_logprobs(*args, **kwargs):
    """``create_vllm_engines`` with ``logprobs_mode='processed_logprobs'`` (12th positional argument)."""
    args = list(args)
    if len(args) > 11:
        args[11] = args[11] or "processed_logprobs"
    else:
        kwargs["logprobs_mode"] = kwargs.get("logprobs_mode") or "processed_logprobs"
    return patching.original("coupling", "V2")(*args, **kwargs)
