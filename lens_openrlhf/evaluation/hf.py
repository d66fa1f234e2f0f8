"""The Hugging Face backend of :func:`lens_openrlhf.evaluation.sampling.sample_and_score` (``backend="hf"``).

``transformers``' ``generate`` in this process, in the compute dtype (``dtype`` as ``lens_openrlhf.cpu.dtype.resolve``
reads it), one torch thread (:class:`lens_openrlhf.localrun.tiny.torch_threads`), ``torch.manual_seed(seed)`` once and
prompts in batches of ``batch_prompts`` (left-padded). For models too small for a vLLM engine's start-up to pay off:
the demo's warm start and trained policy, the benchmarks that measure them.
"""

from __future__ import annotations

from typing import List, Sequence

from lens_openrlhf.evaluation.passk import ProblemResult
from lens_openrlhf.evaluation.scoring import boxed_count, reason_counts, score


def generate_kwargs(tokenizer, n: int, max_new_tokens: int, greedy: bool, temperature: float, top_p: float) -> dict:
    """``generate`` keywords: ``n`` samples per prompt at ``temperature`` and ``top_p``, no top-k (the paper's rollouts
    and evaluation use temperature 1, top-p 1), stopping at the tokenizer's EOS; ``greedy``: one greedy answer."""
    common = dict(
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    if greedy:
        return dict(do_sample=False, num_return_sequences=1, **common)
    return dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=n, **common)


def prompt_text(tokenizer, prompt, apply_chat_template: bool) -> str:
    """The text OpenRLHF builds from a row's prompt, for either backend: chat messages (or, with
    ``apply_chat_template``, a string wrapped as a user message) through the chat template with the generation prompt;
    a string as it is otherwise."""
    if isinstance(prompt, str) and apply_chat_template:
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("a chat-message prompt needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, str):
        return prompt
    raise ValueError(f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def sample_and_score(
    model_path,
    rows: Sequence[dict],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    greedy: bool,
    scorer: str,
    input_key: str,
    label_key: str,
    apply_chat_template: bool,
    save_responses: bool,
    dtype: str = "auto",
    batch_prompts: int = 64,
) -> List[ProblemResult]:
    """One :class:`ProblemResult` per row (``boxed`` and ``datasource`` filled); ``n`` is 1 with ``greedy``."""
    from lens_openrlhf.cpu.dtype import resolve
    from lens_openrlhf.localrun.tiny import torch_threads

    with torch_threads():
        return _sample(
            model_path, rows, 1 if greedy else n, temperature, top_p, max_tokens, seed, greedy, scorer, input_key,
            label_key, apply_chat_template, save_responses, resolve(dtype).torch, batch_prompts,
        )  # fmt: skip


def _sample(
    model_path, rows, n, temperature, top_p, max_tokens, seed, greedy, scorer, input_key, label_key, chat, keep,
    torch_dtype, batch_prompts,
) -> List[ProblemResult]:  # fmt: skip
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).eval()
    torch.manual_seed(seed)
    gen = generate_kwargs(tok, n, max_tokens, greedy, temperature, top_p)
    out: List[ProblemResult] = []
    for s in range(0, len(rows), batch_prompts):
        chunk = rows[s : s + batch_prompts]
        texts = [prompt_text(tok, r[input_key], chat) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            seqs = model.generate(**enc, **gen)
        new = seqs[:, enc["input_ids"].shape[1] :]
        answers = tok.batch_decode(new, skip_special_tokens=True)
        correct, reasons = score(scorer, answers, [r[label_key] for r in chunk for _ in range(n)])
        for i, r in enumerate(chunk):
            mine = slice(i * n, (i + 1) * n)
            ended = [bool((row == tok.eos_token_id).any()) for row in new[mine]]
            out.append(
                ProblemResult(
                    id=str(r.get("id", s + i)),
                    n=n,
                    c=sum(correct[mine]),
                    level=int(r["level"]) if r.get("level") is not None else None,
                    subject=r.get("subject"),
                    reasons=reason_counts(reasons[mine]),
                    truncated=sum(not e for e in ended) if len(new[0]) >= max_tokens else 0,
                    responses=answers[mine] if keep else None,
                    boxed=boxed_count(answers[mine]),
                    datasource=r.get("datasource"),
                )
            )
    return out
