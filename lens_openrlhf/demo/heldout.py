"""Held-out pass@k of any checkpoint the demo's way: greedy next to sampled pass@1 and the boxed share, per level.

    python -m lens_openrlhf.demo.heldout MODEL_DIR FILE.jsonl [--levels 1 2 3] [--n 8] [--max-new-tokens 40]

e.g. the demo's warm start, ``<out>/warm_start/warm_*/model``, on ``<out>/data/test.jsonl`` or on its training pool
``<out>/data/train_rl.jsonl``. The sampler is the package's one
(:func:`lens_openrlhf.evaluation.sampling.sample_and_score`) with :data:`GYM_HF`: Hugging Face sampling at temperature 1
and reasoning-gym's scorer, the same for the warm start and the trained policy (the demo's before/after table, the warm
start's report and the benchmarks use it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

#: how the demo samples and scores its held-out problems (keywords of ``evaluation.sampling.sample_and_score``): a
#: model this small starts faster in-process than a vLLM engine; the gym rows' prompts are strings for the chat template
GYM_HF = dict(backend="hf", scorer="gym", apply_chat_template=True)


def sample(model, rows, *, n: int = 8, max_new_tokens: int = 12, seed: int = 0, dtype: str = "auto", greedy=False):
    """``sample_and_score(model, rows, **GYM_HF, ...)``: the demo's held-out sampling of ``rows``."""
    from lens_openrlhf.evaluation.sampling import sample_and_score

    return sample_and_score(
        model, rows, n=n, max_tokens=max_new_tokens, seed=seed, dtype=dtype, greedy=greedy, **GYM_HF
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_openrlhf.demo.heldout", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a Hugging Face model folder")
    p.add_argument("file", help="jsonl rows of lens_openrlhf.data.gym (prompt, label, level, ...)")
    p.add_argument("--levels", type=int, nargs="*", help="only these levels (default: all)")
    p.add_argument("--n", type=int, default=8, help="samples per problem")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from lens_openrlhf.data.files import read_jsonl
    from lens_openrlhf.evaluation.passk import level_table, with_greedy

    rows = [r for r in read_jsonl(a.file) if not a.levels or int(r["level"]) in a.levels]
    kw = dict(max_new_tokens=a.max_new_tokens, seed=a.seed)
    sampled, greedy = sample(a.model, rows, n=a.n, **kw), sample(a.model, rows, greedy=True, **kw)
    table = with_greedy(level_table(sampled, ks=(1,)), greedy)
    print(f"{len(rows)} problems, {a.n} samples each at temperature 1 and one greedy answer")
    print(f"  {'':12s} {'greedy':>8s} {'sampled':>8s} {'gap':>7s} {'boxed':>7s}")
    for g, v in table.items():
        name = {"all": "all levels", "levels_4_5": "Levels 4-5"}.get(g, g.replace("level_", "Level "))
        gap = v["greedy"] - v["pass@1"]
        print(f"  {name:12s} {v['greedy']:8.3f} {v['pass@1']:8.3f} {gap:+7.3f} {v['boxed']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
