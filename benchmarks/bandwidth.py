"""Memory bandwidth of this machine as NumPy sees it: a 1 GiB float32 copy, one thread and two.

The roofline of the in-memory benchmark (README "Benchmarks"): bytes moved per pixel against this. ::

    python benchmarks/bandwidth.py
"""

from __future__ import annotations

import threading
import time

import numpy as np


def best_copy(src: np.ndarray, dst: np.ndarray, threads: int, rounds: int = 5) -> float:
    """Best GB/s (bytes read + written) of ``dst[...] = src`` split over ``threads`` threads."""
    parts = np.array_split(np.arange(len(src)), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]
    best = float("inf")
    for _ in range(rounds):
        workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def main() -> None:
    src = np.ones((1 << 28) // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    for threads in (1, 2):
        print(f"copy, {threads} thread(s): {best_copy(src, dst, threads):.1f} GB/s (read + write)")


if __name__ == "__main__":
    main()
