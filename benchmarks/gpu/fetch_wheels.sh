#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has Python 3.12, torch, numpy, tifffile, a CPU onnxruntime, but no
# zarr or dask and no registry access): downloaded here, carried with the tree (64 MiB at most) into
# benchmarks/gpu/_wheels, installed there by run.sh. numpy and torch are the machine's own.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${WHEELS:-$HERE/_wheels}"
PYVER="${PYVER:-3.12}"  # the GPU machine's Python (another one, with WHEELS=..., for a rehearsal here)
mkdir -p "$OUT"
# The versions CI tests tiler with (tools/constraints.txt), so that the GPU run uses the same zarr,
# numcodecs and dask; MONAI (the comparison only) is pinned here.
ROOT="$(cd "$HERE/../.." && pwd)"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --abi "cp${PYVER//./}" --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$OUT" -c "$ROOT/tools/constraints.txt" \
  zarr numcodecs donfig google-crc32c typing_extensions packaging \
  dask cloudpickle partd toolz locket pyyaml click fsspec importlib_metadata zipp \
  tqdm psutil "monai==1.6.1"
du -sh "$OUT"
