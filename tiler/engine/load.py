"""Tiles out of a source: reflect-padded reads, a cache of decoded bands, and batches.

A :class:`TileLoader` walks the tile rows of one block of the lattice top to bottom. The source is
read in *bands*: whole stored-chunk rows across the block's column span, each read (decoded) once
per block and dropped as soon as no later tile row needs it. Each tile is copied straight from the
bands into a preallocated (N, C, tile, tile) batch buffer, one copy per pixel: the rows and columns
it needs, reflected at the image borders, are split into a few runs of consecutive pixels (step +1
inside the image, -1 in a reflected border), and each run pair is one strided NumPy copy that also
moves the channel axis to the front (or keeps it last, into a channels-last batch buffer, for a
runner whose module takes those). No strip of the tile row is ever assembled. Given the
runner's :class:`~tiler.runners.base.Normalisation`, that same copy converts to float32 and scales,
so the model's input is made in one pass from the decoded image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np

from ..models.spec import Normalisation
from ..plan.lattice import TilePlan, reflect_index
from ..sources import Source
from .buffers import BufferPool

#: Fewest rows a :class:`RowCache` band holds (a multiple of the stored chunk height).
MIN_BAND = 256

#: Above this many runs along an axis (images smaller than a few pixels) a tile is gathered instead.
_MAX_RUNS = 8


@dataclass
class Batch:
    """Tiles for one model call.

    Attributes
    ----------
    tiles : (N, C, tile, tile) array in the source's dtype, or normalised float32 when the loader
        was given a normalisation; N <= batch size.
    index : (N, 2) int array of lattice positions ``(row, col)`` of each tile.
    rows_done : tile rows whose every tile (skipped ones included) has now been handed out.
    """

    tiles: np.ndarray
    index: np.ndarray
    rows_done: list[int]


def runs(index: np.ndarray) -> list[tuple[int, int, slice]]:
    """Split source positions ``index`` into runs of step +1 or -1.

    Returns ``(dst_start, dst_stop, src_slice)`` triples: ``index[dst_start:dst_stop]`` equals
    ``np.arange(n)[src_slice]`` for any long enough ``n``.

    >>> [(a, b, (s.start, s.stop, s.step)) for a, b, s in runs(np.array([2, 1, 0, 1, 2, 3]))]
    [(0, 3, (2, None, -1)), (3, 6, (1, 4, 1))]
    """
    idx: list[int] = np.asarray(index).tolist()
    out: list[tuple[int, int, slice]] = []
    n, k = len(idx), 0
    while k < n:
        start = idx[k]
        step = idx[k + 1] - start if k + 1 < n else 1
        if step not in (1, -1):
            step = 1
        e = k + 1
        while e < n and idx[e] - idx[e - 1] == step:
            e += 1
        stop = start + step * (e - k)
        out.append((k, e, slice(start, stop if stop >= 0 else None, step)))
        k = e
    return out


class RowCache:
    """Decoded source rows across columns ``[x0, x1)``, read in bands of whole stored chunk rows.

    Band ``b`` holds rows ``[b * align, (b + 1) * align)`` (clipped to the image) as an
    (rows, x1 - x0, C) array; ``align`` is the stored chunk height rounded up to a multiple of it of
    at least :data:`MIN_BAND` rows (256 for unchunked sources): a strip TIFF stored one row per
    strip, or a dask array in (1, W) chunks, is still read in bands of a few hundred rows, not row
    by row (one read call, and one gather per tile, for every row).
    """

    def __init__(self, source: Source, x0: int, x1: int) -> None:
        self.source, self.x0, self.x1 = source, x0, x1
        stored = source.chunks[0] if source.chunks else MIN_BAND
        self.align = stored * max(1, -(-MIN_BAND // stored))
        # the rows the source holds: all of them, or a dask task's window (bands start there)
        self.base: int = getattr(source, "rows", (0, source.shape[0]))[0]
        self.end: int = getattr(source, "rows", (0, source.shape[0]))[1]
        self.bands: dict[int, np.ndarray] = {}
        self.rows_read = 0  # statistics: source rows decoded

    def band(self, b: int) -> np.ndarray:
        """Band ``b``, read on first use."""
        band = self.bands.get(b)
        if band is None:
            y0 = self.base + b * self.align
            y1 = min(self.end, y0 + self.align)
            band = self.bands[b] = self.source.read(y0, y1, self.x0, self.x1)
            self.rows_read += y1 - y0
        return band

    def release_below(self, y: int) -> None:
        """Drop the bands that end at or above row ``y`` (no longer needed)."""
        for b in [b for b in self.bands if self.base + (b + 1) * self.align <= y]:
            del self.bands[b]

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` as an (hi - lo, x1 - x0, C) array (a view when inside one band)."""
        first, last = (lo - self.base) // self.align, (hi - 1 - self.base) // self.align
        a = self.base + first * self.align
        if first == last:
            return self.band(first)[lo - a : hi - a]
        parts = [self.band(b) for b in range(first, last + 1)]
        return np.concatenate(parts)[lo - a : hi - a]


class TileLoader:
    """Batches of tiles of ``plan`` for tile rows ``rows`` and tile columns ``cols``.

    Parameters
    ----------
    source : the image.
    plan : the lattice.
    rows, cols : lattice rows and columns to load (e.g. those touching one block).
    batch_size : tiles per batch (the last batch may be smaller).
    skip : optional predicate ``skip(row, col) -> bool`` for tiles not to compute.
    pool : where batch buffers come from (hand them back with ``pool.give`` once used).
    normalisation : optional; tiles come out float32, normalised by it (see :class:`Batch`).
    channels_last : the batch buffer is stored (N, tile, tile, C) and each batch's ``tiles`` is
        its (N, C, tile, tile) transposed view: the strides PyTorch calls channels-last. A tile is
        then copied from the decoded (rows, cols, C) bands without moving the channel axis, and a
        channels-last runner takes the batch as it is instead of converting it.
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
        pool: BufferPool | None = None,
        normalisation: Normalisation | None = None,
        channels_last: bool = False,
    ) -> None:
        self.source, self.plan, self.rows, self.cols = source, plan, rows, cols
        self.normalisation = normalisation
        self.channels_last = channels_last
        self._staging: np.ndarray | None = None  # (C, tile, tile) in the source dtype, see _put
        self.dtype = np.dtype(np.float32 if normalisation else source.dtype)
        self.pool = pool or BufferPool(0)
        self.batch_size = batch_size
        self.skip = skip
        self.tiles_loaded = 0
        self.tiles_skipped = 0
        w, t = source.shape[1], plan.tile
        # Source columns (reflected) of every tile column, relative to the first column read.
        x_index = {j: reflect_index(np.arange(plan.cols.origin(j), plan.cols.origin(j) + t), w) for j in cols}
        read_x0 = min((int(ix.min()) for ix in x_index.values()), default=0)
        read_x1 = max((int(ix.max()) + 1 for ix in x_index.values()), default=0)
        self._x_runs = {j: runs(ix - read_x0) for j, ix in x_index.items()}
        self._x_index = {j: ix - read_x0 for j, ix in x_index.items()}
        self.cache = RowCache(source, read_x0, read_x1)
        # Lowest source row that tile row i or any later one needs (reflection at the bottom
        # border can reach back up): bands above it can be dropped once row i starts.
        h, lowest, need = source.shape[0], math.inf, {}
        for i in reversed(rows):
            y = plan.rows.origin(i)
            lowest = min(lowest, int(reflect_index(np.arange(y, y + t), h).min()))
            need[i] = int(lowest)
        self._still_needed = need

    def _y_runs(self, row: int) -> tuple[np.ndarray, list[tuple[int, int, int, slice]]]:
        """Reflected source rows of tile row ``row`` and their runs split at band borders.

        Runs are ``(dst_start, dst_stop, band, src_slice_within_band)``.
        """
        y = self.plan.rows.origin(row)
        y_index = reflect_index(np.arange(y, y + self.plan.tile), self.source.shape[0])
        align, base, out = self.cache.align, self.cache.base, []
        ys: list[int] = y_index.tolist()
        bands = [(y - base) // align for y in ys]
        for d0, d1, s in runs(y_index):
            # split the run where it crosses a band border
            k = d0
            while k < d1:
                b = bands[k]
                e = k + 1
                while e < d1 and bands[e] == b:
                    e += 1
                start = ys[k] - (base + b * align)
                stop = start + s.step * (e - k)
                out.append((k, e, b, slice(start, stop if stop >= 0 else None, s.step)))
                k = e
        return y_index, out

    def _copy_tile(self, dst: np.ndarray, y_index: np.ndarray, y_runs: list, j: int) -> None:
        """Fill ``dst`` (C, tile, tile) with tile (row, ``j``) from the cached bands."""
        x_runs = self._x_runs[j]
        if len(y_runs) > _MAX_RUNS or len(x_runs) > _MAX_RUNS:  # tiny images: gather
            lo, hi = int(y_index.min()), int(y_index.max()) + 1
            region = self.cache.get(lo, hi)
            self._put(dst, region[np.ix_(y_index - lo, self._x_index[j])].transpose(2, 0, 1))
            return
        for dy0, dy1, b, sy in y_runs:
            band = self.cache.band(b)
            for dx0, dx1, sx in x_runs:
                self._put(dst[:, dy0:dy1, dx0:dx1], band[sy, sx].transpose(2, 0, 1))

    def _put(self, dst: np.ndarray, src: np.ndarray) -> None:
        if self.normalisation is None:
            dst[...] = src
            return
        c, h, w = src.shape
        channels_moved = src.strides[-1] != src.itemsize and dst.strides[-1] == dst.itemsize
        if c > 1 and channels_moved and src.dtype.itemsize < 4:
            # Moving the channel axis and converting in one strided pass runs NumPy's cast an
            # element at a time (0.66-0.77 ms for a 512² RGB uint8 tile); moving it in the source
            # dtype into a scratch that stays in cache, then converting contiguous rows: 0.48-0.56
            if self._staging is None:
                self._staging = np.empty((c, self.plan.tile, self.plan.tile), src.dtype)
            staged = self._staging[:, :h, :w]
            np.copyto(staged, src)
            src = staged
        self.normalisation.copy_into(dst, src)

    def _batch(self, buf: np.ndarray, index: np.ndarray, rows_done: list[int]) -> Batch:
        if self.normalisation is not None:
            self.normalisation.finish(buf)
        return Batch(buf, index, rows_done)

    def _take(self, n: int, c: int, t: int) -> np.ndarray:
        """A batch buffer from the pool: (n, c, t, t), a view of an (n, t, t, c) one if channels-last."""
        if self.channels_last:
            return self.pool.take((n, t, t, c), self.dtype).transpose(0, 3, 1, 2)
        return self.pool.take((n, c, t, t), self.dtype)

    def __iter__(self) -> Iterator[Batch]:
        c, t, n = self.source.shape[2], self.plan.tile, self.batch_size
        k, rows_done = 0, cast("list[int]", [])
        buf, index = self._take(n, c, t), np.empty((n, 2), np.int64)
        for i in self.rows:
            wanted = [j for j in self.cols if not (self.skip and self.skip(i, j))]
            self.tiles_skipped += len(self.cols) - len(wanted)
            if wanted:
                y_index, y_runs = self._y_runs(i)
                self.cache.release_below(self._still_needed[i])
            for j in wanted:
                self._copy_tile(buf[k], y_index, y_runs, j)
                index[k] = (i, j)
                k += 1
                if k == n:
                    self.tiles_loaded += k
                    yield self._batch(buf, index, rows_done)
                    k, rows_done = 0, []
                    buf, index = self._take(n, c, t), np.empty_like(index)
            rows_done = [*rows_done, i]
        self.tiles_loaded += k
        if k or rows_done:
            yield self._batch(buf[:k], index[:k], rows_done)
