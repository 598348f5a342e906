"""Tiles out of a source: reflect-padded reads, a cache of decoded rows, and batches.

A :class:`TileLoader` walks the tile rows of one block of the lattice top to bottom. For each tile
row it needs the source rows the tiles cover (reflected at the image borders) across the block's
column span; it reads them in whole stored-chunk rows and keeps what the next tile row still needs,
so each stored tile is decoded once per block. Tiles are cut from the padded strip as views and
copied straight into a preallocated batch buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .plan import TilePlan, reflect_index
from .sources import Source


@dataclass
class Batch:
    """Tiles for one model call.

    Attributes
    ----------
    tiles : (N, C, tile, tile) array in the source's dtype; N <= batch size.
    index : (N, 2) int array of lattice positions ``(row, col)`` of each tile.
    rows_done : tile rows whose every tile (skipped ones included) has now been handed out.
    """

    tiles: np.ndarray
    index: np.ndarray
    rows_done: list[int]


class RowCache:
    """Decoded source rows ``[y0, y1)`` across columns ``[x0, x1)``, read in whole stored chunks."""

    def __init__(self, source: Source, x0: int, x1: int) -> None:
        self.source, self.x0, self.x1 = source, x0, x1
        self.align = source.chunks[0] if source.chunks else 256
        self.y0 = self.y1 = 0
        self.rows = np.empty((0, x1 - x0, source.shape[2]), source.dtype)
        self.rows_read = 0  # statistics: source rows decoded

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` as an (hi - lo, x1 - x0, C) view; reads what is not cached yet."""
        if not (self.y0 <= lo and hi <= self.y1):
            extend = self.y0 <= lo <= self.y1  # moving down: keep the cached rows still needed
            a = ((self.y1 if extend else lo) // self.align) * self.align
            b = min(self.source.shape[0], math.ceil(hi / self.align) * self.align)
            new = self.source.read(a, b, self.x0, self.x1)
            self.rows_read += b - a
            if extend:
                self.rows = np.concatenate([self.rows[lo - self.y0 :], new[self.y1 - a :]])
                self.y0 = lo
            else:
                self.rows, self.y0 = new, a
            self.y1 = self.y0 + len(self.rows)
        return self.rows[lo - self.y0 : hi - self.y0]


class TileLoader:
    """Batches of tiles of ``plan`` for tile rows ``rows`` and tile columns ``cols``.

    Parameters
    ----------
    source : the image.
    plan : the lattice.
    rows, cols : lattice rows and columns to load (e.g. those touching one block).
    batch_size : tiles per batch (the last batch may be smaller).
    skip : optional predicate ``skip(row, col) -> bool`` for tiles not to compute.
    """

    def __init__(
        self,
        source: Source,
        plan: TilePlan,
        rows: range,
        cols: range,
        *,
        batch_size: int = 8,
        skip: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.source, self.plan, self.rows, self.cols = source, plan, rows, cols
        self.batch_size = batch_size
        self.skip = skip
        self.tiles_loaded = 0
        self.tiles_skipped = 0
        h, w, _ = source.shape
        t = plan.tile
        # Column indices (reflected) of the padded strip spanning all tiles of the block.
        self.strip_x0 = plan.cols.origin(cols.start) if len(cols) else 0
        strip_x1 = plan.cols.origin(cols.stop - 1) + t if len(cols) else 0
        x_index = reflect_index(np.arange(self.strip_x0, strip_x1), w)
        # (no initial= for min: it would count 0 in, and every block would read from column 0)
        self._read_x0 = int(x_index.min()) if len(x_index) else 0
        read_x1 = int(x_index.max()) + 1 if len(x_index) else 0
        self._x_index = x_index - self._read_x0
        self._x_identity = bool(np.array_equal(self._x_index, np.arange(len(x_index))))
        self.cache = RowCache(source, self._read_x0, read_x1)

    def strip(self, row: int) -> np.ndarray:
        """The reflect-padded strip of tile row ``row``: (tile, strip width, C)."""
        y = self.plan.rows.origin(row)
        y_index = reflect_index(np.arange(y, y + self.plan.tile), self.source.shape[0])
        lo, hi = int(y_index.min()), int(y_index.max()) + 1
        rows = self.cache.get(lo, hi)
        if y >= 0 and y + self.plan.tile <= self.source.shape[0]:
            strip = rows  # no reflection needed in y: a view
        else:
            strip = rows[y_index - lo]
        return strip if self._x_identity else strip[:, self._x_index]

    def __iter__(self) -> Iterator[Batch]:
        c, t, n = self.source.shape[2], self.plan.tile, self.batch_size
        k, rows_done = 0, []
        buf, index = np.empty((n, c, t, t), self.source.dtype), np.empty((n, 2), np.int64)
        for i in self.rows:
            wanted = [j for j in self.cols if not (self.skip and self.skip(i, j))]
            self.tiles_skipped += len(self.cols) - len(wanted)
            strip = self.strip(i) if wanted else None
            for j in wanted:
                x = self.plan.cols.origin(j) - self.strip_x0
                buf[k] = strip[:, x : x + t].transpose(2, 0, 1)
                index[k] = (i, j)
                k += 1
                if k == n:
                    self.tiles_loaded += k
                    yield Batch(buf, index, rows_done)
                    k, rows_done = 0, []
                    buf, index = np.empty_like(buf), np.empty_like(index)
            rows_done = [*rows_done, i]
        self.tiles_loaded += k
        if k or rows_done:
            yield Batch(buf[:k], index[:k], rows_done)
