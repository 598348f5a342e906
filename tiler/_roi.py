"""A region-of-interest mask read band by band and scaled to the image it applies to.

A mask is any image tiler can open (nonzero = inside). It may be the image's size or smaller (a
low-resolution mask): pixel ``(y, x)`` of the image takes the mask pixel ``(y * Hm // H,
x * Wm // W)`` (nearest, by integer arithmetic, so a same-size mask is used as is).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError
from .sources import open_source


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
