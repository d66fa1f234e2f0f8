"""A cluster user's first run, rehearsed on one CPU machine: an example script submitted through ``ray job submit``
exactly as a user submits it, with only the model, the data and the hardware swapped for tiny ones.

    bash examples/scripts/rehearse_on_cpu.sh examples/scripts/train_lens_qwen2.5_3b.sh [--keep DIR]

1. A private Ray head, started as the README says (``ray start --head --num-gpus N``: N logical GPUs for CPU mode),
   on free loopback ports and its own temp dir, so it never touches another cluster.
2. A user directory outside the repository. The documented data command writes the data into its ``data/``
   (``prepare_data.sh --offline-sample``: the sources' own schemas, generated problems, no network).
3. The script, run from that directory as the user runs it: ``DATA_DIR`` and ``SAVE_DIR`` left at the script's
   relative defaults; ``MODEL`` a tiny local model; ``RAY_ADDRESS`` the head; the cluster-size variables at one CPU
   worker per role (:data:`KNOBS`; AutoTP scripts keep a tensor-parallel group of 2); CPU mode and two PPO steps
   through ``EXTRA_FLAGS`` (:data:`CPU_FLAGS`), which come after the recipe's flags and so override its sizes.
4. Checks: the submission obeys :func:`submission_problems` (printed by the script's ``DRY_RUN=1``); the job ends
   SUCCEEDED; its checkpoint and TensorBoard logs (``train/lens/*`` for a LENS estimator) are in the user's
   ``SAVE_DIR`` after the job; then the same script again (``--train.num_episodes 2``) resumes from that checkpoint
   (the global step goes on: 3 and 4); and no process the head started is left.

``benchmarks/cluster/run.sh`` is rehearsed the same way: its two jobs (GRPO, then LENS) and its report, whose LENS/GRPO
ratios must all be filled. The rules of :func:`submission_problems` are what CI checks for every script without
running it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
#: the scripts' cluster-size variables, at one CPU worker per role
KNOBS = {"NODES": "1", "GPUS_PER_NODE": "1", "ACTOR_NODES": "1", "RING": "1", "VLLM_ENGINES": "1", "VLLM_TP": "1"}
#: scripts with training tensor parallelism (AutoTP) keep a group of 2 on 2 CPU ranks (it needs bf16)
AUTOTP_KNOBS = {"GPUS_PER_NODE": "2", "TP": "2"}
AUTOTP_FLAGS = ("--lens.cpu_dtype", "bfloat16")
#: CPU mode and two PPO steps of 2 prompts x 4 samples; an evaluation at step 2; a checkpoint at step 2
CPU_FLAGS = (
    "--lens.cpu_mode --rollout.batch_size 2 --rollout.micro_batch_size 2 --rollout.n_samples_per_prompt 4 "
    "--train.batch_size 8 --train.micro_batch_size 4 --rollout.max_new_tokens 16 --data.max_len 384 "
    "--data.max_samples 4 --train.num_episodes 1 --eval.steps 2 --eval.n_samples_per_prompt 2 --ckpt.save_steps 2"
)
#: the second submission: a second pass over the same 4 prompts, i.e. steps 3 and 4 after the resumed step 2
RESUME_FLAGS = "--train.num_episodes 2"
SUBMIT_TIMEOUT_S = 1200
#: the cluster benchmark (benchmarks/cluster/run.sh: GRPO then LENS, then its report) at the same tiny size, 3 steps
#: each (the first left out of the report's medians); PROMPT_DATA and OUT keep the script's relative defaults
BENCHMARK = Path("benchmarks") / "cluster" / "run.sh"
BENCHMARK_ENV = {
    "STEPS": "3", "WARMUP": "1", "N_SAMPLES": "4", "ROLLOUT_BATCH": "2", "TRAIN_BATCH": "8", "MICRO_TRAIN_BATCH": "4",
    "MICRO_ROLLOUT_BATCH": "2", "MAX_NEW_TOKENS": "16", "MAX_LEN": "384", "ACTOR_GPUS": "1", "VLLM_ENGINES": "1",
}  # fmt: skip
#: the report's ratios that a CPU run cannot fill: no GPU memory to sample (nvidia-smi)
CPU_UNFILLABLE_RATIOS = ("gpu_memory_peak",)


# ------------------------------------------------------------------------------------------------ the rules
def split_submission(line: str) -> tuple:
    """(the ``ray job submit`` words before ``--``, the training command after it) of a script's ``DRY_RUN=1`` line."""
    words = shlex.split(line)
    if words[:3] != ["ray", "job", "submit"] or "--" not in words:
        raise ValueError(f"not a `ray job submit ... -- <command>` line: {line[:200]!r}")
    cut = words.index("--")
    return words[:cut], words[cut + 1 :]


def _option(words: Sequence[str], name: str) -> Optional[str]:
    for i, w in enumerate(words):
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
        if w == name and i + 1 < len(words):
            return words[i + 1]
    return None


def submission_problems(line: str) -> List[str]:
    """What would stop the job a script submits before its first GPU kernel, found from its ``DRY_RUN=1`` line.
    Empty = fine. The rules: the runtime env parses; every exclude is anchored at the working dir's root and
    drops no file of the package; the command is ``python -m lens_openrlhf.train_ppo_ray``; every path the job
    writes is absolute and outside the upload (or excluded from it); every path it reads is absolute, or relative
    and present inside the working dir (the copy every node receives)."""
    from ray._private.runtime_env.packaging import _get_excludes

    from lens_openrlhf.coupling.inputs import INPUT_PATH_FLAGS, OUTPUT_PATH_FLAGS, _entries, _looks_local

    problems: List[str] = []
    try:
        submit, cmd = split_submission(line)
    except ValueError as e:
        return [str(e)]
    raw = _option(submit, "--runtime-env-json")
    try:
        env = json.loads(raw) if raw else {}
    except ValueError as e:
        return [f"--runtime-env-json is not JSON ({e}): {raw!r}"]
    wd = env.get("working_dir")
    wd_path = Path(wd) if wd and os.path.isdir(wd) else None
    if wd and wd_path is None:
        problems.append(f"runtime env working_dir {wd}: no such folder on the submitting machine")
    excludes = list(env.get("excludes", []))
    problems += [
        f"exclude {e!r} is not anchored (write '/{e}'): it matches at any depth" for e in excludes if e[:1] != "/"
    ]
    if wd_path is not None and excludes:
        excluded = _get_excludes(wd_path, excludes)
        lost = [p for p in (wd_path / "lens_openrlhf").rglob("*.py") if excluded(p) or excluded(p.parent)]
        if lost:
            problems.append(f"the excludes {excludes} drop {len(lost)} files of the package, e.g. {lost[0]}")
    if cmd[:3] != ["python", "-m", "lens_openrlhf.train_ppo_ray"]:
        problems.append(f"the command is not `python -m lens_openrlhf.train_ppo_ray ...`: {cmd[:3]}")
        return problems
    for dotted in OUTPUT_PATH_FLAGS:
        value = _option(cmd, "--" + dotted)
        if value is None:
            problems.append(f"--{dotted} is not set: OpenRLHF's default is relative, lost with the job's working dir")
        elif not os.path.isabs(value):
            problems.append(f"--{dotted} {value} is relative: written into Ray's temporary copy, lost with the job")
        elif wd_path is not None and Path(value).is_relative_to(wd_path):
            if not _get_excludes(wd_path, excludes)(Path(value)):
                problems.append(f"--{dotted} {value} is inside the uploaded working_dir and not excluded from it")
    for dotted in INPUT_PATH_FLAGS:
        for entry in _entries(_option(cmd, "--" + dotted)):
            if not (_looks_local(entry) or os.path.isabs(entry)) or os.path.isabs(entry):
                continue  # a hub id, or an absolute path (on several nodes: a shared filesystem)
            if wd_path is None or not (wd_path / entry.split("@")[0]).exists():
                problems.append(
                    f"--{dotted} {entry} is relative and not inside the uploaded working_dir ({wd}): no node has it"
                )
    return problems


# ------------------------------------------------------------------------------------------------ the rehearsal
@dataclass
class Rehearsal:
    """One script's rehearsal under ``root`` (a fresh temporary folder unless given)."""

    script: Path
    root: Path
    log: callable = print
    results: Dict[str, object] = field(default_factory=dict)

    @property
    def user_dir(self) -> Path:
        return self.root / "user"

    def env(self, extra_flags: str, **more: str) -> Dict[str, str]:
        """The user's environment: the venv's python and ray first on PATH, the knobs, the tiny model."""
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(KNOBS)
        if self.autotp:
            env.update(AUTOTP_KNOBS)
        env.update({"MODEL": str(self.root / "model"), "EXTRA_FLAGS": extra_flags, "PYTHON": sys.executable})
        env.update({"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
        env.update(more)
        return env

    def dry_run(self, extra_flags: str) -> str:
        out = self._bash(self.env(extra_flags, DRY_RUN="1"), timeout=300)
        lines = [line for line in out.stdout.splitlines() if line.startswith("ray job submit")]
        if out.returncode != 0 or len(lines) != 1:
            raise RuntimeError(f"DRY_RUN=1 bash {self.script} failed (exit {out.returncode}): {out.stderr[-2000:]}")
        return lines[0]

    @property
    def is_benchmark(self) -> bool:
        return self.script == (REPO / BENCHMARK).resolve()

    def _bash(self, env, timeout: float, log_path: Optional[Path] = None) -> subprocess.CompletedProcess:
        argv = ["bash", str(self.script)] + (["out"] if self.is_benchmark else [])  # run.sh's OUT, relative
        kwargs = dict(cwd=self.user_dir, env=env, text=True, timeout=timeout)
        if log_path is None:
            return subprocess.run(argv, capture_output=True, **kwargs)
        with open(log_path, "w") as f:
            return subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, **kwargs)

    def _prepare(self, flags: str) -> None:
        """The tiny model and, through the documented data command, the user's data/."""
        from lens_openrlhf.localrun.tiny import build_tiny_model

        self.user_dir.mkdir(parents=True, exist_ok=True)
        build_tiny_model(self.root / "model", seed=0, kv_heads=2)  # 2 KV heads: an AutoTP group of 2 splits them
        data = subprocess.run(
            ["bash", str(REPO / "examples" / "scripts" / "prepare_data.sh"), "--offline-sample", "16"],
            cwd=self.user_dir, env=self.env(flags), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if data.returncode != 0:
            raise RuntimeError(f"prepare_data.sh --offline-sample failed: {data.stderr[-2000:]}")

    @contextlib.contextmanager
    def _ray_head(self, gpus: int, env: Dict[str, str]):
        """A private Ray head with ``gpus`` logical GPUs for the body, stopped after it by its own handle; a process of
        the head still alive after the stop is an error (recorded in ``results["leftover_processes"]``)."""
        from lens_openrlhf.localrun.ray_head import LocalRayHead

        temp_dir = Path(tempfile.mkdtemp(prefix="lensrh_", dir="/tmp"))  # short: Ray's socket paths are limited
        head = LocalRayHead(temp_dir, num_cpus=max(os.cpu_count() or 1, gpus + 2), num_gpus=gpus,
                            log_path=self.root / "ray_head.log")  # fmt: skip
        try:
            head.start(env)
            yield head
        finally:
            head.stop()
            shutil.rmtree(temp_dir, ignore_errors=True)
        self.results["leftover_processes"] = head.leftover
        if head.leftover:
            raise RuntimeError(f"processes of the Ray head still alive after it stopped: {head.leftover}")

    def run(self) -> Dict[str, object]:
        if self.is_benchmark:
            return self.run_benchmark()
        t0 = time.time()
        self.user_dir.mkdir(parents=True, exist_ok=True)
        dry = self._bash(dict(os.environ, DRY_RUN="1", PYTHON=sys.executable), timeout=300)
        self.autotp = "--ds.tensor_parallel_size" in dry.stdout
        flags = CPU_FLAGS + (" " + " ".join(AUTOTP_FLAGS) if self.autotp else "")
        self._prepare(flags)
        line = self.dry_run(flags)
        problems = submission_problems(line)
        if problems:
            raise RuntimeError("the submission breaks the rules:\n  " + "\n  ".join(problems))
        cmd = split_submission(line)[1]
        self.results.update(layout="split axes (AutoTP 2)" if self.autotp else "colocated", command=cmd)
        gpus = self._gpus(cmd)
        self.log(f"[rehearsal] {self.script.name}: Ray head with {gpus} logical GPUs, user dir {self.user_dir}")
        save_dir, event_files = Path(_option(cmd, "--ckpt.output_dir")), set()
        with self._ray_head(gpus, self.env(flags)) as head:
            for n, extra in ((1, flags), (2, f"{flags} {RESUME_FLAGS}")):
                sid = f"rehearsal-{n}-{int(time.time())}"
                log_path = self.root / f"submit_{n}.log"
                t = time.time()
                out = self._bash(self.env(extra, RAY_ADDRESS=head.dashboard_url, SUBMISSION_ID=sid), SUBMIT_TIMEOUT_S,
                                 log_path)  # fmt: skip
                status = self._status(head.dashboard_url, sid)
                self.log(f"[rehearsal] submission {n}: {status}, exit {out.returncode}, {time.time() - t:.0f} s")
                if status != "SUCCEEDED" or out.returncode != 0:
                    tail = log_path.read_text()[-4000:]
                    raise RuntimeError(f"submission {n} ended {status} (exit {out.returncode}); its log's end:\n{tail}")
                self.results[f"submission_{n}"] = self._outputs(save_dir, cmd, log_path.read_text(), n, event_files)
        self.results["seconds"] = round(time.time() - t0, 1)
        return self.results

    def run_benchmark(self) -> Dict[str, object]:
        """benchmarks/cluster/run.sh as a user runs it: two submissions (GRPO, then LENS), then the report, whose
        LENS/GRPO ratios must all be filled (except what a CPU cannot measure, :data:`CPU_UNFILLABLE_RATIOS`)."""
        t0, self.autotp = time.time(), False
        extra = "--lens.cpu_mode"
        self._prepare(extra)
        env = self.env(extra, **BENCHMARK_ENV)
        out = self._bash(dict(env, DRY_RUN="1"), timeout=300)
        lines = [ln.lstrip("+ ") for ln in out.stdout.splitlines() if ln.lstrip("+ ").startswith("ray job submit")]
        if out.returncode != 0 or len(lines) != 2:
            raise RuntimeError(f"DRY_RUN=1 bash {self.script} out failed (exit {out.returncode}): {out.stderr[-2000:]}")
        problems = [p for line in lines for p in submission_problems(line)]
        if problems:
            raise RuntimeError("the submission breaks the rules:\n  " + "\n  ".join(problems))
        log_path = self.root / "run.log"
        with self._ray_head(self._gpus(split_submission(lines[0])[1]), env) as head:
            run = self._bash(dict(env, RAY_ADDRESS=head.dashboard_url), 2 * SUBMIT_TIMEOUT_S, log_path)
        if run.returncode != 0:
            raise RuntimeError(f"run.sh exit {run.returncode}; its log's end:\n{log_path.read_text()[-4000:]}")
        summary = json.loads((self.user_dir / "out" / "report" / "summary.json").read_text())
        ratios = summary["lens_over_grpo"]
        flat = {**{k: v for k, v in ratios.items() if k != "parts_median"}, **ratios["parts_median"]}
        empty = sorted(k for k, v in flat.items() if v is None and k not in CPU_UNFILLABLE_RATIOS)
        if empty:
            raise RuntimeError(f"the report's ratios {empty} are empty ({self.user_dir / 'out' / 'report'})")
        self.results.update(layout="the cluster benchmark", ratios=flat, seconds=round(time.time() - t0, 1))
        return self.results

    @staticmethod
    def _gpus(cmd: List[str]) -> int:
        from lens_openrlhf.coupling.parser import parse_args
        from lens_openrlhf.cpu.profile import check_and_default_args
        from lens_openrlhf.cpu_shims import ensure_flash_attn_importable
        from lens_openrlhf.placement import total_gpus

        ensure_flash_attn_importable()
        args = parse_args(cmd[3:])
        check_and_default_args(args)
        return total_gpus(args)

    @staticmethod
    def _status(address: str, sid: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(address).get_job_status(sid).value)

    def _outputs(self, save_dir: Path, cmd: List[str], log_text: str, n: int, seen: set) -> Dict[str, object]:
        """What the job left in the user's SAVE_DIR: checkpoint tags, the steps of its own TensorBoard event files
        (those not in ``seen``, the earlier jobs' files, which it joins) and LENS tags."""
        from lens_openrlhf.estimators import ADV_ESTIMATORS
        from lens_openrlhf.tblogs import read_scalars

        ckpt = Path(_option(cmd, "--ckpt.path"))
        tags = sorted({p.name for p in ckpt.rglob("global_step*") if p.is_dir()}) if ckpt.is_dir() else []
        tb = Path(_option(cmd, "--logger.tensorboard_dir"))
        scalars = read_scalars(tb, label=f"submission {n}")
        lens_tags = sorted(t for t in scalars if t.startswith("train/lens/"))
        files = set(tb.rglob("events.out.tfevents.*")) - seen
        seen.update(files)
        out = {"save_dir": str(save_dir), "checkpoints": tags, "steps": _logged_steps(files), "lens_tags": lens_tags}
        out["stand_ins"] = sorted(set(re.findall(r"--([\w.]+) False \(was True\)", log_text)))
        if not tags:
            raise RuntimeError(f"submission {n}: no checkpoint under {ckpt} after the job")
        if _option(cmd, "--algo.advantage.estimator") in ADV_ESTIMATORS and not lens_tags:
            raise RuntimeError(f"submission {n}: no train/lens/* metric in the TensorBoard logs under {tb}")
        want = [1, 2] if n == 1 else [3, 4]  # the second job resumes at step 2's checkpoint
        if out["steps"] != want or f"global_step{want[-1]}" not in tags:
            raise RuntimeError(f"submission {n}: logged steps {out['steps']} and checkpoints {tags}; expected {want}")
        return out


def _logged_steps(event_files) -> List[int]:
    """The steps at which the given TensorBoard event files hold a scalar."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = set()
    for path in event_files:
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and event.summary.value:
                steps.add(int(event.step))
    return sorted(steps)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="rehearse_on_cpu.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("scripts", nargs="+", type=Path, help="examples/scripts/train_*.sh or benchmarks/cluster/run.sh")
    p.add_argument(
        "--keep", type=Path, default=None, help="rehearse in this folder and keep it (default: a temporary one)"
    )
    a = p.parse_args(argv)
    failed = 0
    for script in a.scripts:
        script = script.resolve()
        root = (a.keep / script.stem) if a.keep else Path(tempfile.mkdtemp(prefix=f"rehearsal_{script.stem}_"))
        try:
            res = Rehearsal(script, root).run()
            if "ratios" in res:
                shown = ", ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items() if v is not None)
                print(
                    f"[rehearsal] {script.name}: PASSED in {res['seconds']:.0f} s ({res['layout']}); LENS/GRPO {shown}"
                )
                continue
            first, second = res["submission_1"], res["submission_2"]
            stood_in = ", ".join(first["stand_ins"]) or "nothing"
            print(
                f"[rehearsal] {script.name}: PASSED in {res['seconds']:.0f} s ({res['layout']}); "
                f"steps {first['steps']} then {second['steps']}; checkpoints {second['checkpoints']} in "
                f"{first['save_dir']}; CPU mode stood in for {stood_in}"
            )
        except Exception as e:  # noqa: BLE001 - one line per failed script, the rest still rehearsed
            failed += 1
            print(f"[rehearsal] {script.name}: FAILED: {e}", file=sys.stderr)
        finally:
            if a.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
