#!/usr/bin/env bash
# LENS on a large model with long contexts: the scaling OpenRLHF offers, nothing home-made.
#   - DeepSpeed ZeRO-3 shards parameters, gradients and optimizer state across the actor's GPUs;
#   - vLLM tensor parallelism splits each rollout engine across VLLM_TP GPUs;
#   - ring attention (sequence parallel, needs flash-attn and --ds.packing_samples) splits long
#     sequences across RING GPUs.
# Not colocated: actor GPUs and vLLM GPUs are separate pools (vLLM engines x TP + actor GPUs).
# Start a Ray cluster with NODES x 8 GPUs first (see train_lens_multinode.sh).
set -euo pipefail

# ---- what you change --------------------------------------------------------------------------
NODES=${NODES:-4}                  # 2 nodes for the actor, 2 for vLLM
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MODEL=${MODEL:-Qwen/Qwen2.5-32B}
ESTIMATOR=${ESTIMATOR:-lens}
LR=${LR:-5e-7}                     # not in the paper (it trains 3B and 8B); tune
FORMAT=qwen-base
ACTOR_NODES=${ACTOR_NODES:-2}
VLLM_ENGINES=${VLLM_ENGINES:-4}
VLLM_TP=${VLLM_TP:-4}
RING=${RING:-2}
RUN_NAME=${RUN_NAME:-lens_large}
# -------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LARGE=(
  --actor.num_nodes "${ACTOR_NODES}" --actor.num_gpus_per_node "${GPUS_PER_NODE}"
  --vllm.num_engines "${VLLM_ENGINES}" --vllm.tensor_parallel_size "${VLLM_TP}" --vllm.gpu_memory_utilization 0.85
  --ds.zero_stage 3 --ds.adam_offload
  --ds.packing_samples --ds.attn_implementation flash_attention_2 --ds.ring_attn_size "${RING}"
  --train.micro_batch_size 1 --rollout.micro_batch_size 4
  --train.dynamic_batch_enable --train.max_tokens_per_gpu 16384
)
submit --actor.model_name_or_path "${MODEL}" "${PAPER_RECIPE[@]}" "${LARGE[@]}" ${EXTRA_FLAGS:-}
