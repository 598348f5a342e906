"""The region-of-interest mask: ONE reader for ``run --roi``, ``eval --roi`` and ``stats --roi``.

A mask is any image tiler can open; a pixel is inside where any of its channels is nonzero (a
palette mask is read as its indices, not its colours). It may have any resolution: pixel
``(y, x)`` of an ``(H, W)`` image takes the mask pixel ``(y * Hm // H, x * Wm // W)`` (nearest, by
integer arithmetic, so a same-size mask is used as is); an aspect ratio more than 5 % off the
image's is stretched to fit, with a warning.

:meth:`RoiMask.region` reads it band by band at the image's resolution (for ``eval`` and
``stats``); :func:`load_roi` reduces it to a low-resolution :class:`~tiler.masks.tissue.Mask` for the
per-tile skip table of ``run`` (a tile is computed where any of its mask pixels is inside).

>>> m = np.zeros((2, 3), np.uint8); m[0, 1] = 5
>>> with RoiMask(m, (4, 6)) as roi:
...     roi.region(0, 2, 0, 6).astype(int).tolist()
[[0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]]
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from ..errors import InputError
from ..sources import open_source
from .tissue import Mask, thumbnail

#: The most mask pixels :func:`load_roi` keeps for the skip table (larger masks are block-reduced).
MAX_SKIP_MASK_PIXELS = 16e6


class RoiMask:
    """A mask for an image of ``shape = (H, W)``; :meth:`region` gives (h, w) bool for a region."""

    def __init__(self, mask: str | os.PathLike[str] | Any, shape: tuple[int, int], *, stacklevel: int = 2) -> None:
        self.source = open_source(mask, palette="index")  # a palette mask: its indices, not colours
        self.shape = shape
        mh, mw, _ = self.source.shape
        ratio = (mw / mh) / (shape[1] / shape[0])
        if abs(ratio - 1) > 0.05:
            warnings.warn(
                f"{self.source.name}: the ROI mask's aspect ratio ({mw}x{mh}) differs from the image's "
                f"({shape[1]}x{shape[0]}) by {abs(ratio - 1):.0%}; it is stretched to fit",
                stacklevel=stacklevel + 1,
            )

    @property
    def name(self) -> str:
        return self.source.name

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) bool: True inside the ROI."""
        mh, mw, _ = self.source.shape
        h, w = self.shape
        my = np.arange(y0, y1) * mh // h
        mx = np.arange(x0, x1) * mw // w
        band = self.source.read(int(my[0]), int(my[-1]) + 1, int(mx[0]), int(mx[-1]) + 1)
        return inside(band)[np.ix_(my - my[0], mx - mx[0])]

    def low_resolution(self) -> Mask:
        """The whole mask as a :class:`~tiler.masks.tissue.Mask` of at most
        :data:`MAX_SKIP_MASK_PIXELS` pixels (block-reduced: a block is inside where any pixel is)."""
        rh, rw, _ = self.source.shape
        factor = max(1, math.ceil(math.sqrt(rh * rw / MAX_SKIP_MASK_PIXELS)))
        array = thumbnail(self.source, factor) if factor > 1 else self.source.read(0, rh, 0, rw)
        mask = inside(np.asarray(array))
        if not mask.any():
            raise InputError(f"{self.name}: the ROI mask is empty (no nonzero pixel); nothing would be computed")
        h, w = self.shape
        return Mask(mask, (factor * h / rh, factor * w / rw), "roi")

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> RoiMask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def inside(pixels: np.ndarray) -> np.ndarray:
    """(h, w) bool from (h, w, C) mask pixels: inside where any channel is nonzero."""
    return (pixels != 0).any(axis=2)


def load_roi(roi: Any, shape: tuple[int, int]) -> Mask:
    """The mask ``roi`` (path or array, any resolution) over an image of ``shape``, for the skip table."""
    with RoiMask(roi, shape, stacklevel=3) as mask:
        return mask.low_resolution()
