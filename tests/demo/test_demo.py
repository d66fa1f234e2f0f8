"""The demo (``python -m lens_openrlhf.demo``): its console is for a person, its command can be copied, and stopping it
stops everything it started.

The runs use ``--all-negative`` (a random tiny model on the synthetic set: the quickest real job, every group all
incorrect) so that a full demo costs about a minute here.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lens_openrlhf.localrun import job
from lens_openrlhf.localrun.job import MAX_LINE, console_line, error_line, show_command

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ console
def test_console_keeps_steps_evals_notes_and_errors_only():
    step = "Global step 3: {'reward': 0.25, 'lens/negative_group_ratio': 0.5, 'timing/step_total': 2.5, 'x': 1}"
    assert console_line(step) == "step 3: reward 0.250  neg 0.500  s 2.500"
    ev = "global_step 12, eval_metrics: {'unbiased_pass@1': 0.2, 'unbiased_level_1_pass@1': 0.5, 'other': 3}"
    assert console_line(ev) == "eval after step 12: held-out pass@1 all 0.200  Level 1 0.500"
    for noise in (
        "\x1b[36m(PPOTrainer pid=123)\x1b[0m INFO 12-04 17:42:22 agent.py:199] Loading custom reward_func",
        "namespace(ref=namespace(num_nodes=1, num_gpus_per_node=1), reward=namespace(...))",
        "Generate samples:  75%|███████▌  | 24/32 [00:01<00:00, 25.61it/s]",
        "[2026-12-04 17:39:58,769] [WARNING] [real_accelerator.py:199:get_accelerator] Setting accelerator to CPU.",
    ):
        assert console_line(noise) is None, noise
    note = "[lens_openrlhf CPU mode] compute dtype float32: this CPU has no bf16 units " + "x" * 300
    assert console_line(note).startswith("[lens_openrlhf CPU mode] compute dtype") and len(console_line(note)) == 200
    err = "\x1b[36m(PolicyModelActor pid=9)\x1b[0m RuntimeError: the reward function raised"
    assert console_line(err) == "RuntimeError: the reward function raised"
    assert error_line(["ok", "lens_openrlhf.train_ppo_ray: error: --actor.model_name_or_path is required", "x"]) == (
        "lens_openrlhf.train_ppo_ray: error: --actor.model_name_or_path is required"
    )


def test_the_printed_command_is_the_command():
    cmd = job.command(["--lens.cpu_mode", "--data.prompt_dataset", "/a b/train.jsonl", "--actor.adam.lr", "1e-05"])
    cmd += ["--algo.advantage.estimator", "lens", "--logger.tensorboard_dir", "/x/" + "t" * 250]
    text = show_command(cmd)
    assert shlex.split(text.replace("\\\n", " ")) == ["python", "-m", "lens_openrlhf.train_ppo_ray"] + cmd[3:]
    lines = text.splitlines()
    assert all(len(x) <= MAX_LINE for x in lines[:-1]) and lines[-1].startswith("  --logger.tensorboard_dir")


# ------------------------------------------------------------------------------------------------ a whole demo
def _demo(out: Path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "lens_openrlhf.demo", "--all-negative", "--out", str(out), *extra],
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.heavy
def test_a_whole_demo_prints_for_a_person(tmp_path):
    """A whole demo, through `ray job submit` to the private Ray head it starts (the job path the GPU quick start
    uses): a console for a person, the job really went through the job server, and the head is gone afterwards."""
    proc = _demo(tmp_path / "out", "--steps", "2", "--submit")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    lines = out.splitlines()
    assert all(len(x) <= MAX_LINE + 16 for x in lines), max(lines, key=len)  # "[demo  123.4s] " + 200 at most
    assert any(" step 1: reward " in x for x in lines) and any(" step 2: reward " in x for x in lines)
    assert "python -m lens_openrlhf.train_ppo_ray \\" in out and "--lens.cpu_mode" in out
    assert "compute dtype " in out  # CPU mode's one line on its dtype
    for noise in ("INFO", "namespace(", "Generate samples", "it/s]", "{'loss'"):
        assert noise not in out, noise
    log = (tmp_path / "out" / "train.log").read_text()
    assert "namespace(" in log and "Global step 1" in log  # everything else went to the log
    job_id = out.split("submission id ")[1].split()[0]
    assert f"Job '{job_id}' succeeded" in log, log[-3000:]  # it really went through the job server
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["exit_code"] == 0 and list(metrics["scalars"]["train/lens/negative_group_ratio"]) == ["1", "2"]
    assert metrics["sync_check"] and metrics["sync_check"][0]["max_abs_diff_after"] < 0.02  # actor == vLLM
    assert (tmp_path / "out" / "checkpoint" / "model.safetensors").is_file() and "training log:" in out
    temp_dir = [x for x in lines if "starting a private Ray head" in x][0].split("temp dir ")[1].split(")")[0]
    assert not os.path.exists(temp_dir), "the demo's Ray temp dir was not removed"
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
    assert not left, f"processes of the demo's Ray head still alive: {left}"


def _descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop_after_step_one(proc, deadline_s=600):
    """Read the demo's console until its first PPO step, then SIGTERM it; (lines, processes it had started)."""
    lines, t0 = [], time.time()
    for line in proc.stdout:
        lines.append(line.rstrip())
        if " step 1: reward " in line:
            break
        assert time.time() - t0 < deadline_s, "\n".join(lines[-30:])
    started = _descendants(proc.pid)
    assert len(started) >= 5, started  # the job's driver, Ray's processes, the actors and the engine
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=400)
    return lines + rest.splitlines(), started


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["local", "submit"])
def test_sigterm_stops_the_demo_and_everything_it_started(tmp_path, mode):
    """SIGTERM to the demo (as `timeout`, a scheduler or a container stop sends it): the job finishes its step,
    checkpoints and stops its actors; the demo exits with the job's status and no process it started is left."""
    proc = _demo(tmp_path / "out", "--steps", "30", *(["--submit"] if mode == "submit" else []))
    lines, started = _stop_after_step_one(proc)
    text = "\n".join(lines)
    assert proc.returncode != 0, text[-3000:]
    if mode == "local":
        assert proc.returncode == 143, text[-3000:]  # the job's own status: 128 + SIGTERM
        assert list((tmp_path / "out" / "ckpt" / "_actor").glob("global_step*")), text[-3000:]
    assert "SIGTERM: stopping the job" in text
    gone, alive = psutil.wait_procs(started, timeout=60)
    assert not alive, [(p.pid, p.name()) for p in alive]
