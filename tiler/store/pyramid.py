"""Downsampled levels ``1``, ``2``, ... of an output group, as OME-Zarr (NGFF 0.5) multiscales.

Built while level ``0`` is written (:class:`StreamingPyramid`: each written level-0 piece is reduced
into the pending chunk row of level 1 at once, and so on up), or in one streaming pass after level
``0`` is complete (:func:`build_pyramid`, for resumed and distributed runs): level ``k + 1`` is
written one output chunk at a time from the 2 x 2 input chunks of level ``k`` that it covers, chunk
row by chunk row. Either way memory is a few chunk rows whatever the image height, and the values
are the same bits.

Each level halves height and width (rounding up). Probabilities and logits are averaged over each
2 x 2 block (uint8: the exact integer mean, rounded half up). Labels take the *mode* of the block,
ties going to the first pixel in reading order (top-left first): nearest-neighbour sampling (the
top-left pixel alone) makes thin structures flicker in and out from level to level, while the mode
keeps the class that covers most of each block and still never invents a label. Odd edges average
(or vote) over the pixels that exist.

Level ``k`` has scale ``2**k`` times the full resolution's and a translation of ``(2**k - 1) / 2``
pixels, the centre of the block it summarises.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from ..cores import pool_threads

#: Stop adding levels once the smaller side is at most this many pixels.
MIN_SIZE = 1024


def pyramid_shapes(
    height: int, width: int, *, levels: int | None = None, min_size: int = MIN_SIZE
) -> list[tuple[int, int]]:
    """Shapes (height, width) of every level, full resolution first.

    ``levels`` is the total number of levels wanted (including level 0); by default levels are
    added until the smaller side is at most ``min_size``. A level is never smaller than 1 x 1.

    >>> pyramid_shapes(5000, 3000)
    [(5000, 3000), (2500, 1500), (1250, 750)]
    >>> pyramid_shapes(5000, 3000, levels=2)
    [(5000, 3000), (2500, 1500)]
    """
    shapes = [(height, width)]
    while True:
        h, w = shapes[-1]
        if levels is not None and len(shapes) >= levels:
            break
        if levels is None and min(h, w) <= min_size:
            break
        if h == 1 and w == 1:
            break
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def _pad_even(x: np.ndarray) -> np.ndarray:
    """Repeat the last row / column of the trailing two axes when their size is odd."""
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad_h), (0, pad_w)], mode="edge")
    return x


def downsample_mean(x: np.ndarray) -> np.ndarray:
    """Mean over 2 x 2 blocks of the last two axes.

    Parameters
    ----------
    x : (..., h, w) uint8 or float array.

    Returns
    -------
    (..., ceil(h / 2), ceil(w / 2)) array of the same dtype. uint8: ``(a + b + c + d + 2) // 4``
    (exact, half up); floats: ``(a + b + c + d) / 4`` in float32 or float64. An odd last row or
    column averages the pixels that exist.

    >>> downsample_mean(np.array([[0, 1, 9], [2, 4, 9]], np.uint8))
    array([[2, 9]], dtype=uint8)
    """
    x = _pad_even(x)
    if x.dtype == np.uint8:
        # the same exact integer mean in uint16 (4 x 255 fits), pairs of whole rows added first
        # (contiguous) then pairs of columns, in place: a third of the general path's time
        rows = x[..., 0::2, :].astype(np.uint16)
        rows += x[..., 1::2, :]
        s16 = rows[..., 0::2] + rows[..., 1::2]
        s16 += 2
        s16 >>= 2
        return s16.astype(np.uint8)
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    if x.dtype.kind in "ui":
        s = a.astype(np.uint32) + b + c + d
        return ((s + 2) // 4).astype(x.dtype)
    return ((a + b) + (c + d)) * x.dtype.type(0.25)


def downsample_mode(x: np.ndarray) -> np.ndarray:
    """Most frequent label of each 2 x 2 block; ties go to the earliest pixel in reading order.

    Parameters
    ----------
    x : (h, w) integer labels.

    Returns
    -------
    (ceil(h / 2), ceil(w / 2)) labels of the same dtype.

    >>> downsample_mode(np.array([[1, 2, 5], [2, 3, 6]], np.uint8))
    array([[2, 5]], dtype=uint8)
    """
    x = _pad_even(x)
    pixels = (x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2])
    # How often each of the four pixels' labels occurs in its block (1..4).
    counts = [sum((p == q).astype(np.uint8) for q in pixels) for p in pixels]
    out, best = pixels[0].copy(), counts[0]
    for p, count in zip(pixels[1:], counts[1:]):
        better = count > best  # strictly: a tie keeps the earlier pixel's label
        out[better] = p[better]
        best = np.maximum(best, count)
    return out


def _transforms(base: list[float], k: int) -> list[dict[str, Any]]:
    """OME scale and translation of level ``k`` from the full resolution's scale ``base``."""
    f = 2**k
    scale = [s * f if i >= len(base) - 2 else s for i, s in enumerate(base)]
    out: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if k:
        shift = [s * (f - 1) / 2 if i >= len(base) - 2 else 0.0 for i, s in enumerate(base)]
        out.append({"type": "translation", "translation": shift})
    return out


def _base_scale(ome: dict[str, Any], ndim: int) -> list[float]:
    try:
        first = ome["multiscales"][0]["datasets"][0]
        return [float(s) for s in first["coordinateTransformations"][0]["scale"]]
    except (KeyError, IndexError, TypeError):
        return [1.0] * ndim


def _downsample_level(src: Any, dst: Any, method: str, workers: int) -> None:
    """Write ``dst`` (level k + 1) from ``src`` (level k), one output chunk row at a time."""
    ch, cw = dst.chunks[-2:]
    h, w = dst.shape[-2:]
    reduce = downsample_mode if method == "mode" else downsample_mean
    # Each worker holds 4 input chunks and about 2 output chunks (uint32 sums for uint8): keep the
    # total near 1 GiB even for very large chunks.
    per_worker = 6 * int(np.prod(dst.chunks)) * max(4, dst.dtype.itemsize)
    workers = max(1, min(workers, (1 << 30) // per_worker))

    def one(y0: int, x0: int) -> None:
        y1, x1 = min(y0 + ch, h), min(x0 + cw, w)
        block = np.asarray(src[..., 2 * y0 : 2 * y1, 2 * x0 : 2 * x1])
        dst[..., y0:y1, x0:x1] = reduce(block)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pyramid") as pool:
        for y0 in range(0, h, ch):
            # One chunk row in flight: at most `workers` output chunks (and 4x their input) at once.
            list(pool.map(lambda x0, y0=y0: one(y0, x0), range(0, w, cw)))


def _create_levels(group: zarr.Group, *, levels: int | None, min_size: int) -> tuple[list[Any], list[tuple[int, int]]]:
    """Drop any earlier levels ``1, 2, ...`` and create them empty: (arrays incl. ``0``, shapes)."""
    base = group["0"]
    shapes = pyramid_shapes(*base.shape[-2:], levels=levels, min_size=min_size)
    # Drop stale levels from an earlier build (e.g. a rerun with another level count).
    for name in list(group.array_keys()):
        if name.isdigit() and int(name) >= 1:
            del group[name]
    arrays = [base]
    dims = base.metadata.dimension_names or (("c", "y", "x") if base.ndim == 3 else ("y", "x"))
    for k, (h, w) in enumerate(shapes[1:], start=1):
        shape = (*base.shape[:-2], h, w)
        chunks = (*base.chunks[:-2], min(base.chunks[-2], h), min(base.chunks[-1], w))
        with zarr.config.set({"array.write_empty_chunks": True}):  # dense: no all-fill scan per chunk
            arrays.append(group.create_array(
                str(k), shape=shape, chunks=chunks, dtype=base.dtype, dimension_names=dims,
                fill_value=base.fill_value, compressors=base.compressors, overwrite=True,
            ))
    return arrays, shapes


def _write_multiscales(group: zarr.Group, n_levels: int, method: str) -> None:
    """The OME-Zarr multiscales metadata of levels ``0 .. n_levels - 1``."""
    ome = dict(group.attrs.get("ome", {}))
    scale0 = _base_scale(ome, group["0"].ndim)
    multiscales = dict((ome.get("multiscales") or [{}])[0])
    multiscales["datasets"] = [
        {"path": str(k), "coordinateTransformations": _transforms(scale0, k)} for k in range(n_levels)
    ]
    multiscales["type"] = method
    multiscales["metadata"] = {
        "description": "2x2 mean" if method == "mean" else "2x2 mode, ties to the top-left pixel",
        "method": f"tiler.pyramid.downsample_{method}",
    }
    ome["version"] = "0.5"
    ome["multiscales"] = [multiscales]
    group.attrs["ome"] = ome


def _check_method(method: str) -> None:
    if method not in ("mean", "mode"):
        raise ValueError(f"unknown pyramid method {method!r}; use 'mean' or 'mode'")


def build_pyramid(
    group: zarr.Group,
    *,
    method: str,
    levels: int | None = None,
    min_size: int = MIN_SIZE,
    workers: int | None = None,
) -> list[tuple[int, ...]]:
    """Add (or rebuild) the downsampled levels of an output group and its multiscales metadata.

    Parameters
    ----------
    group : a zarr v3 output group whose array ``0`` is complete: (C, H, W) or (H, W).
    method : "mean" (probabilities, logits) or "mode" (labels).
    levels : total number of levels including ``0``; default: halve until the smaller side is at
        most ``min_size``.
    workers : threads per chunk row (default: up to 4).

    Returns
    -------
    The shapes of all levels, full resolution first.
    """
    _check_method(method)
    workers = workers or pool_threads()
    arrays, shapes = _create_levels(group, levels=levels, min_size=min_size)
    for src, dst in zip(arrays, arrays[1:]):
        _downsample_level(src, dst, method, workers)
    _write_multiscales(group, len(shapes), method)
    return [tuple(a.shape) for a in arrays]


class StreamingPyramid:
    """Levels ``1, 2, ...`` built from level-0 rows as they are written, never read back.

    Wraps the run's sink: every :meth:`write` of level 0 (chunk-aligned pieces of whole chunk
    rows, from one writer thread) is also reduced 2 x 2 at once into the pending chunk row of
    level 1; a level's chunk row is written (and reduced into the next level) as soon as all of
    its pixels have arrived. The values are those of :func:`build_pyramid` bit for bit: each 2 x 2
    block is reduced from the same four pixels (pieces start at even rows and columns; only the
    image's last row / column may be odd, padded the same way). Memory: one pending chunk row
    per level.

    Use it only for a run that writes every stripe of level 0 in this process (not a resumed run,
    not dask tasks) with an even chunk edge (:meth:`applies`); :meth:`finish` says whether every
    level is complete, else call :func:`build_pyramid` (it rebuilds the levels from level 0).
    """

    def __init__(self, sink: Any, *, method: str, levels: int | None = None, min_size: int = MIN_SIZE) -> None:
        _check_method(method)
        self.sink, self.method = sink, method
        self.arrays, self.shapes = _create_levels(sink.group, levels=levels, min_size=min_size)
        self.reduce = downsample_mode if method == "mode" else downsample_mean
        self._pending: list[dict[int, tuple[np.ndarray, int]]] = [{} for _ in self.arrays]
        self._rows_written = [0] * len(self.arrays)  # chunk rows written, per level (>= 1)

    @staticmethod
    def applies(chunk: int) -> bool:
        """Whether level-0 pieces of chunk edge ``chunk`` start on even rows and columns."""
        return chunk % 2 == 0

    # -- the Sink protocol, forwarded (level 0 is the sink's own)
    def write(self, y0: int, y1: int, x0: int, x1: int, data: np.ndarray) -> None:
        self.sink.write(y0, y1, x0, x1, data)
        if len(self.arrays) > 1:
            self._feed(1, y0, y1, x0, x1, data)

    def mark_done(self, chunk_row: int, block_col: int) -> None:
        self.sink.mark_done(chunk_row, block_col)

    def done(self) -> np.ndarray:
        return self.sink.done()

    def _feed(self, k: int, y0: int, y1: int, x0: int, x1: int, data: np.ndarray) -> None:
        """Reduce level ``k - 1`` pixels ``[y0, y1) x [x0, x1)`` into level ``k``'s pending rows."""
        small = self.reduce(data)
        dst = self.arrays[k]
        ch = dst.chunks[-2]
        h, w = dst.shape[-2:]
        ya, xa = y0 // 2, x0 // 2
        yb, xb = ya + small.shape[-2], xa + small.shape[-1]
        row = ya // ch
        r0, r1 = row * ch, min(h, (row + 1) * ch)
        buf, filled = self._pending[k].get(row, (None, 0))
        if buf is None:
            buf = np.empty((*dst.shape[:-2], r1 - r0, w), dst.dtype)
        buf[..., ya - r0 : yb - r0, xa:xb] = small
        filled += (yb - ya) * (xb - xa)
        if filled < (r1 - r0) * w:
            self._pending[k][row] = (buf, filled)
            return
        self._pending[k].pop(row, None)
        dst[..., r0:r1, :] = buf
        self._rows_written[k] += 1
        if k + 1 < len(self.arrays):
            self._feed(k + 1, r0, r1, 0, w, buf)

    def finish(self) -> bool:
        """Write the multiscales metadata; True when every level was completely written."""
        whole = all(
            self._rows_written[k] == -(-a.shape[-2] // a.chunks[-2]) for k, a in enumerate(self.arrays) if k
        )
        if whole:
            _write_multiscales(self.sink.group, len(self.shapes), self.method)
        return whole
