"""Peak memory and time of the default lattice (1024 / 256, constant, margin 128) vs the old one.

    /usr/bin/time -f "maxrss %M KB" python benchmarks/seams_memory.py 1024 8   # new default, batch 8
    /usr/bin/time -f "maxrss %M KB" python benchmarks/seams_memory.py 512 8    # old 512 / 128 gaussian

A 3072 x 3072 random RGB image in memory, the built-in UNet on the CPU, ``tiler.predict``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiler
from tiler.malloc import keep_freed_memory


def main() -> None:
    keep_freed_memory()
    tile, batch = int(sys.argv[1]), int(sys.argv[2])
    img = (np.random.default_rng(0).random((3072, 3072, 3)) * 255).astype(np.uint8)
    old = {"tile": 512, "overlap": 128, "window": "gaussian", "context": 0}
    t = time.perf_counter()
    tiler.predict(img, None, device="cpu", batch_size=batch, **({} if tile == 1024 else old))
    print(f"tile {tile} batch {batch}: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
