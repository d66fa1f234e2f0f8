"""A cluster user's first run (lens_openrlhf.localrun.rehearsal, examples/scripts/rehearse_on_cpu.sh).

Every script's submission, printed by DRY_RUN=1 from a directory outside the repository, obeys the rules; the rules
catch the mistakes that stopped users; and two scripts (the colocated Qwen2.5-3B recipe and the split-axes AutoTP
recipe) are rehearsed for real: submitted with `ray job submit` to a private Ray head from another directory, then
resubmitted to resume, with nothing left running."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lens_openrlhf.localrun.rehearsal import REPO, split_submission, submission_problems

SCRIPTS = sorted((REPO / "examples" / "scripts").glob("train_*.sh"))
REHEARSE = REPO / "examples" / "scripts" / "rehearse_on_cpu.sh"


def dry_run(script: Path, cwd: Path, *args: str, **env: str) -> list:
    out = subprocess.run(
        ["bash", str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return [line.lstrip("+ ") for line in out.stdout.splitlines() if line.lstrip("+ ").startswith("ray job submit")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_submits_by_the_rules(script, script_submissions):
    line, tmp_path = script_submissions[script.name]
    assert submission_problems(line) == []
    submit, cmd = split_submission(line)
    env = json.loads(
        submit[[i for i, w in enumerate(submit) if w.startswith("--runtime-env-json")][0]].split("=", 1)[1]
    )
    assert env["working_dir"] == str(REPO) and all(e.startswith("/") for e in env["excludes"])
    text = " ".join(cmd)  # the user's relative DATA_DIR and SAVE_DIR, taken from where the script ran
    assert (
        f"--data.prompt_dataset {tmp_path}/data/train_" in text and f"--ckpt.output_dir {tmp_path}/checkpoints/" in text
    )


def test_cluster_benchmark_submits_by_the_rules(tmp_path):
    lines = dry_run(REPO / "benchmarks" / "cluster" / "run.sh", tmp_path, "out")
    assert len(lines) == 2  # GRPO, then LENS
    for line in lines:
        assert submission_problems(line) == []
        assert f"--data.prompt_dataset {tmp_path}/data/train_math_dapo.qwen.jsonl" in line
        assert f"--ckpt.output_dir {tmp_path}/out/" in line


def test_the_rules_catch_what_stopped_users(tmp_path):
    """Each rule fails on the mistake it exists for (the scripts' old submission made each of them)."""
    (line,) = dry_run(SCRIPTS[0], tmp_path)
    submit, cmd = split_submission(line)

    def with_env(env: dict, command=cmd) -> str:
        words = [w for w in submit if not w.startswith("--runtime-env-json")] + [
            f"--runtime-env-json={json.dumps(env)}"
        ]
        return shlex.join(words + ["--"] + command)

    old = {"working_dir": str(REPO), "excludes": ["data", "checkpoints", ".venv"]}  # gitignore-style: any depth
    problems = submission_problems(with_env(old))
    assert any("exclude 'data' is not anchored" in p for p in problems)
    assert any(re.search(r"drop \d+ files of the package, e\.g\. .*lens_openrlhf/data/", p) for p in problems)
    good = {"working_dir": str(REPO), "excludes": ["/data"]}
    relative = [("checkpoints/run" if w.startswith(str(tmp_path) + "/checkpoints") else w) for w in cmd]
    assert any(
        "--ckpt.output_dir checkpoints/run is relative" in p for p in submission_problems(with_env(good, relative))
    )
    missing = [w.replace(str(tmp_path) + "/data/", "data/") for w in cmd]  # relative data, not in the upload
    assert any(re.match(r"--data\.prompt_dataset data/train_math_dapo\.\w+\.jsonl is relative and not inside", p)
               for p in submission_problems(with_env(good, missing)))  # fmt: skip
    other = ["python", "-m", "openrlhf.cli.train_ppo_ray"] + cmd[3:]
    assert any("not `python -m lens_openrlhf.train_ppo_ray" in p for p in submission_problems(with_env(good, other)))


def _rehearse(script: Path, keep: Path) -> str:
    out = subprocess.run(
        ["bash", str(REHEARSE), str(script), "--keep", str(keep)], cwd=keep.parent, capture_output=True, text=True,
        timeout=1800, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    (summary,) = [line for line in out.stdout.splitlines() if line.startswith(f"[rehearsal] {script.name}: PASSED")]
    return summary


@pytest.mark.heavy
def test_rehearse_the_colocated_recipe(tmp_path):
    """train_lens_qwen2.5_3b.sh: ZeRO-3, colocated, sleep; CPU mode says what it stands in for."""
    script = REPO / "examples" / "scripts" / "train_lens_qwen2.5_3b.sh"
    summary = _rehearse(script, tmp_path / "keep")
    assert "(colocated); steps [1, 2] then [3, 4]; checkpoints ['global_step2', 'global_step4']" in summary
    assert "stood in for ds.enable_sleep, train.colocate_all, vllm.enable_sleep" in summary
    save = tmp_path / "keep" / script.stem / "user" / "checkpoints" / "lens_qwen2.5_3b"
    assert (save / "ckpt").is_dir() and list((save / "tensorboard").rglob("events.out.tfevents.*"))
    assert (save / "model.safetensors").is_file()  # the final model, in the user's SAVE_DIR after the job


@pytest.mark.heavy
def test_rehearse_the_split_axes_recipe(tmp_path):
    """train_lens_large_model.sh: AutoTP 2 (DeepSpeed), ZeRO-2, not colocated; packing, dynamic batches and the
    optimizer offload stood in for."""
    script = REPO / "examples" / "scripts" / "train_lens_large_model.sh"
    summary = _rehearse(script, tmp_path / "keep")
    assert "(split axes (AutoTP 2)); steps [1, 2] then [3, 4]" in summary
    for flag in ("ds.adam_offload", "ds.packing_samples", "train.dynamic_batch_enable"):
        assert flag in summary.split("stood in for")[1], summary
