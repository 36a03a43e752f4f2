#!/usr/bin/env bash
# Create a separate virtualenv with devinterp 1.3.2 for benchmarks/vs_devinterp.py.
#
# devinterp is never a dependency of slt_basins: it lives only in benchmarks/.devinterp-venv
# (git-ignored). The CPU build of torch is installed first so that devinterp's own requirement on
# torch does not pull a multi-GB CUDA build, then devinterp==1.3.2, then this package (editable).
#
# Usage (from the repository root):
#   bash benchmarks/setup_devinterp_env.sh
#   benchmarks/.devinterp-venv/bin/python benchmarks/vs_devinterp.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/benchmarks/.devinterp-venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install "torch==2.13.0"
"$VENV/bin/python" -m pip install "devinterp==1.3.2"
"$VENV/bin/python" -m pip install -e "$ROOT"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch, devinterp, slt_basins
print("devinterp", md.version("devinterp"), "| torch", torch.__version__, "| slt_basins", md.version("slt-basins"))
assert md.version("devinterp") == "1.3.2", md.version("devinterp")
PY
