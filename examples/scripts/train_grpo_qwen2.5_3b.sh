#!/usr/bin/env bash
# grpo on Qwen/Qwen2.5-3B, the paper's recipe, one node of 8 GPUs, colocated. Paper: Table 1 (MATH + DAPO).
# Start Ray first (`ray start --head` on this node), prepare data (prepare_data.sh), then run this.
set -euo pipefail

# ---- what you change --------------------------------------------------------------------------
MODEL=${MODEL:-Qwen/Qwen2.5-3B}
ESTIMATOR=grpo
LR=1e-6                         # paper: 3e-7 for Llama-3.1-8B-Instruct, 1e-6 for Qwen2.5-3B-Base
FORMAT=qwen-base
MIX=${MIX:-math_dapo}
RUN_NAME=${RUN_NAME:-grpo_qwen2.5_3b}
# -------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
submit --actor.model_name_or_path "${MODEL}" "${PAPER_RECIPE[@]}" "${COLOCATED[@]}" ${EXTRA_FLAGS:-}
