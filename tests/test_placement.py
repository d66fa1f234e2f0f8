"""lens_openrlhf.placement.gpus_needed counts what the pinned OpenRLHF's own train(args) reserves.

train() runs for real up to the point where it would start the trainer, with Ray's placement groups, the
actor groups and the vLLM engine factory replaced by recorders; the GPUs they would reserve are summed and
compared with gpus_needed, over layouts that exercise every branch (colocation, critic, reward model)."""

import types

import pytest

from lens_openrlhf import coupling as A
from lens_openrlhf.placement import gpus_needed

BASE = ["--pretrain", "/tmp/none", "--n_samples_per_prompt", "4", "--actor.num_gpus_per_node", "2"]


class _Stop(Exception):
    pass


def reserved_by_train(args, monkeypatch) -> int:
    """GPUs OpenRLHF's train(args) asks Ray for: placement-group bundles, plus actors/engines outside a group."""
    from openrlhf.cli import train_ppo_ray as cli
    from openrlhf.trainer import ppo_trainer, ppo_trainer_async

    total = {"gpus": 0.0}

    def placement_group(bundles, strategy=None):
        total["gpus"] += sum(b.get("GPU", 0) for b in bundles)
        return types.SimpleNamespace(ready=lambda: None)

    class Group:
        def __init__(self, num_nodes, num_gpus_per_node, cls, pg=None, num_gpus_per_actor=1, duplicate_actors=1):
            if pg is None:
                total["gpus"] += num_nodes * num_gpus_per_node * num_gpus_per_actor

    def create_vllm_engines(num_engines, tp, *a, **k):
        pg = a[6]
        if pg is None:
            total["gpus"] += num_engines * tp
        return ["engine"] * num_engines

    class Trainer:
        @staticmethod
        def remote(*a, **k):
            raise _Stop

    monkeypatch.setattr(cli, "placement_group", placement_group)
    monkeypatch.setattr(cli, "RayActorGroup", Group)
    monkeypatch.setattr(cli, "create_vllm_engines", create_vllm_engines)
    monkeypatch.setattr(cli, "get_strategy", lambda args: types.SimpleNamespace(print=lambda *a: None))
    monkeypatch.setattr(cli.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(cli.ray, "get", lambda *a, **k: None)
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", Trainer)
    monkeypatch.setattr(ppo_trainer_async, "PPOTrainerAsync", Trainer)
    with pytest.raises(_Stop):
        cli.train(args)
    return round(total["gpus"])


@pytest.mark.parametrize(
    "flags",
    [
        ["--advantage_estimator", "lens", "--remote_rm_url", "/tmp/r.py", "--vllm_num_engines", "1"],
        [
            "--advantage_estimator",
            "lens",
            "--remote_rm_url",
            "/tmp/r.py",
            "--vllm_num_engines",
            "2",
            "--init_kl_coef",
            "0",
        ],
        [
            "--advantage_estimator",
            "lens",
            "--remote_rm_url",
            "/tmp/r.py",
            "--vllm_num_engines",
            "2",
            "--train.colocate_actor_ref",
            "--ref.num_gpus_per_node",
            "2",
        ],
        [
            "--advantage_estimator",
            "lens",
            "--remote_rm_url",
            "/tmp/r.py",
            "--vllm_num_engines",
            "2",
            "--train.colocate_all",
            "--ref.num_gpus_per_node",
            "2",
        ],
        [
            "--advantage_estimator",
            "lens",
            "--remote_rm_url",
            "/tmp/r.py",
            "--vllm_num_engines",
            "1",
            "--train.colocate_all",
            "--train.async_enable",
            "--ref.num_gpus_per_node",
            "2",
        ],
        # a reward model (no remote reward): its own GPUs
        [
            "--advantage_estimator",
            "group_norm",
            "--reward_pretrain",
            "/tmp/rm",
            "--vllm_num_engines",
            "1",
            "--reward.num_gpus_per_node",
            "1",
            "--init_kl_coef",
            "0",
        ],
        # GAE: a critic; with colocate_critic_reward it shares a group with the reward model
        [
            "--advantage_estimator",
            "gae",
            "--reward_pretrain",
            "/tmp/rm",
            "--vllm_num_engines",
            "1",
            "--critic.num_gpus_per_node",
            "2",
            "--reward.num_gpus_per_node",
            "1",
            "--init_kl_coef",
            "0",
        ],
        [
            "--advantage_estimator",
            "gae",
            "--reward_pretrain",
            "/tmp/rm",
            "--vllm_num_engines",
            "1",
            "--critic.num_gpus_per_node",
            "2",
            "--reward.num_gpus_per_node",
            "2",
            "--train.colocate_critic_reward",
        ],
        [
            "--advantage_estimator",
            "gae",
            "--remote_rm_url",
            "/tmp/r.py",
            "--vllm_num_engines",
            "1",
            "--critic.num_gpus_per_node",
            "1",
            "--train.colocate_all",
            "--ref.num_gpus_per_node",
            "1",
            "--actor.num_gpus_per_node",
            "1",
        ],
    ],
    ids=[
        "kl-ref",
        "no-kl",
        "colocate-actor-ref",
        "colocate-all",
        "colocate-all-async",
        "reward-model",
        "gae",
        "gae-colocate-critic-reward",
        "gae-colocate-all",
    ],
)
def test_gpus_needed_is_what_train_reserves(flags, monkeypatch):
    args = A.parse_args(BASE + flags)
    # what OpenRLHF's __main__ does before train(): a critic for gae only
    is_gae = args.algo.advantage.estimator == "gae"
    args.critic.model_name_or_path = (
        (args.reward.model_name_or_path or args.actor.model_name_or_path) if is_gae else None
    )
    need = gpus_needed(args)
    assert sum(need.values()) == reserved_by_train(args, monkeypatch), need
