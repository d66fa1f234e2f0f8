"""Held-out pass@k of any checkpoint the same way: Hugging Face sampling at temperature 1 and the gym scorer.

    python -m lens_openrlhf.demo.heldout MODEL_DIR FILE.jsonl [--levels 1 2 3] [--n 8] [--max-new-tokens 40]

prints, per level, greedy pass@1 next to sampled pass@1 and the boxed share (e.g. the demo's warm start,
``<out>/warm_start/warm_*/model``, on ``<out>/data/test.jsonl`` or on its training pool ``<out>/data/train_rl.jsonl``).

The demo's before/after table, the warm start's report and the benchmarks use it: the same sampler, scorer and
problems for the warm start and the trained policy. ``boxed``: the share of answers with a non-empty ``\\boxed{}``
(``rewards.answers.boxed_answer``), so that a rise in pass@1 can be split into format and accuracy.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Sequence

from lens_openrlhf.localrun.tiny import chat_prompt, torch_threads


def sampling(tokenizer, n: int, max_new_tokens: int, greedy: bool = False) -> dict:
    """``generate`` keywords of every sampler here: ``n`` samples per prompt at temperature 1, no top-k or top-p (as
    the paper's rollouts and evaluation), stopping at the tokenizer's EOS; ``greedy``: one greedy answer instead."""
    if greedy:
        return dict(
            do_sample=False,
            max_new_tokens=max_new_tokens,
            num_return_sequences=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return dict(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def sample_eval(
    model_path,
    rows: Sequence[dict],
    n: int = 8,
    max_new_tokens: int = 12,
    seed: int = 0,
    batch_prompts: int = 64,
    dtype: str = "auto",
    greedy: bool = False,
) -> List[dict]:
    """Sample ``n`` answers per row with Hugging Face ``generate`` (temperature 1, in the compute dtype: ``dtype`` as
    ``lens_openrlhf.cpu.dtype.resolve`` reads it) and score them with reasoning-gym's ``score_answer``
    (:func:`lens_openrlhf.rewards.gym_reward.score_text`).

    Returns one ``{"id", "level", "datasource", "n", "c", "b"}`` per row (``c`` correct and ``b`` with a
    non-empty ``\\boxed{}``, of ``n``). ``greedy``: one greedy answer per row instead (``n`` is 1).
    """

    from lens_openrlhf.cpu.dtype import resolve

    with torch_threads():
        return _sample_eval(
            model_path, rows, 1 if greedy else n, max_new_tokens, seed, batch_prompts, resolve(dtype).torch, greedy
        )


def _sample_eval(model_path, rows, n, max_new_tokens, seed, batch_prompts, torch_dtype, greedy=False) -> List[dict]:
    import torch

    from lens_openrlhf.rewards.answers import boxed_answer
    from lens_openrlhf.rewards.gym_reward import score_text
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).eval()
    torch.manual_seed(seed)
    out = []
    for s in range(0, len(rows), batch_prompts):
        chunk = rows[s : s + batch_prompts]
        texts = [chat_prompt(tok, r["prompt"]) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            seqs = model.generate(**enc, **sampling(tok, n, max_new_tokens, greedy))
        answers = tok.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, r in enumerate(chunk):
            mine = answers[i * n : (i + 1) * n]
            c = sum(score_text(a, r["label"]) for a in mine)
            boxed = sum(boxed_answer(a) is not None for a in mine)
            out.append(
                {
                    "id": r["id"],
                    "level": int(r["level"]),
                    "datasource": r["datasource"],
                    "n": n,
                    "c": int(c),
                    "b": boxed,
                }
            )
    return out


def pass_table(results: Sequence[dict], ks: Sequence[int] = (1, 8)) -> Dict[str, Dict[str, float]]:
    """``{"all": {"pass@1": .., "boxed": ..}, "levels_4_5": .., "level_1": .., ...}`` (unbiased pass@k,
    lens_openrlhf.evaluation.sampling; ``boxed``: the share of samples with a ``\\boxed{}`` answer)."""
    from lens_openrlhf.evaluation.passk import pass_at_k

    groups: Dict[str, List[dict]] = {"all": list(results), "levels_4_5": [r for r in results if r["level"] in (4, 5)]}
    for lv in sorted({r["level"] for r in results}):
        groups[f"level_{lv}"] = [r for r in results if r["level"] == lv]
    table = {}
    for g, rs in groups.items():
        if rs:
            table[g] = {
                f"pass@{k}": sum(pass_at_k(r["n"], r["c"], k) for r in rs) / len(rs) for k in ks if k <= rs[0]["n"]
            }
            if all("b" in r for r in rs):
                table[g]["boxed"] = sum(r["b"] for r in rs) / sum(r["n"] for r in rs)
    return table


def add_greedy(table: Dict[str, Dict[str, float]], greedy: Sequence[dict]) -> Dict[str, Dict[str, float]]:
    """``table`` (:func:`pass_table` of sampled answers) with ``"greedy"``: each group's pass@1 of one greedy answer
    per problem (``greedy``: :func:`sample_eval` with ``greedy=True`` on the same rows). A sampled pass@1 well below
    the greedy one is a model that knows answers it does not reliably sample."""
    g = pass_table(greedy, ks=(1,))
    return {k: {**v, "greedy": g[k]["pass@1"]} if k in g else dict(v) for k, v in table.items()}


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

    rows = [r for r in read_jsonl(a.file) if not a.levels or int(r["level"]) in a.levels]
    kw = dict(max_new_tokens=a.max_new_tokens, seed=a.seed)
    table = add_greedy(
        pass_table(sample_eval(a.model, rows, n=a.n, **kw), ks=(1,)), sample_eval(a.model, rows, greedy=True, **kw)
    )
    print(f"{len(rows)} problems, {a.n} samples each at temperature 1 and one greedy answer")
    print(f"  {'':12s} {'greedy':>8s} {'sampled':>8s} {'gap':>7s} {'boxed':>7s}")
    for g, v in table.items():
        name = {"all": "all levels", "levels_4_5": "Levels 4-5"}.get(g, g.replace("level_", "Level "))
        gap = v["greedy"] - v["pass@1"]
        print(f"  {name:12s} {v['greedy']:8.3f} {v['pass@1']:8.3f} {gap:+7.3f} {v['boxed']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
