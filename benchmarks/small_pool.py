"""Sanity check (b) of an RLVR pipeline, through the real trainer: on a small training pool the training reward rises
well above its start, as the policy sharpens toward its pass@k on those questions.

    .venv/bin/python benchmarks/small_pool.py [--pool 4] [--steps 40] [--lr 1e-4] [--out outputs/small_pool]

The demo's warm start and data (:func:`lens_openrlhf.demo.setups.prepare`), but RL on a pool of ``--pool`` problems
per task and level (levels 1-2, two tasks: 16 problems by default), every step a rollout of all of them x 8 samples,
through the demo's training job (``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode ...``, LENS). Printed: the
training reward per step and its means over blocks of ``--block`` steps, the pool's pass@1 and pass@8 before RL
(Hugging Face sampling) as the ceiling to sharpen toward, the pool's pass@1 after RL, and the held-out pass@1 before
and after (questions the run never saw) for contrast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/small_pool")
    p.add_argument("--pool", type=int, default=4, help="problems per task and level (default 4: 16 in all)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--estimator", default="lens")
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args(argv)

    from lens_openrlhf.data import files as D
    from lens_openrlhf.demo import heldout, setups
    from lens_openrlhf.evaluation.passk import level_table
    from lens_openrlhf.localrun import job
    from lens_openrlhf.tblogs import read_tensorboard

    out = Path(a.out).resolve()
    levels = (1, 2)
    prompts = a.pool * 2 * len(levels)
    setup = replace(
        setups.ANSWERS, train_pool=a.pool, train_levels=levels, prompts=prompts, steps=a.steps, lr=a.lr, eval_every=None
    )
    t0 = time.time()
    inputs = setups.prepare(setup, out, log=lambda m: print("  " + m, flush=True))
    pool, test = D.read_jsonl(inputs.train), D.read_jsonl(inputs.test)

    def table(model, rows):
        return level_table(heldout.sample(model, rows, n=8, max_new_tokens=setup.max_new_tokens), (1, 8))

    before_pool, before_test = table(inputs.model, pool), table(inputs.model, test)
    run = out / "run"
    job.clear_outputs(run)
    flags = setups.job_flags(setup, inputs, run, estimator=a.estimator, seed=a.seed, evaluate=False)
    rc = job.TrainingJob(job.command(flags), job.job_env(run, sync_check=False), run / "train.log", t0=t0).run()
    if rc != 0:
        return rc
    after_pool, after_test = table(run / "checkpoint", pool), table(run / "checkpoint", test)
    reward = read_tensorboard(run / "tensorboard")["train/reward"]
    steps = sorted(reward)
    blocks = [
        round(statistics.mean(reward[s] for s in steps[i : i + a.block]), 3) for i in range(0, len(steps), a.block)
    ]
    report = {
        "command": "benchmarks/small_pool.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "pool_problems": len(pool),
        "train_reward": {int(s): reward[s] for s in steps},
        f"train_reward_blocks_of_{a.block}": blocks,
        "pool_before": before_pool["all"],
        "pool_after": after_pool["all"],
        "heldout_before": before_test["all"],
        "heldout_after": after_test["all"],
        "seconds": round(time.time() - t0),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(
        f"[small_pool] {len(pool)} problems x 8 samples per step, {a.steps} steps, lr {a.lr:g}: training reward per "
        f"block of {a.block} steps {blocks}; the pool before RL: pass@1 {before_pool['all']['pass@1']:.3f}, pass@8 "
        f"{before_pool['all']['pass@8']:.3f}; after: pass@1 {after_pool['all']['pass@1']:.3f}. Held-out (never "
        f"trained on) pass@1 {before_test['all']['pass@1']:.3f} -> {after_test['all']['pass@1']:.3f}. "
        f"{report['seconds']} s; {out / 'report.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
