#!/usr/bin/env bash
# grpo on meta-llama/Llama-3.1-8B-Instruct, the paper's recipe, one node of 8 GPUs, colocated. Paper: Table 1 (MATH + DAPO).
# Start Ray first (`ray start --head` on this node), prepare data (prepare_data.sh), then run this.
set -euo pipefail

# ---- what you change --------------------------------------------------------------------------
MODEL=${MODEL:-meta-llama/Llama-3.1-8B-Instruct}
ESTIMATOR=grpo
LR=3e-7                         # paper: 3e-7 for Llama-3.1-8B-Instruct, 1e-6 for Qwen2.5-3B-Base
FORMAT=llama-instruct
MIX=${MIX:-math_dapo}
RUN_NAME=${RUN_NAME:-grpo_llama3.1_8b}
# -------------------------------------------------------------------------------------------------

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
submit --actor.model_name_or_path "${MODEL}" "${PAPER_RECIPE[@]}" "${COLOCATED[@]}" ${EXTRA_FLAGS:-}
