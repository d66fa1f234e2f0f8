"""A local training job (the demo's, the tests', the benchmarks'): the command, its environment, running it for a
person, and ``--submit``.

The command is ``python -m lens_openrlhf.train_ppo_ray`` with the flags of :func:`lens_openrlhf.recipes.cpu`
(OpenRLHF's dotted names) plus whatever the user added; :func:`show_command` prints it so it can be copied.

:class:`TrainingJob` runs it as a child process: everything it prints goes to ``train.log``; the console gets
one line per PPO step and per evaluation (:func:`console_line`), and, when the job fails, its error in one line
and the tail of ``train.log``. SIGTERM or SIGINT to the demo is forwarded to the job, whose driver finishes the
step, checkpoints and stops its Ray actors (``coupling.preemption``); the demo waits for it (at most
``stop_timeout_s``, then kills what remains of the job, by PID) and returns the job's exit status. With
``--submit`` the same command goes through ``ray job submit`` to a private Ray head that the demo starts and
stops (:class:`lens_openrlhf.localrun.ray_head.LocalRayHead`); a signal then stops the submitted job
(``ray job stop``) and the head.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
ENTRY = "lens_openrlhf.train_ppo_ray"
#: console lines are cut to this many characters
MAX_LINE = 200


def command(flags: List[str]) -> List[str]:
    """``python -m lens_openrlhf.train_ppo_ray <flags>`` with this interpreter."""
    return [sys.executable, "-m", ENTRY] + list(flags)


def show_command(cmd: List[str], width: int = MAX_LINE - 4) -> str:
    """The command as a shell line a person can copy: ``python -m ...`` with one flag and its value per line
    (backslash continuations), no line over ``width`` characters where a value allows it."""
    args = cmd[cmd.index(ENTRY) + 1 :] if ENTRY in cmd else cmd
    lines, cur = [f"python -m {ENTRY}"], []
    for a in args:
        if a.startswith("--") and cur:
            lines.append("  " + " ".join(cur))
            cur = []
        cur.append(shlex.quote(a))
    if cur:
        lines.append("  " + " ".join(cur))
    merged: List[str] = [lines[0]]
    for line in lines[1:]:  # pack flags onto lines up to the width
        if len(merged) > 1 and len(merged[-1]) + len(line) - 1 <= width:
            merged[-1] += " " + line.strip()
        else:
            merged.append(line)
    return " \\\n".join(merged)


def job_env(out: Path, sync_check: bool = True) -> Dict[str, str]:
    """The job's environment: offline, no W&B, one reward worker; the actor-vs-vLLM sync check (``sync_check``)."""
    env = dict(os.environ)
    env.setdefault("LENS_MATH_WORKERS", "1")  # one verifier process: 2 cores are busy enough
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop("RAY_ADDRESS", None)
    if sync_check:
        env["LENS_OPENRLHF_CPU_SYNC_CHECK"] = str(out / "sync_check.jsonl")
    return env


# ----------------------------------------------------------------------------------------------------
# the console
# ----------------------------------------------------------------------------------------------------
STEP_KEYS = (
    ("reward", "reward"),
    ("lens/negative_group_ratio", "neg"),
    ("lens/mixed_group_ratio", "mixed"),
    ("lens/all_correct_group_ratio", "all-correct"),
    ("lens/nonzero_adv_frac", "nonzero_adv"),
    ("lens/mean_pbar", "pbar"),
    ("timing/step_total", "s"),
)
EVAL_KEYS = (
    ("unbiased_pass@1", "all"),
    ("unbiased_level_1_pass@1", "Level 1"),
    ("unbiased_level_3_pass@1", "Level 3"),
    ("unbiased_levels_4_5_pass@1", "Levels 4-5"),
)
#: lines of the job's own output shown as they are (cut to MAX_LINE): our own notes and errors
_SHOWN = re.compile(r"^(\[lens_openrlhf|lens_openrlhf[.:\w]*:|\w*Error:|error:)")


def console_line(line: str) -> Optional[str]:
    """What the console shows for one line of the job's output: a compact PPO step or evaluation line, our own
    notes and errors; None for everything else (Ray, vLLM and DeepSpeed logs, progress bars: train.log)."""
    m = re.search(r"Global step (\d+): (\{.*\})", line)
    if m:
        d = _literal(m.group(2))
        if d is None:
            return None
        parts = [f"{name} {d[k]:.3f}" for k, name in STEP_KEYS if isinstance(d.get(k), (int, float))]
        return f"step {m.group(1)}: " + "  ".join(parts)
    e = re.search(r"global_step (\d+), eval_metrics: (\{.*\})", line)
    if e:
        d = _literal(e.group(2))
        got = [f"{name} {d[k]:.3f}" for k, name in EVAL_KEYS if d and isinstance(d.get(k), (int, float))]
        return f"eval after step {e.group(1)}: held-out pass@1 " + "  ".join(got) if got else None
    text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
    text = re.sub(r"^\(\w+ pid=\d+\)\s*", "", text)  # Ray's "(Actor pid=...)" prefix
    return text[:MAX_LINE] if _SHOWN.match(text) else None


def _literal(text: str) -> Optional[dict]:
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return d if isinstance(d, dict) else None


def error_line(log_lines) -> Optional[str]:
    """The last line of the job's log that names an error (``XxxError: ...``, ``error: ...``), cut to MAX_LINE."""
    for line in reversed(list(log_lines)):
        text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if re.search(r"(^|\s)(\w+Error|\w+Exception|error):\s", text):
            return text[:MAX_LINE]
    return None


# ----------------------------------------------------------------------------------------------------
# running it
# ----------------------------------------------------------------------------------------------------
class TrainingJob:
    """Run ``cmd`` as a child process for a person (module docstring): the log to ``log_path``, progress to stdout,
    SIGTERM/SIGINT forwarded to it. ``run()`` returns the job's exit status."""

    def __init__(
        self,
        cmd: List[str],
        env: Dict[str, str],
        log_path: Path,
        *,
        verbose: bool = False,
        t0: Optional[float] = None,
        stop_timeout_s: float = 180.0,
        on_stop=None,
    ):
        self.cmd, self.env, self.log_path, self.verbose = cmd, env, Path(log_path), verbose
        self.t0 = time.time() if t0 is None else t0
        self.stop_timeout_s = stop_timeout_s
        self.on_stop = on_stop  # called (in a thread) on the first signal instead of forwarding it (--submit)
        self.proc: Optional[subprocess.Popen] = None
        self.signalled: Optional[int] = None
        self.tail: deque = deque(maxlen=40)

    def say(self, text: str) -> None:
        print(f"[demo {time.time() - self.t0:6.1f}s] {text}"[: MAX_LINE + 16], flush=True)

    def _handle(self, signum, frame) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        if self.signalled is None:
            self.signalled = signum
            name = signal.Signals(signum).name
            self.say(f"{name}: stopping the job (it finishes its step, checkpoints and stops its actors) ...")
            if self.on_stop is not None:
                threading.Thread(target=self.on_stop, daemon=True).start()
            else:
                self.proc.send_signal(signum)
            threading.Thread(target=self._deadline, daemon=True).start()
        else:  # a second signal: no waiting for the step
            self.say("second signal: killing the job now")
            self._kill_tree()

    def _deadline(self) -> None:
        try:
            self.proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.say(f"the job did not stop within {self.stop_timeout_s:.0f} s: killing it")
            self._kill_tree()

    def _kill_tree(self) -> None:
        """Kill the job and every process it started (by PID: the job's own descendants only)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = root.children(recursive=True) + [root]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    def run(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        with open(self.log_path, "a") as log:
            log.write("$ " + shlex.join(self.cmd) + "\n")
            log.flush()
            # its own session: a terminal's Ctrl-C reaches the demo only, which forwards it to the job's driver (the
            # processes the driver started, Ray's among them, must not get it directly: the driver stops them)
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=str(REPO),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            for s in previous:
                signal.signal(s, self._handle)
            try:
                for line in self.proc.stdout:
                    log.write(line)
                    self.tail.append(line.rstrip("\n"))
                    shown = line.rstrip() if self.verbose else console_line(line)
                    if shown:
                        self.say(shown)
                rc = self.proc.wait()
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)
        if rc != 0 and self.signalled is None:
            err = error_line(self.tail)
            self.say(f"the training job FAILED (exit code {rc})" + (f": {err}" if err else ""))
            print(f"last lines of {self.log_path}:")
            for line in list(self.tail)[-15:]:
                print("  " + re.sub(r"\x1b\[[0-9;]*m", "", line)[:MAX_LINE])
        return rc


def submit(
    cmd: List[str], env: Dict[str, str], out: Path, log_path: Path, num_gpus: int, t0: float, verbose: bool = False
) -> int:
    """``ray job submit`` of ``cmd`` to a private Ray head on 127.0.0.1, started here and stopped afterwards (by its
    own process handle). A SIGTERM/SIGINT stops the submitted job (``ray job stop``) and then the head."""
    import shutil

    from lens_openrlhf.localrun.ray_head import LocalRayHead

    # Ray's temp dir holds unix sockets (path length limit ~107): a short private folder, removed afterwards
    temp_dir = Path(tempfile.mkdtemp(prefix="lensray_", dir="/tmp"))
    head = LocalRayHead(
        temp_dir, num_cpus=max(os.cpu_count() or 1, num_gpus + 2), num_gpus=num_gpus, log_path=out / "ray_head.log"
    )
    ray_bin = str(Path(sys.executable).with_name("ray"))
    job_id = f"lens_demo_{uuid.uuid4().hex[:8]}"
    head_env = dict(env, RAY_JOB_STOP_WAIT_TIME_S=env.get("RAY_JOB_STOP_WAIT_TIME_S", "120"))

    def stop_job():
        subprocess.run(
            [ray_bin, "job", "stop", "--address", head.dashboard_url, job_id],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=200,
        )

    job = TrainingJob(
        [ray_bin, "job", "submit", "--address", "", "--submission-id", job_id, "--"] + cmd,
        env,
        log_path,
        verbose=verbose,
        t0=t0,
        on_stop=stop_job,
    )
    job.say(f"starting a private Ray head on 127.0.0.1 (temp dir {temp_dir}) ...")
    try:
        head.start(head_env)
        job.cmd[4] = head.dashboard_url
        job.say(f"Ray head up; job server {head.dashboard_url}; submission id {job_id}")
        rc = job.run()
        # `ray job submit` exits 0 for a job that `ray job stop` stopped: report the signal, as the local job does
        return 128 + job.signalled if rc == 0 and job.signalled else rc
    finally:
        job.say("stopping the Ray head (its own process handle) ...")
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def job_gpus(cmd: List[str]) -> int:
    """Logical GPUs the CPU-mode job ``cmd`` asks Ray for (``placement.total_gpus`` after CPU mode's defaults)."""
    from lens_openrlhf.coupling.parser import parse_args
    from lens_openrlhf.cpu.profile import check_and_default_args
    from lens_openrlhf.cpu_shims import ensure_flash_attn_importable
    from lens_openrlhf.placement import total_gpus

    ensure_flash_attn_importable()
    args = parse_args(cmd[cmd.index(ENTRY) + 1 :])
    check_and_default_args(args)
    return total_gpus(args)


def clear_outputs(out: Path, keep: Sequence[str] = ()) -> None:
    """Empty ``out`` except the entries named in ``keep`` (the demo keeps its caches)."""
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
