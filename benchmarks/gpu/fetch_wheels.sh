#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has Python 3.12, torch, numpy, tifffile, a CPU onnxruntime, but no
# zarr or dask and no registry access): downloaded here, carried with the tree (64 MiB at most) into
# benchmarks/gpu/_wheels, installed there by run.sh. numpy and torch are the machine's own.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="$HERE/_wheels"
mkdir -p "$OUT"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$OUT" \
  "zarr>=3.1.3" "numcodecs>=0.14" donfig google-crc32c typing_extensions packaging crc32c \
  "dask>=2025.1" cloudpickle partd toolz locket pyyaml click fsspec importlib_metadata zipp \
  tqdm "monai==1.6.1" psutil
du -sh "$OUT"
