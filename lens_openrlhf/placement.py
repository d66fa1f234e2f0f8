"""Where a job's models go: the GPUs the pinned OpenRLHF's ``train(args)`` asks Ray for, part by part.

One function, :func:`gpus_needed`, mirrors ``train()`` in ``openrlhf/cli/train_ppo_ray.py`` branch by
branch; the GPU check of a cluster, CPU mode's fake logical GPUs, the cluster planner and the demo's Ray head
all count with it. Pure arithmetic on hierarchized args: no imports of the package or of OpenRLHF.
"""

from __future__ import annotations

from typing import Dict


def gpus_needed(args) -> Dict[str, int]:
    """Ray "GPU" resources each part reserves (parts that share another part's placement group count 0).

    As ``train()`` places them: with ``--train.colocate_actor_ref`` or ``--train.colocate_all`` the actor's
    placement group holds the reference (and, colocate_all without async, the vLLM engines; and the critic
    and reward model too, unless ``--train.colocate_critic_reward`` gives them a group of their own); a
    reference exists when ``--algo.kl.init_coef`` > 0; a critic for ``gae`` only (OpenRLHF's main sets
    ``--critic.model_name_or_path`` to None otherwise); a reward model group whenever
    ``--reward.remote_url`` is not given.
    """
    t = args.train
    need: Dict[str, int] = {"actor": args.actor.num_nodes * args.actor.num_gpus_per_node}
    pg = t.colocate_actor_ref or t.colocate_all  # the actor's placement group
    if (args.vllm.num_engines or 0) > 0:
        need["vllm"] = (
            0 if (t.colocate_all and not t.async_enable) else args.vllm.num_engines * args.vllm.tensor_parallel_size
        )
    if args.algo.kl.init_coef > 0:
        need["reference"] = 0 if pg else args.ref.num_nodes * args.ref.num_gpus_per_node
    if not t.colocate_all:
        pg = False
    critic = args.algo.advantage.estimator == "gae"
    if critic and t.colocate_critic_reward:
        need["critic"] = (
            args.critic.num_nodes * args.critic.num_gpus_per_node
        )  # its own group, shared with the reward model
        pg = True
    elif critic:
        need["critic"] = 0 if pg else args.critic.num_nodes * args.critic.num_gpus_per_node
    if not args.reward.remote_url:
        need["reward model"] = 0 if pg else args.reward.num_nodes * args.reward.num_gpus_per_node
    return need


def total_gpus(args) -> int:
    return sum(gpus_needed(args).values())
