"""Cost of asking vLLM for the sampled tokens' log-probs (what LENS does) against not asking (GRPO).

    VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
        .venv/bin/python benchmarks/bench_vllm_logprobs.py [--repeats 15] [--prompts 8] [--n 8] [--max-tokens 32]
        [--vocab 151936] [--model HF_DIR] [--dtype bfloat16|float32] [--omp-wait-policy passive|unset]
        [--json OUT.json]

LENS needs pi_old(o_i | q) of every sample. With ``--algo.lens.logprob_source vllm`` (the default) the
adapter makes OpenRLHF's rollouts request ``SamplingParams(logprobs=1)`` and creates the engines with
``logprobs_mode="processed_logprobs", max_logprobs=1`` (exactly what the pinned OpenRLHF itself does when its
importance-sampling correction is on); a GRPO run asks for neither. Two engines on the same tiny model
(``lens_openrlhf.localrun.tiny.build_tiny_model``, built locally; no download; or ``--model``, e.g. the SmolLM2 folder),
both alive in this process (``--dtype``, default bfloat16 as in OpenRLHF):

  default engine    vllm.LLM(model, enforce_eager=True, dtype=<--dtype>, max_model_len, seed=0)
  processed engine  the same + logprobs_mode="processed_logprobs", max_logprobs=1

and four conditions, each the same batch (``--prompts`` prompts x ``--n`` samples, ``--max-tokens`` new tokens,
``ignore_eos`` so every run generates the same number of tokens, temperature 1.0, top-p 1.0, ``min_tokens=1``
and ``skip_special_tokens=False`` as OpenRLHF's rollouts, fixed seed):

  grpo        default engine,   logprobs=None   (a GRPO rollout)
  req_only    default engine,   logprobs=1      (the request alone, raw log-probs)
  mode_only   processed engine, logprobs=None   (the engine mode alone)
  lens        processed engine, logprobs=1      (a LENS rollout)

One warm-up of each, then ``--repeats`` rounds; every round runs the four conditions in a fresh random order
(interleaved, so drift on this shared machine hits all of them alike). Printed: median wall time and generated
tokens/s per condition, and the ratios of medians, all measured in this one run:

  lens / grpo           what LENS's log-probs cost a rollout (mode + request)
  lens / mode_only      the request, in the processed engine
  req_only / grpo       the request, in the default engine
  mode_only / grpo      the mode alone (should be ~1: the mode only matters when log-probs are requested)

OpenMP: vLLM computes the sampled token's rank with a ``torch.compile``d kernel (``batched_count_greater_than``);
on CPU, Inductor builds it with OpenMP, and with the default wait policy its threads spin after each call. On a
busy 2-core machine that slowed every later kernel in the process, GRPO calls made after a LENS call included, by
up to 10x (seen here; intermittent, it depends on what else runs on the cores). That is a CPU artifact, not a
cost of log-probs: by default this script sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads
(``--omp-wait-policy unset`` leaves the environment alone). On a GPU the kernel is a Triton kernel.

A sanity check is printed too: the per-token log-probs returned sum to ``cumulative_logprob`` (max abs
difference), and the largest gap between the processed and the raw engine's log-probs of the same sampled tokens
(temperature 1.0, same seed): 0 after the first token; at the first token, OpenRLHF's ``min_tokens=1`` masks EOS,
so the processed log-prob (the distribution actually sampled from) is the raw one renormalised without EOS.

``--vocab V`` resizes the tiny model's (tied) embeddings to V rows (e.g. 151936, Qwen2.5's), since the
log-prob work scales with the vocabulary while this model's forward pass is tiny; the extra rows have no
tokenizer entry, so that mode sets ``detokenize=False`` for every condition. A tiny model exaggerates the
relative cost of anything per token that is not the forward pass: read the ratio as an upper bound for a
real model, where the forward pass dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

# environment set before torch/vLLM load (they are imported inside functions, after the arguments are parsed)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONDITIONS = {  # name -> (engine, logprobs)
    "grpo": ("default", None),
    "req_only": ("default", 1),
    "mode_only": ("processed", None),
    "lens": ("processed", 1),
}
RATIOS = (
    ("lens", "grpo", "LENS rollout (processed mode + logprobs=1) vs GRPO rollout"),
    ("lens", "mode_only", "the logprobs=1 request, processed engine"),
    ("req_only", "grpo", "the logprobs=1 request, default engine"),
    ("mode_only", "grpo", "the processed_logprobs mode alone, no request"),
)


def build_model(out: Path, vocab: int | None) -> Path:
    from lens_openrlhf.localrun.tiny import build_tiny_model

    path = build_tiny_model(out / "model", seed=0)
    if vocab:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if vocab < model.config.vocab_size:
            raise SystemExit(f"--vocab {vocab} is smaller than the tiny tokenizer's {model.config.vocab_size}")
        torch.manual_seed(0)
        model.resize_token_embeddings(vocab, mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, 0.02)
        model.config.vocab_size = vocab
        model.save_pretrained(path, safe_serialization=True)
    return path


def engines(model: Path, max_model_len: int, dtype: str = "bfloat16"):
    import vllm

    common = dict(model=str(model), enforce_eager=True, dtype=dtype, max_model_len=max_model_len, seed=0)
    return {
        "default": vllm.LLM(**common),
        "processed": vllm.LLM(**common, logprobs_mode="processed_logprobs", max_logprobs=1),
    }


def prompts_for(n_prompts: int):
    rng = random.Random(0)
    return [
        f"What is {rng.randint(1, 99)} + {rng.randint(1, 99)}? Put the final answer in \\boxed{{}}."
        for _ in range(n_prompts)
    ]


def run_once(llm, prompts, a, logprobs):
    import vllm

    sp = vllm.SamplingParams(
        n=a.n,
        temperature=1.0,
        top_p=1.0,
        top_k=-1,
        max_tokens=a.max_tokens,
        min_tokens=1,  # OpenRLHF's min_tokens
        ignore_eos=True,
        skip_special_tokens=False,
        logprobs=logprobs,
        seed=1234,
        detokenize=a.vocab is None,
    )
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return dt, tokens, outs


def sampled_logprobs(outs):
    """Per sample, the list of the sampled tokens' log-probs (from the Logprob dicts)."""
    res = []
    for o in outs:
        for c in o.outputs:
            res.append([lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)])
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds after the warm-up (default 15)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per sample (ignore_eos; default 32)")
    p.add_argument("--vocab", type=int, default=None, help="resize the tiny model's vocabulary (e.g. 151936)")
    p.add_argument(
        "--model",
        default=None,
        help="an HF model folder instead of the tiny model (e.g. the SmolLM2 folder "
        "`python -m lens_openrlhf.demo.smollm2 "
        "convert` writes)",
    )
    p.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="the engines' dtype (default bfloat16, what the pinned OpenRLHF uses; --lens.vllm_dtype changes it there)",
    )
    p.add_argument(
        "--omp-wait-policy",
        choices=("passive", "unset"),
        default="passive",
        help="passive (default): set OMP_WAIT_POLICY=PASSIVE unless already set; unset: leave it",
    )
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if a.model and a.vocab:
        p.error("--vocab resizes the tiny model; it does not apply with --model")
    if a.model and not (Path(a.model) / "config.json").is_file():
        p.error(f"--model {a.model}: no config.json there")
    if a.omp_wait_policy == "passive":
        if "torch" in sys.modules:
            raise SystemExit("OMP_WAIT_POLICY must be set before torch is imported: run this script as a program")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_vllm_lp_") as tmp:
        model = Path(a.model) if a.model else build_model(Path(tmp), a.vocab)
        prompts = prompts_for(a.prompts)
        llms = engines(model, max_model_len=128 + a.max_tokens, dtype=a.dtype)

        # warm-up, and the sanity checks on the warm-up outputs
        warm = {name: run_once(llms[eng], prompts, a, lp)[2] for name, (eng, lp) in CONDITIONS.items()}
        lens_lp, raw_lp = sampled_logprobs(warm["lens"]), sampled_logprobs(warm["req_only"])
        cum_err = max(
            abs(sum(lps) - c.cumulative_logprob)
            for lps, c in zip(lens_lp, (c for o in warm["lens"] for c in o.outputs))
        )
        same_tokens = all(
            c1.token_ids == c2.token_ids
            for o1, o2 in zip(warm["lens"], warm["req_only"])
            for c1, c2 in zip(o1.outputs, o2.outputs)
        )
        raw_vs_proc = None
        if same_tokens:  # (first token, later tokens): min_tokens=1 masks EOS at the first token in processed mode
            raw_vs_proc = (
                max(abs(s1[0] - s2[0]) for s1, s2 in zip(lens_lp, raw_lp)),
                max((abs(x - y) for s1, s2 in zip(lens_lp, raw_lp) for x, y in zip(s1[1:], s2[1:])), default=0.0),
            )

        times = {name: [] for name in CONDITIONS}
        tokens = {}
        order_rng = random.Random(0)
        for _ in range(a.repeats):
            order = list(CONDITIONS)
            order_rng.shuffle(order)
            for name in order:
                eng, lp = CONDITIONS[name]
                dt, ntok, _ = run_once(llms[eng], prompts, a, lp)
                times[name].append(dt)
                tokens[name] = ntok

    med = {k: statistics.median(v) for k, v in times.items()}
    import vllm

    print()
    print(
        f"vLLM {vllm.__version__} log-prob cost, "
        + (f"{a.model}, " if a.model else f"tiny Qwen2 (hidden 64, 2 layers, vocab {a.vocab or 'tiny tokenizer'}), ")
        + f"dtype {a.dtype}, "
        f"{a.prompts} prompts x n={a.n} x {a.max_tokens} new tokens, {a.repeats} interleaved rounds, medians; "
        f"detokenize={a.vocab is None}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )
    print(
        f"{'condition':<10} {'engine':<10} {'logprobs':<8} {'median s':>9} {'min s':>8} {'max s':>8} {'gen tok/s':>10}"
    )
    for name, (eng, lp) in CONDITIONS.items():
        print(
            f"{name:<10} {eng:<10} {str(lp):<8} {med[name]:>9.3f} {min(times[name]):>8.3f} {max(times[name]):>8.3f} "
            f"{tokens[name] / med[name]:>10.0f}"
        )
    ratios = {}
    for num, den, what in RATIOS:
        ratios[f"{num}/{den}"] = med[num] / med[den]
        print(f"ratio {num + '/' + den:<16} {med[num] / med[den]:6.3f}   {what}")
    print(f"check: max |sum(token log-probs) - cumulative_logprob| = {cum_err:.2e} (lens condition)")
    if raw_vs_proc is None:
        print("check: processed and raw engines sampled different tokens; log-probs not compared")
    else:
        print(
            f"check: max |processed - raw| sampled-token log-prob at temperature 1.0: first token "
            f"{raw_vs_proc[0]:.2e} (min_tokens=1 masks EOS there), later tokens {raw_vs_proc[1]:.2e}"
        )
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "args": vars(a),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "vllm": vllm.__version__,
                    "times_s": times,
                    "median_s": med,
                    "tokens": tokens,
                    "ratios": ratios,
                    "check_cumulative_abs_err": cum_err,
                    "check_raw_vs_processed": raw_vs_proc,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
