"""The GRPO-vs-LENS benchmark through the real trainer, CI-sized: one seed, two PPO steps per estimator.

It runs ``benchmarks/pipeline_compare.py`` as a user would (a real warm-up, real ``train_ppo_ray --lens.cpu_mode``
runs of group_norm and lens) and checks that the report is complete: every figure the README quotes is there
and is a number in range, for both estimators, from the runs it made.
"""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pipeline_compare_ci_sized(tmp_path):
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "pipeline_compare.py"),
        "--out",
        str(out),
        "--seeds",
        "0",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--prompts",
        "4",
        "--n-samples",
        "4",
        "--eval-n",
        "4",
        "--test-per-level",
        "2",
        "--warmup-steps",
        "40",
    ]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"pipeline_compare CI-sized: {time.time() - t0:.0f} s")
    report = json.loads((out / "report.json").read_text())
    assert (out / "pipeline_compare.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "group_norm" in md and "lens" in md and "median step time lens / group_norm" in md

    assert report["config"]["loss_agg_mode"] == "seq-mean-token-mean"  # the default, passed to every run
    for e in ("group_norm", "lens"):
        assert "--actor.loss_agg_mode seq-mean-token-mean" in (out / "runs" / f"{e}_seed0" / "train.log").read_text()

    runs = report["runs"]
    assert sorted((r["estimator"], r["seed"]) for r in runs) == [("group_norm", 0), ("lens", 0)]
    for r in runs:
        assert sorted(map(int, r["pass@1"])) == [
            1,
            2,
        ]  # an evaluation after each step, from the trainer's own logs (JSON: str keys)
        for key in ("pass@1", "pass@4", "levels_4_5_pass@1", "levels_4_5_pass@4", "heldout_no_correct_frac"):
            assert 0.0 <= r["final"][key] <= 1.0, (key, r["final"])
        assert r["final"]["pass@1"] <= r["final"]["pass@4"]
        assert 0.0 <= r["auc_levels_4_5_pass@1"] <= 1.0
        assert r["median_step_seconds"] > 0
    lens = next(r for r in runs if r["estimator"] == "lens")
    # LENS logs its group kinds per step; they partition the groups
    for step in ("1", "2"):
        kinds = [
            lens["lens"][k][step] for k in ("negative_group_ratio", "mixed_group_ratio", "all_correct_group_ratio")
        ]
        assert math.isclose(sum(kinds), 1.0, abs_tol=1e-6)
        assert lens["lens"]["mean_abs_adv_negative"][step] >= 0 and lens["lens"]["mean_abs_adv_mixed"][step] >= 0
    sig = report["summary"].get("advantage_signal", {}).get("lens")
    if sig is not None:  # only when both kinds occurred in these 2 small batches
        assert (
            sig["mean_abs_adv_negative"] >= 0
            and sig["mean_abs_adv_mixed"] > 0
            and 0 <= sig["negative_share_of_abs_adv"] <= 1
        )
        assert "mean |advantage| in negative groups" in md
    summ = report["summary"]
    w = summ["wins_vs_group_norm"]["lens"]
    for m in ("pass@1", "pass@4", "levels_4_5_pass@1", "levels_4_5_pass@4", "auc_levels_4_5_pass@1"):
        assert w[m]["wins"] + w[m]["ties"] + w[m]["losses"] == 1 and len(w[m]["per_seed_diff"]) == 1
    ratio = summ["step_time_ratio_vs_group_norm"]["lens"]
    assert ratio["median"] > 0 and math.isclose(
        ratio["median"],
        lens["median_step_seconds"] / next(r for r in runs if r["estimator"] == "group_norm")["median_step_seconds"],
    )
    before = report["warm_start_before"]
    assert set(before) >= {"all", "levels_4_5", "level_1"}
