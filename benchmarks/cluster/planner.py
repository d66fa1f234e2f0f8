"""How a lens_openrlhf job lays out on GPUs: memory per GPU and the GPUs it asks Ray for.

    python -m benchmarks.cluster.planner --script examples/scripts/train_lens_large_model.sh
    python -m benchmarks.cluster.planner --model qwen2.5-32b -- --actor.num_nodes 2 --actor.num_gpus_per_node 8 \
        --ds.zero_stage 2 --ds.tensor_parallel_size 4 --ds.ring_attn_size 2 --vllm.num_engines 4 ...

The training command is parsed by the real parser (the pinned OpenRLHF's, extended by lens_openrlhf) and the
GPUs Ray is asked for come from ``lens_openrlhf.placement.gpus_needed``, the placement that follows OpenRLHF's
``train()``. The memory figures are the standard estimates (ZeRO paper, arXiv 1910.02054, section 3;
activation sizes of Korthikanti et al., arXiv 2205.05198, section 4), per actor GPU:

- bf16 weights 2 P / tp (ZeRO-3: / (tp x shards)); bf16 gradients 2 P / tp (ZeRO-2 and 3: / shards);
  fp32 master weights + Adam m and v 12 P / tp (ZeRO-1, 2, 3: / shards; 0 on the GPU with
  ``--ds.adam_offload``), where shards = actor GPUs / tp (the ring ranks are data-parallel to ZeRO);
- activations for T = tokens of one micro-batch / ring: with gradient checkpointing, one bf16 hidden state
  per layer (2 L T h bytes) plus one layer recomputed (T h (10 + 24 / tp) bytes, flash attention: no
  s x s scores); without, L T h (10 + 24 / tp); plus the logits and their fp32 log-softmax, 6 T V bytes;
- vLLM: bf16 weights 2 P / vllm_tp per GPU, the rest of ``--vllm.gpu_memory_utilization`` is KV cache.

Estimates, not measurements: allocator fragmentation, communication buffers and the CUDA context
(1-3 GiB) come on top.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs of a decoder-only transformer."""

    params: float  # total parameters
    hidden: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int


#: public architecture numbers (the models' config.json)
MODELS: Dict[str, ModelShape] = {
    "qwen2.5-3b": ModelShape(3.09e9, 2048, 36, 151936, 16, 2),
    "llama3.1-8b": ModelShape(8.03e9, 4096, 32, 128256, 32, 8),
    "qwen2.5-32b": ModelShape(32.8e9, 5120, 64, 152064, 40, 8),
    "llama3.1-70b": ModelShape(70.6e9, 8192, 80, 128256, 64, 8),
}
_ALIASES = {
    "qwen2.5-3b": "qwen2.5-3b",
    "llama-3.1-8b": "llama3.1-8b",
    "qwen2.5-32b": "qwen2.5-32b",
    "llama-3.1-70b": "llama3.1-70b",
}


def model_from_name(name: str) -> Optional[ModelShape]:
    """A preset from a preset name or a hub id such as ``Qwen/Qwen2.5-32B`` (case-insensitive)."""
    key = name.lower().rsplit("/", 1)[-1].removesuffix("-instruct")
    key = _ALIASES.get(key, key)
    return MODELS.get(key)


def model_from_config(path: Path) -> ModelShape:
    """A shape from a local Hugging Face folder's config.json (parameters counted from the shapes)."""
    c = json.loads((Path(path) / "config.json").read_text())
    h, L, V = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    head_dim = c.get("head_dim", h // heads)
    ffn = c["intermediate_size"]
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    mlp = 3 * h * ffn
    embed = V * h * (1 if c.get("tie_word_embeddings", False) else 2)
    return ModelShape(float(embed + L * (attn + mlp + 2 * h) + h), h, L, V, heads, kv)


@dataclass(frozen=True)
class Layout:
    """The actor's parallel layout and batch (what the memory model reads from the training flags)."""

    actor_gpus: int
    zero_stage: int
    tp: int = 1
    ring: int = 1
    adam_offload: bool = False
    grad_checkpointing: bool = True
    micro_tokens: int = 4096  # tokens of one micro-batch on one data-parallel rank, before the ring splits it
    vllm_tp: int = 1


@dataclass
class Plan:
    gib_weights: float
    gib_grads: float
    gib_optimizer: float
    gib_optimizer_cpu: float
    gib_activations: float
    gib_logits: float
    gib_total: float
    gib_vllm_weights: float
    dp: int
    zero_shards: int
    tokens_per_gpu: int
    ray_gpus: Dict[str, int]
    warnings: List[str]

    @property
    def total_ray_gpus(self) -> int:
        return sum(self.ray_gpus.values())


def memory_bytes(model: ModelShape, layout: Layout) -> Dict[str, float]:
    """Bytes per actor GPU for each part (see the module docstring for the formulas)."""
    P, t, z = model.params, layout.tp, layout.actor_gpus // layout.tp
    stage = layout.zero_stage
    weights = 2 * P / t / (z if stage >= 3 else 1)
    grads = 2 * P / t / (z if stage >= 2 else 1)
    optimizer = 12 * P / t / (z if stage >= 1 else 1)
    T = layout.micro_tokens / layout.ring
    h, L = model.hidden, model.layers
    one_layer = T * h * (10 + 24 / t)
    activations = 2 * L * T * h + one_layer if layout.grad_checkpointing else L * one_layer
    return {
        "weights": weights,
        "grads": grads,
        "optimizer": 0.0 if layout.adam_offload else optimizer,
        "optimizer_cpu": optimizer if layout.adam_offload else 0.0,
        "activations": activations,
        "logits": 6 * T * model.vocab,
        "vllm_weights": 2 * P / layout.vllm_tp,
    }


def plan(model: ModelShape, layout: Layout, ray_gpus: Dict[str, int]) -> Plan:
    b = memory_bytes(model, layout)
    warnings = []
    t, ring, W = layout.tp, layout.ring, layout.actor_gpus
    if W % (t * ring):
        warnings.append(f"{W} actor GPUs are not a multiple of tp x ring = {t * ring}")
    for name, n in (("query", model.heads), ("KV", model.kv_heads)):
        if n % t:
            warnings.append(f"tp {t} does not divide the {n} {name} heads")
        if n % layout.vllm_tp:
            warnings.append(f"vLLM tp {layout.vllm_tp} does not divide the {n} {name} heads")
    total = sum(b[k] for k in ("weights", "grads", "optimizer", "activations", "logits"))
    return Plan(
        gib_weights=b["weights"] / GIB,
        gib_grads=b["grads"] / GIB,
        gib_optimizer=b["optimizer"] / GIB,
        gib_optimizer_cpu=b["optimizer_cpu"] / GIB,
        gib_activations=b["activations"] / GIB,
        gib_logits=b["logits"] / GIB,
        gib_total=total / GIB,
        gib_vllm_weights=b["vllm_weights"] / GIB,
        dp=max(W // (t * ring), 1),
        zero_shards=max(W // t, 1),
        tokens_per_gpu=int(layout.micro_tokens / ring),
        ray_gpus=dict(ray_gpus),
        warnings=warnings,
    )


# ----------------------------------------------------------------------------------------------------
# from a training command
# ----------------------------------------------------------------------------------------------------
def script_argv(script: Path, env: Optional[Dict[str, str]] = None) -> List[str]:
    """The training flags an example script would submit (its DRY_RUN output, minus ``python -m ...``)."""
    out = subprocess.run(
        ["bash", str(script)],
        env={"PYTHON": sys.executable, **os.environ, **(env or {}), "DRY_RUN": "1"},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"planner: {script} failed with DRY_RUN=1: {out.stderr.strip()}")
    from lens_openrlhf.localrun.rehearsal import split_submission

    try:
        _, argv = split_submission(out.stdout.strip())  # `ray job submit ... -- python -m ... <flags>`
    except ValueError:
        argv = []
    if argv[:3] != ["python", "-m", "lens_openrlhf.train_ppo_ray"]:
        raise SystemExit(f"planner: {script} did not print a lens_openrlhf.train_ppo_ray submission")
    return argv[3:]


def layout_from_args(args) -> Layout:
    """The Layout a parsed (hierarchized) training command asks for."""
    if args.train.dynamic_batch_enable and args.train.max_tokens_per_gpu:
        micro_tokens = args.train.max_tokens_per_gpu * args.ds.ring_attn_size  # the cap is per GPU, after the ring
    else:
        micro_tokens = args.train.micro_batch_size * args.data.max_len
    return Layout(
        actor_gpus=args.actor.num_nodes * args.actor.num_gpus_per_node,
        zero_stage=args.ds.zero_stage,
        tp=args.ds.tensor_parallel_size,
        ring=args.ds.ring_attn_size,
        adam_offload=bool(args.ds.adam_offload),
        grad_checkpointing=bool(args.actor.gradient_checkpointing_enable),
        micro_tokens=micro_tokens,
        vllm_tp=args.vllm.tensor_parallel_size,
    )


def plan_command(argv: Sequence[str], model: Optional[ModelShape] = None) -> Plan:
    """Parse a training command with the real parser and plan it; the model from ``--model`` or its name."""
    from lens_openrlhf import coupling as A
    from lens_openrlhf.cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()  # OpenRLHF's parser module imports flash_attn; no-op where it is installed
    args = A.parse_args(list(argv))
    if model is None:
        name = args.actor.model_name_or_path or ""
        model = model_from_name(name)
        if model is None and Path(name, "config.json").exists():
            model = model_from_config(Path(name))
        if model is None:
            raise SystemExit(f"planner: no shape known for model '{name}': pass --model ({', '.join(MODELS)})")
    return plan(model, layout_from_args(args), A.gpus_needed(args))


def format_plan(p: Plan) -> str:
    rows = [
        ("bf16 weights", p.gib_weights),
        ("bf16 gradients", p.gib_grads),
        ("fp32 master + Adam (GPU)", p.gib_optimizer),
        ("activations", p.gib_activations),
        ("logits + log-softmax", p.gib_logits),
        ("total per actor GPU (estimate)", p.gib_total),
        ("fp32 master + Adam (CPU, per rank)", p.gib_optimizer_cpu),
        ("vLLM weights per GPU", p.gib_vllm_weights),
    ]
    lines = [f"{k:<36} {v:8.2f} GiB" for k, v in rows]
    lines.append(
        f"data-parallel size {p.dp}, ZeRO shards {p.zero_shards}, tokens per micro-batch per GPU {p.tokens_per_gpu}"
    )
    lines.append(
        "GPUs asked of Ray: " + ", ".join(f"{k} {v}" for k, v in p.ray_gpus.items()) + f" = {p.total_ray_gpus}"
    )
    lines.extend(f"warning: {w}" for w in p.warnings)
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_argv: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, train_argv = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster.planner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--script", type=Path, help="an example script (run with DRY_RUN=1 to get its command)")
    ap.add_argument("--model", help=f"a preset ({', '.join(MODELS)}) or a local HF folder; default: from the command")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    a = ap.parse_args(argv)
    if a.script:
        train_argv = script_argv(a.script) + train_argv
    if not train_argv:
        ap.error("give --script or training flags after --")
    model = None
    if a.model:
        model = model_from_name(a.model) or (
            model_from_config(Path(a.model)) if Path(a.model, "config.json").exists() else None
        )
        if model is None:
            ap.error(f"--model {a.model}: not a preset ({', '.join(MODELS)}) nor a folder with config.json")
    p = plan_command(train_argv, model)
    print(json.dumps({**asdict(p), "total_ray_gpus": p.total_ray_gpus}, indent=2) if a.json else format_plan(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
