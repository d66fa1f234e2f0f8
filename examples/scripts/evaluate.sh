#!/usr/bin/env bash
# Unbiased pass@k (k = 1, 2, 4, 8, 16 from 16 samples, temperature 1.0, top-p 1.0 as in the paper) on the
# MATH test set: overall, per level and Levels 4-5, one curve per checkpoint (e.g. GRPO vs LENS).
#   bash examples/scripts/evaluate.sh checkpoints/grpo_qwen2.5_3b checkpoints/lens_qwen2.5_3b
set -euo pipefail
DATA=${DATA:-data/math_test.qwen.jsonl}   # data/math_test.llama.jsonl + CHAT=1 for Llama-3.1-8B-Instruct
OUT=${OUT:-eval}
args=()
for ckpt in "$@"; do args+=(--model "${ckpt}"); done
python -m lens_openrlhf.evaluation "${args[@]}" --data "${DATA}" --out "${OUT}" \
  --n 16 --temperature 1.0 --top-p 1.0 --max-tokens 4096 ${CHAT:+--apply-chat-template}
