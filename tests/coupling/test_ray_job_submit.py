"""`ray job submit -- python -m lens_openrlhf.train_ppo_ray --advantage_estimator lens ...` against a real
local Ray head on loopback, started and stopped by this test through its own process handle.

The head has no GPU and the job does not ask for the CPU mode: it must end with a clear message naming
the GPUs it needs (not a traceback, and not Ray waiting forever for a placement group).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lens_openrlhf.localrun.ray_head import LocalRayHead

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A private Ray head without GPUs (lens_openrlhf.localrun.ray_head, the demo's --submit helper), stopped through
    its own process handle."""
    temp_dir = tempfile.mkdtemp(prefix="lensray", dir="/tmp")  # short: Ray's socket paths have a length limit
    log = tmp_path_factory.mktemp("ray_head") / "ray_head.log"
    head = LocalRayHead(Path(temp_dir), num_cpus=1, num_gpus=0, log_path=log)
    try:
        head.start({**os.environ, "RAY_ADDRESS": ""})
        yield head.dashboard_url
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_without_gpus_ends_with_a_clear_message(ray_head, tmp_path):
    # real files: the driver checks the model folder, prompt file and reward file before it looks at GPUs
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "train.jsonl").write_text('{"prompt": "What is 1 + 1?", "label": "2"}\n')
    (tmp_path / "reward.py").write_text("def reward_func(queries, prompts, labels):\n    raise NotImplementedError\n")
    entry = [
        sys.executable,
        "-m",
        "lens_openrlhf.train_ppo_ray",
        "--advantage_estimator",
        "lens",
        "--pretrain",
        str(tmp_path / "model"),
        "--remote_rm_url",
        str(tmp_path / "reward.py"),
        "--prompt_data",
        str(tmp_path / "train.jsonl"),
        "--input_key",
        "prompt",
        "--label_key",
        "label",
        "--n_samples_per_prompt",
        "4",
        "--vllm_num_engines",
        "1",
        "--actor_num_gpus_per_node",
        "1",
        "--init_kl_coef",
        "0",
        "--save_path",  # absolute: inside a Ray job a relative output would be refused (lost with the job)
        str(tmp_path / "out"),
        "--ckpt_path",
        str(tmp_path / "out" / "ckpt"),
    ]
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    t0 = time.time()
    out = subprocess.run(
        [ray_bin, "job", "submit", "--address", ray_head, "--", *entry],
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "this job needs 2 GPUs in the Ray cluster (actor 1, vllm 1); the cluster has 0" in text, text[-3000:]
    assert "--lens.cpu_mode" in text
    assert "Traceback" not in text, text[-3000:]
    assert time.time() - t0 < 300  # it did not wait for a placement group that can never be placed


def test_job_submit_refuses_a_relative_output(ray_head, tmp_path):
    """Inside `ray job submit` a relative output path would be written into the job's temporary folder and lost:
    the driver refuses it in one line, before it places anything (Ray sets the job's config in its environment)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "train.jsonl").write_text('{"prompt": "What is 1 + 1?", "label": "2"}\n')
    (tmp_path / "reward.py").write_text("def reward_func(queries, prompts, labels):\n    raise NotImplementedError\n")
    entry = [sys.executable, "-m", "lens_openrlhf.train_ppo_ray", "--advantage_estimator", "lens",
             "--pretrain", str(tmp_path / "model"), "--remote_rm_url", str(tmp_path / "reward.py"),
             "--prompt_data", str(tmp_path / "train.jsonl"), "--input_key", "prompt", "--label_key", "label",
             "--n_samples_per_prompt", "4", "--vllm_num_engines", "1", "--save_path", "checkpoints/run",
             "--ckpt_path", str(tmp_path / "ckpt")]  # fmt: skip
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    out = subprocess.run([ray_bin, "job", "submit", "--address", ray_head, "--", *entry], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "error: --ckpt.output_dir checkpoints/run (given, or OpenRLHF's default) is relative" in text, text[-3000:]
    assert "Traceback" not in text
