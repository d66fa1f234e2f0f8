"""P6 (only with ``LENS_OPENRLHF_CPU_STEP_CHECK=<prefix>``): what each actor rank computes in the PPO update.

``PolicyLoss.forward`` and ``ActorPPOTrainer.training_step`` record, per micro-batch and rank, the tokens,
advantages, per-token log-probs (vLLM's, pi_old, the training forward's), the loss and the gradient norm, in
``<prefix>.rank<r>.jsonl``. A debugging record for tests (AutoTP at tp 2 vs tp 1); off unless asked for.
"""

from __future__ import annotations

import json
import os
from typing import Dict

import torch

from .. import patching
from .profile import ENV_STEP_CHECK

_STEP_CHECK: Dict[str, object] = {}


def policy_loss_forward_recording(self, log_probs, old_log_probs, advantages, *args, **kwargs):
    """P6: ``PolicyLoss.forward``, keeping the training forward's per-token log-probs and the loss."""
    out = patching.original("cpu", "P6a")(self, log_probs, old_log_probs, advantages, *args, **kwargs)
    _STEP_CHECK["loss_call"] = {"log_probs": log_probs.detach().float().cpu(), "loss": float(out[0].detach().float())}
    return out


def training_step_recording(self, experience, kl_ctl, step, loss_batch_info=None):
    """P6: ``ActorPPOTrainer.training_step``, then one record of this micro-batch on this rank.

    Per sample (rows of the micro-batch): the tokens (attention mask applied), the advantages, vLLM's and the
    experience's (pi_old) per-token log-probs and the training forward's (action mask applied); per
    micro-batch: the policy loss, the gradient norm after an optimizer step, and the local shapes of two
    AutoTP-split weights (column- and row-parallel) to show the sharding.
    """
    _STEP_CHECK.pop("loss_call", None)
    status = patching.original("cpu", "P6b")(self, experience, kl_ctl, step, loss_batch_info)
    call = _STEP_CHECK.pop("loss_call")
    mask = experience.action_mask.bool().cpu()

    def rows(t):
        return None if t is None else [r[m].tolist() for r, m in zip(t.detach().float().cpu(), mask)]

    shapes = {
        n: list(p.shape)
        for n, p in self.actor.model.module.named_parameters()
        if n.endswith(("layers.0.self_attn.q_proj.weight", "layers.0.mlp.down_proj.weight"))
    }
    metrics = status["metrics"]
    self._lens_step_check_calls = getattr(self, "_lens_step_check_calls", 0) + 1
    record = {
        "call": self._lens_step_check_calls,
        "rank": torch.distributed.get_rank(),
        "world": torch.distributed.get_world_size(),
        "tp": self.args.ds.tensor_parallel_size,
        "sequences": [
            s[a].tolist() for s, a in zip(experience.sequences.cpu(), experience.attention_mask.bool().cpu())
        ],
        "advantages": rows(experience.advantages),
        "rollout_log_probs": rows(experience.rollout_log_probs),
        "old_log_probs": rows(experience.action_log_probs),
        "log_probs": rows(call["log_probs"]),
        "loss": call["loss"],
        "grad_norm": float(metrics["actor_grad_norm"]) if "actor_grad_norm" in metrics else None,
        "local_shapes": shapes,
    }
    path = f"{os.environ[ENV_STEP_CHECK]}.rank{record['rank']}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return status
