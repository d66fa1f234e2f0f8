"""benchmarks/cluster/planner.py: memory per GPU against hand-computed cases, and the GPUs each example
script asks Ray for against the script's own arithmetic and OpenRLHF's real launcher."""

import re
import sys
from pathlib import Path

import pytest

from benchmarks.cluster import planner as P
from lens_openrlhf import coupling as A

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "examples" / "scripts").glob("train_*.sh"))
# a round model so that every byte count below is worked out by hand: P = 1e9, h = 1000, L = 10, V = 1000
M = P.ModelShape(params=1e9, hidden=1000, layers=10, vocab=1000, heads=8, kv_heads=8)


def test_memory_hand_computed():
    # ZeRO-2, tp 2, 8 actor GPUs -> 4 ZeRO shards; 1,000 tokens a micro-batch, checkpointing on
    b = P.memory_bytes(M, P.Layout(actor_gpus=8, zero_stage=2, tp=2, micro_tokens=1000))
    assert b["weights"] == 2e9 / 2  # bf16 weights split by tp only
    assert b["grads"] == 2e9 / 2 / 4  # ZeRO-2 shards gradients
    assert b["optimizer"] == 12e9 / 2 / 4  # fp32 master + m + v, sharded
    # 2 L T h (one bf16 hidden per layer) + T h (10 + 24 / 2) = 2e7 + 2.2e7
    assert b["activations"] == 2 * 10 * 1000 * 1000 + 1000 * 1000 * 22
    assert b["logits"] == 6 * 1000 * 1000
    assert b["vllm_weights"] == 2e9
    # ZeRO-3, tp 1, 8 GPUs: everything sharded 8 ways
    b = P.memory_bytes(M, P.Layout(actor_gpus=8, zero_stage=3))
    assert (b["weights"], b["grads"], b["optimizer"]) == (2e9 / 8, 2e9 / 8, 12e9 / 8)
    # ZeRO-0: nothing sharded; ZeRO-1 on 4 GPUs: optimizer only
    b = P.memory_bytes(M, P.Layout(actor_gpus=4, zero_stage=0))
    assert (b["weights"], b["grads"], b["optimizer"]) == (2e9, 2e9, 12e9)
    b = P.memory_bytes(M, P.Layout(actor_gpus=4, zero_stage=1))
    assert (b["weights"], b["grads"], b["optimizer"]) == (2e9, 2e9, 3e9)
    # offload moves the optimizer to CPU memory; ring 2 halves the tokens; no checkpointing keeps every layer
    b = P.memory_bytes(M, P.Layout(actor_gpus=8, zero_stage=2, adam_offload=True, ring=2, micro_tokens=1000))
    assert b["optimizer"] == 0 and b["optimizer_cpu"] == 12e9 / 8
    assert b["activations"] == 2 * 10 * 500 * 1000 + 500 * 1000 * 34 and b["logits"] == 6 * 500 * 1000
    b = P.memory_bytes(M, P.Layout(actor_gpus=8, zero_stage=2, grad_checkpointing=False, micro_tokens=1000))
    assert b["activations"] == 10 * 1000 * 1000 * 34


def test_plan_warns_on_layouts_that_cannot_run():
    p = P.plan(M, P.Layout(actor_gpus=8, zero_stage=3, tp=3, vllm_tp=16), {"actor": 8})
    text = "\n".join(p.warnings)
    assert "not a multiple of tp x ring" in text and "tp 3 does not divide" in text
    assert "vLLM tp 16 does not divide" in text
    assert P.plan(M, P.Layout(actor_gpus=8, zero_stage=2, tp=2), {"actor": 8}).warnings == []


def test_model_from_config(tmp_path):
    # a Qwen2-like config: params = untied embed/head 2 V h + L (attention + 3 h ffn + 2 h norms) + final norm
    cfg = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "vocab_size": 512,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 128,
        "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(__import__("json").dumps(cfg))
    m = P.model_from_config(tmp_path)
    # attention: q 64x64 + k, v 64x32 each + o 64x64 = 4096 + 4096 + 4096 = 12288; mlp 3 x 64 x 128 = 24576
    assert m.params == 2 * 512 * 64 + 2 * (12288 + 24576 + 128) + 64
    assert (m.hidden, m.layers, m.vocab, m.heads, m.kv_heads) == (64, 2, 512, 2, 1)


def _script_default(script: Path, var: str) -> int:
    """VAR's default in the script (VAR=${VAR:-N}), else in common.sh (: "${VAR:=N}")."""
    m = re.search(rf"^{var}=\$\{{{var}:-(\d+)\}}", script.read_text(), re.M)
    m = m or re.search(rf'^: "\$\{{{var}:=(\d+)\}}"', (script.parent / "common.sh").read_text(), re.M)
    assert m, f"neither {script.name} nor common.sh sets a default {var}"
    return int(m.group(1))


@pytest.mark.heavy
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_gpu_arithmetic(script):
    p = P.plan_command(P.script_argv(script))
    nodes, per_node = _script_default(script, "NODES"), _script_default(script, "GPUS_PER_NODE")
    # the cluster the script's header says to start is exactly what Ray is asked for, nothing idle, nothing short
    assert p.total_ray_gpus == nodes * per_node, (script.name, p.ray_gpus)
    assert p.warnings == [], p.warnings
    args = A.parse_args(P.script_argv(script))
    assert p.ray_gpus == A.gpus_needed(args)
    if args.ds.tensor_parallel_size > 1:  # tp divides the actor's data parallelism, it asks for no extra GPUs
        assert p.ray_gpus["actor"] == args.actor.num_nodes * args.actor.num_gpus_per_node
        assert p.dp * args.ds.tensor_parallel_size * args.ds.ring_attn_size == p.ray_gpus["actor"]
        assert p.gib_total < 80  # fits an 80 GB GPU by the estimate


def test_cli_prints_the_plan(capsys):
    assert P.main(["--script", str(REPO / "examples/scripts/train_lens_large_model.sh")]) == 0
    out = capsys.readouterr().out
    assert "GPUs asked of Ray: actor 16, vllm 16 = 32" in out and "total per actor GPU" in out


@pytest.mark.heavy
def test_openrlhf_launcher_asks_one_gpu_per_rank_whatever_the_tp():
    """OpenRLHF's real RayActorGroup, in a real Ray with 8 logical GPUs: a 4-GPU actor at tp 2 x ring 1
    (duplicate_actors = 2, as train() passes) reserves 4 GPUs, the count gpus_needed and the planner use."""
    import cloudpickle
    import ray
    from openrlhf.trainer.ray.launcher import RayActorGroup

    class Probe:
        def __init__(self, world_size, rank, master_addr, master_port):
            self.rank = rank

        def get_master_addr_port(self):
            return "127.0.0.1", 29500

        def ready(self):
            return self.rank

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this test module is not importable in workers
    ray.init(address="local", num_cpus=8, num_gpus=8, include_dashboard=False, log_to_driver=False)
    try:
        group = RayActorGroup(1, 4, ray.remote(Probe), duplicate_actors=2)
        assert sorted(ray.get([a.ready.remote() for a in group._actor_handlers])) == [0, 1, 2, 3]
        assert ray.available_resources().get("GPU", 0) == 8 - 4
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
