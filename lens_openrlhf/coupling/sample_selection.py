"""One-class estimators (PSR, NSR): the actor trains on the kept class only (A1's marking, patch B1).

Seed 003's code (RLVR-Decomposed, on verl: ``verl/trainer/ppo/ray_trainer.py``, ``RayPPOTrainer.fit``) cuts the
batch to the kept class before the update: ``batch.subset(correct_idx)`` for PSR (``advantage == 'positive'``),
``batch.subset(incorrect_idx)`` for NSR, then ``drop_extra_rows`` drops ``K mod world_size`` kept samples at
random so that the data-parallel ranks get equal shares. The actor's loss (``compute_policy_loss``, a masked mean
over the response tokens) therefore averages over the kept class's tokens only, whatever the batch's accuracy,
and the dropped samples cost no training forward or backward. Here, in OpenRLHF 0.11.2:

1. In the PPOTrainer actor, A1 (:func:`mark_trained`, called by ``compute_advantages_and_returns``) marks every
   sample ``info["lens/trained"]`` = 1 (kept) or 0 (dropped), from the registry's ``trained_samples``. With
   E > 1 data-parallel actor groups, ``K mod E`` kept samples, chosen at random, are unmarked (as
   ``drop_extra_rows``) and the rollout is re-packed into E experiences, the i-th holding K / E kept samples:
   ``BasePPOTrainer.train_step`` hands the i-th experience of the list to the i-th group
   (``RayActorGroup.async_run_method_batch``, chunks of ceil(len / E)). Every sample stays in the list, so
   OpenRLHF's rollout statistics (``rollout/reward_mean``, ...) still describe the whole rollout.
2. In every policy rank, B1 (:func:`ppo_train`, replacing ``ActorPPOTrainer.ppo_train``) drops the unmarked
   samples from the replay buffer and trains on the K / E kept ones with OpenRLHF's own loop, over micro-batches
   of ``--train.micro_batch_size`` taken in a random order (the last one shorter: none is dropped, where
   OpenRLHF's DataLoader has ``drop_last=True``). Every ``accumulated_gradient`` (gas) micro-batches make one
   optimizer step, normalised by OpenRLHF's ``iter_grad_accum_global_norm`` over that window's tokens (or
   sequences); a last, shorter window makes its own optimizer step (DeepSpeed's
   ``set_gradient_accumulation_boundary``), so no gradient leaks into the next PPO step. ``--train.max_epochs``
   > 1 reuses the same micro-batches in a new order.

Refused with these estimators (validation): ``--train.dynamic_batch_enable`` (it builds its windows from the
full buffer) and ``--train.enable_ema`` (its update count assumes full windows).
"""

from __future__ import annotations

from typing import List

import torch

from .. import patching
from ..estimators import TRAIN_ALL
from .run_plan import run_plan

#: per-sample mark written by A1 and read (and removed) by B1: 1.0 = trained on, 0.0 = dropped
TRAINED_KEY = "lens/trained"
#: per-sample batch statistic: the fraction of the rollout's samples trained on (logged as train/lens/trained_frac)
TRAINED_FRAC_KEY = "lens/trained_frac"


def effective_actor_groups(args) -> int:
    """Data-parallel groups of the policy (OpenRLHF's ``balance_experiences`` and launcher formula)."""
    return args.actor.num_nodes * args.actor.num_gpus_per_node // args.ds.ring_attn_size // args.ds.tensor_parallel_size


def _row(experience, r: int, batch: int):
    """Sample ``r`` of a batched Experience as a one-sample batch (every per-sample field sliced ``[r:r+1]``)."""
    from openrlhf.trainer.ppo_utils.experience import Experience

    def cut(v):
        if isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == batch:
            return v[r : r + 1]
        if isinstance(v, list) and len(v) == batch:
            return [v[r]]
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        return v

    return Experience(**{f: cut(getattr(experience, f)) for f in Experience.__dataclass_fields__})


def mark_trained(experiences: list, trained: List[torch.Tensor], groups: int, pad_token_id: int = 0) -> list:
    """A1's part: mark the samples trained on and give each data-parallel group the same number of them.

    Args:
        experiences: the rollout's Experiences (after advantages). trained: one ``[B_i]`` bool per experience.
        groups: E, the policy's data-parallel groups. pad_token_id: padding of re-packed sequences.
    Returns:
        ``experiences`` (E = 1), or E re-packed Experiences holding every sample, each with K // E kept ones.
    """
    flags = [t.to(torch.float32).clone() for t in trained]
    kept_at = [(e, r) for e, f in enumerate(flags) for r in range(len(f)) if f[r] > 0]
    for j in torch.randperm(len(kept_at))[: len(kept_at) % groups].tolist():
        e, r = kept_at[j]
        flags[e][r] = 0.0
    n = sum(len(f) for f in flags)
    frac = (len(kept_at) - len(kept_at) % groups) / max(n, 1)
    for exp, f in zip(experiences, flags):
        exp.info[TRAINED_KEY] = f
        exp.info[TRAINED_FRAC_KEY] = torch.full((len(f),), frac)
    if groups == 1:
        return experiences
    from openrlhf.trainer.ppo_utils.experience import Experience

    if n < groups:
        raise ValueError(f"{n} samples cannot be shared by {groups} data-parallel actor groups")
    rows = [[] for _ in range(groups)]
    order = [(e, r) for e, f in enumerate(flags) for r in range(len(f)) if f[r] > 0]
    order += [(e, r) for e, f in enumerate(flags) for r in range(len(f)) if f[r] == 0]
    for i, (e, r) in enumerate(order):  # kept samples first, round robin: K // E each; then the rest
        rows[i % groups].append(_row(experiences[e], r, len(flags[e])))
    return [Experience.concat_experiences(group, pad_token_id) for group in rows]


class _MicroBatches:
    """The kept samples as OpenRLHF's DataLoader reads a replay buffer: ``len`` micro-batches, each fetched
    whole (``sample_batch_size`` 1), so ``drop_last`` has nothing to drop."""

    sample_batch_size = 1

    def __init__(self, chunks: list, packing_samples: bool):
        self.chunks = chunks
        self.packing_samples = packing_samples

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list:
        return self.chunks[i]

    def collate_fn(self, batch):
        from openrlhf.trainer.ppo_utils.experience import make_experience_batch

        return make_experience_batch(batch[0], self.packing_samples)


def _is_trained(item, name: str) -> bool:
    flag = item.info.pop(TRAINED_KEY, None)
    if flag is None:
        raise RuntimeError(
            f"--algo.advantage.estimator {name} trains on one class of samples, but a sample in the actor's replay "
            f"buffer carries no '{TRAINED_KEY}' mark: patch A1 did not run in the PPOTrainer process"
        )
    return bool(flag > 0)


def ppo_train(self, kl_ctl: float = 0):
    """``ActorPPOTrainer.ppo_train`` (patch B1): for a one-class estimator, only the kept class is trained on.

    Other estimators: OpenRLHF's method, untouched. One-class estimators: see the module docstring. Adds to the
    returned status ``lens/trained_samples`` (over all data-parallel ranks) and ``lens/optimizer_steps``.
    """
    original = patching.original("coupling", "B1")
    name = self.args.algo.advantage.estimator
    plan = run_plan(self, self.args)
    if plan is None or plan.spec.trains_on == TRAIN_ALL:
        return original(self, kl_ctl)
    if self.args.train.dynamic_batch_enable:
        raise RuntimeError(f"--algo.advantage.estimator {name} cannot run with --train.dynamic_batch_enable")
    buffer = self.replay_buffer
    kept = [item for item in buffer.items if _is_trained(item, name)]
    counts = self.strategy.all_reduce({"most": float(len(kept)), "least": -float(len(kept))}, op="max")
    if counts["most"] != -counts["least"]:
        raise RuntimeError(
            f"the data-parallel ranks hold {-counts['least']:g} to {counts['most']:g} kept samples; A1 gives each "
            "the same number (re-packing the rollout), so the rollout reached the actors another way"
        )
    shuffle = (
        self.strategy.ring_attn_group is None
        and self.args.ds.tensor_parallel_size <= 1
        and not self.args.train.dynamic_batch_enable
    )  # OpenRLHF's own condition: ranks of one ring / tp group must see the same order
    if shuffle:
        kept = [kept[i] for i in torch.randperm(len(kept)).tolist()]
    micro = buffer.sample_batch_size
    chunks = [kept[i : i + micro] for i in range(0, len(kept), micro)]
    gas = max(int(self.strategy.accumulated_gradient), 1)
    engine = self.actor.model

    def training_step(experience, kl_ctl, step, loss_batch_info=None):
        # the window of micro-batch `step` ends at a multiple of gas, or at the last micro-batch
        engine.set_gradient_accumulation_boundary((step + 1) % gas == 0 or step + 1 == len(chunks))
        return type(self).training_step(self, experience, kl_ctl, step, loss_batch_info)

    status = {}
    if chunks:  # (no kept sample on any rank: no update; OpenRLHF's shuffling DataLoader refuses an empty buffer)
        self.replay_buffer = _MicroBatches(chunks, buffer.packing_samples)
        self.training_step = training_step
        try:
            status = original(self, kl_ctl)
        finally:
            self.replay_buffer = buffer
            del self.training_step
            engine.set_gradient_accumulation_boundary(None)
    dp = self.strategy.world_size // (self.args.ds.ring_attn_size * self.args.ds.tensor_parallel_size)
    status["lens/trained_samples"] = float(len(kept) * dp)
    status["lens/optimizer_steps"] = float(-(-len(chunks) // gas) * self.max_epochs)
    return status
