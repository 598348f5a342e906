"""Sources over arrays: NumPy, zarr, dask, or anything sliceable with shape and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ._base import SourceInfo

#: dtypes the pipeline accepts (models see float32 after normalisation).
SUPPORTED_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "float32", "float64")}


def check_image_shape(name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int, int]:
    """Validate an image's shape and dtype; return it as (height, width, channels)."""
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise InputError(
            f"{name}: expected an (H, W) or channel-last (H, W, C) image, got shape {tuple(shape)}"
        )
    h, w, c = (int(s) for s in shape)
    if h < 1 or w < 1 or c < 1:
        raise InputError(f"{name}: image shape {tuple(shape)} is empty")
    if c > 64:
        raise InputError(
            f"{name}: {c} channels in the last axis; images must be channel-last (H, W, C)"
        )
    if np.dtype(dtype) not in SUPPORTED_DTYPES:
        raise InputError(
            f"{name}: pixel type {np.dtype(dtype)} is not supported "
            f"(use one of {', '.join(sorted(str(d) for d in SUPPORTED_DTYPES))})"
        )
    return (h, w, c)


class ArraySource:
    """An (H, W) or (H, W, C) array-like read by slicing; dask slices are computed on read.

    >>> src = ArraySource(np.zeros((10, 20, 3), np.uint8))
    >>> src.shape, src.read(2, 4, 5, 9).shape
    ((10, 20, 3), (2, 4, 3))
    """

    def __init__(self, array: Any, *, name: str = "array", info: SourceInfo | None = None) -> None:
        self.name = name
        self.shape = check_image_shape(name, tuple(array.shape), array.dtype)
        self.dtype = np.dtype(array.dtype)
        self._array = array
        chunks = getattr(array, "chunks", None)
        self.chunks: tuple[int, int] | None = None
        if isinstance(chunks, tuple) and len(chunks) >= 2:
            first = chunks[0]
            if isinstance(first, tuple):  # dask: tuple of block sizes per axis
                self.chunks = (int(chunks[0][0]), int(chunks[1][0]))
            else:
                self.chunks = (int(chunks[0]), int(chunks[1]))
        self.info = info or SourceInfo(format=type(array).__module__.split(".")[0], chunks=self.chunks)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        region = self._array[y0:y1, x0:x1]
        if hasattr(region, "compute"):
            region = region.compute()
        region = np.asarray(region)
        return region[..., None] if region.ndim == 2 else region

    def close(self) -> None:
        pass
