"""Progress of a run in tiles: to a callback or a tqdm bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Progress:
    """Tile counts to a callback or a tqdm bar (tiles, megapixels/s, ETA)."""

    def __init__(self, callback: Callable[[int, int], None] | None, bar: Any, total: int, pixels: int) -> None:
        self.callback, self.bar, self.total, self.done = callback, bar, total, 0
        self.pixels, self.t0 = pixels, time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            rate = self.pixels * self.done / max(self.total, 1) / elapsed / 1e6
            self.bar.set_postfix_str(f"{rate:.1f} MP/s", refresh=False)
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_counter(progress: bool | Callable[[int, int], None], total: int, pixels: int) -> Progress:
    if callable(progress):
        return Progress(progress, None, total, pixels)
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="tile", dynamic_ncols=True, smoothing=0.1, leave=False)
        return Progress(None, bar, total, pixels)
    return Progress(None, None, total, pixels)
