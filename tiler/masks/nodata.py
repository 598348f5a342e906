"""The input's own nodata: tiles that are all nodata are skipped, nodata pixels get ``fill``.

A GDAL raster with a nodata value, an internal mask or an alpha band (a source with
``masked = True`` and ``valid_mask(y0, y1, x0, x1) -> (h, w) bool``, see
:mod:`tiler.sources.raster`) gives a :class:`~tiler.masks.tissue.Mask` of kind ``"data"``:
:func:`data_mask` reads the whole valid mask once, at full resolution, strip by strip, and reduces it
by blocks (a block has data where any of its pixels has), so a tile with one valid pixel is never
skipped. :func:`valid_pixels` is what the engine asks for each chunk row it writes.

>>> import numpy as np
>>> from tiler.sources import ArraySource
>>> valid_pixels(ArraySource(np.zeros((4, 4), np.uint8))) is None
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


def valid_pixels(source: Source) -> Callable[[int, int, int, int], np.ndarray] | None:
    """``valid(y0, y1, x0, x1) -> (h, w) bool`` (True = has data) when the source has nodata, else None."""
    if not getattr(source, "masked", False):
        return None
    valid: Callable[[int, int, int, int], np.ndarray] = source.valid_mask  # type: ignore[attr-defined]
    return valid


def data_mask(source: Source) -> Mask | None:
    """The low-resolution "has data" mask of ``source`` (None when it has no nodata)."""
    valid = valid_pixels(source)
    if valid is None:
        return None
    h, w, _ = source.shape
    f = max(1, math.ceil(math.sqrt(h * w / MAX_DATA_MASK_PIXELS)))
    mh, mw = math.ceil(h / f), math.ceil(w / f)
    out = np.zeros((mh, mw), bool)
    rows = max(1, _STRIP_PIXELS // (w * f)) * f
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        strip = valid(y0, y1, 0, w)
        pad = np.zeros((math.ceil((y1 - y0) / f) * f, mw * f), bool)
        pad[: y1 - y0, :w] = strip
        out[y0 // f : y0 // f + pad.shape[0] // f] = pad.reshape(pad.shape[0] // f, f, mw, f).any(axis=(1, 3))
    if not out.any():
        raise InputError(f"{source.name}: every pixel is nodata; nothing would be computed")
    return Mask(out, (float(f), float(f)), "data")
