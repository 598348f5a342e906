"""Foreground masks that let a run skip tiles: ``--tissue auto`` and ``--roi MASK``.

A mask is a 2-D bool array at low resolution plus its ``scale = (sy, sx)``: image pixels (of the
image being processed) per mask pixel, so image pixel ``(y, x)`` lies in mask pixel
``(floor(y / sy), floor(x / sx))``. :func:`tile_skip` marks the lattice tiles whose *weighted*
part touches no foreground. A foreground pixel is then covered only
by tiles that touch foreground, so all its tiles are computed and its output is exactly what a run
without the mask gives; pixels no computed tile covers get the output's fill value.

The pure functions (:func:`otsu_threshold`, :func:`tissue_mask`, :func:`tile_skip`) work on arrays;
:func:`thumbnail`, :func:`auto_tissue` and :func:`load_roi` read images out of core.

>>> from tiler.plan.lattice import TilePlan
>>> plan = TilePlan.create((64, 64), tile=32, overlap=0)
>>> mask = np.zeros((4, 4), bool); mask[0, 0] = True     # 16 image pixels per mask pixel
>>> tile_skip(plan, mask, (16.0, 16.0)).tolist()
[[False, True], [True, True]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..plan.lattice import TilePlan
from ..sources import Source
from .roi import load_roi
from .tissue import Mask, auto_tissue


def tile_skip(plan: TilePlan, mask: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """(rows, cols) bool: True for lattice tiles whose weighted part touches no foreground.

    ``mask`` is (h, w) bool; ``scale = (sy, sx)`` image pixels per mask pixel: image pixel
    ``(y, x)`` is foreground when ``mask[floor(y / sy), floor(x / sx)]`` is (indices clipped to the
    mask). Computed with a summed-area table: O(mask + tiles).
    """
    mask = np.asarray(mask, bool)
    mh, mw = mask.shape
    table = np.zeros((mh + 1, mw + 1), np.int32 if mask.size < 2**31 else np.int64)
    np.cumsum(mask, axis=0, dtype=table.dtype, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])

    def spans(axis: Any, size: int, s: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.clip(axis.origins() + plan.margin, 0, size)
        hi = np.clip(axis.origins() + plan.tile - plan.margin, 0, size)
        a = np.clip(np.floor(lo / s).astype(np.int64), 0, n - 1)
        b = np.clip(np.floor((hi - 1) / s).astype(np.int64) + 1, a + 1, n)
        return a, b

    r0, r1 = spans(plan.rows, plan.height, scale[0], mh)
    c0, c1 = spans(plan.cols, plan.width, scale[1], mw)
    count = table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]
    return count == 0


class SkipTable:
    """``skip(row, col) -> bool`` over a (rows, cols) bool array; small and picklable (dask tasks)."""

    def __init__(self, skip: np.ndarray) -> None:
        self.table = np.packbits(np.asarray(skip, bool), axis=1)
        self.shape = np.asarray(skip).shape

    def __call__(self, i: int, j: int) -> bool:
        return bool((self.table[i, j >> 3] >> (7 - (j & 7))) & 1)


def skip_predicate(skip: np.ndarray) -> Callable[[int, int], bool]:
    """``skip(row, col) -> bool`` for :class:`~tiler.engine.job.Job` from a (rows, cols) bool array.

    >>> p = skip_predicate(np.array([[True, False] * 5]))
    >>> p(0, 0), p(0, 1), p(0, 8), p(0, 9)
    (True, False, True, False)
    """
    return SkipTable(skip)


def build_skip(
    plan: TilePlan, image: Any, source: Source, *, tissue: Any = None, roi: Any = None,
    extra: list[Mask] | None = None,
) -> tuple[np.ndarray | None, list[Mask]]:
    """The (rows, cols) skip table for ``--tissue`` / ``--roi`` and ``extra`` masks (the input's
    nodata: :func:`tiler.masks.nodata.data_mask`); None when there is none of them."""
    masks: list[Mask] = list(extra or [])
    if tissue not in (None, False, "none", "off"):
        if tissue not in (True, "auto"):
            raise SettingsError(f"--tissue {tissue!r} is not known; use --tissue auto (or --roi MASK)")
        masks.append(auto_tissue(image, source))
    if roi is not None:
        masks.append(load_roi(roi, source.shape[:2]))
    if not masks:
        return None, masks
    skip = np.zeros((plan.rows.count, plan.cols.count), bool)
    for m in masks:
        skip |= tile_skip(plan, m.array, m.scale)
    return skip, masks
