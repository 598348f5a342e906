"""Tissue detection on a low-resolution level: Otsu on a saturation/darkness score, holes filled,
specks removed; :class:`Mask` is a low-resolution boolean mask and its scale to the image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sources import Source, open_source

#: Pixel size (µm) of the level tissue is detected on, when the file states one.
TISSUE_MPP = 8.0


#: Downsample of the level tissue is detected on, when the file states no pixel size.
TISSUE_DOWNSAMPLE = 32


#: Masks keep at least this many pixels along the image's longer side.
MIN_MASK_SIDE = 256


#: Float32 elements of one strip read while building a thumbnail (64 MB).
_STRIP_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Mask:
    """A low-resolution foreground mask of the processed image.

    Attributes
    ----------
    array : (h, w) bool, True = foreground.
    scale : (sy, sx) image pixels per mask pixel.
    kind : "tissue", "roi" or "tissue+roi", for the record.
    """

    array: np.ndarray
    scale: tuple[float, float]
    kind: str

    @property
    def fraction(self) -> float:
        """Fraction of the mask that is foreground."""
        return float(self.array.mean()) if self.array.size else 0.0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape, finite): maximises the between-class variance.

    >>> float(otsu_threshold(np.array([0.1] * 50 + [0.9] * 50))) > 0.1
    True
    """
    v = np.asarray(values, np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mean0 - mean1) ** 2)[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    # Thresholds across an empty gap separate the classes equally well: take the gap's middle.
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def tissue_score(thumb: np.ndarray) -> np.ndarray:
    """(h, w, C) thumbnail -> (h, w) float32 score, high on tissue.

    RGB(A): HSV saturation ``(max - min) / max`` of the first three channels (glass is grey-white,
    stained tissue is coloured). Other channel counts: the mean channel, sign chosen so the image's
    border (usually glass or empty) scores low.
    """
    x = thumb.astype(np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[2] in (3, 4):
        rgb = x[..., :3]
        top = rgb.max(axis=2)
        return np.where(top > 0, (top - rgb.min(axis=2)) / np.maximum(top, 1e-6), 0.0).astype(np.float32)
    grey = x.mean(axis=2)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return grey if np.median(border) <= np.median(grey) else -grey


def _fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small = sizes <= max_area
    small[0] = False
    small[edge] = False  # background touching the border is not a hole
    return mask | small[labels]


def _remove_small_objects(mask: np.ndarray, min_area: int) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    keep = np.bincount(labels.ravel()) >= min_area
    keep[0] = False
    return keep[labels]


def tissue_mask(
    thumb: np.ndarray,
    *,
    min_threshold: float = 0.05,
    max_threshold: float = 0.15,
    min_area: int = 16,
    hole_area: int = 64,
    dilate: int = 2,
) -> np.ndarray:
    """Foreground of a low-resolution (h, w, C) thumbnail as an (h, w) bool array.

    Otsu's threshold on :func:`tissue_score`, kept within ``[min_threshold, max_threshold]`` for
    RGB (so an all-glass slide finds nothing and an all-tissue one keeps its pale parts); then
    objects under ``min_area`` mask pixels removed, holes up to ``hole_area`` filled, and the
    result dilated by ``dilate`` pixels so tissue borders stay inside.
    """
    from scipy import ndimage

    score = tissue_score(thumb)
    t = otsu_threshold(score)
    if thumb.ndim == 3 and thumb.shape[2] in (3, 4):
        t = min(max(t, min_threshold), max_threshold)
    mask = score > t
    mask = _remove_small_objects(mask, min_area)
    mask = _fill_small_holes(mask, hole_area)
    if dilate > 0 and mask.any():
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=dilate)
    return mask


def thumbnail(source: Source, factor: int) -> np.ndarray:
    """Block means of ``factor`` x ``factor`` pixels of ``source``, read in strips.

    Returns a (ceil(H / factor), ceil(W / factor), C) float32 array (edge blocks are partial).
    Memory: one strip of at most 64 MB plus the thumbnail.
    """
    h, w, c = source.shape
    f = max(1, int(factor))
    per = max(1, _STRIP_ELEMENTS // (f * w * c)) * f
    out = np.empty((math.ceil(h / f), math.ceil(w / f), c), np.float32)
    cols = np.arange(0, w, f)
    col_n = np.minimum(cols + f, w) - cols
    for y0 in range(0, h, per):
        y1 = min(h, y0 + per)
        strip = source.read(y0, y1, 0, w).astype(np.float32)
        rows = np.arange(0, y1 - y0, f)
        sums = np.add.reduceat(np.add.reduceat(strip, rows, axis=0), cols, axis=1)
        row_n = np.minimum(rows + f, y1 - y0) - rows
        out[y0 // f : y0 // f + len(rows)] = sums / (row_n[:, None, None] * col_n[None, :, None])
    return out


def auto_tissue(image: Any, source: Source) -> Mask:
    """Detect tissue for the processed ``source`` (opened from ``image``) on a low-resolution level.

    The level is the coarsest with at most :data:`TISSUE_MPP` µm pixels (or downsample
    :data:`TISSUE_DOWNSAMPLE` without a pixel size), reduced further by block means; the mask keeps
    at least :data:`MIN_MASK_SIDE` pixels along the longer side.
    """
    info = source.info
    levels = info.levels or ((source.shape[0], source.shape[1]),)
    h0, w0 = levels[0]
    want = TISSUE_MPP / max(info.base_mpp) if info.base_mpp else TISSUE_DOWNSAMPLE
    want = max(1.0, min(want, max(h0, w0) / MIN_MASK_SIDE))
    low = getattr(source, "source", source)  # a resampled source: detect on the finer image
    opened = None
    if isinstance(image, (str, os.PathLike)) and len(levels) > 1:
        k = max((i for i, (lh, lw) in enumerate(levels) if max(h0 / lh, w0 / lw) <= want), default=0)
        if low.info.level != k:  # the same series, plane and channels as the processed source
            read = source.info.read or low.info.read
            same: dict[str, Any] = (
                {} if read is None else {"series": read.series, "plane": read.plane, "channels": read.channels,
                                         "reader": read.reader})
            low = opened = open_source(image, level=k, **same)
    lh, lw = low.shape[:2]
    reduce = max(1, int(want * lh / h0))
    try:
        thumb = thumbnail(low, reduce)
    finally:
        if opened is not None and hasattr(opened, "close"):
            opened.close()
    mask = tissue_mask(thumb)
    h, w = source.shape[:2]
    return Mask(mask, (reduce * h / lh, reduce * w / lw), "tissue")
