"""reasoning-gym tasks as data: levels, the held-out split (no overlap, deterministic), a clear error for a bad task.

Real components only: reasoning-gym generates the problems.
"""

import json
from pathlib import Path


from lens_openrlhf.data import gym as gym_data
from lens_openrlhf.data.cli import main as data_main

REPO = Path(__file__).resolve().parents[2]


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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
    from lens_openrlhf.coupling.eval_metrics import LEVEL_RE as _LEVEL_RE

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
