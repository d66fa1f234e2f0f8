# Sourced by the example scripts: the paper's recipe (arXiv 2510.08696, section 6 and appendix D) as
# lens_openrlhf.train_ppo_ray flags, and one way to submit it to a Ray cluster. Do not run directly.
#
# Each script sets, before sourcing this file: MODEL, ESTIMATOR, LR, FORMAT (qwen-base|llama-instruct), RUN_NAME,
# and may set NODES, GPUS_PER_NODE, DATA_DIR, SAVE_DIR, RAY_ADDRESS, WORKING_DIR, SUBMISSION_ID, EXTRA_FLAGS.
# Relative DATA_DIR, SAVE_DIR and a local MODEL folder are taken from the directory the script is run in and made
# absolute: the job reads and writes there (on several nodes, put them on a filesystem every node shares).
# DRY_RUN=1 prints the whole submission (`ray job submit` with its runtime env, then the training command) and
# submits nothing.

: "${NODES:=1}"
: "${GPUS_PER_NODE:=8}"
: "${DATA_DIR:=data}"                       # python -m lens_openrlhf.data all --out-dir data
: "${MIX:=math_dapo}"                       # math_dapo (Table 1) or math_numina (Tables 2, 3)
: "${SAVE_DIR:=checkpoints/${RUN_NAME}}"    # checkpoints (resumed from on resubmission), the model, TensorBoard
: "${RAY_ADDRESS:=http://127.0.0.1:8265}"
# The paper's GRPO loss (eq. 3) is OpenRLHF's seq-mean-token-mean; LOSS_AGG_MODE=token-mean switches back to
# OpenRLHF's default (which weighs a response by its length).
: "${LOSS_AGG_MODE:=seq-mean-token-mean}"
: "${REPO_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# The folder uploaded with the job (Ray copies it to every node and runs the job inside the copy); set WORKING_DIR=
# (empty) when lens_openrlhf is pip-installed on every node.
WORKING_DIR=${WORKING_DIR-${REPO_DIR}}

absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "${PWD}/${1#./}" ;; esac; }
DATA_DIR=$(absolute "${DATA_DIR}")
SAVE_DIR=$(absolute "${SAVE_DIR}")
if [[ -e "${MODEL:-}" ]]; then MODEL=$(absolute "${MODEL}"); fi   # a local folder; a hub id stays as it is
if [[ -n "${WORKING_DIR}" ]]; then
  WORKING_DIR=$(cd "${WORKING_DIR}" && pwd)
  REWARD=${REWARD:-lens_openrlhf/rewards/math_reward.py}        # inside the uploaded working_dir, on every node
else
  REWARD=${REWARD:-$(cd "${REPO_DIR}" && "${PYTHON:-python}" -c \
    'import os, lens_openrlhf; print(os.path.join(os.path.dirname(lens_openrlhf.__file__), "rewards", "math_reward.py"))')}
fi

# The paper's recipe (32 prompts x 16 samples = 512 per update; rollout batch 128 prompts, 4 off-policy updates;
# clip 0.2; the eq. 3 loss; no KL; temperature 1.0, top-p 1.0; at most 4,096 new tokens; Math-Verify reward; the
# estimator's options at their paper values) is defined once, in lens_openrlhf/recipes.py, which the CPU demo
# shares; `python -m lens_openrlhf.recipes paper ...` prints it, one flag or value per line.
if ! RECIPE_TEXT="$(cd "${REPO_DIR}" && "${PYTHON:-python}" -m lens_openrlhf.recipes paper --estimator "${ESTIMATOR}" \
    --lr "${LR}" --format "${FORMAT}" --data-dir "${DATA_DIR}" --mix "${MIX}" --save-dir "${SAVE_DIR}" \
    --loss-agg-mode "${LOSS_AGG_MODE}" --reward "${REWARD}")"; then
  echo "common.sh: cannot read the recipe from lens_openrlhf.recipes (set PYTHON to the environment's python)" >&2
  exit 1
fi
mapfile -t PAPER_RECIPE <<< "${RECIPE_TEXT}"

# Single node, 8 GPUs, everything colocated: actor, reference (unused: no KL) and vLLM share the GPUs;
# vLLM and DeepSpeed sleep while the other works.
COLOCATED=(
  --actor.num_nodes "${NODES}" --actor.num_gpus_per_node "${GPUS_PER_NODE}"
  --ref.num_nodes "${NODES}" --ref.num_gpus_per_node "${GPUS_PER_NODE}"
  --vllm.num_engines $(( NODES * GPUS_PER_NODE )) --vllm.tensor_parallel_size 1
  --train.colocate_all --vllm.enable_sleep --ds.enable_sleep --vllm.gpu_memory_utilization 0.6
  --ds.zero_stage 3 --train.micro_batch_size 4 --rollout.micro_batch_size 8
)

# Large models, not colocated (train_lens_large_model.sh, train_lens_llama3.1_70b.sh; they set ACTOR_NODES,
# TP, RING, VLLM_ENGINES, VLLM_TP first): actor and vLLM on separate GPU pools; DeepSpeed AutoTP (training
# tensor parallel) with ZeRO-2 (AutoTP's tested stage on CPU here) and the optimizer states in CPU memory; ring attention
# (sequence parallel, needs packing and flash-attn); vLLM tensor parallel; token-budget micro-batches.
SPLIT_ALL_AXES=(
  --actor.num_nodes "${ACTOR_NODES:-1}" --actor.num_gpus_per_node "${GPUS_PER_NODE}"
  --vllm.num_engines "${VLLM_ENGINES:-1}" --vllm.tensor_parallel_size "${VLLM_TP:-1}" --vllm.gpu_memory_utilization 0.85
  --ds.zero_stage 2 --ds.adam_offload --ds.tensor_parallel_size "${TP:-1}"
  --ds.packing_samples --ds.attn_implementation flash_attention_2 --ds.ring_attn_size "${RING:-1}"
  --train.micro_batch_size 1 --rollout.micro_batch_size 4
  --train.dynamic_batch_enable --train.max_tokens_per_gpu 16384
)

submit() {
  local cmd=(python -m lens_openrlhf.train_ppo_ray "$@") runtime_env
  runtime_env=$(cd "${REPO_DIR}" && "${PYTHON:-python}" -m lens_openrlhf.recipes runtime-env \
    ${WORKING_DIR:+--working-dir "${WORKING_DIR}"})
  local job=(ray job submit --address="${RAY_ADDRESS}" --submission-id="${SUBMISSION_ID:-${RUN_NAME}-$(date +%Y%m%d-%H%M%S)}"
             --runtime-env-json="${runtime_env}" -- "${cmd[@]}")
  if [[ -n "${DRY_RUN:-}" ]]; then
    local word line=""
    for word in "${job[@]}"; do   # one line a shell reads back: words with special characters in single quotes
      if [[ "${word}" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then line+="${word} "; else line+="'${word//\'/\'\\\'\'}' "; fi
    done
    echo "${line% }"
    return 0
  fi
  if (( NODES > 1 )); then
    echo "common.sh: ${NODES} nodes: ${DATA_DIR} and ${SAVE_DIR} must be on a filesystem every node shares" >&2
  fi
  mkdir -p "${SAVE_DIR}"
  "${job[@]}"
}
