"""Repeated work at block borders, from the plan alone (nothing is computed).

    $ python benchmarks/repetition.py

Prints a markdown table: for each image size, the tiles in the lattice and the repeated fraction
(tiles computed over all blocks / lattice tiles - 1) in one process, with the partition a dask run
picks for 2..16 workers (blocks in brackets), and for ``predict_dask`` blocks of 4096 and 8192.
"""

from __future__ import annotations

import numpy as np

from tiler.config import Settings
from tiler.engine import job as engine_job
from tiler.plan.partition import Partition
from tiler.runners.base import FunctionRunner
from tiler.sources import open_source

SIZES = [(8192, 8192), (32768, 32768), (100_000, 80_000)]
WORKERS = (2, 4, 8, 16)
BLOCKS = (4096, 8192)


def main() -> None:
    runner = FunctionRunner(lambda x: x[:, :1], normalise=False)
    head = ["image (px)", "lattice tiles", "1 process"] + [f"{n} workers" for n in WORKERS]
    head += [f"predict_dask block {b}" for b in BLOCKS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for h, w in SIZES:
        flat = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (h, w, 3), (0, 0, 0))
        job = engine_job.Job.create(open_source(flat), runner, Settings())
        blocks = job.partition.grid[0] * job.partition.grid[1]
        row = [f"{h} x {w}", str(job.plan.n_tiles), f"{engine_job.repeated_fraction(job):.1%} ({blocks})"]
        for n in WORKERS:
            part = engine_job.grid_for_workers(job, n)
            row.append(f"{engine_job.repeated_fraction(job, part):.1%} ({part.grid[0] * part.grid[1]})")
        for b in BLOCKS:
            part = Partition.create((h, w), chunk=1024, block_height=b, block_width=b)
            row.append(f"{engine_job.repeated_fraction(job, part):.1%}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
