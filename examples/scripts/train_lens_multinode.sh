#!/usr/bin/env bash
# LENS on Llama-3.1-8B-Instruct across several nodes (paper recipe), colocated on every node.
#
# 1. On the head node:      ray start --head --port 6379 --dashboard-host 0.0.0.0 --num-gpus 8
# 2. On every other node:   ray start --address HEAD_IP:6379 --num-gpus 8
# 3. DATA_DIR (the prompt and eval files) and SAVE_DIR (checkpoints, the final model, TensorBoard logs) must sit
#    on a filesystem every node shares, at the same path: e.g. DATA_DIR=/shared/data SAVE_DIR=/shared/ckpt/run
#    (relative values are made absolute from the directory you run this in).
# 4. On the head node:      NODES=2 DATA_DIR=... SAVE_DIR=... bash examples/scripts/train_lens_multinode.sh
# The job's runtime_env working_dir (set in common.sh) ships this repository to every node; Ray places
# the actor, vLLM engines and their DeepSpeed ranks across nodes from the flags below.
set -euo pipefail

# ---- what you change --------------------------------------------------------------------------
NODES=${NODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MODEL=${MODEL:-meta-llama/Llama-3.1-8B-Instruct}
ESTIMATOR=${ESTIMATOR:-lens}
LR=3e-7
FORMAT=llama-instruct
RUN_NAME=${RUN_NAME:-lens_llama3.1_8b_${NODES}nodes}
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
# -------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
submit --actor.model_name_or_path "${MODEL}" "${PAPER_RECIPE[@]}" "${COLOCATED[@]}" ${EXTRA_FLAGS:-}
