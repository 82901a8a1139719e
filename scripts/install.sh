#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with everything neuronscope and its tests need.
# Usage: scripts/install.sh [--gpu] [VENV_DIR]   (default: .venv)
#   --gpu  a GPU worker: torch from PyTorch's CUDA 13 (cu130) index and onnxruntime-gpu >= 1.27 (built
#          for CUDA 13) instead of the CPU builds. The two must share a CUDA major version: a CUDA-12
#          onnxruntime-gpu next to CUDA-13 torch cannot load libcublasLt.so.12 and runs on the CPU.
#          Start the worker with NEURONSCOPE_DEVICE=cuda; it checks both runtimes at start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0
if [ "${1:-}" = "--gpu" ]; then
  gpu=1
  shift
fi
venv="${1:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build. Override with TORCH_SPEC.
if [ "$gpu" = 1 ]; then
  "$venv/bin/python" -m pip install -q --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu130}" \
    "${TORCH_SPEC:-torch==2.13.0}"
  "$venv/bin/python" -m pip uninstall -q -y onnxruntime 2>/dev/null || true
  "$venv/bin/python" -m pip install -q -e ".[engine-gpu,api,dev]"
  NEURONSCOPE_DEVICE=cuda "$venv/bin/python" -c \
    "from neuronscope.settings import Settings; from worker.device_check import check_device; check_device(Settings())"
  exit 0
fi
"$venv/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$venv/bin/python" -m pip install -q -e ".[engine,api,dev]"
# torchvision's model code for the real-architecture tests, kept out of the environment: PyPI's
# 0.28.0 is a CUDA build whose C extension does not load with the CPU torch, and an installed
# torchvision breaks transformers' imports. Tests import it in a subprocess from this folder.
"$venv/bin/python" -m pip install -q --no-deps --upgrade --target "$venv/torchvision-models" torchvision==0.28.0 pillow
