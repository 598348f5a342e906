"""Thin strips and dask: a one-row-per-strip TIFF and predict_dask against a tiled TIFF and a NumPy array.

The same zero-cost model on every side (a NumPy function here: these cases compare tiler's input
paths with one another, not tiler with a competitor), tile 512, overlap 64, batch 8, in this
process; medians of interleaved rounds of wall and CPU seconds. ``predict_dask`` is timed twice:
``.compute()`` (the result copied into one NumPy array, as dask does for any array) and
``.persist()`` (the blocks computed and held as chunks: tiler's own work). ::

    python benchmarks/bench_strips.py [--size H W] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import _common as C  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("H", "W"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import dask.array as da
    import tifffile

    import tiler
    from tiler.runners.base import FunctionRunner

    warnings.simplefilter("ignore")
    h, w = args.size
    image = C.texture(0, 0, h, w)
    C.WORK.mkdir(parents=True, exist_ok=True)
    strip, tiled = C.WORK / f"strip1_{h}x{w}.tif", C.WORK / f"tiled_{h}x{w}.tif"
    tifffile.imwrite(strip, image, rowsperstrip=1, photometric="rgb", compression="zlib")
    tifffile.imwrite(tiled, image, tile=(256, 256), photometric="rgb", compression="zlib")
    runner = FunctionRunner(lambda x: x[:, :2], normalise=False)
    # the user's dask array exists before the call (made once, like the NumPy image): its making
    # (dask hashes every byte of an in-memory array for its name) is not predict_dask's time
    lazy = da.from_array(image, chunks=(2048, 2048, 3))
    kw = dict(tile=C.TILE, overlap=C.OVERLAP, batch_size=C.BATCH, window="gaussian")

    def dask_case(src, finish: str, **extra):
        """predict_dask on ``src``, then ``.compute()`` or ``.persist()`` on the threads scheduler."""
        return lambda: getattr(tiler.predict_dask(src, runner, **kw, **extra), finish)(scheduler="threads")

    cases = {
        "tiler.predict, NumPy array": lambda: tiler.predict(image, runner, **kw),
        "tiler.predict_dask, NumPy array, default block (8192)": dask_case(image, "compute"),
        "tiler.predict_dask, dask array (2048² chunks), default block (8192)": dask_case(lazy, "compute"),
        # .persist(): the blocks computed and held as dask chunks, without .compute()'s copy of
        # the result into a new NumPy array (dask copies even a one-chunk result; a dask array's
        # chunks reach each task as they are, read band by band)
        "tiler.predict_dask(...).persist(), NumPy array, default block": dask_case(image, "persist"),
        "tiler.predict_dask(...).persist(), dask array (2048² chunks), default block": dask_case(lazy, "persist"),
        "tiler.predict_dask, dask array (2048² chunks), block 2048": dask_case(lazy, "compute", block=2048),
        "tiler.predict, tiled zlib TIFF (256²)": lambda: tiler.predict(tiled, runner, **kw),
        "tiler.predict, zlib TIFF, one row per strip": lambda: tiler.predict(strip, runner, **kw),
    }
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in cases.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
    print(f"machine: {C.machine()}; {h} x {w}")
    wall = {name: statistics.median(x[0] for x in r) for name, r in runs.items()}
    numpy_s, tiled_s = wall["tiler.predict, NumPy array"], wall["tiler.predict, tiled zlib TIFF (256²)"]
    print("| case | s (median) | CPU s (median) | throughput vs NumPy array / tiled TIFF |\n|---|---:|---:|---:|")
    for name, r in runs.items():
        ref = tiled_s if "TIFF" in name else numpy_s
        cpu = statistics.median(x[1] for x in r)
        print(f"| {name} | {wall[name]:.3f} | {cpu:.2f} | {ref / wall[name]:.2f}× |")


if __name__ == "__main__":
    main()
