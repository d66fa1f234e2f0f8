"""A record of what each actor rank computes in the PPO update, from inside a real run (tests only).

Set ``LENS_OPENRLHF_STEP_RECORD=<prefix>``, put this folder on ``PYTHONPATH`` and name ``step_record.worker_setup`` in
``LENS_OPENRLHF_WORKER_HOOKS`` (see :func:`job_env`): every Ray worker then applies :data:`TABLE`, whose two entries
wrap ``PolicyLoss.forward`` and ``ActorPPOTrainer.training_step``. Each micro-batch on each rank appends one JSON
line to ``<prefix>.rank<r>.jsonl``: per sample, the tokens (attention mask applied), the advantages, vLLM's and the
experience's (pi_old) per-token log-probs and the training forward's (action mask applied: token-aligned as the loss
sees them); per micro-batch, the policy loss, the gradient norm after an optimizer step, and the local shapes of two
AutoTP-split weights (column- and row-parallel).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

import torch

from lens_openrlhf import patching
from lens_openrlhf.coupling.launch import ENV_EXTRA_HOOKS
from lens_openrlhf.patching import Patch, PatchTable

ENV = "LENS_OPENRLHF_STEP_RECORD"
HERE = Path(__file__).resolve().parent
_CALL: Dict[str, object] = {}


def policy_loss_forward(self, log_probs, old_log_probs, advantages, *args, **kwargs):
    """``PolicyLoss.forward``, keeping the training forward's per-token log-probs and the loss."""
    out = patching.original("step_record", "S1")(self, log_probs, old_log_probs, advantages, *args, **kwargs)
    _CALL["loss_call"] = {"log_probs": log_probs.detach().float().cpu(), "loss": float(out[0].detach().float())}
    return out


def training_step(self, experience, kl_ctl, step, loss_batch_info=None):
    """``ActorPPOTrainer.training_step``, then one record of this micro-batch on this rank."""
    _CALL.pop("loss_call", None)
    status = patching.original("step_record", "S2")(self, experience, kl_ctl, step, loss_batch_info)
    call = _CALL.pop("loss_call")
    mask = experience.action_mask.bool().cpu()

    def rows(t):
        return None if t is None else [r[m].tolist() for r, m in zip(t.detach().float().cpu(), mask)]

    shapes = {
        n: list(p.shape)
        for n, p in self.actor.model.module.named_parameters()
        if n.endswith(("layers.0.self_attn.q_proj.weight", "layers.0.mlp.down_proj.weight"))
    }
    metrics = status["metrics"]
    self._lens_step_record_calls = getattr(self, "_lens_step_record_calls", 0) + 1
    record = {
        "call": self._lens_step_record_calls,
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
    with open(f"{os.environ[ENV]}.rank{record['rank']}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return status


TABLE = PatchTable(
    "step_record",
    (
        Patch(
            "S1",
            "openrlhf.models.loss:PolicyLoss.forward",
            policy_loss_forward,
            "records the training forward's log-probs and loss",
            fingerprint="522fd7190451",
        ),
        Patch(
            "S2",
            "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.training_step",
            training_step,
            "records one micro-batch per rank",
            fingerprint="8027e141c369",
        ),
    ),
)


def worker_setup() -> None:
    """Ray worker hook (``LENS_OPENRLHF_WORKER_HOOKS``): apply the table where ``LENS_OPENRLHF_STEP_RECORD`` is set."""
    if os.environ.get(ENV):
        TABLE.apply()


def job_env(env: Dict[str, str], prefix: Path) -> Dict[str, str]:
    """``env`` for a job whose actor ranks write records to ``<prefix>.rank<r>.jsonl``."""
    env = dict(env)
    env[ENV] = str(prefix)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    env[ENV_EXTRA_HOOKS] = ",".join(filter(None, [env.get(ENV_EXTRA_HOOKS, ""), "step_record.worker_setup"]))
    return env


def read(prefix: Path, rank: int = 0) -> list:
    return [json.loads(line) for line in Path(f"{prefix}.rank{rank}.jsonl").read_text().splitlines() if line.strip()]
