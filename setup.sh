#!/usr/bin/env bash
# One-time setup: a virtual environment in .venv holding the pipeline and its tests.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned, so the project's range is already met: pip then keeps
# this build (CUDA on a GPU machine from PyPI, CPU where a CPU wheel is provided).
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "Set up. Try: .venv/bin/dreambooth train --help"
