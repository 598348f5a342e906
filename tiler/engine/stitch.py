"""Blending tile outputs of one block into finished bands of rows.

The :class:`Stitcher` keeps ``Σ w·y`` (C, h, W_block) in float32 for each band of ``band`` rows of
the block (a chunk row, or a fraction of one: see :func:`accumulation_rows`) that some computed
tile has touched but that is not finished yet. Tiles arrive in lattice (raster) order; once every
tile row touching a band has been added, the band is normalised (divided by ``Σ w``) and handed
out, and its buffers are reused. Memory is therefore bounded by the block width, the tile and the
band height, never by the image height.

``Σ w`` comes from :class:`WeightSums` when every lattice tile is computed: it depends only on a
pixel's offsets inside the tiles covering it, which repeat with the stride, so it is summed once
per block for a stride's worth of rows (plus the borders) instead of once per pixel. When a mask
skips tiles, ``Σ w`` (h, W_block) is accumulated alongside ``Σ w·y``. Both ways sum the same
weights in the same (lattice) order, so they give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..plan.lattice import TilePlan
from ..plan.partition import Block
from .buffers import BufferPool

#: Rows of the bands a stitcher accumulates when the stored values are converted (probabilities,
#: labels): a float32 band this high is converted into its chunk row as soon as it is finished.
#: Float32 ``Σ w·y`` is then held for about a tile's height of rows (at most 640 rows for tile 512,
#: overlap 64) instead of two or three 1024-row chunk rows: 84 MB instead of 268-400 MB for two
#: channels across a 16384-pixel block, memory that a fresh process pays a page fault per 4 KiB for.
ACCUMULATION_ROWS = 128


def accumulation_rows(chunk: int, target: int = ACCUMULATION_ROWS) -> int:
    """The largest divisor of ``chunk`` that is at most ``target`` (bands then never straddle a chunk
    row), or ``chunk`` itself when that divisor is below ``target // 4`` (an odd chunk edge).

    >>> accumulation_rows(1024), accumulation_rows(1000), accumulation_rows(100), accumulation_rows(1021)
    (128, 125, 100, 1021)
    """
    for d in range(min(chunk, target), 0, -1):
        if chunk % d == 0:
            return d if d >= target // 4 or d == chunk else chunk
    return chunk


@dataclass
class Band:
    """A finished band of rows: blended (C, y1 - y0, x1 - x0) float32 logits and its coverage.

    ``index`` counts bands of the stitcher's ``band`` height (chunk rows when that is the chunk edge).

    ``covered`` is an (h, w) bool array, or None when every pixel had a positive weight sum.
    """

    index: int
    y0: int
    y1: int
    x0: int
    x1: int
    logits: np.ndarray
    covered: np.ndarray | None


class WeightSums:
    """``Σ w`` of every pixel of ``block`` when every lattice tile touching it is added.

    Along a column, ``Σ w`` at row y depends only on the covering tile rows' offsets
    ``y - origin(i)``: the first offset and the number of covering tiles (the next ones are a
    stride apart). One float32 table row per distinct (count, first offset) pair, summed in lattice
    order exactly as :meth:`Stitcher.add` sums tiles; rows are ordered so that consecutive image rows
    inside a tile row use consecutive table rows, and dividing a chunk row takes a few slices.
    Table: (K, W_block) with K about ``stride + 2 * tile`` at most; index: one int per block row.
    """

    def __init__(self, plan: TilePlan, block: Block, window: np.ndarray) -> None:
        rows, s, m, t = plan.rows, plan.stride, plan.margin, plan.tile
        begin = m - rows.start  # the weighted part of tile i starts at i * s + begin
        y = np.arange(block.y0, block.y1, dtype=np.int64)
        first = np.maximum(0, (y - begin - (t - 2 * m)) // s + 1)  # AxisLattice.touching, vectorised
        last = np.minimum(rows.count - 1, (y - begin) // s)
        offset = y - (first * s - rows.start)  # row of y inside the first covering tile
        code = (last - first) * t + offset  # offset < t: (count, offset) sorts by count, then offset
        codes, self.index = np.unique(code, return_inverse=True)
        x0, x1 = block.x0, block.x1
        self.table = np.zeros((len(codes), x1 - x0), np.float32)
        cols = [plan.cols.origin(j) for j in plan.cols.touching(x0, x1)]
        counts, offsets = codes // t + 1, codes % t
        for n in np.unique(counts).tolist():
            group = np.flatnonzero(counts == n)
            dst = self.table[group[0] : group[-1] + 1]  # a count's codes are consecutive
            for e in range(n):  # tile rows in lattice order, then tile columns
                rows = window[offsets[group] - e * s]  # (G, tile): gathered once per tile row
                for tx in cols:
                    xa, xb = max(tx + m, x0), min(tx + t - m, x1)
                    dst[:, xa - x0 : xb - x0] += rows[:, xa - tx : xb - tx]
        self.y0, self.x0 = block.y0, block.x0

    def divide(self, acc: np.ndarray, y0: int) -> None:
        """``acc /= Σ w`` in place: ``acc`` (C, h, W_block) holds block rows ``[y0, y0 + h)``.

        Works in cache-sized slabs of rows, each checked for NaN/inf while still in cache
        (raises :class:`NonFiniteOutput`).
        """
        k = self.index[y0 - self.y0 : y0 - self.y0 + acc.shape[1]]
        breaks = np.flatnonzero(np.diff(k) != 1) + 1  # runs of consecutive table rows
        step = max(1, _SLAB // acc[:, 0].size)
        for a, b in zip([0, *breaks.tolist()], [*breaks.tolist(), len(k)]):
            for c in range(a, b, step):
                d = min(b, c + step)
                part = acc[:, c:d]
                np.divide(part, self.table[k[c] : k[c] + d - c], out=part)
                check_finite(part, y0 + c, self.x0)


#: Elements per slab of :meth:`WeightSums.divide`: 1 MiB of float32, at home in a core's cache.
_SLAB = 1 << 18


class NonFiniteOutput(ValueError):
    """A blended value is NaN or infinite at image pixel (``y``, ``x``): a tile covering it had one."""

    def __init__(self, y: int, x: int) -> None:
        super().__init__(f"NaN or infinite blended output at row {y}, column {x}")
        self.y, self.x = y, x


def check_finite(values: np.ndarray, y0: int, x0: int) -> None:
    """Raise :class:`NonFiniteOutput` naming the first NaN/inf pixel of ``values`` (C, h, w), whose
    first pixel is image pixel (``y0``, ``x0``). One pass: a sum (NaN and inf propagate); only when
    that is not finite (also if finite values overflowed it) are the pixels looked at."""
    if np.isfinite(values.sum()):
        return
    bad = ~np.isfinite(values).all(axis=0)
    if bad.any():
        r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise NonFiniteOutput(y0 + int(r), x0 + int(c))


class Stitcher:
    """Accumulate weighted tile outputs for ``block`` and release bands of rows as they finish.

    Parameters
    ----------
    plan : the lattice.
    block : the output region this stitcher owns.
    window : (tile, tile) float32 weights.
    channels : model output channels C.
    band : height of the bands of rows released, on the global grid of such bands: the output
        chunk edge (chunk rows), or a divisor of it (:func:`accumulation_rows`) when each band is
        converted into its chunk row as it finishes.
    target : optional ``target(y0, y1)`` giving the output's own float32 memory for rows
        ``[y0, y1)`` of the block (an in-memory result): Σ w·y accumulates and is normalised there.
    target_zeroed : that memory holds zeros already (each row is asked for once): not cleared.
    complete : every lattice tile touching the block will be added (no mask): ``Σ w`` comes from
        :class:`WeightSums` instead of being accumulated.
    """

    def __init__(
        self, plan: TilePlan, block: Block, window: np.ndarray, channels: int, band: int,
        target: Callable[[int, int], np.ndarray | None] | None = None, *, complete: bool = False,
        target_zeroed: bool = False,
    ) -> None:
        self.plan, self.block, self.window = plan, block, window
        self.complete = complete
        self._sums: WeightSums | None = None  # built on first use, in the stitcher's own thread
        self.target = target  # (y0, y1) -> the output's own (C, h, W_block) float32 memory, if any
        self.target_zeroed = target_zeroed
        self.channels, self.band = channels, band
        self._weighted = np.empty((channels, plan.tile, plan.tile), np.float32)
        self._pending: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._added: dict[int, int] = {}  # band -> tiles added to it
        # Spare buffers (Σ w·y and Σ w bands, converted chunk rows), reused for later rows: fresh
        # memory is zeroed by the kernel page by page on first touch, which cost more than the
        # blending. A tile's height of bands can be pending at once (plus one that a batch
        # reaching a new band adds before the oldest is released), and a few converted chunk rows
        # wait for the writer: keep enough that none is dropped and allocated again.
        pending = math.ceil(plan.tile / band) + 2
        self._spares = BufferPool(2 * pending + 4)
        self._cols = len(plan.cols.touching(block.x0, block.x1))
        self._next = block.y0 // band  # next band to release
        self._last = math.ceil(block.y1 / band)  # one past the last band

    def sums(self) -> WeightSums:
        """The block's Σw table (complete stitches), built on first use."""
        if self._sums is None:
            self._sums = WeightSums(self.plan, self.block, self.window)
        return self._sums

    @property
    def held_rows(self) -> int:
        """Rows of the bands added to but not released yet (their float32 sums are in memory)."""
        return sum(acc.shape[1] for acc, _ in self._pending.values())

    def _rows_of(self, j: int) -> tuple[int, int]:
        return max(self.block.y0, j * self.band), min(self.block.y1, (j + 1) * self.band)

    def _buffers(self, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        if j not in self._pending:
            y0, y1 = self._rows_of(j)
            w = self.block.x1 - self.block.x0
            acc = self.target(y0, y1) if self.target else None
            if acc is None:
                acc = self._zeros((self.channels, y1 - y0, w))
            elif not self.target_zeroed:
                acc.fill(0)
            self._pending[j] = (acc, None if self.complete else self._zeros((y1 - y0, w)))
        return self._pending[j]

    def add(self, outputs: np.ndarray, index: np.ndarray) -> None:
        """Add a batch: ``outputs`` (N, C, tile, tile) float32 (not modified), ``index`` (N, 2).

        Only the parts of the tiles inside this stitcher's block are read, so several stitchers
        for side-by-side blocks can add the same batch at the same time.
        """
        plan, b, m, t = self.plan, self.block, self.plan.margin, self.plan.tile
        for n, (i, j) in enumerate(index.tolist()):
            ty, tx = plan.rows.origin(i), plan.cols.origin(j)
            ya, yb = max(ty + m, b.y0), min(ty + t - m, b.y1)
            xa, xb = max(tx + m, b.x0), min(tx + t - m, b.x1)
            if ya >= yb or xa >= xb:
                continue
            weighted, w_part = self._weigh(outputs, n, slice(ya - ty, yb - ty), slice(xa - tx, xb - tx))
            for k in range(ya // self.band, (yb - 1) // self.band + 1):
                acc, wsum = self._buffers(k)
                r0, _ = self._rows_of(k)
                y_lo, y_hi = max(ya, r0), min(yb, r0 + acc.shape[1])
                dst = (slice(y_lo - r0, y_hi - r0), slice(xa - b.x0, xb - b.x0))
                acc[(slice(None), *dst)] += weighted[:, y_lo - ya : y_hi - ya]
                if wsum is not None:
                    wsum[dst] += w_part[y_lo - ya : y_hi - ya]
                self._added[k] = self._added.get(k, 0) + 1

    def _weigh(self, outputs: np.ndarray, n: int, ys: slice, xs: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(w * y, w)`` of tile ``n``'s part ``[ys, xs]``: w * y once per tile, into a small buffer
        that stays in cache for the additions."""
        w_part = self.window[ys, xs]
        weighted = self._weighted[:, : w_part.shape[0], : w_part.shape[1]]
        np.multiply(outputs[n][:, ys, xs], w_part, out=weighted)
        return weighted, w_part

    def _zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        buf = self._spares.take(shape, np.dtype(np.float32))
        buf.fill(0)
        return buf

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` (contents undefined): a recycled one when there is one."""
        return self._spares.take(shape, np.dtype(dtype))

    def recycle(self, array: np.ndarray) -> None:
        """Hand back a released row's buffer (``Band.logits`` or its converted values) once
        nothing uses it any more; a later row of the same shape and dtype reuses it. Thread-safe
        (the writer recycles what it wrote)."""
        self._spares.give(array)

    def finished(self, tile_rows_done: int) -> Iterator[Band]:
        """Release, in order, every band whose touching tile rows are all ``<= tile_rows_done``."""
        while self._next < self._last:
            y0, y1 = self._rows_of(self._next)
            touching = self.plan.rows.touching(y0, y1)
            if touching and touching[-1] > tile_rows_done:
                return
            yield self._release(self._next, y0, y1)
            self._next += 1

    def _release(self, j: int, y0: int, y1: int) -> Band:
        """Normalise band ``j``; raises :class:`NonFiniteOutput` if a value is NaN or inf."""
        acc, wsum = self._pending.pop(j, (None, None))
        w = self.block.x1 - self.block.x0
        if self.complete:  # every pixel is covered (the lattice invariant)
            if acc is None:  # (only for a block no tile's weighted part reaches; not on a lattice)
                raise RuntimeError(f"no tile was added to band {j} of a complete stitch")
            self.sums().divide(acc, y0)
            return Band(j, y0, y1, self.block.x0, self.block.x1, acc, None)
        if acc is None:  # no computed tile touched this row (all skipped)
            acc = np.zeros((self.channels, y1 - y0, w), np.float32)
            wsum = np.zeros((y1 - y0, w), np.float32)
        assert wsum is not None  # pending rows hold both sums
        if self._added.pop(j, 0) == len(self.plan.rows.touching(y0, y1)) * self._cols:
            # every lattice tile touching the row was added: every pixel is covered (the lattice
            # invariant), so no coverage scan and no masked division
            np.divide(acc, wsum, out=acc)
            self.recycle(wsum)
            check_finite(acc, y0, self.block.x0)
            return Band(j, y0, y1, self.block.x0, self.block.x1, acc, None)
        covered = wsum > 0
        all_covered = bool(covered.all())
        np.divide(acc, wsum, out=acc, where=covered)
        self.recycle(wsum)
        check_finite(acc, y0, self.block.x0)  # uncovered pixels hold 0
        return Band(j, y0, y1, self.block.x0, self.block.x1, acc, None if all_covered else covered)
