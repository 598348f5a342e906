#!/usr/bin/env bash
# The GPU benchmark in one run (<= 5 minutes on one H200): installs the carried wheels (zarr, dask,
# MONAI and their small dependencies; fetched beforehand with benchmarks/gpu/fetch_wheels.sh) into a
# virtual environment that sees the machine's own torch/numpy/tifffile, then prints one table.
#
#   bash benchmarks/gpu/fetch_wheels.sh          # here, once (needs the package registry)
#   device run: bash benchmarks/gpu/run.sh       # there, carry: benchmarks/gpu/_wheels
#   python benchmarks/gpu/bench_gpu.py --dry-run # anywhere: the same code paths on the CPU
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${TMPDIR:-/tmp}/tiler-gpu-venv"
if [ -d "$HERE/_wheels" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --no-index --no-deps "$HERE"/_wheels/*.whl
  PYTHON="$VENV/bin/python"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cd "$ROOT"
OUT_JSON="${OUT:-$ROOT}/gpu_results.json"
PYTHONPATH="$ROOT" timeout 300 "$PYTHON" "$HERE/bench_gpu.py" --json "$OUT_JSON" "$@"
