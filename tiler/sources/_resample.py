"""A source resampled by a fixed factor on the global pixel grid (for ``--mpp``).

Output pixel ``n`` along an axis covers the source interval ``[n * f, (n + 1) * f)``. Downsampling
(``f >= 1``) averages the source pixels over that interval weighted by their overlap (area
averaging: exact block means for whole factors, antialiased for any factor); upsampling (``f < 1``)
interpolates linearly between the two source pixels around the output pixel's centre
``(n + 0.5) * f - 0.5``. Edges: taps outside the source are dropped (area) or clamped (linear).

Weights depend only on the global output index, and rows are resampled before columns in float32,
so every output pixel is computed by the same operations whatever region is read: a region and its
two halves give bit-identical pixels, and tiles of any lattice agree.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ._base import Source


def resampled_size(size: int, factor: float) -> int:
    """Output pixels along an axis of ``size`` source pixels: ``round(size / factor)``, at least 1."""
    return max(1, round(size / factor))


def axis_taps(n0: int, n1: int, size: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of output pixels ``[n0, n1)``: two (n1 - n0, taps) arrays.

    Indices are in ``[0, size)``, int64; weights float32 summing to 1 per row.

    >>> idx, w = axis_taps(0, 2, 4, 2.0)
    >>> idx.tolist(), w.tolist()
    ([[0, 1, 2], [2, 3, 3]], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    """
    n = np.arange(n0, n1, dtype=np.float64)[:, None]
    if factor >= 1.0:
        lo, hi = n * factor, (n + 1) * factor
        taps = math.ceil(factor) + 1
        idx = np.floor(lo).astype(np.int64) + np.arange(taps)[None, :]
        w = np.clip(np.minimum(idx + 1, hi) - np.maximum(idx, lo), 0.0, None)
        w[(idx < 0) | (idx >= size)] = 0.0
    else:
        centre = (n + 0.5) * factor - 0.5
        first = np.floor(centre)
        t = centre - first
        idx = first.astype(np.int64) + np.arange(2)[None, :]
        w = np.concatenate([1.0 - t, t], axis=1)
    idx = np.clip(idx, 0, size - 1)
    w /= w.sum(axis=1, keepdims=True)
    return idx, w.astype(np.float32)


def _resample_axis0(region: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(h, W, C) float32 region whose row 0 is source row ``idx.min()`` -> (len(idx), W, C)."""
    out = np.zeros((len(idx), *region.shape[1:]), np.float32)
    rows = idx - idx.min()
    for k in range(idx.shape[1]):
        out += region[rows[:, k]] * w[:, k, None, None]
    return out


class ResampledSource:
    """``source`` seen through a resampling by ``factor`` source pixels per output pixel.

    Parameters
    ----------
    source : the finer image.
    factor : ``f`` or ``(fy, fx)``, > 0; > 1 downsamples (area), < 1 upsamples (bilinear).
    mpp : the pixel size (y, x) to report; default the source's times the factor.

    The shape is ``(round(H / fy), round(W / fx), C)`` and the dtype the source's (integers are
    rounded and clipped). ``info`` reports the new pixel size, downsample and georeference.

    >>> from tiler.sources import ArraySource
    >>> src = ResampledSource(ArraySource(np.arange(36, dtype=np.float32).reshape(6, 6)), 2)
    >>> src.shape, src.read(0, 1, 0, 3)[..., 0].tolist()
    ((3, 3, 1), [[3.5, 5.5, 7.5]])
    """

    def __init__(
        self, source: Source, factor: float | tuple[float, float], *, mpp: tuple[float, float] | None = None
    ) -> None:
        fy, fx = (factor, factor) if isinstance(factor, (int, float, np.number)) else factor
        self.factor = (float(fy), float(fx))
        if not (self.factor[0] > 0 and self.factor[1] > 0):
            raise ValueError(f"resampling factor must be > 0, got {factor}")
        self.source = source
        self.name = source.name
        h, w, c = source.shape
        self.shape = (resampled_size(h, self.factor[0]), resampled_size(w, self.factor[1]), c)
        self.dtype = source.dtype
        self.chunks = (
            (max(1, round(source.chunks[0] / self.factor[0])), max(1, round(source.chunks[1] / self.factor[1])))
            if source.chunks else None
        )
        info = source.info
        if mpp is None and info.mpp is not None:
            mpp = (info.mpp[0] * self.factor[0], info.mpp[1] * self.factor[1])
        georef = info.georeference.downsampled(self.factor) if info.georeference is not None else None
        self.info = replace(
            info, mpp=mpp, chunks=self.chunks, georeference=georef,
            downsample=(info.downsample[0] * self.factor[0], info.downsample[1] * self.factor[1]),
            extra={**info.extra, "resampled": {"factor": list(self.factor), "from_shape": [h, w]}},
        )

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Output pixels ``[y0, y1) x [x0, x1)`` as a (y1 - y0, x1 - x0, C) array."""
        h, w, _ = self.source.shape
        iy, wy = axis_taps(y0, y1, h, self.factor[0])
        ix, wx = axis_taps(x0, x1, w, self.factor[1])
        region = self.source.read(int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1)
        rows = _resample_axis0(region.astype(np.float32, copy=False), iy, wy)
        out = _resample_axis0(rows.transpose(1, 0, 2), ix, wx).transpose(1, 0, 2)
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return np.ascontiguousarray(out.astype(self.dtype, copy=False))

    def close(self) -> None:
        self.source.close()
