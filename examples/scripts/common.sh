# Sourced by the example scripts: the paper's recipe (arXiv 2510.08696, section 6 and appendix D) as
# lens_openrlhf.train_ppo_ray flags, and one way to submit. Do not run directly.
#
# Each script sets, before sourcing this file: MODEL, ESTIMATOR, LR, FORMAT (qwen-base|llama-instruct),
# and may set NODES, GPUS_PER_NODE, DATA_DIR, SAVE_DIR, RAY_ADDRESS, EXTRA_FLAGS.
# DRY_RUN=1 prints the training command instead of submitting it (the tests use this).

: "${NODES:=1}"
: "${GPUS_PER_NODE:=8}"
: "${DATA_DIR:=data}"                       # python -m lens_openrlhf.data all --out-dir data
: "${MIX:=math_dapo}"                       # math_dapo (Table 1) or math_numina (Tables 2, 3)
: "${SAVE_DIR:=checkpoints/${RUN_NAME}}"
: "${RAY_ADDRESS:=http://127.0.0.1:8265}"
# The paper's GRPO loss (eq. 3) is OpenRLHF's seq-mean-token-mean; LOSS_AGG_MODE=token-mean switches back to
# OpenRLHF's default (which weighs a response by its length).
: "${LOSS_AGG_MODE:=seq-mean-token-mean}"
: "${REPO_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

# The paper's recipe (32 prompts x 16 samples = 512 per update; rollout batch 128 prompts, 4 off-policy updates;
# clip 0.2; the eq. 3 loss; no KL; temperature 1.0, top-p 1.0; at most 4,096 new tokens; Math-Verify reward; the
# estimator's options at their paper values) is defined once, in lens_openrlhf/recipes.py, which the CPU demo
# shares; `python -m lens_openrlhf.recipes paper ...` prints it, one flag or value per line.
if ! RECIPE_TEXT="$(cd "${REPO_DIR}" && "${PYTHON:-python}" -m lens_openrlhf.recipes paper --estimator "${ESTIMATOR}" \
    --lr "${LR}" --format "${FORMAT}" --data-dir "${DATA_DIR}" --mix "${MIX}" --save-dir "${SAVE_DIR}" \
    --loss-agg-mode "${LOSS_AGG_MODE}" --reward "${REPO_DIR}/lens_openrlhf/rewards/math_reward.py")"; then
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
  local cmd=(python -m lens_openrlhf.train_ppo_ray "$@")
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "${cmd[@]}"; echo
    return 0
  fi
  # working_dir ships this repository to every node; the package is also importable if pip-installed.
  ray job submit --address="${RAY_ADDRESS}" \
    --runtime-env-json="{\"working_dir\": \"${REPO_DIR}\", \"excludes\": [\"data\", \"checkpoints\", \".venv\"]}" \
    -- "${cmd[@]}"
}
