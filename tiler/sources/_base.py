"""The source interface that the rest of the pipeline consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..georef import GeoReference


@dataclass(frozen=True)
class SourceInfo:
    """What ``tiler info`` shows and what the run records about an input.

    Attributes
    ----------
    format : short name of the container ("tiff", "ome-tiff", "svs", "zarr", "png", "array", ...).
    compression : codec of the stored tiles or strips, if any.
    chunks : (height, width) of the stored tiles or strips, if any.
    levels : shapes ``(height, width)`` of the pyramid levels, full resolution first.
    mpp : microns per pixel (y, x) of the image as read (the level, or the resampled grid), if the
        file states a pixel size.
    extra : anything else worth recording (photometric, ...).
    level : the pyramid level read (0 = full resolution).
    downsample : (y, x) full-resolution pixels per pixel of the image as read.
    base_mpp : microns per pixel (y, x) of level 0, if stated.
    georeference : the GeoTIFF georeference of the image as read (:mod:`tiler.georef`), if any.
    """

    format: str
    compression: str | None = None
    chunks: tuple[int, int] | None = None
    levels: tuple[tuple[int, int], ...] = ()
    mpp: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    level: int = 0
    downsample: tuple[float, float] = (1.0, 1.0)
    base_mpp: tuple[float, float] | None = None
    georeference: GeoReference | None = None

    def level_downsample(self, k: int) -> tuple[float, float]:
        """(y, x) level-0 pixels per pixel of pyramid level ``k`` (from the level shapes)."""
        (h0, w0), (h, w) = self.levels[0], self.levels[k]
        return (h0 / h, w0 / w)

    def level_mpp(self, k: int) -> tuple[float, float] | None:
        """Microns per pixel (y, x) of pyramid level ``k``, if the file states a pixel size."""
        if self.base_mpp is None:
            return None
        fy, fx = self.level_downsample(k)
        return (self.base_mpp[0] * fy, self.base_mpp[1] * fx)


@runtime_checkable
class Source(Protocol):
    """A lazy image of shape (height, width, channels)."""

    name: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int] | None
    info: SourceInfo

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)`` (inside the image) as an (h, w, channels) array."""
        ...

    def close(self) -> None:
        """Release open files (a no-op for arrays)."""
        ...
