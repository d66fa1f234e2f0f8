"""reasoning-gym tasks: the data path (levels, held-out split, no overlap), the gym reward (right, wrong,
malformed, scorer unavailable = error), and the warm start (it solves Level 1 more often than the random model).

Real components only: reasoning-gym generates and scores, the reward runs its worker processes, the warm-up
runs transformers' Trainer on a tiny Qwen2 built here.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lens_openrlhf import gym_data
from lens_openrlhf.data import main as data_main
from lens_openrlhf.rewards import gym_reward

REPO = Path(__file__).resolve().parents[1]


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gym_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gym")
    rc = data_main(
        [
            "gym",
            "--out-dir",
            str(out),
            "--train-per-level",
            "40",
            "--test-per-level",
            "8",
            "--seed",
            "3",
            "--warmup-per-level",
            "100",
        ]
    )
    assert rc == 0
    return out


# ------------------------------------------------------------------------------------------------ data
def test_levels_datasource_and_difficulty(gym_dir):
    train, test = _rows(gym_dir / "train.jsonl"), _rows(gym_dir / "test.jsonl")
    for rows, per_level in ((train, 40), (test, 8)):
        seen = {}
        for r in rows:
            assert r["datasource"] == f"{r['task']}_level{r['level']}"
            assert r["prompt"].startswith(r["problem"]) and "\\boxed{}" in r["prompt"]
            label = json.loads(r["label"])
            assert label["task"] == r["task"] and label["answer"] == r["answer"]
            # the row really is at its level's difficulty: reasoning-gym records the config it drew from
            cfg = gym_data.LEVELS[r["task"]][r["level"]]
            meta = label["metadata"]
            assert cfg["min_terms"] <= meta["num_terms"] <= cfg["max_terms"]
            assert cfg["min_digits"] <= meta["num_digits"] <= cfg["max_digits"]
            seen[r["datasource"]] = seen.get(r["datasource"], 0) + 1
        assert set(seen) == {f"{t}_level{lv}" for t in gym_data.TASKS for lv in range(1, 6)}
        assert all(v <= per_level for v in seen.values()) and sum(seen.values()) > 0.9 * per_level * len(seen)
    # harder levels have longer expressions (terms x digits), per task
    for task in gym_data.TASKS:
        size = {
            lv: sum(
                len(json.loads(r["label"])["metadata"]["expression"])
                for r in train
                if r["task"] == task and r["level"] == lv
            )
            / sum(1 for r in train if r["task"] == task and r["level"] == lv)
            for lv in range(1, 6)
        }
        assert size[1] < size[3] < size[5], (task, size)
    # the level reaches the per-level eval: the adapter's parser reads it from the datasource
    from lens_openrlhf.coupling import LEVEL_RE as _LEVEL_RE

    assert {int(_LEVEL_RE.search(r["datasource"]).group(1)) for r in test} == {1, 2, 3, 4, 5}


def test_held_out_split_shares_no_question_and_is_deterministic(gym_dir, tmp_path):
    train, test, warm = (_rows(gym_dir / f"{n}.jsonl") for n in ("train", "test", "warmup"))
    key = lambda r: gym_data.question_key(r["task"], r["problem"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in test}
    assert not {key(r) for r in warm} & {key(r) for r in test}
    assert len({key(r) for r in test}) == len(test) and len({key(r) for r in train}) == len(train)
    # the tiniest space (two one-digit terms) is where a naive split would collide: the test set still has rows there
    assert any(r["datasource"] == "chain_sum_level1" for r in test)
    assert json.loads((gym_dir / "report.json").read_text())["train_test_overlap"] == 0
    # same seed, same files; another seed, other questions
    again = tmp_path / "again"
    assert (
        data_main(
            [
                "gym",
                "--out-dir",
                str(again),
                "--train-per-level",
                "40",
                "--test-per-level",
                "8",
                "--seed",
                "3",
                "--warmup-per-level",
                "100",
            ]
        )
        == 0
    )
    assert (again / "train.jsonl").read_text() == (gym_dir / "train.jsonl").read_text()
    assert (again / "test.jsonl").read_text() == (gym_dir / "test.jsonl").read_text()
    other = gym_data.build(train_per_level=40, test_per_level=8, seed=4)
    assert {key(r) for r in other["test"]} != {key(r) for r in test}


def test_bad_task_is_a_clear_error(tmp_path, capsys):
    assert data_main(["gym", "--out-dir", str(tmp_path), "--tasks", "no_such_task"]) == 2
    assert "--tasks" in capsys.readouterr().err


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
    from lens_openrlhf.rewards.math_reward import RewardConfig, WorkerStartError

    class NoScorerPool(gym_reward.GymScorerPool):
        worker_target = staticmethod(workers.cannot_import)

    row = _rows(gym_dir / "test.jsonl")[0]
    with NoScorerPool(RewardConfig(workers=1, startup_timeout_s=60)) as pool:
        with pytest.raises(WorkerStartError, match="cannot import"):
            gym_reward.reward_func([row["prompt"] + "\\boxed{1}"], [row["prompt"]], [row["label"]], pool=pool)


def test_reward_time_limit_kills_a_stuck_scorer(gym_dir, workers):
    """An answer whose scoring outlives the deadline scores 0 as ``timeout``; the worker is replaced, the next
    answer scores."""
    from lens_openrlhf.rewards.math_reward import RewardConfig

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


# ------------------------------------------------------------------------------------------------ warm start
def test_warm_up_solves_level_1_more_often_than_the_random_model(gym_dir, tmp_path):
    """transformers' Trainer on the warm-up split: Level-1 accuracy (sampled at temperature 1, the gym scorer)
    rises above the random model's; a second call with the same config reuses the cache."""
    from lens_openrlhf import warmstart

    warm_rows = _rows(gym_dir / "warmup.jsonl")
    level1 = [r for r in _rows(gym_dir / "test.jsonl") if r["level"] == 1]
    cfg = warmstart.WarmStartConfig(steps=150, batch_size=32, lr=3e-3, seed=0, boxed_fraction=1.0)
    warm = warmstart.warm_start(tmp_path / "cache", warm_rows, cfg)
    meta = json.loads((warm / "warm_start.json").read_text())
    assert meta["config"]["steps"] == 150 and meta["train_loss"] > 0
    before = warmstart.sample_eval(warm / "init", level1, n=16, seed=0)
    after = warmstart.sample_eval(warmstart.model_dir(warm), level1, n=16, seed=0)
    acc = lambda rs: sum(r["c"] for r in rs) / sum(r["n"] for r in rs)  # noqa: E731
    boxed = sum(r["b"] for r in after) / sum(r["n"] for r in after)
    print(
        f"Level 1 accuracy: random {acc(before):.3f}, warm {acc(after):.3f}; warm boxed {boxed:.2f} "
        f"({meta['seconds']} s warm-up)"
    )
    assert acc(after) > acc(before) + 0.03  # 16 problems x 16 samples; the random model scores ~0
    assert boxed > 0.9  # every warm-up answer was boxed (boxed_fraction 1.0)
    assert warmstart.warm_start(tmp_path / "cache", warm_rows, cfg) == warm  # cached: same folder, not retrained


def test_warmup_answer_formats(gym_dir, tmp_path):
    """``boxed_fraction`` of the warm-up answers are ``\\boxed{N}``, exactly and by seed; the rest are plain
    sentences the gym reward scores 0 (no boxed answer), so RL has a format to learn as well as answers."""
    from lens_openrlhf import warmstart
    from lens_openrlhf.rewards.gym_reward import score_text

    flags = warmstart.boxed_flags(1000, 0.5, seed=0)
    assert sum(flags) == 500 and flags == warmstart.boxed_flags(1000, 0.5, seed=0)
    assert flags != warmstart.boxed_flags(1000, 0.5, seed=1)
    assert all(warmstart.boxed_flags(7, 1.0, seed=3)) and not any(warmstart.boxed_flags(7, 0.0, seed=3))
    tok = type("T", (), {"eos_token": "<|im_end|>"})()
    row = _rows(gym_dir / "test.jsonl")[0]
    boxed, plain = (warmstart.response_text(row["answer"], tok, b) for b in (True, False))
    assert boxed == f"\\boxed{{{row['answer']}}}<|im_end|>" and plain == f"The answer is {row['answer']}.<|im_end|>"
    assert score_text(boxed, row["label"]) == 1.0 and score_text(plain, row["label"]) == 0.0
    # the warm-up's training examples: loss on the response only, half of them boxed with the default config
    from transformers import AutoTokenizer

    from lens_openrlhf.tiny import build_tiny_model

    hf_tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny", seed=0))
    rows = _rows(gym_dir / "warmup.jsonl")[:40]
    cfg = warmstart.WarmStartConfig()
    data = warmstart._Examples(hf_tok, rows, warmstart.boxed_flags(len(rows), cfg.boxed_fraction, cfg.seed))
    targets = [hf_tok.decode([t for t in x["labels"] if t != -100]) for x in data.items]
    assert (
        sum(t.startswith("\\boxed{") for t in targets) == 20
        and sum(t.startswith("The answer is") for t in targets) == 20
    )
    assert all(t.endswith("<|im_end|>") and r["answer"] in t for t, r in zip(targets, rows))
