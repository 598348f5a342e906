"""Per-channel mean and standard deviation of an image, out of core, to feed normalisation.

The image is read one block at a time (a chunk row of the file, cut into column blocks of about
``block`` pixels); each block gives its pixel count, mean and sum of squared deviations (two-pass,
float64), and blocks are combined with the pairwise update of Chan, Golub and LeVeque (1979):

    n = n_a + n_b,   d = mean_b - mean_a,   mean = mean_a + d n_b / n,
    M2 = M2_a + M2_b + d^2 n_a n_b / n

which, unlike sums of squares, does not lose precision on large, bright images. Values are scaled
like the model's input (:meth:`~tiler.models.spec.ModelSpec.input_scale`: 1/255 for uint8, 1/65535
for uint16, 1 for floats); the standard deviation is the population one (ddof = 0), as
``numpy.std`` and torchvision-style ``compute_mean_std`` scripts give.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..masks.roi import RoiMask
from ..models.spec import ModelSpec
from ..sources import Source
from .opened import opened


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of an image.

    Attributes
    ----------
    mean, std : (C,) float64, scaled by ``scale``.
    count : pixels counted (inside the ROI, if any).
    scale : the factor applied to raw pixel values.
    """

    mean: np.ndarray
    std: np.ndarray
    count: int
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "pixels": self.count, "scale": self.scale}

    def table(self) -> str:
        lines = [f"{'channel':<8} {'mean':>10} {'std':>10}"]
        lines += [f"{c:<8d} {m:10.6f} {s:10.6f}" for c, (m, s) in enumerate(zip(self.mean, self.std))]
        lines.append(f"{self.count} pixels; values scaled by {self.scale:.6g} (like the model input)")
        lines.append(f"tiler run flags: {self.flags()}   (or save --json and pass --stats FILE)")
        return "\n".join(lines)

    def flags(self) -> str:
        """The ``--mean``/``--std`` (and ``--scale``) flags of ``tiler run`` that apply these statistics."""
        mean = ",".join(f"{m:.6f}" for m in self.mean)
        std = ",".join(f"{s:.6f}" for s in self.std)
        return f"--scale {self.scale!r} --mean {mean} --std {std}"


class _Running:
    """Count, mean and M2 per channel, merged block by block (Chan et al.)."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)

    def add(self, pixels: np.ndarray) -> None:
        """Merge an (N, C) block of pixels."""
        n_b = pixels.shape[0]
        if n_b == 0:
            return
        x = pixels.astype(np.float64, copy=False)
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n


def _blocks(source: Source, block: int) -> tuple[int, int]:
    """Block height (the file's chunk rows, at least 256) and width (a multiple of its chunk width)."""
    ch, cw = source.chunks or (block, block)
    height = ch * max(1, -(-256 // ch)) if ch < 256 else ch
    width = cw * max(1, block // cw) if cw < block else cw
    return min(height, block), max(width, 1)


def channel_stats(
    image: str | os.PathLike[str] | Any, *, roi: Any = None, tissue: bool = False, block: int = 2048
) -> ChannelStats:
    """Per-channel mean and std of ``image`` (path, array or Source), optionally inside a mask.

    Parameters
    ----------
    image : (H, W) or (H, W, C) image.
    roi : optional mask (see :mod:`tiler.masks.roi`: any resolution, nonzero in any channel = counted).
        A raster's nodata pixels (:mod:`tiler.sources.raster`) are never counted.
    tissue : count only detected tissue (as ``tiler run --tissue auto`` finds it); with ``roi``,
        only pixels inside both.
    block : block edge in pixels; memory is about ``block**2 * C * 8`` bytes.

    >>> s = channel_stats(np.array([[0, 255], [255, 255]], np.uint8))
    >>> float(s.mean[0]), float(s.std[0]).__round__(6)
    (0.75, 0.433013)
    """
    with ExitStack() as stack:
        source = stack.enter_context(opened(image))
        h, w, _ = source.shape
        masks = [stack.enter_context(RoiMask(roi, (h, w)))] if roi is not None else []
        if tissue:
            from ..masks.tissue import auto_tissue

            found = auto_tissue(image, source).array.astype(np.uint8)
            masks.append(stack.enter_context(RoiMask(found, (h, w))))
        running = _accumulate(source, masks, block)
        name, dtype = source.name, source.dtype
    if running.n == 0:
        raise InputError(f"{name}: no pixels to count (the ROI or tissue mask is empty)")
    scale = ModelSpec().input_scale(dtype)
    std = np.sqrt(running.m2 / running.n)
    return ChannelStats(mean=running.mean * scale, std=std * scale, count=running.n, scale=scale)


def _accumulate(source: Source, masks: list[RoiMask], block: int) -> _Running:
    h, w, c = source.shape
    bh, bw = _blocks(source, block)
    running = _Running(c)
    nodata = bool(getattr(source, "masked", False))  # a raster's nodata pixels are never counted
    for y0 in range(0, h, bh):
        y1 = min(y0 + bh, h)
        for x0 in range(0, w, bw):
            x1 = min(x0 + bw, w)
            pixels = source.read(y0, y1, x0, x1)
            if masks or nodata:
                inside = np.ones((y1 - y0, x1 - x0), bool)
                if nodata:
                    inside &= source.valid_mask(y0, y1, x0, x1)  # type: ignore[attr-defined]
                for mask in masks:
                    inside &= mask.region(y0, y1, x0, x1)
                running.add(pixels[inside])
            else:
                running.add(pixels.reshape(-1, c))
    return running
