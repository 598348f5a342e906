"""The input's own nodata: tiles that are all nodata are skipped, nodata pixels get ``fill``.

A GDAL raster with a nodata value, an internal mask or an alpha band (a source with
``masked = True`` and ``valid_mask(y0, y1, x0, x1) -> (h, w) bool``, see
:mod:`tiler.sources.raster`) gives a :class:`~tiler.masks.tissue.Mask` of kind ``"data"``:
:func:`data_mask` reads the whole valid mask once, at full resolution, strip by strip, and reduces it
by blocks (a block has data where any of its pixels has), so a tile with one valid pixel is never
skipped. Its :class:`ValidPixels` is what the engine asks for each chunk row it writes.

>>> import numpy as np
>>> from tiler.sources import ArraySource
>>> data_mask(ArraySource(np.zeros((4, 4), np.uint8))) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import InputError
from ..sources import Source
from .tissue import Mask

#: The most mask pixels :func:`data_mask` keeps (larger images are block-reduced).
MAX_DATA_MASK_PIXELS = 16e6

#: Mask pixels read at once (full resolution) while building the mask: 64 M.
_STRIP_PIXELS = 1 << 26


def _valid_function(source: Source) -> Callable[[int, int, int, int], np.ndarray] | None:
    if not getattr(source, "masked", False):
        return None
    valid: Callable[[int, int, int, int], np.ndarray] = source.valid_mask  # type: ignore[attr-defined]
    return valid


class ValidPixels:
    """``valid(source, y0, y1, x0, x1) -> (h, w) bool or None`` for the engine's chunk rows.

    Holds a low-resolution table of the blocks whose every pixel has data (bit-packed: small and
    picklable, sent to dask workers with the job); a region inside such blocks gives None (all
    valid) without reading anything, any other region reads the source's ``valid_mask``. Inside a
    scene with nodata only around its edges, most chunk rows are never read twice.
    """

    def __init__(self, all_valid: np.ndarray, factor: int) -> None:
        self.table = np.packbits(np.asarray(all_valid, bool), axis=1)
        self.shape = all_valid.shape
        self.factor = factor

    def __call__(self, source: Source, y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        f = self.factor
        rows = self.table[y0 // f : -(-y1 // f)]
        full = np.unpackbits(rows, axis=1, count=self.shape[1])[:, x0 // f : -(-x1 // f)]
        if full.all():
            return None
        mask: np.ndarray = source.valid_mask(y0, y1, x0, x1)  # type: ignore[attr-defined]
        return mask


def valid_pixels(source: Source) -> ValidPixels | None:
    """A :class:`ValidPixels` that reads every region (no table), for a masked source; else None."""
    if _valid_function(source) is None:
        return None
    return ValidPixels(np.zeros((1, 1), bool), 1 << 62)


def data_mask(source: Source) -> tuple[Mask, ValidPixels] | None:
    """The low-resolution "has data" mask of ``source`` and its :class:`ValidPixels` (None when the
    source has no nodata): one pass over the source's valid mask, at full resolution."""
    valid = _valid_function(source)
    if valid is None:
        return None
    h, w, _ = source.shape
    f = max(1, math.ceil(math.sqrt(h * w / MAX_DATA_MASK_PIXELS)))
    mh, mw = math.ceil(h / f), math.ceil(w / f)
    some, every = np.zeros((mh, mw), bool), np.zeros((mh, mw), bool)
    rows = max(1, _STRIP_PIXELS // (w * f)) * f
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        strip = valid(y0, y1, 0, w)
        pad = np.ones((math.ceil((y1 - y0) / f) * f, mw * f), bool)  # outside the image: "valid"
        pad[: y1 - y0, :w] = strip
        blocks = pad.reshape(pad.shape[0] // f, f, mw, f)
        every[y0 // f : y0 // f + blocks.shape[0]] = blocks.all(axis=(1, 3))
        pad[y1 - y0 :], pad[:, w:] = False, False
        some[y0 // f : y0 // f + blocks.shape[0]] = blocks.any(axis=(1, 3))
    if not some.any():
        raise InputError(f"{source.name}: every pixel is nodata; nothing would be computed")
    return Mask(some, (float(f), float(f)), "data"), ValidPixels(every, f)
