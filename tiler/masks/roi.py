"""A region-of-interest mask read band by band and scaled to the image it applies to.

A mask is any image tiler can open (nonzero = inside). It may be the image's size or smaller (a
low-resolution mask): pixel ``(y, x)`` of the image takes the mask pixel ``(y * Hm // H,
x * Wm // W)`` (nearest, by integer arithmetic, so a same-size mask is used as is).
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


def load_roi(roi: Any, shape: tuple[int, int]) -> Mask:
    """A user mask (path or array, any resolution, nonzero = inside) stretched over ``shape``."""
    src = open_source(roi, palette="index")  # a palette mask's indices are its classes, not its colours
    rh, rw, _ = src.shape
    factor = max(1, math.ceil(math.sqrt(rh * rw / 16e6)))  # keep the mask under ~16 MP
    array = thumbnail(src, factor) if factor > 1 else src.read(0, rh, 0, rw)
    mask = np.asarray(array).max(axis=2) > 0
    name = src.name
    if not mask.any():
        raise InputError(f"{name}: the ROI mask is empty (no nonzero pixel); nothing would be computed")
    ratio = (rw / rh) / (shape[1] / shape[0])
    if abs(ratio - 1) > 0.05:
        warnings.warn(
            f"{name}: the ROI mask's aspect ratio ({rw}x{rh}) differs from the image's "
            f"({shape[1]}x{shape[0]}) by {abs(ratio - 1):.0%}; it is stretched to fit",
            stacklevel=2,
        )
    return Mask(mask, (factor * shape[0] / rh, factor * shape[1] / rw), "roi")


class RoiMask:
    """A mask for an image of ``shape = (H, W)``; :meth:`region` gives (h, w) bool for a region."""

    def __init__(self, mask: str | os.PathLike[str] | Any, shape: tuple[int, int]) -> None:
        self.source = open_source(mask, palette="index")  # a palette mask: its indices, not colours
        self.shape = shape
        mh, mw, mc = self.source.shape
        problem = None
        if mh > shape[0] or mw > shape[1]:
            problem = (f"the mask ({mh} x {mw}) is larger than the image ({shape[0]} x {shape[1]}); "
                       "give a mask of the image's size or smaller")
        elif mc != 1:
            problem = f"a mask needs one channel, this has {mc}"
        if problem:
            self.close()
            raise InputError(f"{self.source.name}: {problem}")

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) bool: True inside the ROI."""
        mh, mw, _ = self.source.shape
        h, w = self.shape
        my = np.arange(y0, y1) * mh // h
        mx = np.arange(x0, x1) * mw // w
        band = self.source.read(int(my[0]), int(my[-1]) + 1, int(mx[0]), int(mx[-1]) + 1)[..., 0]
        return band[np.ix_(my - my[0], mx - mx[0])] != 0

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> RoiMask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
