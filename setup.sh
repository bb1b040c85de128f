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
# transformers 4.x with the diffusers of its time, beside (not on) the import path: the tests load
# our outputs with it as users of 4.x do.
[ -d .venv/transformers4/transformers ] || .venv/bin/python -m pip install --quiet --no-deps \
    --target .venv/transformers4 "transformers==4.57.*" "diffusers==0.35.*" "huggingface_hub>=0.34,<1.0" \
    "tokenizers>=0.22,<0.23"
# ./setup.sh --cuda-dry-run also makes .cuda-venv: PyPI's CUDA build of torch (about 5.5 GB; it runs
# without a GPU), this project and bitsandbytes, for benchmarks/cuda_dry_run.py (see README).
if [ "${1:-}" = "--cuda-dry-run" ]; then
    [ -x .cuda-venv/bin/python ] || "$PYTHON" -m venv .cuda-venv
    .cuda-venv/bin/python -m pip install --quiet --upgrade pip
    .cuda-venv/bin/python -c "import torch; assert torch.version.cuda" 2>/dev/null ||
        .cuda-venv/bin/python -m pip install --quiet "torch==2.14.1"
    .cuda-venv/bin/python -m pip install --quiet -e ".[gpu]"
    echo "Set up .cuda-venv. Try: .cuda-venv/bin/python benchmarks/cuda_dry_run.py --tiny"
fi
echo "Set up. Try: .venv/bin/dreambooth train --help"
