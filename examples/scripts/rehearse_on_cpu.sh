#!/usr/bin/env bash
# Rehearse a training script on this CPU machine exactly as a cluster user submits it, before any GPU is involved:
# a private Ray head (loopback ports, its own temp dir), the data written by prepare_data.sh (--offline-sample: no
# network), the script run from a directory outside the repository and submitted with `ray job submit`, then checked:
# the job SUCCEEDED, its checkpoint and TensorBoard logs are where the user asked, a second submission resumes.
# Only the model (a tiny local one), the data (generated, in the sources' schemas), the hardware (CPU mode, one CPU
# worker per role) and the length (two PPO steps) differ from the real run. See lens_openrlhf/localrun/rehearsal.py.
#   bash examples/scripts/rehearse_on_cpu.sh examples/scripts/train_lens_qwen2.5_3b.sh [more scripts] [--keep DIR]
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-$( [[ -x "${REPO_DIR}/.venv/bin/python" ]] && echo "${REPO_DIR}/.venv/bin/python" || echo python )}
PYTHONPATH="${REPO_DIR}${PYTHONPATH:+:${PYTHONPATH}}" exec "${PYTHON}" -m lens_openrlhf.localrun.rehearsal "$@"
