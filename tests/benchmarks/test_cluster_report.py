"""benchmarks/cluster/report.py on logs this test writes itself, with the scalar names the pinned OpenRLHF logs.

TensorBoard: event files written with ``torch.utils.tensorboard.SummaryWriter`` (what OpenRLHF's
``TensorboardLogger`` uses) under ``<tensorboard_dir>/<run_name>/``, tags ``train/<key>``. W&B: a real offline
run written by the installed wandb (skipped without it), and a ``.wandb`` file framed here (several 32 KiB blocks,
a record split across blocks, system-metric records). Planted values -> asserted medians and ratios.
"""

import importlib.util
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "benchmarks" / "cluster" / "report.py"
RUN_SH = REPO / "benchmarks" / "cluster" / "run.sh"


def _load_report():
    spec = importlib.util.spec_from_file_location("cluster_report_under_test", REPORT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


report = _load_report()

# planted per-step values (step 1 is the warm-up: huge, and must not count)
GRPO = {
    "step_total": [100.0, 10.0, 12.0, 11.0, 13.0],
    "generation": [80.0, 6.0, 7.0, 6.5, 8.0],
    "make_experience": [10.0, 2.0, 2.5, 2.2, 2.4],
    "ppo_train": [9.0, 1.8, 2.3, 2.1, 2.4],
    "broadcast": [1.0, 0.2, 0.2, 0.2, 0.2],
    "neg": [0.50, 0.45, 0.40, 0.35, 0.30],
    "length": [100.0, 200.0, 200.0, 250.0, 250.0],
}
LENS = {
    "step_total": [150.0, 11.0, 13.0, 12.0, 16.0],
    "generation": [90.0, 6.5, 7.5, 7.0, 9.0],
    "make_experience": [20.0, 2.6, 3.0, 2.8, 3.4],
    "ppo_train": [9.0, 1.7, 2.3, 2.0, 3.4],
    "broadcast": [1.0, 0.2, 0.2, 0.2, 0.2],
    "neg": [0.50, 0.44, 0.38, 0.36, 0.28],
    "length": [100.0, 200.0, 200.0, 250.0, 250.0],
}
N_SAMPLES = 512.0


def _tb_scalars(v):
    """{tag: [values per step 1..5]} with the pinned OpenRLHF's names (status keys prefixed by train/)."""
    tags = {
        f"train/timing/{k}": v[k] for k in ("step_total", "generation", "make_experience", "ppo_train", "broadcast")
    }
    tags["train/lens/negative_group_ratio"] = v["neg"]
    tags["train/lens/mixed_group_ratio"] = [1 - x for x in v["neg"]]
    tags["train/lens/all_correct_group_ratio"] = [0.0] * 5
    tags["train/rollout/num_samples"] = [N_SAMPLES] * 5
    tags["train/rollout/response_length_mean"] = v["length"]
    tags["train/rollout/reward_mean"] = [0.2, 0.25, 0.3, 0.35, 0.4]
    tags["train/policy_loss"] = [0.1] * 5
    return tags


def write_tensorboard(tb_dir: Path, run_name: str, v) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tb_dir / run_name))  # OpenRLHF: <tensorboard_dir>/<wandb.run_name>
    for tag, values in _tb_scalars(v).items():
        for step, x in enumerate(values, 1):
            w.add_scalar(tag, x, step)
    w.add_text("train/generated_samples", "Sample:\\nhello\\n\\nReward: 0.0", 1)
    w.close()
    return tb_dir / run_name


@pytest.fixture(scope="module")
def tb_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    write_tensorboard(root / "grpo" / "tensorboard", "grpo", GRPO)
    write_tensorboard(root / "lens" / "tensorboard", "lens", LENS)
    (root / "lens" / "gpu_memory.csv").write_text(
        "2026/01/01 00:00:00.000, 0, 1000, 81559\n2026/01/01 00:00:02.000, 0, 30000, 81559\n"
        "2026/01/01 00:00:02.000, 1, 42000, 81559\n"
    )
    (root / "grpo" / "gpu_memory.csv").write_text(
        "timestamp, index, memory.used [MiB], memory.total [MiB]\n2026/01/01 00:00:00.000, 0, 40000, 81559\n"
    )
    return root


def _median_after_warmup(values):
    return statistics.median(values[1:])


def test_report_numbers_from_tensorboard(tb_runs, tmp_path):
    s = report.build_report(tb_runs / "grpo", tb_runs / "lens", tmp_path / "out", warmup=1)
    g, l, r = s["runs"]["GRPO"], s["runs"]["LENS"], s["lens_over_grpo"]
    assert g["kind"] == "tensorboard" and g["source"].endswith("grpo/tensorboard/grpo")
    assert g["steps_logged"] == [1, 2, 3, 4, 5] and g["steps_used"] == [2, 3, 4, 5]
    # medians over steps 2..5: GRPO step_total 10, 12, 11, 13 -> 11.5; LENS 11, 13, 12, 16 -> 12.5
    assert g["step_total"]["median"] == pytest.approx(11.5)
    assert l["step_total"]["median"] == pytest.approx(12.5)
    assert r["step_total_median"] == pytest.approx(12.5 / 11.5)
    assert r["step_total_mean"] == pytest.approx(
        statistics.fmean(LENS["step_total"][1:]) / statistics.fmean(GRPO["step_total"][1:])
    )
    # make_experience: GRPO 2.0 2.5 2.2 2.4 -> 2.3; LENS 2.6 3.0 2.8 3.4 -> 2.9
    assert g["parts"]["make_experience"]["median"] == pytest.approx(2.3)
    assert r["make_experience_median"] == pytest.approx(2.9 / 2.3)
    for part in ("generation", "ppo_train", "broadcast"):
        assert r["parts_median"][part] == pytest.approx(
            _median_after_warmup(LENS[part]) / _median_after_warmup(GRPO[part])
        )
    # throughput: samples/s = 512 / step_total; tokens/s = 512 * length / step_total (medians of per-step values)
    assert g["throughput"]["samples_per_s"]["median"] == pytest.approx(
        statistics.median([N_SAMPLES / t for t in GRPO["step_total"][1:]])
    )
    assert l["throughput"]["gen_tokens_per_s"]["median"] == pytest.approx(
        statistics.median([N_SAMPLES * n / t for n, t in zip(LENS["length"][1:], LENS["step_total"][1:])])
    )
    assert g["throughput"]["gen_tokens_per_s_generation"]["median"] == pytest.approx(
        statistics.median([N_SAMPLES * n / t for n, t in zip(GRPO["length"][1:], GRPO["generation"][1:])])
    )
    per_tok = lambda v: statistics.median(
        [1000 * t / (N_SAMPLES * n) for n, t in zip(v["length"][1:], v["step_total"][1:])]
    )  # noqa: E731
    assert r["s_per_1k_gen_tokens_median"] == pytest.approx(per_tok(LENS) / per_tok(GRPO))
    # negative groups: mean over steps 2..5
    assert g["negative_group_ratio"]["mean"] == pytest.approx(statistics.fmean(GRPO["neg"][1:]))
    assert l["negative_group_ratio"]["mean"] == pytest.approx(statistics.fmean(LENS["neg"][1:]))
    # GPU memory: peak memory.used in gpu_memory.csv (header line skipped), ratio
    assert g["gpu_memory_peak_mib"] == 40000 and l["gpu_memory_peak_mib"] == 42000
    assert r["gpu_memory_peak"] == pytest.approx(42000 / 40000)

    md = (tmp_path / "out" / "report.md").read_text()
    assert f"**median step time: {12.5 / 11.5:.3f}**" in md
    assert f"**median make_experience time: {2.9 / 2.3:.3f}**" in md
    assert "| 5 | 0.300 | 0.280 |" in md  # the per-step negative-group table covers every step
    png = tmp_path / "out" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["lens_over_grpo"][
        "step_total_median"
    ] == pytest.approx(12.5 / 11.5)


def test_warmup_zero_and_too_few_steps(tb_runs, tmp_path):
    s = report.build_report(tb_runs / "grpo", tb_runs / "lens", tmp_path / "o0", warmup=0, png=False)
    assert s["runs"]["GRPO"]["step_total"]["median"] == pytest.approx(statistics.median(GRPO["step_total"]))
    s = report.build_report(tb_runs / "grpo", tb_runs / "lens", tmp_path / "o9", warmup=9, png=False)
    assert s["runs"]["GRPO"]["steps_used"] == [1, 2, 3, 4, 5]
    assert "warmup 9 ignored" in (tmp_path / "o9" / "report.md").read_text()


def test_cli_writes_report_and_prints_ratio(tb_runs, tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [
            sys.executable,
            str(REPORT),
            "--grpo",
            str(tb_runs / "grpo"),
            "--lens",
            str(tb_runs / "lens"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"LENS / GRPO median step time      {12.5 / 11.5:.3f}" in res.stdout
    assert (out / "report.md").exists() and (out / "report.png").exists() and (out / "summary.json").exists()
    # the same through `python -m benchmarks.cluster.report`, with an error: a missing folder is named
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cluster.report",
            "--grpo",
            str(tmp_path / "nope"),
            "--lens",
            str(tb_runs / "lens"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 2
    assert f"error: GRPO: {tmp_path / 'nope'} does not exist" in res.stderr


# ---------------------------------------------------------------------------------------------------------
# errors name the folder or file
# ---------------------------------------------------------------------------------------------------------
def test_error_empty_folder(tb_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.ReportError, match=r"GRPO: no logs under .*empty.*events\.out\.tfevents"):
        report.build_report(tmp_path / "empty", tb_runs / "lens", tmp_path / "out")


def test_error_event_file_without_scalars(tb_runs, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path / "tb" / "lens"))
    w.add_text("train/generated_samples", "x", 1)
    w.close()
    with pytest.raises(report.ReportError, match=r"LENS: the TensorBoard event files in .*tb/lens .*hold no scalars"):
        report.build_report(tb_runs / "grpo", tmp_path / "tb", tmp_path / "out")


def test_error_two_runs_in_one_folder(tb_runs, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(tb_runs / "grpo" / "tensorboard" / "grpo", both / "grpo")
    shutil.copytree(tb_runs / "lens" / "tensorboard" / "lens", both / "lens")
    with pytest.raises(report.ReportError, match=r"GRPO: .*both holds 2 TensorBoard runs"):
        report.build_report(both, tb_runs / "lens", tmp_path / "out")
    # the run's own folder works
    report.build_report(both / "grpo", tb_runs / "lens", tmp_path / "out", png=False)


def test_error_no_step_time(tb_runs, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path / "tb" / "lens"))
    w.add_scalar("train/policy_loss", 0.1, 1)
    w.close()
    with pytest.raises(report.ReportError, match=r"LENS: .*has no train/timing/step_total .*it has: train/policy_loss"):
        report.build_report(tb_runs / "grpo", tmp_path / "tb", tmp_path / "out")


def test_error_not_a_wandb_file(tb_runs, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "run-x.wandb").write_bytes(b"garbage")
    with pytest.raises(report.ReportError, match=r"LENS: .*run-x\.wandb is not a W&B run file"):
        report.build_report(tb_runs / "grpo", tmp_path / "w", tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------
# W&B
# ---------------------------------------------------------------------------------------------------------
def _wandb_rows(v):
    """What OpenRLHF's WandbLogger.log_train logs per step: train/<key> plus train/global_step."""
    tags = _tb_scalars(v)
    return [{**{t: vals[i] for t, vals in tags.items()}, "train/global_step": i + 1} for i in range(5)]


def write_wandb_file(path: Path, rows, gpu_bytes=(), pad_key_bytes=0):
    """A ``.wandb`` file framed like wandb's LevelDB-style log: 32 KiB blocks, FULL/FIRST/MIDDLE/LAST records."""
    from wandb.proto import wandb_internal_pb2 as pb

    payloads = []
    for step, row in enumerate(rows):
        rec = pb.Record()
        for k, val in row.items():
            item = rec.history.item.add()
            item.key = k
            item.value_json = json.dumps(val)
        item = rec.history.item.add()
        item.key = "_step"
        item.value_json = json.dumps(step)
        if pad_key_bytes:  # a long non-numeric value: makes records span blocks
            item = rec.history.item.add()
            item.key = "train/generated_samples"
            item.value_json = json.dumps("x" * pad_key_bytes)
        rec.history.step.num = step
        payloads.append(rec.SerializeToString())
    for i, b in enumerate(gpu_bytes):
        rec = pb.Record()
        item = rec.stats.item.add()
        item.key = "gpu.0.memoryAllocatedBytes"
        item.value_json = json.dumps(b)
        item = rec.stats.item.add()
        item.key = "gpu.1.memoryAllocated"  # a percentage: not read
        item.value_json = json.dumps(99.0)
        payloads.append(rec.SerializeToString())

    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for data in payloads:
        first = True
        while True:
            left = 32768 - len(out) % 32768
            if left < 7:
                out += b"\0" * left
                continue
            chunk, data = data[: left - 7], data[left - 7 :]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            out += struct.pack("<IHB", 0, len(chunk), kind) + chunk
            first = False
            if not data:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def test_wandb_file_framed_here(tb_runs, tmp_path):
    pytest.importorskip("wandb.proto.wandb_internal_pb2")
    w = write_wandb_file(
        tmp_path / "w" / "offline-run-1" / "run-abc.wandb",
        _wandb_rows(LENS),
        gpu_bytes=[10 * 2**30, 50 * 2**30, 20 * 2**30],
        pad_key_bytes=20000,
    )
    assert w.stat().st_size > 3 * 32768  # records cross block boundaries
    s = report.build_report(tb_runs / "grpo", tmp_path / "w", tmp_path / "out", png=False)
    l = s["runs"]["LENS"]
    assert l["kind"] == "wandb" and l["steps_logged"] == [1, 2, 3, 4, 5]
    assert l["step_total"]["median"] == pytest.approx(12.5)
    assert s["lens_over_grpo"]["make_experience_median"] == pytest.approx(2.9 / 2.3)
    assert l["gpu_memory_peak_mib"] == pytest.approx(50 * 1024)


def test_wandb_history_jsonl(tb_runs, tmp_path):
    p = tmp_path / "j" / "wandb-history.jsonl"
    p.parent.mkdir()
    p.write_text("\n".join(json.dumps({**r, "_step": i}) for i, r in enumerate(_wandb_rows(GRPO))) + "\n")
    s = report.build_report(p.parent, tb_runs / "lens", tmp_path / "out", png=False)
    assert s["runs"]["GRPO"]["kind"] == "wandb-history.jsonl"
    assert s["lens_over_grpo"]["step_total_median"] == pytest.approx(12.5 / 11.5)


WANDB_WRITER = r"""
import json, sys, wandb
rows = json.loads(sys.argv[2])
run = wandb.init(project="lens-bench", name="lens", dir=sys.argv[1], mode="offline")
wandb.define_metric("train/global_step")
wandb.define_metric("train/*", step_metric="train/global_step", step_sync=True)
for _ in range(int(sys.argv[3])):  # enough records to fill several 32 KiB blocks
    for r in rows:
        wandb.log(r)
wandb.finish()
"""


def test_wandb_offline_run_written_by_wandb(tb_runs, tmp_path):
    pytest.importorskip("wandb")
    d = tmp_path / "wb"
    d.mkdir()
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(d),
        "WANDB_DISABLE_GIT": "true",
        "WANDB__SERVICE_WAIT": "60",
    }
    res = subprocess.run(
        [sys.executable, "-c", WANDB_WRITER, str(d), json.dumps(_wandb_rows(LENS)), "40"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    if res.returncode != 0:
        pytest.skip(f"wandb could not write an offline run here: {res.stderr[-500:]}")
    files = list(d.rglob("*.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 32768
    s = report.build_report(tb_runs / "grpo", d, tmp_path / "out", png=False)
    l = s["runs"]["LENS"]
    assert l["kind"] == "wandb" and l["steps_logged"] == [1, 2, 3, 4, 5]  # same steps logged 40 times: last wins
    assert l["step_total"]["median"] == pytest.approx(12.5)
    assert s["lens_over_grpo"]["step_total_median"] == pytest.approx(12.5 / 11.5)


# ---------------------------------------------------------------------------------------------------------
# run.sh: the two jobs differ only in the estimator and where they log
# ---------------------------------------------------------------------------------------------------------
def test_run_sh_dry_run(tmp_path):
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "PREFLIGHT": "0",
        "RAY_ADDRESS": "http://127.0.0.1:8265",
        "MODEL": "/models/qwen",
        "PROMPT_DATA": "/data/train.jsonl",
        "STEPS": "7",
        "ROLLOUT_BATCH": "4",
    }
    res = subprocess.run(
        ["bash", str(RUN_SH), str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    assert res.returncode == 0, res.stderr + res.stdout
    cmds = [l for l in res.stdout.splitlines() if l.startswith("+ ") and " job submit " in l]
    assert len(cmds) == 2, res.stdout
    grpo, lens = cmds
    assert "--algo.advantage.estimator grpo" in grpo and "--algo.advantage.estimator lens" in lens
    assert f"--logger.tensorboard_dir {tmp_path}/out/grpo/tensorboard" in grpo
    assert f"--logger.tensorboard_dir {tmp_path}/out/lens/tensorboard" in lens
    assert "--data.max_samples 28" in grpo  # STEPS x ROLLOUT_BATCH prompts: 7 PPO steps
    assert "--address http://127.0.0.1:8265" in grpo
    assert grpo.endswith(" --algo.advantage.estimator grpo")
    assert lens.endswith(" --algo.advantage.estimator lens --algo.lens.alpha 0.25")

    def common(cmd, name, tail):
        cmd = re.sub(r"--submission-id lens-bench-\w+-\d+", "", cmd[: -len(tail)])
        return cmd.replace(f"/out/{name}/", "/out/X/").replace(
            f"--logger.wandb.run_name {name}", "--logger.wandb.run_name X"
        )

    assert common(grpo, "grpo", " --algo.advantage.estimator grpo") == common(
        lens, "lens", " --algo.advantage.estimator lens --algo.lens.alpha 0.25"
    )
    assert "python -m benchmarks.cluster.report" in res.stdout
