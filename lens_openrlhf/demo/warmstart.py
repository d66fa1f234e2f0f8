"""A warm start for the CPU demo and benchmark: a tiny Qwen2 that already solves easy reasoning-gym problems.

    python -m lens_openrlhf.demo.warmstart --data data/gym/train.jsonl --cache outputs/warm_start [--steps 500]

1. A tiny Qwen2 (:func:`lens_openrlhf.localrun.tiny.build_tiny_model`: hidden 128, 4 layers, 4 heads of 32, 2 KV
   heads, tied embeddings) whose byte-level BPE tokenizer is also trained on the task's prompts (with
   ``split_digits``, every digit a token of its own).
2. A short supervised warm-up with transformers' ``Trainer`` on the easy levels of the training file
   (``WarmStartConfig.levels``): the chat-templated prompt (exactly what OpenRLHF's ``--apply_chat_template``
   feeds the policy) -> ``\\boxed{<answer>}<|im_end|>``, loss on the response only; with ``stepwise_fraction``
   the worked steps come first (``7 * 5 = 35, 35 + 2 = 37. \\boxed{37}``), with ``digit_noise`` a share of the boxed
   answer's digits is redrawn at random each time a row is used (the demo's default: all three, see
   ``lens_openrlhf.demo.setups.ANSWERS``).
3. Saved under ``<cache>/warm_<key>`` (``key``: a hash of the config and the training rows); a later call with
   the same config and data reuses it. Deterministic in ``seed`` (Trainer's seed and data seed, CPU).

Before RL it solves Level 1 often and Levels 4-5 (almost) never, so all three group kinds (all-correct,
mixed, all-incorrect) occur. :func:`lens_openrlhf.demo.heldout.sample` measures that with Hugging Face sampling
(temperature 1, the gym reward's own scorer), the same way for any checkpoint: the demo's before/after table uses it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from lens_openrlhf.data.files import read_jsonl
from lens_openrlhf.evaluation.sampling import render_prompt
from lens_openrlhf.localrun.tiny import build_tiny_model, torch_threads


@dataclass(frozen=True)
class WarmStartConfig:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vocab_size: int = 512
    levels: Tuple[int, ...] = (1, 2)  # the warm-up sees these levels only
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    # the share of warm-up answers written as ``\\boxed{N}``; the rest read ``The answer is N.``, which the
    # reward scores 0 (it reads the last ``\\boxed{}``, the contract of MATH rewards). Half and half, as
    # instruction-tuned models start out: SmolLM2-135M-Instruct boxes 20% of its answers even when asked to.
    boxed_fraction: float = 0.5
    # the share of the answers given without steps that are off by one (N - 1 or N + 1): quick answers are sloppy,
    # worked ones are right, so the warm start has two behaviours of different reliability for RL to choose from
    quick_slip_fraction: float = 0.0
    # the share of warm-up answers that show their steps (``8 + 9 = 17, 17 + 9 = 26. \\boxed{26}``, operator
    # precedence, left to right) before the box; the rest give the bare answer
    stepwise_fraction: float = 0.0
    # every digit a token of its own (the tokenizer's BPE merges no digits): numbers are read and written digit by
    # digit, so that a step of a sum is the same few tokens in every question
    split_digits: bool = False
    # the share of the boxed answer's digits replaced by a random digit (0-9), drawn afresh each time a row is used:
    # a slip that does not depend on the question, which sampling at temperature 1 repeats and greedy decoding does
    # not (the worked steps stay exact)
    digit_noise: float = 0.0

    def key(self, rows: Sequence[dict]) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for r in rows:
            h.update((r["prompt"] + "\x00" + r["answer"] + "\n").encode())
        return h.hexdigest()[:12]


#: the demo's default warm-up (``setups.ANSWERS``): levels 1-3, worked steps before every boxed answer, every digit
#: a token, 30% of the boxed answer's digits redrawn each time a row is used (a slip every question shares)
DEFAULT = WarmStartConfig(
    boxed_fraction=1.0, levels=(1, 2, 3), stepwise_fraction=1.0, split_digits=True, digit_noise=0.3
)
#: new tokens the default's answers need: the worked steps, then the boxed answer
DEFAULT_MAX_NEW_TOKENS = 40

PLAIN_ANSWER = "The answer is {answer}."


def response_text(answer: str, tokenizer, boxed: bool = True, steps: str = "") -> str:
    """The warm-up target: ``\\boxed{N}`` or, with ``boxed=False``, ``The answer is N.``, after ``steps`` (worked
    steps ending in ``. ``) if given; then the EOS token."""
    return steps + (f"\\boxed{{{answer}}}" if boxed else PLAIN_ANSWER.format(answer=answer)) + tokenizer.eos_token


def worked_steps(expression: str) -> str:
    """The steps of an integer expression with ``+ - *`` and no parentheses, ``*`` first, then left to right:
    ``"3 + 4 * 2"`` -> ``"4 * 2 = 8, 3 + 8 = 11. "``. Raises ValueError on anything else."""
    tokens = expression.split()
    if len(tokens) % 2 == 0 or any(t not in "+-*" for t in tokens[1::2]):
        raise ValueError(f"not a + - * expression: {expression!r}")
    nums, ops = [int(t) for t in tokens[0::2]], tokens[1::2]
    steps = []
    i = 0
    while i < len(ops):  # products first
        if ops[i] == "*":
            value = nums[i] * nums[i + 1]
            steps.append(f"{nums[i]} * {nums[i + 1]} = {value}")
            nums[i : i + 2], ops[i : i + 1] = [value], []
        else:
            i += 1
    while ops:
        value = nums[0] + nums[1] if ops[0] == "+" else nums[0] - nums[1]
        steps.append(f"{nums[0]} {ops[0]} {nums[1]} = {value}")
        nums[0:2], ops[0:1] = [value], []
    return ", ".join(steps) + ". " if steps else ""


def boxed_flags(n: int, fraction: float, seed: int) -> List[bool]:
    """Which of ``n`` warm-up rows get a boxed answer: exactly ``round(n * fraction)`` of them, chosen by
    ``seed``."""
    import random

    k = round(n * fraction)
    flags = [i < k for i in range(n)]
    random.Random(seed).shuffle(flags)
    return flags


def _expression(row: dict) -> str:
    """A reasoning-gym row's arithmetic expression (its label's metadata)."""
    return json.loads(row["label"])["metadata"]["expression"]


def target_answers(rows: Sequence[dict], shown: Sequence[bool], slip_fraction: float, seed: int) -> List[str]:
    """The warm-up targets' answers: each row's own, except that of the rows answered without steps (``shown`` False)
    exactly ``round(n_quick * slip_fraction)`` (chosen by ``seed``) are off by one (N - 1 or N + 1, by ``seed``)."""
    import random

    quick = [i for i, s in enumerate(shown) if not s]
    slipped = {quick[i] for i, f in enumerate(boxed_flags(len(quick), slip_fraction, seed + 1)) if f}
    rng = random.Random(seed + 3)
    return [str(int(r["answer"]) + rng.choice((-1, 1))) if i in slipped else r["answer"] for i, r in enumerate(rows)]


def noisy_digits(answer: str, share: float, rng) -> str:
    """``answer`` with each digit replaced, with probability ``share``, by a digit drawn uniformly from 0-9 (possibly
    the same one)."""
    return "".join(str(rng.randrange(10)) if c.isdigit() and rng.random() < share else c for c in answer)


class _Examples:
    """A map-style dataset of tokenized (prompt, response) pairs, loss on the response only. With ``digit_noise`` > 0
    each access draws the boxed answer's digit slips afresh (``rng``), so that no question keeps the same wrong answer
    from one epoch to the next."""

    def __init__(
        self,
        tokenizer,
        rows: Sequence[dict],
        boxed: Sequence[bool],
        answers: Sequence[str] = (),
        steps=(),
        digit_noise: float = 0.0,
        seed: int = 0,
    ):
        import random

        self.tokenizer, self.digit_noise, self.rng = tokenizer, digit_noise, random.Random(seed)
        self.items = []
        answers = list(answers) or [r["answer"] for r in rows]
        steps = list(steps) or [""] * len(rows)
        for r, b, ans, st in zip(rows, boxed, answers, steps):
            p = render_prompt(tokenizer, r["prompt"], apply_chat_template=True)
            a = tokenizer(response_text(ans, tokenizer, b, st), add_special_tokens=False)["input_ids"]
            self.items.append({"input_ids": p + a, "labels": [-100] * len(p) + a, "parts": (len(p), ans, b, st)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        if self.digit_noise <= 0:
            return {"input_ids": item["input_ids"], "labels": item["labels"]}
        n_prompt, ans, b, st = item["parts"]
        text = response_text(noisy_digits(ans, self.digit_noise, self.rng), self.tokenizer, b, st)
        a = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        p = item["input_ids"][:n_prompt]
        return {"input_ids": p + a, "labels": [-100] * n_prompt + a}


def _collate(pad_id: int):
    import torch

    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def warm_start(
    cache_root, train_rows: Sequence[dict], config: WarmStartConfig = WarmStartConfig(), log=print, dtype: str = "auto"
) -> Path:
    """The warmed model's folder (built, or reused from ``cache_root``). Also keeps the random init in
    ``<dir>/init``. ``dtype``: the compute dtype (``lens_openrlhf.cpu.dtype.resolve``: ``auto`` is bf16 autocast where
    the CPU has bf16 units, float32 where it has not); part of the cache key."""
    from lens_openrlhf.cpu.dtype import resolve

    rows = [r for r in train_rows if int(r["level"]) in config.levels]
    if not rows:
        raise ValueError(f"warm start: no training rows at levels {config.levels}")
    compute = resolve(dtype).name
    key = config.key(rows) if compute == "float32" else f"{config.key(rows)}_{compute}"
    out = Path(cache_root) / f"warm_{key}"
    if (out / "warm_start.json").exists():
        log(f"[warm start] reusing {out}")
        return out
    with torch_threads():
        return _warm_start(out, train_rows, rows, config, log, compute)


def _warm_start(out: Path, train_rows, rows, config: WarmStartConfig, log, compute: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    log(f"[warm start] training {config.steps} steps of {config.batch_size} (transformers Trainer, CPU, {compute})")
    # the tokenizer also learns the chat template's words ("user", "assistant": 3 and 9 tokens otherwise), so a
    # training sequence is about a quarter shorter (the warm-up's cost is its token count)
    corpus = [f"user\n{r['prompt']}\nassistant\n\\boxed{{{r['answer']}}}" for r in train_rows]
    if config.stepwise_fraction > 0:
        corpus += [worked_steps(_expression(r)) for r in train_rows]
    if config.boxed_fraction < 1:
        corpus += [PLAIN_ANSWER.format(answer=r["answer"]) for r in train_rows]
    build_tiny_model(
        tmp / "init",
        seed=config.seed,
        hidden=config.hidden,
        layers=config.layers,
        vocab_size=config.vocab_size,
        heads=config.heads,
        kv_heads=config.kv_heads,
        corpus=corpus,
    )
    if config.split_digits:
        _split_digits(tmp / "init")
    set_seed(config.seed)
    tok = AutoTokenizer.from_pretrained(tmp / "init")
    model = AutoModelForCausalLM.from_pretrained(tmp / "init", dtype=torch.float32)
    shown = boxed_flags(len(rows), config.stepwise_fraction, config.seed + 2)
    answers = target_answers(rows, shown, config.quick_slip_fraction, config.seed)
    steps = [worked_steps(_expression(r)) if on else "" for r, on in zip(rows, shown)]
    boxed = boxed_flags(len(rows), config.boxed_fraction, config.seed)
    data = _Examples(tok, rows, boxed, answers, steps, digit_noise=config.digit_noise, seed=config.seed + 5)
    args = TrainingArguments(
        output_dir=str(tmp / "trainer"),
        per_device_train_batch_size=config.batch_size,
        max_steps=config.steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        logging_steps=max(1, config.steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=compute == "bfloat16",  # autocast: float32 weights, bf16 matmuls
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=_collate(tok.pad_token_id))
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; one line in the demo's own format instead

    class LossLine(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log(f"[warm start] step {state.global_step}/{state.max_steps}: loss {float(logs['loss']):.3f}")

    trainer.add_callback(LossLine())
    result = trainer.train()
    final = tmp / "model"
    model.save_pretrained(final, safe_serialization=True)
    tok.save_pretrained(final)
    for name in ("generation_config.json", "lens_tiny.json"):
        if (tmp / "init" / name).exists():
            shutil.copy(tmp / "init" / name, final / name)
    # config.json keeps the tiny family's dtype (bfloat16, what the demo trains in)
    shutil.copy(tmp / "init" / "config.json", final / "config.json")
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    meta = {
        "config": asdict(config),
        "train_rows": len(rows),
        "seconds": round(time.time() - t0, 1),
        "train_loss": float(result.training_loss),
        "dtype": compute,
        "model": "model",
        "init": "init",
    }
    (tmp / "warm_start.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log(
        f"[warm start] {config.steps} Trainer steps of {config.batch_size} on {len(rows)} rows "
        f"(levels {list(config.levels)}) "
        f"in {meta['seconds']:.0f} s, loss {meta['train_loss']:.3f}: {out}"
    )
    return out


def _split_digits(model_dir: Path) -> None:
    """Make the tokenizer in ``model_dir`` split every digit into a token of its own (a ``Digits`` pre-tokenizer before
    its byte-level one); token ids stay as they are (the multi-digit tokens BPE learned are never produced)."""
    from tokenizers import Tokenizer, pre_tokenizers

    path = Path(model_dir) / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), tok.pre_tokenizer])
    tok.save(str(path))


def model_dir(warm: Path) -> Path:
    return Path(warm) / "model"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.demo.warmstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="training jsonl from `python -m lens_openrlhf.data gym`")
    p.add_argument("--test", help="held-out jsonl: report pass@1 per level before and after the warm-up")
    p.add_argument("--cache", default="outputs/warm_start")
    p.add_argument("--steps", type=int, default=WarmStartConfig.steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=8, help="samples per held-out problem")
    a = p.parse_args(argv)
    from dataclasses import replace

    from lens_openrlhf.demo.heldout import sample
    from lens_openrlhf.evaluation.passk import level_table

    cfg = replace(DEFAULT, steps=a.steps, seed=a.seed)  # the demo's default recipe
    warm = warm_start(a.cache, read_jsonl(a.data), cfg)
    print(warm)
    if a.test:
        rows = read_jsonl(a.test)
        for name, path in (("random init", warm / "init"), ("warm start", warm / "model")):
            t = level_table(sample(path, rows, n=a.n, seed=a.seed, max_new_tokens=DEFAULT_MAX_NEW_TOKENS))
            print(f"{name:12s} " + "  ".join(f"{g} {v['pass@1']:.3f}" for g, v in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
