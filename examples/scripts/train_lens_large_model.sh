#!/usr/bin/env bash
# LENS on a large model with long contexts: the Megatron-style axes the pinned OpenRLHF offers, nothing home-made.
#   - DeepSpeed AutoTP (training tensor parallelism, --ds.tensor_parallel_size): Megatron-style column/row
#     sharding of every Linear layer across TP GPUs (deepspeed.tp_model_init);
#   - DeepSpeed ZeRO-2 shards gradients and optimizer state across the data-parallel ranks; the optimizer
#     states live in CPU memory (--ds.adam_offload);
#   - ring attention (sequence/context parallel, needs flash-attn and --ds.packing_samples) splits each
#     long sequence across RING GPUs;
#   - vLLM tensor parallelism splits each rollout engine across VLLM_TP GPUs.
# Not colocated: actor GPUs and vLLM GPUs are separate pools. The GPU arithmetic (defaults):
#   actor:  ACTOR_NODES x GPUS_PER_NODE = 2 x 8 = 16 GPUs = dp 2 x ring 2 x tp 4
#   vLLM:   VLLM_ENGINES x VLLM_TP      = 4 x 4 = 16 GPUs
#   total:  32 GPUs = NODES x GPUS_PER_NODE = 4 x 8 (start the Ray cluster as in train_lens_multinode.sh)
# Memory per actor GPU for Qwen2.5-32B (python -m benchmarks.cluster.planner --script this file):
# bf16 weights / tp, gradients / (tp x ZeRO shards), optimizer in CPU memory, activations / ring.
set -euo pipefail

# ---- what you change --------------------------------------------------------------------------
NODES=${NODES:-4}                  # 2 nodes for the actor, 2 for vLLM
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MODEL=${MODEL:-Qwen/Qwen2.5-32B}   # 40 query / 8 KV heads: TP 4 divides both
ESTIMATOR=${ESTIMATOR:-lens}
LR=${LR:-5e-7}                     # not in the paper (it trains 3B and 8B); tune
FORMAT=qwen-base
ACTOR_NODES=${ACTOR_NODES:-2}
TP=${TP:-4}                        # training tensor parallel (AutoTP), within a node
RING=${RING:-2}                    # ring attention (sequence parallel)
VLLM_ENGINES=${VLLM_ENGINES:-4}
VLLM_TP=${VLLM_TP:-4}
RUN_NAME=${RUN_NAME:-lens_large}
# -------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
submit --actor.model_name_or_path "${MODEL}" "${PAPER_RECIPE[@]}" "${SPLIT_ALL_AXES[@]}" ${EXTRA_FLAGS:-}
