"""Readers side by side on one file: tifffile vs OpenSlide reading the same JPEG-tiled TIFF.

    python benchmarks/bench_readers.py [--size 8192]

Two figures per reader: reading level 0 in full-width stripes of 1024 rows (what the engine's loader
asks a source for), best of two passes; and ``tiler.run`` with the zero-cost model (``x[:, :2]``,
tile 512, overlap 64, no pyramid) from the file to a zarr group, so the reader's share of a run shows.
The input is :func:`_common.make_tiff` (256-tiled JPEG, quality 90, in ``benchmarks/_work/``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import BATCH, OVERLAP, TILE, WORK, machine, make_tiff  # noqa: E402


def read_stripes(path: Path, reader: str, rows: int = 1024) -> float:
    """Seconds to read level 0 of ``path`` through ``reader`` in full-width stripes (best of 2)."""
    from tiler.sources import open_source

    best = float("inf")
    for _ in range(2):
        source = open_source(path, reader=reader)
        h, w, _ = source.shape
        t0 = time.perf_counter()
        for y in range(0, h, rows):
            source.read(y, min(h, y + rows), 0, w)
        best = min(best, time.perf_counter() - t0)
        source.close()
    return best


def run_zero_cost(path: Path, reader: str) -> float:
    import tiler
    from tiler.runners.base import FunctionRunner

    out = WORK / f"readers_{reader}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    model = FunctionRunner(lambda x: x[:, :2], normalise=False)
    result = tiler.run(path, model, out=out, reader=reader, tile=TILE, overlap=OVERLAP, batch_size=BATCH,
                       pyramid=False)
    shutil.rmtree(out, ignore_errors=True)
    return result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192, help="image edge in pixels (default 8192)")
    args = parser.parse_args()
    path = make_tiff(args.size, args.size)
    mp = args.size * args.size / 1e6
    print(f"{machine()}; {args.size} x {args.size} JPEG TIFF, {mp:.1f} MP")
    print("| reader | read level 0 (s) | MP/s | tiler.run zero-cost (s) | MP/s |")
    print("|---|---|---|---|---|")
    for reader in ("tifffile", "openslide"):
        read = read_stripes(path, reader)
        run = run_zero_cost(path, reader)
        print(f"| {reader} | {read:.2f} | {mp / read:.1f} | {run:.2f} | {mp / run:.1f} |")


if __name__ == "__main__":
    main()
