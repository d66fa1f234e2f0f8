"""`ray job submit -- python -m lens_openrlhf.train_ppo_ray --advantage_estimator lens ...` against a real
local Ray head on loopback, started and stopped by this test through its own process handle.

The head has no GPU and the job does not ask for the CPU mode: it must end with a clear message naming
the GPUs it needs (not a traceback, and not Ray waiting forever for a placement group).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from lens_openrlhf.demo import _free_port as free_port

HEAD = textwrap.dedent(
    """
    import signal, sys, time, ray
    ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=int(sys.argv[1]), _temp_dir=sys.argv[2])
    print("READY", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        ray.shutdown()
        print("STOPPED", flush=True)
    """
)


@pytest.fixture(scope="module")
def ray_head():
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="lensray", dir="/tmp")  # short: Ray's socket paths have a length limit
    proc = subprocess.Popen(
        [sys.executable, "-c", HEAD, str(port), temp_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    try:
        deadline = time.time() + 180
        lines = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("READY") or proc.poll() is not None:
                break
        assert lines and lines[-1].startswith("READY"), "".join(lines)[-3000:]
        address = f"http://127.0.0.1:{port}"
        # the job agent can lag the dashboard by a few seconds
        for _ in range(60):
            ok = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "list", "--address", address],
                capture_output=True,
                text=True,
            )
            if ok.returncode == 0:
                break
            time.sleep(1)
        yield address
    finally:
        proc.send_signal(signal.SIGINT)  # our own handle: the head shuts its Ray down and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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
        "--n_samples_per_prompt",
        "4",
        "--vllm_num_engines",
        "1",
        "--actor_num_gpus_per_node",
        "1",
        "--init_kl_coef",
        "0",
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
