"""Throughput of the Math-Verify reward (lens_openrlhf/rewards/math_reward.py): verifications per second.

    .venv/bin/python benchmarks/bench_math_reward.py                    # 200 mixed answers, default pool
    .venv/bin/python benchmarks/bench_math_reward.py --n 1000 --workers 4
    .venv/bin/python benchmarks/bench_math_reward.py --pathological 1   # add 9^{9^{9^{9^9}}} answers

Two ways of calling, both through the real ``reward_func`` and a real ``VerifierPool``:
  batch     one reward_func call with all n queries (how the evaluator scores)
  openrlhf  n concurrent reward_func calls of ONE query each via asyncio.to_thread (how the pinned OpenRLHF's
            SingleTurnAgentExecutor calls it, from the default thread pool of an asyncio loop)
  inprocess baseline: the same answers scored sequentially by ``verify_answer`` in this process's main
            thread (Math-Verify with its own timeouts, no pool, no outer deadline; unusable inside OpenRLHF)
The answers mix integers, fractions vs decimals, radicals, intervals, tuples, matrices, wrong answers,
missing boxes and text. Worker start-up is measured separately (a warm-up batch), not in the rates.
"""

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lens_openrlhf.rewards.math_reward import (  # noqa: E402
    RewardConfig,
    VerifierPool,
    extract_last_boxed,
    normalize_label,
    reward_func,
    split_response,
    verify_answer,
)

# (label, response answer) families; {a} {b} are filled with random integers
FAMILIES = [
    ("{a}", "The answer is $\\boxed{{{a}}}$."),  # correct integer
    ("{a}", "So we get \\boxed{{{b}}}."),  # wrong integer
    ("\\frac{{{a}}}{{{b}}}", "\\boxed{{\\dfrac{{{a}}}{{{b}}}}}"),  # equivalent fraction forms
    ("\\frac{{1}}{{2}}", "Thus \\boxed{{0.5}}"),  # fraction vs decimal
    ("{a}\\sqrt{{2}}", "\\boxed{{\\sqrt{{{a2}}}}}"),  # radicals (a2 = 2 a^2)
    ("(1, {a})", "\\boxed{{(1,{a})}}"),  # tuple / interval
    ("[{a}, {b})", "\\boxed{{[{a},{b})}}"),  # half-open interval
    ("\\begin{{pmatrix}} {a} \\\\ {b} \\end{{pmatrix}}", "\\boxed{{\\begin{{pmatrix}}{a}\\\\{b}\\end{{pmatrix}}}}"),
    ("{a}", "I think it is {a} but I did not box it."),  # no box
    ("x^2+{a}x", "first \\boxed{{1}}, finally \\boxed{{x^2 + {a} x}}"),  # last box wins, symbolic
    ("\\text{{Monday}}", "\\boxed{{\\text{{Monday}}}}"),  # text answer
    ("{a}", "\\boxed{{}}"),  # empty box
]
PATHOLOGICAL = ("2", "\\boxed{9^{9^{9^{9^9}}}}")


def make_batch(n, n_pathological, seed):
    rng = random.Random(seed)
    prompts, queries, labels = [], [], []
    for i in range(n):
        label_t, resp_t = FAMILIES[i % len(FAMILIES)]
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        fill = dict(a=a, b=b if b != a else b + 1, a2=2 * a * a)
        prompt = f"Problem {i}: compute something.\n"
        prompts.append(prompt)
        queries.append(prompt + resp_t.format(**fill))
        labels.append(label_t.format(**fill))
    for j in range(n_pathological):
        k = rng.randrange(len(queries))
        labels[k] = PATHOLOGICAL[0]
        queries[k] = prompts[k] + PATHOLOGICAL[1]
    return queries, prompts, labels


async def openrlhf_style(queries, prompts, labels, pool):
    tasks = [asyncio.to_thread(reward_func, [q], [p], [l], pool=pool) for q, p, l in zip(queries, prompts, labels)]
    return await asyncio.gather(*tasks)


def reasons_of(outs):
    c = Counter()
    for out in outs:
        for key, val in out["extra_logs"].items():
            if key.startswith("reward/") and key not in ("reward/verify_seconds", "reward/prompt_not_prefix"):
                c[key[len("reward/") :]] += int(val.sum().item())
    return dict(sorted(c.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="answers per run (default 200)")
    ap.add_argument("--workers", type=int, default=None, help="verifier processes (default: LENS_MATH_WORKERS or auto)")
    ap.add_argument(
        "--timeout", type=float, default=None, help="per-answer deadline, s (default: LENS_MATH_TIMEOUT_S or 5)"
    )
    ap.add_argument("--pathological", type=int, default=0, help="how many answers to replace by 9^{9^{9^{9^9}}}")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per mode; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = RewardConfig.from_env()
    overrides = {}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.timeout is not None:
        overrides["timeout_s"] = args.timeout
        overrides["inner_timeout_s"] = None
    queries, prompts, labels = make_batch(args.n, args.pathological, args.seed)

    t0 = time.perf_counter()
    with VerifierPool(cfg, **overrides) as pool:
        reward_func(queries[:1], prompts[:1], labels[:1], pool=pool)
        # all workers warm: one answer each in parallel
        w = pool.config.workers
        reward_func(queries[:w], prompts[:w], labels[:w], pool=pool)
        startup = time.perf_counter() - t0
        print(
            f"pool: {w} workers ({pool.config.mp_context}), deadline {pool.config.timeout_s:g} s, "
            f"Math-Verify timeout {pool.config.inner_timeout_s} s; warm-up {startup:.2f} s"
        )
        for mode in ("batch", "openrlhf"):
            best = None
            for _ in range(args.repeats):
                t = time.perf_counter()
                if mode == "batch":
                    outs = [reward_func(queries, prompts, labels, pool=pool)]
                else:
                    outs = asyncio.run(openrlhf_style(queries, prompts, labels, pool))
                dt = time.perf_counter() - t
                best = dt if best is None else min(best, dt)
            print(
                f"{mode:9s} {args.n} answers in {best:.2f} s = {args.n / best:7.1f} verifications/s   "
                f"{reasons_of(outs)}"
            )
        print(f"workers killed at the deadline: {pool.stats['killed']}, died: {pool.stats['died']}")

    # baseline: sequential, in this main thread (Math-Verify's own timeouts only)
    best, counts = None, Counter()
    for _ in range(args.repeats):
        counts = Counter()
        t = time.perf_counter()
        for q, p, l in zip(queries, prompts, labels):
            boxed = extract_last_boxed(split_response(q, p)[0])
            if boxed is None:
                counts["no_boxed"] += 1
            elif not boxed.strip():
                counts["empty_boxed"] += 1
            else:
                counts[verify_answer(normalize_label(l), boxed, pool.config.inner_timeout_s)] += 1
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(
        f"{'inprocess':9s} {args.n} answers in {best:.2f} s = {args.n / best:7.1f} verifications/s   "
        f"{dict(sorted(counts.items()))}"
    )


if __name__ == "__main__":
    main()
