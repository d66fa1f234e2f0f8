"""``RemoteExperienceMaker.compute_advantages_and_returns`` for the registry's estimators (patch A1).

It runs inside the PPOTrainer Ray actor (the worker hook applies the patch there, and in the driver). For
the registry's estimators the rewards of a rollout are gathered in prompt order as ``[n_prompts, G]`` and
the advantages come from :func:`lens_openrlhf.estimators.group_advantages`; the per-token part is OpenRLHF's
own (``compute_reward`` with its KL term and clip range, ``get_cumulative_returns`` with gamma 1), as for
``group_norm``. For a one-class estimator (PSR, NSR) the samples trained on are marked, and with several
data-parallel actor groups the rollout is re-packed so each gets as many (:mod:`.sample_selection`). Other
estimators go to OpenRLHF's original method.
"""

from __future__ import annotations

import itertools
from typing import List

import torch

from .. import patching
from ..errors import RolloutLogProbsMissing
from ..estimators import (
    TRAIN_ALL,
    group_advantages,
    group_statistics,
    masked_mean_log_probs,
    trained_samples,
)
from .run_plan import run_plan
from .sample_selection import effective_actor_groups, mark_trained


def response_mean_log_probs(experience, source: str) -> torch.Tensor:
    """``[B]`` mean log-prob of each response of one Experience, over response tokens (action mask) only."""
    if source == "vllm":
        lp = experience.rollout_log_probs
        if lp is None:
            raise RolloutLogProbsMissing(
                "LENS with --algo.lens.logprob_source vllm found no vLLM log-probs on the rollout "
                "(experience.rollout_log_probs is None). The lens_openrlhf worker patch requests them; this "
                "means it is not active in this Ray worker (was the job started through "
                "`python -m lens_openrlhf.train_ppo_ray`?). Use --algo.lens.logprob_source actor to avoid it."
            )
    elif source == "actor":
        lp = experience.action_log_probs
        if lp is None:
            raise RuntimeError("LENS with --algo.lens.logprob_source actor found no actor log-probs on the experience")
    else:
        raise ValueError(f"--algo.lens.logprob_source must be vllm or actor, got {source!r}")
    if lp.shape != experience.action_mask.shape:
        raise RuntimeError(
            f"{source} log-probs shape {tuple(lp.shape)} != action mask shape {tuple(experience.action_mask.shape)}"
        )
    return masked_mean_log_probs(lp, experience.action_mask)


@torch.no_grad()
def compute_advantages_and_returns(self, experiences):
    """``RemoteExperienceMaker.compute_advantages_and_returns`` with the lens_openrlhf estimators.

    Registry estimators: rewards (after OpenRLHF's length penalties, validated off for LENS) are put in
    prompt order as ``[n_prompts, G]``, advantages come from :func:`group_advantages`, and the per-token
    part is OpenRLHF's own (``compute_reward`` with its KL term and clip range, ``get_cumulative_returns``
    with gamma = 1), as for ``group_norm``. Other estimators: OpenRLHF's original method.
    Metrics go to ``experience.info['lens/...']`` (logged by OpenRLHF as ``train/lens/...``). A one-class
    estimator's samples are marked ``info['lens/trained']`` (and, with several data-parallel actor groups,
    re-packed into one experience per group: :func:`.sample_selection.mark_trained`); patch B1 then trains on
    the marked ones only.
    """
    args = self.strategy.args
    plan = run_plan(self, args)
    if plan is None:
        return patching.original("coupling", "A1")(self, experiences)
    from openrlhf.models.utils import compute_reward
    from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

    spec, options, source = plan.spec, plan.options, plan.logprob_source
    G = args.rollout.n_samples_per_prompt

    for experience in experiences:
        experience.rewards = experience.rewards.to(torch.promote_types(experience.rewards.dtype, torch.float32))
    apply_length_penalties(experiences, args)

    exp_len = [len(e.index) for e in experiences]
    indices = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)))

    def in_prompt_order(per_experience: List[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([t.reshape(-1) for t in per_experience])
        out = torch.empty_like(flat)
        out[indices] = flat
        return out.reshape(-1, G)

    rewards = in_prompt_order([e.rewards for e in experiences])
    mean_lp = lengths = None
    if spec.needs_log_probs:
        mean_lp = in_prompt_order([response_mean_log_probs(e, source) for e in experiences])
    if plan.needs_lengths:
        lengths = in_prompt_order([e.action_mask.sum(-1).to(torch.float32) for e in experiences])
    advantages = group_advantages(spec, rewards, mean_lp, response_lengths=lengths, **options)
    stats = group_statistics(
        rewards,
        advantages,
        mean_lp,
        lens_terms_too=spec.lens_statistics,
        d_imp=options.get("d_imp", "pbar"),
        response_lengths=lengths,
    )

    per_sample = advantages.reshape(-1)[indices].split(exp_len)
    if G > 1:  # as OpenRLHF logs it (the std of one sample is undefined: psr/nsr/w_reinforce allow G = 1)
        group_std = rewards.std(-1, keepdim=True).expand(-1, G).reshape(-1)[indices].split(exp_len)
        for experience, std in zip(experiences, group_std):
            experience.info["group_reward_std"] = std
    for experience, adv in zip(experiences, per_sample):
        for key, value in stats.items():  # batch statistics, one value per sample so OpenRLHF's mean is exact
            experience.info[f"lens/{key}"] = torch.full((len(adv),), float(value))
        reward = compute_reward(
            adv,
            self.kl_ctl.value,
            experience.kl,
            action_mask=experience.action_mask,
            reward_clip_range=args.reward.clip_range,
        )
        experience.returns = self.get_cumulative_returns(reward, experience.action_mask, 1.0)
        experience.advantages = experience.returns.clone()
        experience.info["return"] = reward.sum(dim=-1)
        experience.kl = None
    if spec.trains_on != TRAIN_ALL:
        trained = trained_samples(spec, rewards).reshape(-1)[indices].split(exp_len)
        pad = getattr(getattr(self, "tokenizer", None), "pad_token_id", None) or 0
        experiences = mark_trained(experiences, list(trained), effective_actor_groups(args), pad)
    return experiences
