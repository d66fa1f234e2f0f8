"""``--steps N`` gives N PPO steps, whatever the size of the training pool (lens_openrlhf.demo.setups)."""

from dataclasses import replace
from pathlib import Path

import pytest

from lens_openrlhf.demo import setups


@pytest.mark.parametrize("steps", [8, 7, 2])
def test_steps_the_pool_does_not_divide_are_the_steps_the_job_runs(steps, tmp_path):
    """A 192-prompt pool and 32 prompts per step: 8 steps used to become 2 passes of 6 (12 steps). The job now gets
    one pass over exactly steps x prompts prompts (the pool revisited in reshuffled order), so OpenRLHF's loop
    (``num_episodes`` passes of ``max_samples // rollout batch`` steps, drop_last) runs ``steps``."""
    pool = [{"prompt": f"q{i}", "label": str(i), "level": 1} for i in range(192)]
    setup = replace(setups.ANSWERS, steps=steps, prompts=32)
    rows = setups.prompt_stream(pool, setup.steps * setup.prompts, seed=0)
    assert len(rows) == steps * 32
    assert {r["prompt"] for r in rows} <= {r["prompt"] for r in pool}
    if steps * 32 > len(pool):  # every pool prompt seen once before any is seen twice
        assert {r["prompt"] for r in rows[: len(pool)]} == {r["prompt"] for r in pool}
        assert rows[len(pool) :] != pool[: steps * 32 - len(pool)]  # the second pass is reshuffled
    inputs = setups.Inputs(Path("m"), Path("t.jsonl"), Path("r.py"), max_samples=steps * 32)
    flags = setups.job_flags(setup, inputs, tmp_path, evaluate=False)
    value = lambda name: int(flags[flags.index(name) + 1])  # noqa: E731
    episodes = value("--train.num_episodes")
    per_pass = value("--data.max_samples") // value("--rollout.batch_size")
    assert episodes * per_pass == steps


def test_a_pool_larger_than_the_run_is_taken_in_order():
    pool = [{"prompt": f"q{i}"} for i in range(100)]
    assert setups.prompt_stream(pool, 40, seed=3) == pool[:40]
