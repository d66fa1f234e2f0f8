#!/usr/bin/env bash
# LENS on Llama-3.1-70B-Instruct: a 70B-class run on 8 nodes of 8 GPUs, every axis the pinned OpenRLHF has.
#   actor:  ACTOR_NODES x GPUS_PER_NODE = 4 x 8 = 32 GPUs = dp 2 x ring 2 x tp 8 (AutoTP inside a node)
#   vLLM:   VLLM_ENGINES x VLLM_TP      = 4 x 8 = 32 GPUs (one engine per node)
#   total:  64 GPUs = NODES x GPUS_PER_NODE = 8 x 8
# ZeRO-2 with the optimizer states in CPU memory (DeepSpeed 0.19.6 also runs AutoTP with ZeRO-3); the planner
# (python -m benchmarks.cluster.planner --script this file) prints the per-GPU memory of this layout.
# Llama-3.1-70B has 64 query and 8 KV heads: TP 8 divides both. Start the cluster as in
# train_lens_multinode.sh.
set -euo pipefail

# ---- what you change --------------------------------------------------------------------------
NODES=${NODES:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}
ESTIMATOR=${ESTIMATOR:-lens}
LR=${LR:-2e-7}                     # not in the paper (it trains 3B and 8B at 1e-6 / 3e-7); tune
FORMAT=llama-instruct
ACTOR_NODES=${ACTOR_NODES:-4}
TP=${TP:-8}
RING=${RING:-2}
VLLM_ENGINES=${VLLM_ENGINES:-4}
VLLM_TP=${VLLM_TP:-8}
RUN_NAME=${RUN_NAME:-lens_llama3.1_70b}
# -------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
submit --actor.model_name_or_path "${MODEL}" "${PAPER_RECIPE[@]}" "${SPLIT_ALL_AXES[@]}" ${EXTRA_FLAGS:-}
