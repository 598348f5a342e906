"""The floor under ``tiler run`` on this machine: what any implementation of the file workload pays.

The file workload of ``bench_competitors.py`` (a JPEG-tiled 8192 x 16384 TIFF -> zarr of uint8
probabilities of a zero-cost model) cannot finish faster than its three unavoidable parts:

1. **start**: a whole Python process importing what it needs and exiting (tiler's command line, plus
   ONNX Runtime or PyTorch), timed as ``python -c "import ..."`` processes;
2. **decode**: every stored JPEG tile of the input decoded once (tifffile ``page.segments`` on two
   threads, the decoded tiles dropped);
3. **compress**: the output's 2 x 8192 x 16384 uint8 chunks compressed once with tiler's codec
   (zstd level 1, two threads), from a real output of the zero-cost ONNX model.

``floor = start + (decode CPU + compress CPU) / cores``: the time left for everything else
(cutting tiles, converting them to float32, the model call, blending, softmax, the pyramid) is the
target's time budget minus this floor. Medians of ``--rounds`` rounds. ::

    python benchmarks/floor.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as C

STARTS = {
    "tiler command line": "import tiler.cli.main",
    "+ onnxruntime": "import tiler.cli.main, onnxruntime",
    "+ torch": "import tiler.cli.main, torch",
    "+ torch, then os._exit (how `tiler` leaves)": "import tiler.cli.main, torch, os; os._exit(0)",
}


def _process_seconds(code: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(C.ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0


def _decode(path: Path) -> tuple[float, float, int]:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(1 for _ in page.segments(maxworkers=2))
        return time.perf_counter() - t0, time.process_time() - c0, n


def _output(path: Path) -> Path:
    """A real uint8 probabilities output of the zero-cost ONNX model (made once)."""
    out = C.WORK / f"floor_{path.stem}.zarr"
    if not (out / "zarr.json").exists():
        _, onnx_model = C.make_zero_cost_models()
        subprocess.run([sys.executable, "-m", "tiler.cli.main", "run", str(path), "--model", str(onnx_model),
                        "-o", str(out), "--kind", "probs", "--tile", str(C.TILE), "--overlap", str(C.OVERLAP),
                        "--device", "cpu", "--no-progress", "--no-pyramid", "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)
    return out


def _compress(out: Path) -> tuple[float, float, float, float]:
    import numpy as np
    import zarr

    from tiler.store.sink import compressors_for

    arr = zarr.open_group(out, mode="r")["0"]
    data = arr[...]
    (codec,) = compressors_for(data.dtype)
    assert codec.level == 1, codec  # tiler's codec for uint8 outputs
    import numcodecs

    zstd = numcodecs.Zstd(level=codec.level)
    c, h, w = arr.chunks
    pieces = [np.ascontiguousarray(data[:, y : y + h, x : x + w])
              for y in range(0, data.shape[1], h) for x in range(0, data.shape[2], w)]
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(2) as pool:
        sizes = list(pool.map(lambda p: len(zstd.encode(p)), pieces))
    return time.perf_counter() - t0, time.process_time() - c0, data.nbytes / 1e6, sum(sizes) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(C.machine())
    C.byte_compile()
    path = C.make_tiff(8192, 16384)
    out = _output(path)
    starts = {name: statistics.median(_process_seconds(code) for _ in range(args.rounds))
              for name, code in STARTS.items()}
    decodes = [_decode(path) for _ in range(args.rounds)]
    compresses = [_compress(out) for _ in range(args.rounds)]
    dec_s, dec_cpu = (statistics.median(d[i] for d in decodes) for i in (0, 1))
    zs_s, zs_cpu = (statistics.median(z[i] for z in compresses) for i in (0, 1))
    raw_mb, packed_mb = compresses[0][2:]
    print("| part | wall s | CPU s |")
    print("|---|---:|---:|")
    for name, s in starts.items():
        print(f"| start: {name} | {s:.2f} | |")
    print(f"| decode {decodes[0][2]} JPEG tiles, 2 threads | {dec_s:.2f} | {dec_cpu:.2f} |")
    print(f"| zstd-1 {raw_mb:.0f} MB of uint8 probabilities -> {packed_mb:.0f} MB, 2 threads "
          f"| {zs_s:.2f} | {zs_cpu:.2f} |")
    cores = min(2, os.cpu_count() or 1)
    work = (dec_cpu + zs_cpu) / cores
    for runtime, start in (("ONNX", starts["+ onnxruntime"]),
                           ("TorchScript", starts["+ torch, then os._exit (how `tiler` leaves)"])):
        print(f"floor, {runtime}: start {start:.2f} + (decode + compress CPU) / {cores} cores {work:.2f} "
              f"= {start + work:.2f} s")


if __name__ == "__main__":
    main()
