"""The reasoning-gym reward: right, wrong, malformed answers; loaded by path as OpenRLHF does; a scorer that cannot
import or start is an error (never a silent 0); the time limit kills a stuck scorer.

Real components only: reasoning-gym scores in the reward's worker processes.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lens_openrlhf.rewards import gym_reward

REPO = Path(__file__).resolve().parents[2]


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ reward
def _query(prompt, response):
    return prompt + response


def test_reward_right_wrong_malformed(gym_dir):
    test = _rows(gym_dir / "test.jsonl")
    ba = next(r for r in test if r["task"] == "basic_arithmetic" and r["level"] == 4)
    cs = next(r for r in test if r["task"] == "chain_sum" and r["level"] == 5)
    cases = [  # (row, response, reward, reason)
        (ba, f"\\boxed{{{ba['answer']}}}", 1.0, "correct"),
        (cs, f"so \\boxed{{{int(cs['answer']):,}}}", 1.0, "correct"),  # chain_sum's own scorer strips commas
        (ba, f"\\boxed{{{int(ba['answer']) + 1}}}", 0.0, "wrong"),
        (ba, f"\\boxed{{{ba['answer']} apples}}", 0.0, "partial"),  # reasoning-gym's partial credit is not a win
        (ba, f"The answer is {ba['answer']}", 0.0, "no_boxed"),
        (ba, "\\boxed{}", 0.0, "empty_boxed"),
        (cs, f"\\boxed{{1}} no, \\boxed{{{cs['answer']}}}", 1.0, "correct"),  # the last box counts
    ]
    out = gym_reward.reward_func(
        [_query(r["prompt"], resp) for r, resp, _, _ in cases],
        [r["prompt"] for r, *_ in cases],
        [r["label"] for r, *_ in cases],
    )
    assert out["rewards"].tolist() == [c[2] for c in cases]
    assert out["scores"].tolist() == [c[2] for c in cases]
    for i, (_, _, _, reason) in enumerate(cases):
        assert out["extra_logs"][f"reward/{reason}"][i] == 1.0, (i, reason)
        assert sum(float(v[i]) for k, v in out["extra_logs"].items() if k.split("/")[1] in gym_reward.REASONS) == 1.0
    # a label that is not a reasoning-gym label, or a task reasoning-gym does not know: an error, not a 0
    with pytest.raises(ValueError, match="--label_key"):
        gym_reward.reward_func([_query(ba["prompt"], "\\boxed{3}")], [ba["prompt"]], ["3"])
    with pytest.raises(gym_reward.ScorerUnavailable, match="no task"):
        gym_reward.reward_func(
            [_query(ba["prompt"], "\\boxed{3}")], [ba["prompt"]], [json.dumps({"task": "nope", "answer": "3"})]
        )


def test_reward_loaded_by_path_as_openrlhf_does(gym_dir):
    row = _rows(gym_dir / "test.jsonl")[0]
    spec = importlib.util.spec_from_file_location("reward_func", str(Path(gym_reward.__file__)))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.reward_func([row["prompt"] + f"\\boxed{{{row['answer']}}}"], [row["prompt"]], [row["label"]])
    assert out["rewards"].tolist() == [1.0]


def test_reward_raises_when_reasoning_gym_cannot_import(gym_dir, tmp_path):
    """A reasoning_gym that fails to import (first on the path, as a broken install would be): the reward raises."""
    broken = tmp_path / "broken" / "reasoning_gym"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('simulated broken reasoning-gym install')\n")
    row = _rows(gym_dir / "test.jsonl")[0]
    code = f"""
import json, sys
from lens_openrlhf.rewards import gym_reward
row = json.loads({json.dumps(json.dumps(row))})
try:
    gym_reward.reward_func([row["prompt"] + "\\\\boxed{{1}}"], [row["prompt"]], [row["label"]])
except gym_reward.ScorerUnavailable as e:
    print("RAISED", e)
    sys.exit(0)
print("NO ERROR")
sys.exit(1)
"""
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "broken"))
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120
    )
    assert p.returncode == 0 and "RAISED" in p.stdout and "simulated broken" in p.stdout, p.stdout + p.stderr[-2000:]


WORKERS = r"""
import os, time
from lens_openrlhf.rewards import gym_reward


def cannot_import(conn, inner_timeout_s):
    conn.send(("startup_error", "cannot import reasoning_gym (simulated)"))


def slow(conn, inner_timeout_s):
    # the gym worker, except that the answer "SLOW" makes it hang (a scorer stuck on one answer)
    import reasoning_gym  # noqa: F401  (before "ready", as the real worker does)

    conn.send(("ready", os.getpid()))
    datasets = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        task_id, gold, pred = msg
        if pred == "SLOW":
            time.sleep(3600)
        conn.send((task_id, gym_reward.score_one(datasets, gold, pred), 0.0))
"""


@pytest.fixture()
def workers(tmp_path, monkeypatch):
    """Worker bodies in an importable module (the pool's processes import their target by module name)."""
    (tmp_path / "gym_test_workers.py").write_text(WORKERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gym_test_workers

    yield gym_test_workers
    sys.modules.pop("gym_test_workers", None)


def test_scorer_worker_that_cannot_start_raises(gym_dir, workers):
    """The worker processes cannot import reasoning-gym: WorkerStartError, not a 0."""
    from lens_openrlhf.rewards.verifier import RewardConfig, WorkerStartError

    class NoScorerPool(gym_reward.GymScorerPool):
        worker_target = staticmethod(workers.cannot_import)

    row = _rows(gym_dir / "test.jsonl")[0]
    with NoScorerPool(RewardConfig(workers=1, startup_timeout_s=60)) as pool:
        with pytest.raises(WorkerStartError, match="cannot import"):
            gym_reward.reward_func([row["prompt"] + "\\boxed{1}"], [row["prompt"]], [row["label"]], pool=pool)


def test_reward_time_limit_kills_a_stuck_scorer(gym_dir, workers):
    """An answer whose scoring outlives the deadline scores 0 as ``timeout``; the worker is replaced, the next
    answer scores."""
    from lens_openrlhf.rewards.verifier import RewardConfig

    class SlowPool(gym_reward.GymScorerPool):
        worker_target = staticmethod(workers.slow)

    row = next(r for r in _rows(gym_dir / "test.jsonl") if r["task"] == "chain_sum")
    with SlowPool(RewardConfig(workers=1, timeout_s=2.0)) as pool:
        out = gym_reward.reward_func(
            [row["prompt"] + "\\boxed{SLOW}", row["prompt"] + f"\\boxed{{{row['answer']}}}"],
            [row["prompt"]] * 2,
            [row["label"]] * 2,
            pool=pool,
        )
        assert out["rewards"].tolist() == [0.0, 1.0]
        assert out["extra_logs"]["reward/timeout"].tolist() == [1.0, 0.0]
        assert pool.stats["killed"] == 1
