#!/usr/bin/env bash
# The GPU benchmark in one run (<= 5 minutes on one H200): installs the carried wheels (zarr, dask,
# MONAI and their small dependencies; fetched beforehand with benchmarks/gpu/fetch_wheels.sh) that the
# machine's python3 lacks into a folder on PYTHONPATH, then prints one table.
#
#   bash benchmarks/gpu/fetch_wheels.sh          # here, once (needs the package registry)
#   device run: bash benchmarks/gpu/run.sh       # there, carry: benchmarks/gpu/_wheels
#   python benchmarks/gpu/bench_gpu.py --dry-run # anywhere: the same code paths on the CPU
#
# The machine's python3 is itself a virtual environment (/opt/torch/.venv) holding torch, numpy and
# tifffile: a venv made from it with --system-site-packages would see the base interpreter's
# packages, not those. So the missing wheels go to a --target folder instead, and a wheel whose
# distribution is installed there already is left out (the machine's own version stays in use).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
SITE="${TMPDIR:-/tmp}/tiler-gpu-site"
WHEELS="${WHEELS:-$HERE/_wheels}"  # (another folder of wheels: for a rehearsal on another Python)
if [ -d "$WHEELS" ]; then
  missing=()
  for whl in "$WHEELS"/*.whl; do
    name="$(basename "$whl" | cut -d- -f1)"
    if ! "$PYTHON" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null; then
      missing+=("$whl")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${#missing[@]} carried wheels into $SITE: $(for w in "${missing[@]}"; do basename "$w" | cut -d- -f1; done | tr '\n' ' ')"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${missing[@]}"
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cd "$ROOT"
OUT_JSON="${OUT:-$ROOT}/gpu_results.json"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" timeout 300 "$PYTHON" "$HERE/bench_gpu.py" --json "$OUT_JSON" "$@"
