#!/usr/bin/env bash
# GRPO vs LENS on the same Ray cluster, then the report.
#
# Two `ray job submit`s of `python -m lens_openrlhf.train_ppo_ray`, one after the other, with the same flags except
# the advantage estimator (`--algo.advantage.estimator grpo`, then `lens`; the package logs the same train/lens/* group
# metrics for both), STEPS PPO steps each, TensorBoard logs to OUT/grpo/tensorboard and OUT/lens/tensorboard. Then
# `python -m benchmarks.cluster.report` writes OUT/report/{report.md,report.png,summary.json}: step time and its
# parts, samples/s, tokens/s, GPU memory, negative-group ratio per step, LENS overhead as ratios to GRPO.
#
#   RAY_ADDRESS=http://HEAD:8265 MODEL=Qwen/Qwen2.5-3B PROMPT_DATA=/shared/data/train_math_dapo.qwen.jsonl \
#       bash benchmarks/cluster/run.sh [OUT]
#   DRY_RUN=1 bash benchmarks/cluster/run.sh            # print the commands, run nothing
#
# Every setting in the configuration block can be set from the environment. Notes:
# - OUT must be an absolute path that the node running OpenRLHF's PPOTrainer actor can write and this machine can
#   read (a shared file system on a multi-node cluster): the TensorBoard files are written there by the job. It must
#   not be inside WORKING_DIR, which is uploaded with each job.
# - WORKING_DIR (default: this repository) is uploaded with each job (Ray skips what .gitignore lists), so the job
#   runs this checkout's lens_openrlhf; set WORKING_DIR= (empty) when it is installed on every node. Then PROMPT_DATA,
#   MODEL and REWARD must be paths every node can read.
# - GPU memory: the pinned OpenRLHF logs none. Where nvidia-smi exists on THIS machine, run.sh samples memory.used of its
#   GPUs into OUT/<job>/gpu_memory.csv while the job runs (so: complete on a single-node cluster run from its head).
# - Jobs run one after the other, never at once, so they do not compete for the cluster.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# ------------------------------------------------ configuration ------------------------------------------------
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}   # the Ray dashboard / job server of the cluster
OUT=${1:-${OUT:-/tmp/lens_cluster_bench/$(date +%Y%m%dT%H%M%S)}}
STEPS=${STEPS:-20}                 # PPO steps per job (one step = ROLLOUT_BATCH prompts x N_SAMPLES samples)
WARMUP=${WARMUP:-1}                # logged steps the report leaves out of its medians
MODEL=${MODEL:-Qwen/Qwen2.5-3B}    # the paper: Qwen2.5-3B-Base (lr 1e-6, no chat template) or Llama-3.1-8B-Instruct (3e-7)
PROMPT_DATA=${PROMPT_DATA:-data/train_math_dapo.qwen.jsonl}  # prepare_data.sh writes it; relative: from this directory
INPUT_KEY=${INPUT_KEY:-prompt}
LABEL_KEY=${LABEL_KEY:-label}
CHAT_TEMPLATE=${CHAT_TEMPLATE:-0}  # 1: --data.apply_chat_template (Llama-3.1-8B-Instruct prompt files)
REWARD=${REWARD:-lens_openrlhf/rewards/math_reward.py}  # Math-Verify; relative: inside WORKING_DIR, on every node
N_SAMPLES=${N_SAMPLES:-16}         # G
ROLLOUT_BATCH=${ROLLOUT_BATCH:-128}  # prompts per step (the paper: 128 prompts, 4 updates of 32 x 16)
TRAIN_BATCH=${TRAIN_BATCH:-512}    # samples per update
MICRO_TRAIN_BATCH=${MICRO_TRAIN_BATCH:-4}
MICRO_ROLLOUT_BATCH=${MICRO_ROLLOUT_BATCH:-16}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-4096}
MAX_LEN=${MAX_LEN:-5120}           # prompt + response tokens
LR=${LR:-1e-6}
LENS_ALPHA=${LENS_ALPHA:-0.25}
ACTOR_NODES=${ACTOR_NODES:-1}
ACTOR_GPUS=${ACTOR_GPUS:-4}        # per node
VLLM_ENGINES=${VLLM_ENGINES:-4}
VLLM_TP=${VLLM_TP:-1}
VLLM_GPU_UTIL=${VLLM_GPU_UTIL:-0.6}
ZERO_STAGE=${ZERO_STAGE:-3}
SEED=${SEED:-42}
EXTRA_FLAGS=${EXTRA_FLAGS:-}       # added to both jobs, e.g. "--train.colocate_all --vllm.enable_sleep --ds.enable_sleep"
GRPO_FLAGS=${GRPO_FLAGS:---algo.advantage.estimator grpo}
LENS_FLAGS=${LENS_FLAGS:---algo.advantage.estimator lens --algo.lens.alpha $LENS_ALPHA}
WORKING_DIR=${WORKING_DIR-$REPO}
GPU_MEM_INTERVAL_MS=${GPU_MEM_INTERVAL_MS:-2000}
PREFLIGHT=${PREFLIGHT:-1}          # 1: parse both commands with lens_openrlhf here first (catches flag typos)
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-python}
RAY=${RAY:-ray}
# ----------------------------------------------------------------------------------------------------------------

# paths are read and written by the job, which runs in Ray's copy of WORKING_DIR: relative ones are taken from the
# directory this script runs in and made absolute (on several nodes, they must sit on a shared filesystem)
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/${1#./}" ;; esac; }
OUT=$(absolute "$OUT")
PROMPT_DATA=$(absolute "$PROMPT_DATA")
if [[ -e "$MODEL" ]]; then MODEL=$(absolute "$MODEL"); fi   # a local folder; a hub id stays as it is
if [[ -z "$WORKING_DIR" && "$REWARD" != /* ]]; then        # installed on every node: the installed reward file
    REWARD=$("$PYTHON" -c 'import os, lens_openrlhf; print(os.path.join(os.path.dirname(lens_openrlhf.__file__), "rewards", "math_reward.py"))')
fi
if [[ -n "$WORKING_DIR" ]]; then
    WORKING_DIR=$(cd "$WORKING_DIR" && pwd)
    case "$OUT/" in "$WORKING_DIR"/*)
        echo "run.sh: OUT ($OUT) is inside WORKING_DIR ($WORKING_DIR), which is uploaded with each job; pick another OUT" >&2
        exit 2 ;;
    esac
fi
if (( STEPS < 1 )); then echo "run.sh: STEPS must be >= 1" >&2; exit 2; fi

common_flags() {  # $1: the job's name (grpo | lens)
    local name=$1 flags
    flags=(
        --actor.model_name_or_path "$MODEL"
        --data.prompt_dataset "$PROMPT_DATA" --data.input_key "$INPUT_KEY" --data.label_key "$LABEL_KEY"
        --reward.remote_url "$REWARD"
        --rollout.n_samples_per_prompt "$N_SAMPLES"
        --rollout.batch_size "$ROLLOUT_BATCH" --rollout.micro_batch_size "$MICRO_ROLLOUT_BATCH"
        --train.batch_size "$TRAIN_BATCH" --train.micro_batch_size "$MICRO_TRAIN_BATCH"
        --data.max_samples "$((STEPS * ROLLOUT_BATCH))" --train.num_episodes 1 --train.max_epochs 1
        --rollout.max_new_tokens "$MAX_NEW_TOKENS" --data.max_len "$MAX_LEN"
        --rollout.temperature 1.0 --rollout.top_p 1.0
        --actor.adam.lr "$LR" --algo.kl.init_coef 0 --actor.eps_clip 0.2
        --actor.num_nodes "$ACTOR_NODES" --actor.num_gpus_per_node "$ACTOR_GPUS"
        --vllm.num_engines "$VLLM_ENGINES" --vllm.tensor_parallel_size "$VLLM_TP"
        --vllm.gpu_memory_utilization "$VLLM_GPU_UTIL"
        --ds.zero_stage "$ZERO_STAGE" --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
        --train.seed "$SEED"
        --ckpt.output_dir "$OUT/$name/checkpoint" --ckpt.path "$OUT/$name/ckpt"
        --logger.logging_steps 1
        --logger.tensorboard_dir "$OUT/$name/tensorboard" --logger.wandb.run_name "$name"
    )
    if [[ "$CHAT_TEMPLATE" == 1 ]]; then flags+=(--data.apply_chat_template); fi
    printf '%s\n' "${flags[@]}"
}

show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

submit() {  # $1: name, rest: estimator flags
    local name=$1; shift
    local -a train submit_cmd
    local runtime_env
    mapfile -t train < <(common_flags "$name")
    # shellcheck disable=SC2206  # word-split on purpose: flags given as one string
    train+=($EXTRA_FLAGS "$@")
    # the working dir's upload and its excludes: one definition with the example scripts (lens_openrlhf.recipes)
    runtime_env=$(cd "$REPO" && "$PYTHON" -m lens_openrlhf.recipes runtime-env ${WORKING_DIR:+--working-dir "$WORKING_DIR"})
    submit_cmd=("$RAY" job submit --address "$RAY_ADDRESS" --submission-id "lens-bench-$name-$(date +%s)"
                --runtime-env-json "$runtime_env" -- python -m lens_openrlhf.train_ppo_ray "${train[@]}")
    show "${submit_cmd[@]}"
    if [[ "$PREFLIGHT" == 1 && "$DRY_RUN" != 1 ]]; then
        if (cd "$REPO" && "$PYTHON" -c "import lens_openrlhf" 2>/dev/null); then
            echo "[run.sh] preflight: parsing the $name flags with lens_openrlhf here ..."
            (cd "$REPO" && "$PYTHON" -c 'import sys
from lens_openrlhf.cpu_shims import ensure_flash_attn_importable  # as the entry point does; a no-op with flash-attn
ensure_flash_attn_importable()
from lens_openrlhf.coupling import parse_args
parse_args(sys.argv[1:])' "${train[@]}")
        else
            echo "[run.sh] preflight skipped: lens_openrlhf does not import with $PYTHON here"
        fi
    fi
    [[ "$DRY_RUN" == 1 ]] && return 0

    mkdir -p "$OUT/$name"
    printf '%q ' "${submit_cmd[@]}" > "$OUT/$name/command.sh"; echo >> "$OUT/$name/command.sh"
    local smi_pid=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=timestamp,index,memory.used,memory.total --format=csv,noheader,nounits \
            -lms "$GPU_MEM_INTERVAL_MS" > "$OUT/$name/gpu_memory.csv" 2>/dev/null &
        smi_pid=$!
    fi
    local t0=$SECONDS rc=0
    "${submit_cmd[@]}" 2>&1 | tee "$OUT/$name/job.log" || rc=$?
    if [[ -n "$smi_pid" ]]; then kill "$smi_pid" 2>/dev/null || true; wait "$smi_pid" 2>/dev/null || true; fi
    echo "[run.sh] $name: exit $rc after $((SECONDS - t0)) s (wall, submit to end); log $OUT/$name/job.log"
    return "$rc"
}

echo "[run.sh] $STEPS steps each, cluster $RAY_ADDRESS, results in $OUT"
submit grpo $GRPO_FLAGS
submit lens $LENS_FLAGS
report_cmd=("$PYTHON" -m benchmarks.cluster.report --grpo "$OUT/grpo" --lens "$OUT/lens" --out "$OUT/report" --warmup "$WARMUP")
show "${report_cmd[@]}"
if [[ "$DRY_RUN" != 1 ]]; then
    (cd "$REPO" && "${report_cmd[@]}")
fi
