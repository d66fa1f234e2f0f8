"""The demo's training job: its reasoning-gym inputs, the ``lens_openrlhf.train_ppo_ray --lens.cpu_mode``
command, its environment, running it with compact progress lines, and ``--submit`` through a private Ray head."""

from __future__ import annotations

import json
import os
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
    train_batch_size: Optional[int] = None,
) -> List[str]:
    """``python -m lens_openrlhf.train_ppo_ray ...`` for ``steps`` PPO steps (flat flags where they exist).

    With ``eval_data``: an evaluation every ``eval_steps`` steps (default: once, after the last step) with
    ``eval_n_samples`` samples per prompt (default ``n_samples``), temperature 1. ``train_batch_size``: samples
    per optimizer step (default: the whole rollout, ``prompts * n_samples``, one step per PPO step; a quarter of
    it gives 4 steps, PPO-clipped against the rollout's log-probs).
    """
    train_batch_size = train_batch_size or prompts * n_samples
    if (prompts * n_samples) % train_batch_size:
        raise ValueError(f"train_batch_size {train_batch_size} must divide the rollout's {prompts * n_samples} samples")
    evaluation = (
        []
        if eval_data is None
        else [
            "--eval_dataset",
            str(eval_data),
            "--eval_steps",
            str(eval_steps or steps),
            "--eval.n_samples_per_prompt",
            str(eval_n_samples or n_samples),
            "--eval.temperature",
            "1.0",
            "--ckpt.best_metric_key",
            "none",  # no extra "best" checkpoint
        ]
    )
    return (
        [
            sys.executable,
            "-m",
            "lens_openrlhf.train_ppo_ray",
            "--lens.cpu_mode",
            "--advantage_estimator",
            estimator,
            "--pretrain",
            str(model),
            "--prompt_data",
            str(data),
            "--input_key",
            "prompt",
            "--label_key",
            "label",
            "--apply_chat_template",
            "--remote_rm_url",
            str(reward),
            "--n_samples_per_prompt",
            str(n_samples),
            "--rollout_batch_size",
            str(prompts),
            "--micro_rollout_batch_size",
            str(prompts),
            "--train_batch_size",
            str(train_batch_size),
            "--micro_train_batch_size",
            str(min(micro_train_batch_size or 8, train_batch_size)),
            "--max_epochs",
            "1",
            "--num_episodes",
            "1",
            "--max_samples",
            str(steps * prompts),
            "--generate_max_len",
            str(max_new_tokens),
            "--data.max_len",
            str(prompt_max_len + max_new_tokens),
            "--temperature",
            "1.0",
            "--actor_learning_rate",
            str(lr),
            "--lr_warmup_ratio",
            "0",
            "--actor.lr_scheduler",
            "constant",  # a few steps: no decay
            "--init_kl_coef",
            "0",
            "--zero_stage",
            str(zero_stage),
            "--bf16",
            "--vllm_num_engines",
            "1",
            "--vllm_gpu_memory_utilization",
            "0.5",
            "--actor_num_gpus_per_node",
            "1",
            "--ref_num_gpus_per_node",
            "1",
            "--seed",
            str(seed),
            "--save_path",
            str(out / "checkpoint"),
            "--ckpt_path",
            str(out / "ckpt"),
            "--save_steps",
            str(steps),
            "--logging_steps",
            "1",
            "--use_tensorboard",
            str(out / "tensorboard"),
            "--wandb_run_name",
            RUN_NAME,
        ]
        + evaluation
        + list(extra or [])
    )


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


PROGRESS_MARKS = (
    "Global step",
    "eval_metrics",
    "lens_openrlhf",
    "Error",
    "error:",
    "Traceback",
    "Episode [",
    "Saving",
    "save_model",
)
STEP_KEYS = (
    ("reward", "reward"),
    ("lens/negative_group_ratio", "neg"),
    ("lens/mixed_group_ratio", "mixed"),
    ("lens/all_correct_group_ratio", "all-correct"),
    ("lens/nonzero_adv_frac", "nonzero_adv"),
    ("lens/mean_pbar", "pbar"),
    ("timing/step_total", "step_s"),
)


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
        keys = [
            ("unbiased_pass@1", "all"),
            ("unbiased_level_1_pass@1", "Level 1"),
            ("unbiased_levels_4_5_pass@1", "Levels 4-5"),
        ]
        got = [f"{name} {d[k]:.3f}" for k, name in keys if isinstance(d.get(k), (int, float))]
        return f"eval after step {e.group(1)}: held-out pass@1 " + "  ".join(got) if got else None
    try:
        d = ast.literal_eval(m.group(2))
    except (ValueError, SyntaxError):
        return None
    parts = [f"{name} {d[k]:.3f}" for k, name in STEP_KEYS if isinstance(d.get(k), (int, float))]
    return f"step {m.group(1)}: " + "  ".join(parts)


def run_streaming(
    cmd: List[str], env: Dict[str, str], log_path: Path, echo_all: bool = False, t0: Optional[float] = None
) -> int:
    """Run ``cmd``, everything to ``log_path``, progress lines to stdout. Returns the exit code."""
    t0 = time.time() if t0 is None else t0
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
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


def submit(
    cmd: List[str], env: Dict[str, str], out: Path, log_path: Path, num_gpus: int, t0: Optional[float] = None
) -> int:
    # Ray's temp dir holds unix sockets (path length limit ~107): a short private folder, removed afterwards
    temp_dir = Path(tempfile.mkdtemp(prefix="lensray_", dir="/tmp"))
    head = LocalRayHead(
        temp_dir, num_cpus=max(os.cpu_count() or 1, num_gpus + 2), num_gpus=num_gpus, log_path=out / "ray_head.log"
    )
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
# the inputs of the embedded default: reasoning-gym tasks and their reward
# ----------------------------------------------------------------------------------------------------
GYM_TASKS = ("basic_arithmetic", "chain_sum")


def prepare_gym_data(
    data_dir: Path, seed: int = 0, train_per_level: int = 64, test_per_level: int = 10, warmup_per_level: int = 1000
) -> Dict[str, Path]:
    """train.jsonl / test.jsonl / warmup.jsonl of reasoning-gym tasks at levels 1-5
    (``python -m lens_openrlhf.data gym``)."""
    from lens_openrlhf import gym_data

    rep = gym_data.write(
        data_dir,
        tasks=GYM_TASKS,
        levels=(1, 2, 3, 4, 5),
        train_per_level=train_per_level,
        test_per_level=test_per_level,
        seed=seed,
        warmup_per_level=warmup_per_level,
        warmup_levels=(1, 2, 3),
    )
    if rep["train_test_overlap"]:
        raise RuntimeError(f"reasoning-gym data: {rep['train_test_overlap']} questions in both train and test")
    return {
        "train": Path(rep["train"]["path"]),
        "test": Path(rep["test"]["path"]),
        "warmup": Path(rep["warmup"]["path"]),
    }


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
