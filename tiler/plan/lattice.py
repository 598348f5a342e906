"""The tile lattice and the partition of the output into work units. Pure arithmetic, no I/O.

One global lattice places every tile of an image: along each axis, tile ``i`` starts at
``origin(i) = i * stride - context`` (``stride = tile - overlap``). The first tile starts ``context``
pixels before the image (``margin <= context <= overlap / 2``), so the image's first row sees
``context`` pixels of mirrored context, as a seam between two tiles sees ``overlap / 2``; tiles run
on until the last one also reaches ``context`` pixels past the end of the axis, so every border --
top, left, bottom, right -- is predicted with at least that much mirrored context (the overlap-tile
strategy of the U-Net paper). ``context = margin`` (the default of :meth:`TilePlan.create`) is the
smallest lattice whose weighted parts cover the image. Wherever a tile reaches outside the image it
is filled by reflect padding (:func:`reflect_index`), so every tile has the full tile shape, also
for images smaller than one tile.

The output is split into :class:`Block` s aligned with output chunks. A block's result depends only
on the lattice, never on the partition: a block computes exactly the lattice tiles whose weighted
part touches it and sums them in lattice order.

>>> plan = TilePlan.create((1000, 700), tile=256, overlap=32)
>>> plan.rows.count, plan.cols.count, plan.rows.origin(3)
(5, 3, 672)
>>> plan = TilePlan.create((1000, 700), tile=256, overlap=32, context=16)
>>> plan.rows.count, plan.cols.count, plan.rows.origin(0), plan.rows.origin(3)
(5, 4, -16, 656)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import SettingsError
from .box import Box
from .partition import Block


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map coordinates outside ``[0, size)`` back inside by reflection without edge repeat.

    The same mapping as ``numpy.pad(mode="reflect")`` (applied as often as needed, so pads larger
    than the image work too) and ``torch.nn.functional.pad(mode="reflect")``.

    >>> reflect_index(np.arange(-3, 7), 4).tolist()
    [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    """
    index = np.asarray(index, dtype=np.int64)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    r = np.mod(index, period)
    return np.where(r >= size, period - r, r)


@dataclass(frozen=True)
class AxisLattice:
    """Tile positions along one axis.

    Attributes
    ----------
    size : pixels of the image along this axis.
    tile, stride, margin : pixels; tile ``i`` covers ``[origin(i), origin(i) + tile)`` and weights
        ``[origin(i) + margin, origin(i) + tile - margin)``.
    context : pixels before the image where tile 0 starts (``origin(0) = -context``), and at least
        as many past the end where the last tile ends; ``margin <= context <= (tile - stride) / 2``.
    """

    size: int
    tile: int
    stride: int
    margin: int
    context: int | None = None  # None: margin

    @property
    def start(self) -> int:
        """``context`` (the margin when not given): how far before the image tile 0 starts."""
        return self.margin if self.context is None else self.context

    @property
    def count(self) -> int:
        """Number of tiles needed so that ``[origin(i) + context, origin(i) + tile - context)``
        cover ``[0, size)`` (with ``context = margin``: the weighted parts)."""
        inner = self.tile - 2 * self.start
        return max(1, math.ceil((self.size - inner) / self.stride) + 1)

    def origin(self, i: int) -> int:
        """First pixel (may be negative or reach past the image) of tile ``i``."""
        return i * self.stride - self.start

    def origins(self) -> np.ndarray:
        """int64 array of shape ``(count,)``: every tile origin."""
        return np.arange(self.count, dtype=np.int64) * self.stride - self.start

    def touching(self, lo: int, hi: int) -> range:
        """Tiles whose weighted part ``[origin(i) + margin, origin(i) + tile - margin)`` meets ``[lo, hi)``."""
        begin = self.margin - self.start  # weighted part of tile i: [i*stride + begin, ... + weighted)
        weighted = self.tile - 2 * self.margin
        first = max(0, math.floor((lo - begin - weighted) / self.stride) + 1)
        last = min(self.count - 1, (hi - 1 - begin) // self.stride)
        return range(first, last + 1)


@dataclass(frozen=True)
class TilePlan:
    """The global tile lattice of one image. Build it with :meth:`create`, which validates.

    Attributes
    ----------
    height, width : image size in pixels.
    tile, overlap, margin : pixels (square tiles).
    multiple : the spatial size multiple the model needs; tile and stride are multiples of it.
    context : mirrored context at the image borders: tile 0 starts at ``-context`` (None: margin).
    """

    height: int
    width: int
    tile: int
    overlap: int
    margin: int = 0
    multiple: int = 1
    context: int | None = None

    @classmethod
    def create(
        cls,
        shape: tuple[int, int],
        *,
        tile: int = 512,
        overlap: int = 128,
        margin: int = 0,
        multiple: int = 1,
        context: int | None = None,
    ) -> TilePlan:
        """Validate the settings for an image of ``shape = (height, width)`` and build the plan.

        An overlap that leaves a stride which is not a multiple of ``multiple`` is increased to the
        next one that does, with a warning. ``context`` (None: ``margin``) must lie between the
        margin and half the overlap.
        """
        height, width = (int(s) for s in shape)
        if height < 1 or width < 1:
            raise SettingsError(f"image shape {height}x{width} is empty")
        if multiple < 1:
            raise SettingsError(f"model size multiple must be >= 1, got {multiple}")
        if tile < 1 or tile % multiple:
            raise SettingsError(
                f"tile {tile} is not a multiple of {multiple}, which the model needs; "
                f"try --tile {max(multiple, round(tile / multiple) * multiple)}"
            )
        if overlap < 0 or overlap >= tile:
            raise SettingsError(f"overlap {overlap} must be >= 0 and smaller than the tile {tile}")
        if margin < 0 or 2 * margin > overlap:
            raise SettingsError(
                f"margin {margin} must be between 0 and overlap/2 ({overlap // 2}); pixels in the "
                f"margin get no weight, so neighbouring tiles must overlap by at least 2*margin"
            )
        stride = tile - overlap
        if stride % multiple:
            new_overlap = tile - (stride // multiple) * multiple
            if new_overlap >= tile:
                raise SettingsError(f"overlap {overlap} leaves no stride that is a multiple of {multiple}")
            warnings.warn(
                f"overlap {overlap} raised to {new_overlap} so that tiles start on multiples of "
                f"{multiple}",
                stacklevel=2,
            )
            overlap = new_overlap
        if context is not None and not margin <= context <= overlap // 2:
            raise SettingsError(
                f"context {context} must be between the margin {margin} and overlap/2 ({overlap // 2}): "
                "the border tiles start that far outside the image, as far as a seam is from a tile edge"
            )
        return cls(height, width, tile, overlap, margin, multiple, context)

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def rows(self) -> AxisLattice:
        return AxisLattice(self.height, self.tile, self.stride, self.margin, self.context)

    @property
    def cols(self) -> AxisLattice:
        return AxisLattice(self.width, self.tile, self.stride, self.margin, self.context)

    @property
    def n_tiles(self) -> int:
        return self.rows.count * self.cols.count

    def tile_box(self, i: int, j: int) -> Box:
        """The :class:`~tiler.plan.box.Box` ``(y0, y1, x0, x1)`` of tile ``(i, j)`` in image coordinates
        (may reach outside)."""
        y0, x0 = self.rows.origin(i), self.cols.origin(j)
        return Box(y0, y0 + self.tile, x0, x0 + self.tile)

    def tiles_touching(self, block: Block) -> tuple[range, range]:
        """Tile rows and tile columns whose weighted part meets ``block``."""
        return self.rows.touching(block.y0, block.y1), self.cols.touching(block.x0, block.x1)


