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
# The paper's GRPO loss (eq. 3) averages each response's tokens, then the responses: OpenRLHF's
# seq-mean-token-mean. OpenRLHF's default token-mean weighs each response by its length, so the balance
# alpha sets between negative and mixed groups would shift with their lengths (long truncated failures
# would weigh more). LOSS_AGG_MODE=token-mean switches back to OpenRLHF's default.
: "${LOSS_AGG_MODE:=seq-mean-token-mean}"
: "${REPO_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

case "${FORMAT}" in
  qwen-base) DATA_TAG=qwen ;;
  llama-instruct) DATA_TAG=llama ;;
  *) echo "FORMAT must be qwen-base or llama-instruct, got '${FORMAT}'" >&2; exit 2 ;;
esac

# The paper's recipe: 32 prompts x 16 samples = 512 per update; rollout batch 128 prompts (4 off-policy
# updates); clip 0.2; the eq. 3 loss (sequence mean of token means); no KL; temperature 1.0, top-p 1.0 (train and eval); at most 4,096 new tokens;
# Math-Verify reward; the estimator's options (alpha = 0.25) at their registry defaults, written out for the record.
PAPER_RECIPE=(
  --algo.advantage.estimator "${ESTIMATOR}"
  --rollout.n_samples_per_prompt 16
  --train.batch_size 512
  --rollout.batch_size 128
  --actor.eps_clip 0.2
  --actor.loss_agg_mode "${LOSS_AGG_MODE}"
  --algo.kl.init_coef 0
  --rollout.temperature 1.0
  --rollout.top_p 1.0
  --rollout.max_new_tokens 4096
  --data.max_len 5120
  --actor.adam.lr "${LR}"
  --actor.lr_warmup_ratio 0.0
  --reward.remote_url "${REPO_DIR}/lens_openrlhf/rewards/math_reward.py"
  --data.prompt_dataset "${DATA_DIR}/train_${MIX}.${DATA_TAG}.jsonl"
  --data.input_key prompt
  --data.label_key label
  --eval.dataset "${DATA_DIR}/math_test.${DATA_TAG}.jsonl"
  --eval.steps 20
  --eval.n_samples_per_prompt 16
  --eval.temperature 1.0
  --train.num_episodes 20
  --ds.param_dtype bf16
  --actor.gradient_checkpointing_enable
  --ckpt.output_dir "${SAVE_DIR}"
  --ckpt.path "${SAVE_DIR}/ckpt"
  --ckpt.save_steps 50
  --logger.tensorboard_dir "${SAVE_DIR}/tensorboard"
)
# The estimator's options at their registry defaults (the paper's values, e.g. alpha 0.25),
# read from the registry so that a new estimator needs no edit here.
if ! ESTIMATOR_FLAGS="$(cd "${REPO_DIR}" && "${PYTHON:-python}" -m lens_openrlhf.estimators --recipe-flags "${ESTIMATOR}")"; then
  echo "common.sh: cannot read the options of estimator ${ESTIMATOR} from lens_openrlhf.estimators (set PYTHON to the environment's python)" >&2
  exit 1
fi
read -r -a ESTIMATOR_FLAGS <<< "${ESTIMATOR_FLAGS}"
PAPER_RECIPE+=("${ESTIMATOR_FLAGS[@]}")
if [[ "${FORMAT}" == "llama-instruct" ]]; then
  PAPER_RECIPE+=(--data.apply_chat_template)   # Llama-3.1-8B-Instruct: its chat template
fi                                             # Qwen2.5-3B-Base: plain prompt, no chat template

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
