"""Validation of hierarchized args before Ray, vLLM or a GPU starts: one list of readable errors.

:func:`validate` covers what OpenRLHF would not catch, or would catch late, for the registry's estimators (the
files and paths a job names are :mod:`.inputs`'s). Every flag read here exists in the pinned OpenRLHF's parser and
is read directly (a renamed flag fails loudly, never turns a check off).
"""

from __future__ import annotations

from typing import Dict, List

from ..estimators import ADV_ESTIMATORS, LOGPROB_OPTIONS, LOGPROB_SOURCE, TRAIN_ALL, get_adv_estimator
from .rollout_logprobs import wants_rollout_logprobs

#: the values of ``--algo.lens.logprob_source`` (the registry's ``LOGPROB_SOURCE``)
LOGPROB_SOURCES = LOGPROB_SOURCE.choices


def lens_option_values(args) -> Dict[str, object]:
    """The ``--algo.lens.*`` values the user set (None = not given), from hierarchized args."""
    lens = getattr(getattr(args, "algo", None), "lens", None)
    return {} if lens is None else dict(vars(lens))


def validate_parallelism(args) -> List[str]:
    """Layout errors that the pinned OpenRLHF or DeepSpeed would only hit inside the actors, on the GPUs.

    The actor's GPUs (``num_nodes x num_gpus_per_node``) form a ("dp", "sp", "tp") mesh of
    dp x ring_attn_size x tensor_parallel_size (``DeepspeedStrategy.setup_distributed``); AutoTP training
    (``--ds.tensor_parallel_size``, ``deepspeed.tp_model_init``) needs bf16 (OpenRLHF asserts it). DeepSpeed
    0.19.6 runs AutoTP with ZeRO 0-3 (its engine: "AutoTP + ZeRO stage 3 is supported for both inference
    and training"; its older tutorial still says stages 0-2).
    """
    errors: List[str] = []
    tp, ring = args.ds.tensor_parallel_size, args.ds.ring_attn_size
    world = args.actor.num_nodes * args.actor.num_gpus_per_node
    if tp < 1 or ring < 1:
        return [f"--ds.tensor_parallel_size ({tp}) and --ds.ring_attn_size ({ring}) must be >= 1"]
    if world % (tp * ring):
        errors.append(
            f"the actor's {world} GPUs (--actor.num_nodes x --actor.num_gpus_per_node) are not a multiple of "
            f"--ds.tensor_parallel_size x --ds.ring_attn_size = {tp} x {ring}: DeepSpeed's dp x sp x tp mesh "
            "cannot be built; change one of them"
        )
    elif tp > 1:
        if args.ds.param_dtype != "bf16":
            errors.append(f"--ds.tensor_parallel_size {tp} needs --ds.param_dtype bf16 (OpenRLHF asserts it)")
        dp = world // (tp * ring)
        per_update = args.train.micro_batch_size * dp
        if args.train.batch_size % per_update:
            errors.append(
                f"--train.batch_size {args.train.batch_size} is not a multiple of --train.micro_batch_size x "
                f"data-parallel size = {args.train.micro_batch_size} x {dp} (dp = {world} actor GPUs / "
                f"(tp {tp} x ring {ring})): DeepSpeed's batch check would fail in the actors"
            )
    return errors


def validate(args) -> List[str]:
    """Errors in hierarchized args that OpenRLHF would not catch, or would catch late. Empty = fine."""
    errors: List[str] = validate_parallelism(args)
    name = args.algo.advantage.estimator
    given = {k: v for k, v in lens_option_values(args).items() if v is not None}
    if name not in ADV_ESTIMATORS:
        if given:
            errors.append(
                f"{', '.join('--algo.lens.' + k for k in given)} given with --algo.advantage.estimator {name}, "
                f"which does not use them; LENS estimators: {', '.join(ADV_ESTIMATORS)}"
            )
        return errors
    spec = get_adv_estimator(name)
    source_options = [o.name for o in LOGPROB_OPTIONS] if spec.needs_log_probs else []
    not_taken = sorted(set(given) - set(spec.options) - set(source_options))
    if not_taken:
        takes = ", ".join("--algo.lens." + k for k in list(spec.options) + source_options)
        errors.append(
            f"{', '.join('--algo.lens.' + k for k in not_taken)} not used by --algo.advantage.estimator {name} "
            f"(it takes: {takes or 'no LENS option'})"
        )
    try:
        spec.resolve_options({k: v for k, v in given.items() if k in spec.options})
    except ValueError as e:
        errors.append(f"--algo.lens.*: {e}")
    if args.algo.advantage.gamma != 1:
        errors.append(
            f"--algo.advantage.gamma {args.algo.advantage.gamma:g} with --algo.advantage.estimator {name}: the "
            "outcome reward of a response is its advantage on every token (as OpenRLHF's group_norm computes it, "
            "with gamma 1); a discount only applies to gae/reinforce. Remove --algo.advantage.gamma"
        )
    G = args.rollout.n_samples_per_prompt
    if spec.group_based and G < 2:
        errors.append(
            f"--algo.advantage.estimator {name} compares the samples of a prompt and needs "
            f"--rollout.n_samples_per_prompt >= 2 (got {G}; the paper uses 16)"
        )
    if args.algo.dynamic_filtering_enable and spec.negative_groups_learn:
        lo, hi = args.algo.dynamic_filtering_range
        if not lo < 0:
            errors.append(
                f"--algo.dynamic_filtering_enable with --algo.dynamic_filtering_range {lo} {hi} drops every "
                f"all-incorrect group (mean reward 0 is not > {lo}), which is exactly what {name} learns from: "
                f"remove --algo.dynamic_filtering_enable, or set --algo.dynamic_filtering_range below 0 "
                f"(e.g. -0.01 {hi})"
            )
    if spec.trains_on != TRAIN_ALL:
        for flag, on in (
            ("--train.dynamic_batch_enable", args.train.dynamic_batch_enable),
            ("--train.enable_ema", args.train.enable_ema),
        ):
            if on:
                errors.append(
                    f"{flag} with --algo.advantage.estimator {name}: {name} trains on the {spec.trains_on} samples "
                    "only, in optimizer windows of --train.batch_size kept samples (the last one shorter); "
                    f"{flag} counts windows over the whole buffer. Remove {flag}"
                )
    if spec.bounded_rewards and (
        args.reward.overlong_buffer_len is not None or args.reward.stop_properly_penalty_coef is not None
    ):
        errors.append(
            f"--algo.advantage.estimator {name} needs rewards in [0, 1] (1 correct, 0 incorrect); "
            "--reward.overlong_buffer_len / --reward.stop_properly_penalty_coef push them below 0: remove them"
        )
    if wants_rollout_logprobs(args) and not (args.vllm.num_engines or 0) > 0:
        errors.append(
            "--algo.lens.logprob_source vllm (the default) needs vLLM engines (--vllm.num_engines >= 1); "
            "without vLLM use --algo.lens.logprob_source actor"
        )
    top_p = args.rollout.top_p
    if wants_rollout_logprobs(args) and top_p < 1 and not given.get("allow_truncated_logprobs"):
        errors.append(
            f"--rollout.top_p {top_p:g} with --algo.lens.logprob_source vllm (the default): vLLM's log-probs would "
            "be those of the top-p truncated, renormalised distribution, not the pi_old of the actor and the PPO "
            "ratio, so pbar would be inflated. Use --rollout.top_p 1.0 (the paper's setting), or "
            "--algo.lens.logprob_source actor (pi_old recomputed by the actor); or pass "
            "--algo.lens.allow_truncated_logprobs to accept the truncated distribution on purpose"
        )
    if wants_rollout_logprobs(args) and args.train.partial_rollout_enable:
        errors.append(
            "--train.partial_rollout_enable with --algo.lens.logprob_source vllm (the default): a sample still in "
            "flight at a weight sync holds tokens of two policies, so its pbar would mix them. Use "
            "--algo.lens.logprob_source actor (pi_old recomputed by the actor, one set of weights), or drop "
            "--train.partial_rollout_enable"
        )
    if wants_rollout_logprobs(args) and args.train.agent_func_path:
        errors.append(
            "--train.agent_func_path (multi-turn agents) fills rollout log-probs of environment tokens with 0; "
            "use --algo.lens.logprob_source actor"
        )
    return errors


def resolve_lens_options(args) -> Dict[str, object]:
    """Every ``--algo.lens.*`` value this run uses, once, in the driver (after :func:`validate` passed): the
    estimator's registry options with their defaults applied and checked, the log-prob source options where it needs
    log-probs; None for the options it does not take. The launcher writes them back into the args, so the saved
    args, the console, TensorBoard's hparams and the checkpoints show ``alpha 0.25``, and the actor reads them as
    they are."""
    name = args.algo.advantage.estimator
    given = {k: v for k, v in lens_option_values(args).items() if v is not None}
    out: Dict[str, object] = {k: None for k in lens_option_values(args)}
    if name not in ADV_ESTIMATORS:
        return out
    spec = get_adv_estimator(name)
    out.update(spec.resolve_options({k: v for k, v in given.items() if k in spec.options}))
    if spec.needs_log_probs:
        out.update({o.name: o.type(given.get(o.name, o.default)) for o in LOGPROB_OPTIONS})
    return out
