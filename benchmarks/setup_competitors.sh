#!/usr/bin/env bash
# Set up the benchmark-only environments for bench_competitors.py. Never runtime or test deps.
#
#   benchmarks/_work/venv-competitors : torch (CPU), MONAI, pytorch-toolbelt, tifffile, zarr
#   benchmarks/_work/venv-tilerpkg    : the PyPI `tiler` package (the-lay/tiler), which shares our
#                                       import name, so it lives in its own environment
#
# Usage: bash benchmarks/setup_competitors.sh   (PYTHON=python3.11 TORCH_PIN=torch==2.13.0 to override)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$HERE/_work"
PYTHON="${PYTHON:-python3}"
# The CPU build; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"
mkdir -p "$WORK"

comp="$WORK/venv-competitors"
if [ ! -x "$comp/bin/python" ]; then "$PYTHON" -m venv "$comp"; fi
"$comp/bin/python" -m pip install -q "$TORCH_PIN" numpy
# --no-deps so neither package can swap torch for another build; their light deps by hand.
"$comp/bin/python" -m pip install -q --no-deps "monai==1.6.1" "pytorch-toolbelt==0.8.0"
"$comp/bin/python" -m pip install -q tifffile imagecodecs zarr psutil opencv-python-headless onnxruntime
(cd "$WORK" && "$comp/bin/python" -c "import torch, monai, pytorch_toolbelt; print('competitors:', torch.__version__, monai.__version__, pytorch_toolbelt.__version__)")

pkg="$WORK/venv-tilerpkg"
if [ ! -x "$pkg/bin/python" ]; then "$PYTHON" -m venv "$pkg"; fi
"$pkg/bin/python" -m pip install -q "$TORCH_PIN" "tiler==0.6.0" numpy psutil
# Checked from outside the repository, where our own tiler/ would shadow it.
(cd "$WORK" && "$pkg/bin/python" -c "from tiler import Tiler, Merger; print('tiler (PyPI): ok')")
