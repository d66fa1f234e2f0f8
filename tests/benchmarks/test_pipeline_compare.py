"""The GRPO-vs-LENS benchmark through the real trainer, CI-sized: one seed, two PPO steps per estimator.

It runs ``benchmarks/pipeline_compare.py`` as a user would (a real, short warm start; real ``train_ppo_ray
--lens.cpu_mode`` runs of group_norm and lens; the held-out measurement of the warm start and of each final
checkpoint) and checks that the report is complete and consistent: every metric a number in range, the comparison
counts and the step-time ratio from the runs it made, a sign-test p-value that one seed allows, the recipe's loss
aggregation in every run's command; then that ``--report-only`` rebuilds the same summary from ``runs.json``.
The sign test itself is checked against exact values.
"""

import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pipeline_compare.py"


def _module():
    spec = importlib.util.spec_from_file_location("pipeline_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "wins, losses, p",
    [(8, 0, 2 / 256), (0, 8, 2 / 256), (7, 1, 0.0703125), (1, 7, 0.0703125), (4, 4, 1.0), (6, 2, 0.2890625)]
    + [(1, 0, 1.0), (1, 1, 1.0), (0, 0, 1.0), (10, 0, 2 / 1024), (9, 1, 22 / 1024)],
)
def test_sign_test_exact_values(wins, losses, p):
    assert math.isclose(_module().sign_test(wins, losses), p, rel_tol=1e-12)


def test_compare_counts_ties_and_missing():
    c = _module().compare([0.1, 0.0, -0.2, None, 0.3])
    assert (c["wins"], c["ties"], c["losses"], c["missing"]) == (2, 1, 1, 1)
    assert math.isclose(c["median_diff"], 0.05) and math.isclose(c["mean_diff"], 0.05)
    assert math.isclose(c["sd_diff"], statistics.stdev([0.1, 0.0, -0.2, 0.3]))
    assert c["sign_test_p"] == 1.0  # 2 wins, 1 loss


@pytest.mark.heavy
def test_pipeline_compare_ci_sized(tmp_path):
    out = tmp_path / "cmp"
    args = ["--out", str(out), "--seeds", "0", "--estimators", "group_norm", "lens"]
    sizes = ["--steps", "2", "--prompts", "4", "--n-samples", "4", "--eval-n", "4", "--warmup-steps", "50"]
    t0 = time.time()
    p = subprocess.run([sys.executable, str(SCRIPT)] + args + sizes, capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"pipeline_compare CI-sized: {time.time() - t0:.0f} s")
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    print(md)
    assert (out / "pipeline_compare.png").stat().st_size > 10_000
    assert "Machine: " in md and "avx512_bf16" in md and "AMX" in md and "pipeline_compare.py --out" in md
    assert "Median PPO step time lens / group_norm" in md and "sign-test p" in md

    cfg, runs, summ = report["config"], report["runs"], report["summary"]
    assert cfg["setup"]["steps"] == 2 and cfg["setup"]["warmup"]["steps"] == 50 and cfg["eval_n"] == 4
    assert sorted((r["estimator"], r["seed"]) for r in runs) == [("group_norm", 0), ("lens", 0)]
    for r in runs:  # the recipe's loss aggregation (eq. 3) reached every job, in OpenRLHF's dotted name
        log = (out / "runs" / f"{r['estimator']}_seed0" / "train.log").read_text()
        assert "--actor.loss_agg_mode seq-mean-token-mean" in log
        assert f"--algo.advantage.estimator {r['estimator']}" in log and "--train.seed 0" in log
    metrics = ("pass@1", "pass@k", "hard_pass@1", "hard_pass@k", "boxed", "acc_among_boxed")
    for m in [report["warm_start_metrics"]] + [r["metrics"] for r in runs]:
        assert set(m) == set(metrics)
        for key in metrics:
            assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, (key, m)
        assert m["pass@1"] <= m["pass@k"] + 1e-12 and m["hard_pass@1"] <= m["hard_pass@k"] + 1e-12
    assert set(report["warm_start_table"]) >= {"all", "levels_4_5", "level_1", "level_5"}
    assert report["heldout_problems"] > 0
    for r in runs:
        assert set(r["table"]) >= {"all", "levels_4_5", "level_1", "level_5"}
        assert r["median_step_seconds"] > 0 and r["wall_seconds"] > 0
    lens = next(r for r in runs if r["estimator"] == "lens")
    base = next(r for r in runs if r["estimator"] == "group_norm")
    for step in ("1", "2"):  # LENS logs its group kinds per step; they partition the groups
        kinds = [
            lens["lens"][k][step] for k in ("negative_group_ratio", "mixed_group_ratio", "all_correct_group_ratio")
        ]
        assert math.isclose(sum(kinds), 1.0, abs_tol=1e-6)

    comp = summ["vs_baseline"]["lens"]
    assert set(comp) == set(metrics)
    for key, c in comp.items():
        assert c["wins"] + c["ties"] + c["losses"] == 1 and c["missing"] == 0
        diff = lens["metrics"][key] - base["metrics"][key]
        assert math.isclose(c["per_seed_diff"][0], diff, abs_tol=1e-12)
        assert math.isclose(c["median_diff"], diff, abs_tol=1e-12) and math.isclose(c["mean_diff"], diff, abs_tol=1e-12)
        assert c["wins"] == (diff > 1e-12) and c["losses"] == (diff < -1e-12)
        assert 0.0 <= c["sign_test_p"] <= 1.0 and c["sign_test_p"] == 1.0  # one pair: a tie, 1-0 or 0-1
    ratio = summ["step_time_ratio"]["lens"]
    assert ratio["median"] > 0

    # common random numbers: both arms share --train.seed and per-sample rollout seeds, so step 1 (same warm start)
    # trained on the very same rollouts; step 2 samples from two different policies
    from lens_openrlhf.tblogs import read_tensorboard

    assert cfg["rollout_seeds"] == "per_sample"
    tb = {e: read_tensorboard(out / "runs" / f"{e}_seed0" / "tensorboard") for e in ("group_norm", "lens")}
    for tag in ("train/reward", "train/rollout/response_length_mean", "train/response_length"):
        assert tb["group_norm"][tag][1] == tb["lens"][tag][1], tag
    assert math.isclose(ratio["median"], lens["median_step_seconds"] / base["median_step_seconds"], rel_tol=1e-9)
    assert ratio["per_seed"] == [ratio["median"]]

    # runs.json holds everything: the report is rebuilt from it without a run
    again = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--report-only"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["summary"] == summ
