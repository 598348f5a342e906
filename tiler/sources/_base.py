"""The source interface that the rest of the pipeline consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What ``tiler info`` shows and what the run records about an input.

    Attributes
    ----------
    format : short name of the container ("tiff", "ome-tiff", "svs", "zarr", "png", "array", ...).
    compression : codec of the stored tiles or strips, if any.
    chunks : (height, width) of the stored tiles or strips, if any.
    levels : shapes ``(height, width)`` of the pyramid levels, full resolution first.
    mpp : microns per pixel (y, x) at full resolution, if the file states it.
    extra : anything else worth recording (georeference tags, photometric, ...).
    """

    format: str
    compression: str | None = None
    chunks: tuple[int, int] | None = None
    levels: tuple[tuple[int, int], ...] = ()
    mpp: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
