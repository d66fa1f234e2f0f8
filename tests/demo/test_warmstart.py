"""The demo's warm start: transformers' Trainer on the warm-up split of reasoning-gym tasks makes a tiny Qwen2 solve
Level 1 more often than the random model, cached; the answer formats of the warm-up targets.
"""

import json
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.heavy
# ------------------------------------------------------------------------------------------------ warm start
def test_warm_up_solves_level_1_more_often_than_the_random_model(gym_dir, tmp_path, capsys):
    """transformers' Trainer on the warm-up split: Level-1 accuracy (sampled at temperature 1, the gym scorer)
    rises above the random model's; a second call with the same config reuses the cache."""
    from lens_openrlhf.demo import heldout, warmstart

    warm_rows = _rows(gym_dir / "warmup.jsonl")
    level1 = [r for r in _rows(gym_dir / "test.jsonl") if r["level"] == 1]
    cfg = warmstart.WarmStartConfig(steps=150, batch_size=32, lr=3e-3, seed=0, boxed_fraction=1.0)
    said = []
    warm = warmstart.warm_start(tmp_path / "cache", warm_rows, cfg, log=said.append)
    meta = json.loads((warm / "warm_start.json").read_text())
    steps = [x for x in said if x.startswith("[warm start] step ")]
    assert [x.split(":")[0] for x in steps] == [f"[warm start] step {30 * i}/150" for i in range(1, 6)], said
    assert "{'loss'" not in capsys.readouterr().out  # transformers' raw log dicts stay off the console
    assert meta["config"]["steps"] == 150 and meta["train_loss"] > 0
    before = heldout.sample(warm / "init", level1, n=16, seed=0)
    after = heldout.sample(warmstart.model_dir(warm), level1, n=16, seed=0)
    acc = lambda rs: sum(r.c for r in rs) / sum(r.n for r in rs)  # noqa: E731
    boxed = sum(r.boxed for r in after) / sum(r.n for r in after)
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
    from lens_openrlhf.demo import warmstart
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

    from lens_openrlhf.localrun.tiny import build_tiny_model

    hf_tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny", seed=0))
    rows = _rows(gym_dir / "warmup.jsonl")[:40]
    cfg = warmstart.WarmStartConfig(boxed_fraction=0.5)
    data = warmstart._Examples(hf_tok, rows, warmstart.boxed_flags(len(rows), cfg.boxed_fraction, cfg.seed))
    targets = [hf_tok.decode([t for t in x["labels"] if t != -100]) for x in data.items]
    assert (
        sum(t.startswith("\\boxed{") for t in targets) == 20
        and sum(t.startswith("The answer is") for t in targets) == 20
    )
    assert all(t.endswith("<|im_end|>") and r["answer"] in t for t, r in zip(targets, rows))


def test_worked_steps_products_first_then_left_to_right():
    from lens_openrlhf.demo.warmstart import worked_steps

    assert worked_steps("8 + 9 + 9") == "8 + 9 = 17, 17 + 9 = 26. "
    assert worked_steps("3 + 4 * 2") == "4 * 2 = 8, 3 + 8 = 11. "
    assert worked_steps("9 - 2 * 3 - 5") == "2 * 3 = 6, 9 - 6 = 3, 3 - 5 = -2. "
    assert worked_steps("7") == ""
    for bad in ("(1 + 2) * 3", "4 / 2", "1 +"):
        with pytest.raises(ValueError):
            worked_steps(bad)


def test_quick_answers_slip_by_one_and_worked_ones_never():
    from lens_openrlhf.demo.warmstart import target_answers

    rows = [{"answer": str(10 + i)} for i in range(40)]
    shown = [i % 2 == 0 for i in range(40)]  # every other row shows its steps
    got = target_answers(rows, shown, slip_fraction=0.5, seed=3)
    slipped = [i for i, (r, a) in enumerate(zip(rows, got)) if a != r["answer"]]
    assert len(slipped) == 10 and all(not shown[i] for i in slipped)  # half of the 20 quick answers, none worked
    assert all(abs(int(got[i]) - int(rows[i]["answer"])) == 1 for i in slipped)
    assert target_answers(rows, shown, slip_fraction=0.5, seed=3) == got  # chosen by the seed
    assert target_answers(rows, shown, slip_fraction=0.0, seed=3) == [r["answer"] for r in rows]


# ------------------------------------------------------------------------------------------ the default's warm start
def test_digit_noise_replaces_answer_digits_only_and_at_its_rate():
    import random

    from lens_openrlhf.demo.warmstart import noisy_digits

    rng = random.Random(0)
    assert noisy_digits("-123", 0.0, rng) == "-123"
    answers = [str(100 + i % 900) for i in range(2000)]
    noisy = [noisy_digits(a, 0.3, rng) for a in answers]
    assert all(len(n) == len(a) and n.isdigit() for n, a in zip(noisy, answers))
    changed = sum(x != y for a, n in zip(answers, noisy) for x, y in zip(a, n)) / (3 * len(answers))
    assert 0.23 < changed < 0.31, changed  # 0.3 of the digits redrawn, a tenth of them the same digit again
    assert noisy_digits("-7", 1.0, random.Random(1))[0] == "-"  # the sign is not a digit


def test_examples_draw_the_slips_afresh_each_time_and_split_digits(gym_dir, tmp_path):
    """With ``digit_noise`` the same warm-up row is seen with different slips in the boxed answer (never in its
    worked steps or the prompt), so no question keeps one wrong answer; ``split_digits`` makes every digit a token."""
    from transformers import AutoTokenizer

    from lens_openrlhf.demo import warmstart
    from lens_openrlhf.localrun.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", seed=0, corpus=["12345 + 678 = 13023"])
    warmstart._split_digits(tiny)
    tok = AutoTokenizer.from_pretrained(tiny)
    ids = tok("\\boxed{13023}", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids][-6:] == ["1", "3", "0", "2", "3", "}"], [tok.decode([i]) for i in ids]
    rows = [r for r in _rows(gym_dir / "warmup.jsonl") if r["level"] == 3][:20]
    steps = [warmstart.worked_steps(warmstart._expression(r)) for r in rows]
    data = warmstart._Examples(tok, rows, [True] * len(rows), steps=steps, digit_noise=0.5, seed=0)
    clean = warmstart._Examples(tok, rows, [True] * len(rows), steps=steps)
    seen = [[tok.decode([t for t in data[i]["labels"] if t != -100]) for _ in range(6)] for i in range(len(rows))]
    for i, st in enumerate(steps):
        n_prompt = clean.items[i]["labels"].count(-100)
        assert data[i]["input_ids"][:n_prompt] == clean.items[i]["input_ids"][:n_prompt]
        assert all(t.startswith(st + "\\boxed{") and t.endswith("}<|im_end|>") for t in seen[i])
    assert sum(len(set(s)) > 1 for s in seen) >= 15  # six draws of a row differ
    assert [tok.decode([t for t in clean[i]["labels"] if t != -100]) for i in range(3)] == [
        f"{st}\\boxed{{{r['answer']}}}<|im_end|>" for st, r in zip(steps[:3], rows[:3])
    ]


@pytest.mark.heavy
def test_the_default_recipe_gives_a_warm_start_that_samples_worse_than_it_knows(gym_dir, tmp_path):
    """The default setup's warm-up recipe (worked steps, every digit a token, 30% of the boxed digits redrawn), CI-sized
    (levels 1-2, 300 steps): on the problems it trained on, greedy pass@1 is well above sampled pass@1 (the slip that
    RL can remove) and nearly every answer is boxed."""
    from dataclasses import replace

    from lens_openrlhf.demo import heldout, setups, warmstart
    from lens_openrlhf.evaluation.passk import level_table

    cfg = replace(setups.ANSWERS.warmup, levels=(1, 2), steps=300, lr=3e-3)
    assert cfg.split_digits and cfg.stepwise_fraction == 1.0 and cfg.digit_noise == 0.3
    warm_rows = _rows(gym_dir / "warmup.jsonl")
    warm = warmstart.model_dir(warmstart.warm_start(tmp_path / "cache", warm_rows, cfg, log=lambda m: None))
    rows = [r for r in warm_rows if r["level"] in (1, 2)][:64]
    greedy = level_table(heldout.sample(warm, rows, greedy=True, max_new_tokens=40), ks=(1,))["all"]
    sampled = level_table(heldout.sample(warm, rows, n=8, max_new_tokens=40), ks=(1,))["all"]
    print(f"greedy {greedy['pass@1']:.3f}, sampled {sampled['pass@1']:.3f}, boxed {sampled['boxed']:.3f}")
    assert greedy["pass@1"] >= sampled["pass@1"] + 0.15
    assert sampled["boxed"] >= 0.9
