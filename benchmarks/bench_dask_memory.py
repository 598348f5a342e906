"""predict_dask on a dask array against tiler.predict on the NumPy array: time and peak memory.

Each case is a fresh process (its peak RSS is its own): the 8192 x 8192 x 3 float32 array of
``benchmarks/_common.py`` (``make_array_file``), the zero-cost NumPy function, tile 512, overlap
64, batch 8, gaussian window; ``predict_dask(da.from_array(image, chunks=(2048, 2048, 3)))`` with
``.persist()`` on the threads scheduler (the blocks kept as they are) against ``tiler.predict`` on
the array. Rounds interleave the cases; medians. ::

    python benchmarks/bench_dask_memory.py [--size N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import _common as C  # noqa: E402

CASES = ("numpy", "dask")


def child(case: str, size: int) -> None:
    """One case in this process: prints its RESULT line (seconds, peak RSS)."""
    import dask.array as da

    import tiler
    from tiler.runners.base import FunctionRunner

    image = C.load_array(size)
    runner = FunctionRunner(lambda x: x[:, :2], normalise=False)
    kw = dict(tile=C.TILE, overlap=C.OVERLAP, batch_size=C.BATCH, window="gaussian")
    lazy = da.from_array(image, chunks=(2048, 2048, 3)) if case == "dask" else None
    with C.Timer() as t:
        if lazy is None:
            tiler.predict(image, runner, **kw)
        else:
            tiler.predict_dask(lazy, runner, **kw).persist(scheduler="threads")
    C.report(f"{case} {size}", t, megapixels=size * size / 1e6, tiles=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--case", choices=CASES, help="run one case in this process")
    args = p.parse_args()
    if args.case:
        return child(args.case, args.size)
    C.make_array_file(args.size)
    runs: dict[str, list[dict]] = {c: [] for c in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            r = C.run_case(sys.executable, Path(__file__), ["--case", case, "--size", str(args.size)],
                           env={"PYTHONPATH": str(C.ROOT)})
            if "error" in r:
                sys.exit(f"{case}: {r['error']}")
            runs[case].append(r)
    print(f"machine: {C.machine()}; {args.size} x {args.size} x 3 float32, {args.rounds} rounds")
    print("| case | s (median) | peak RSS MB (median) | RSS before the call MB |\n|---|---:|---:|---:|")
    names = {"numpy": "tiler.predict, NumPy array", "dask": "tiler.predict_dask(dask array, 2048² chunks).persist()"}
    for case, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_mb", "base_mb")}
        print(f"| {names[case]} | {med['seconds']:.2f} | {med['peak_mb']:.0f} | {med['base_mb']:.0f} |")


if __name__ == "__main__":
    main()
