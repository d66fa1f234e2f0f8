#!/usr/bin/env bash
# The paper's training and test sets as OpenRLHF prompt files (both mixes, both prompt formats):
#   data/train_math_dapo.{qwen,llama}.jsonl    MATH train 7.5k + seeded random 17.5k of DAPO-Math-17k
#   data/train_math_numina.{qwen,llama}.jsonl  MATH train + NuminaMath-1.5
#   data/math_test.{qwen,llama}.jsonl          MATH test 5k with level and subject
# From the hub by default (needs `datasets` and network); or point the flags at local jsonl/parquet:
#   --math-train DIR --math-test DIR --dapo FILE --numina DIR   (python -m lens_openrlhf.data all --help)
# or, with no network, generated stand-ins in the same schemas (for a rehearsal, not for training):
#   bash examples/scripts/prepare_data.sh --offline-sample 16
# OUT_DIR (default data, in the directory you run this from) is the DATA_DIR the training scripts read.
set -euo pipefail
OUT_DIR=${OUT_DIR:-data}
python -m lens_openrlhf.data all --out-dir "${OUT_DIR}" "$@"
