"""Whole-slide files through OpenSlide: NDPI, MRXS, SCN, BIF, VMS/VMU, Philips, Ventana, SVS, generic TIFF.

``--reader openslide`` (or the automatic choice for the formats tifffile cannot read, see
:mod:`._open`) opens one pyramid level as a lazy (H, W, 3) uint8 RGB image:

* **levels** are OpenSlide's, with their shapes; **pixel size** from ``openslide.mpp-x/y``.
* **bounds**: where the file states the scanned region (``openslide.bounds-x/y/width/height``, e.g.
  MRXS), the image *is* that region; level ``k`` covers level-0 pixels ``floor(bx / ds)`` ..
  ``ceil((bx + bw) / ds)`` in its own coordinates.
* **background**: pixels OpenSlide returns transparent (outside the scanned area) are composited
  over ``openslide.background-color`` (white when the file states none), so the model never sees
  the premultiplied black of an empty region.
* **level coordinates**: ``OpenSlide.read_region`` takes its location in level-0 pixels and its
  size in level pixels, and paints the level from ``location / downsample``. Where the downsample
  is a whole number, a level pixel ``(y, x)`` is read at level-0 ``(y * ds, x * ds)`` exactly. Where
  it is not (a level of 161 columns under 643), OpenSlide resamples by the fractional part, so a
  pixel's value would depend on where a read starts; reads are then made in fixed cells (the
  level's tile size) at fixed origins, and every read of a pixel gives the same value — the
  invariant that blocks, workers and resumed runs see the same image.

Label, macro and thumbnail images (OpenSlide's *associated images*) are never read.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..cores import shared_pool
from ..errors import InputError, SettingsError, one_line
from ._array import check_image_shape
from ._base import ReadOptions, SourceInfo

#: File name endings read through OpenSlide when the reader is ``auto``.
OPENSLIDE_SUFFIXES = (".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")
#: What to install when OpenSlide is missing.
INSTALL_HINT = "pip install 'tiler-engine[openslide]' (openslide-python and openslide-bin)"

#: Cells kept decoded (non-integral downsample levels only): about 16 MiB at 256 x 256 RGB.
_CELL_CACHE = 64
#: Rows per ``read_region`` call when a read is split across threads.
_BAND = 256

def _pool() -> ThreadPoolExecutor:
    """The pool for OpenSlide reads (threads: cores, at most 4). OpenSlide is thread-safe and
    ``read_region`` releases the GIL, so bands of a region decode side by side."""
    return shared_pool("openslide")


def import_openslide(name: str) -> Any:
    """The ``openslide`` module, or a one-line InputError naming the extra to install."""
    try:
        import openslide
    except ImportError as exc:
        raise InputError(f"{name}: this slide is read through OpenSlide, which is not installed "
                         f"({one_line(exc)}); {INSTALL_HINT}") from None
    return openslide


def detect_format(path: str | os.PathLike[str]) -> str | None:
    """OpenSlide's vendor name for ``path`` ("aperio", "hamamatsu", "philips", "generic-tiff", ...),
    or None if OpenSlide is not installed or does not recognise the file."""
    try:
        import openslide
    except ImportError:
        return None
    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except (openslide.OpenSlideError, OSError, ValueError):
        return None
    return str(fmt) if fmt else None


def _float(props: Any, key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _int(props: Any, key: str) -> int | None:
    try:
        return int(props[key])
    except (KeyError, TypeError, ValueError):
        return None


def _background(props: Any) -> np.ndarray:
    """(3,) float32 RGB of ``openslide.background-color`` ("RRGGBB"), white if absent or malformed."""
    text = str(props.get("openslide.background-color", "") or "")
    try:
        if len(text) == 6:
            return np.array([int(text[i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    except ValueError:
        pass
    return np.full(3, 255.0, np.float32)


class OpenSlideSource:
    """One pyramid level of a slide opened by OpenSlide, as a lazy (H, W, 3) uint8 RGB image.

    Parameters
    ----------
    path : the slide file (for MRXS the ``.mrxs`` file beside its data folder).
    level : pyramid level, 0 = full resolution.
    series, plane : not supported (OpenSlide shows one image; associated images are never read).
    """

    def __init__(self, path: str | os.PathLike[str], *, level: int = 0, series: int | None = None,
                 plane: tuple[tuple[str, int], ...] = ()) -> None:
        self.path = Path(path)
        self.name = str(path)
        if series is not None or plane:
            raise SettingsError(f"{self.name}: --series and --plane are not available with the OpenSlide "
                                "reader (it reads the slide's main image; try --reader tifffile)")
        openslide = import_openslide(self.name)
        try:
            self._slide = openslide.OpenSlide(self.name)
        except openslide.OpenSlideUnsupportedFormatError:
            raise InputError(f"{self.name}: not a slide format OpenSlide can read") from None
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise InputError(f"{self.name}: OpenSlide cannot open the slide ({one_line(exc)})") from None
        slide = self._slide
        self._errors: tuple[type[BaseException], ...] = (openslide.OpenSlideError, OSError, ValueError)
        props = slide.properties
        count = int(slide.level_count)
        if not 0 <= level < count:
            self.close()
            raise InputError(f"{self.name}: level {level} does not exist; the slide has {count} pyramid "
                             f"level(s), 0..{count - 1} (see tiler info)")
        w0, h0 = (int(v) for v in slide.level_dimensions[0])
        bx, by = _int(props, "openslide.bounds-x") or 0, _int(props, "openslide.bounds-y") or 0
        bw, bh = _int(props, "openslide.bounds-width") or w0 - bx, _int(props, "openslide.bounds-height") or h0 - by
        self.bounds = (by, by + bh, bx, bx + bw)  # level-0 rows and columns of the image
        # per level: (origin y, origin x) in level pixels, (height, width) of the bounded image
        self._frames = [self._frame(k) for k in range(count)]
        self.level = level
        self._ds = float(slide.level_downsamples[level])
        (self._oy, self._ox), (h, w) = self._frames[level]
        self.shape = check_image_shape(self.name, (h, w, 3), np.dtype(np.uint8))
        self.dtype = np.dtype(np.uint8)
        th = _int(props, f"openslide.level[{level}].tile-height")
        tw = _int(props, f"openslide.level[{level}].tile-width")
        self.chunks: tuple[int, int] | None = (th, tw) if th and tw else None
        self._exact = abs(self._ds - round(self._ds)) < 1e-9
        cell = max(th or 256, 64), max(tw or 256, 64)
        self._cell = cell
        self._cells: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._background = _background(props)
        vendor = str(props.get("openslide.vendor", "") or "unknown")
        mx, my = _float(props, "openslide.mpp-x"), _float(props, "openslide.mpp-y")
        base_mpp: tuple[float, float] | None = None
        if mx is not None or my is not None:  # one stated: square pixels
            base_mpp = (my or mx or 0.0, mx or my or 0.0)
        levels = tuple(shape for _, shape in self._frames)
        downsample = (levels[0][0] / h, levels[0][1] / w)
        extra: dict[str, Any] = {"vendor": vendor, "associated": sorted(str(n) for n in slide.associated_images)}
        if (bx, by, bw, bh) != (0, 0, w0, h0):
            extra["bounds"] = {"x": bx, "y": by, "width": bw, "height": bh}
        self.info = SourceInfo(
            format=vendor, chunks=self.chunks, levels=levels,
            mpp=(base_mpp[0] * downsample[0], base_mpp[1] * downsample[1]) if base_mpp else None,
            extra=extra, level=level, downsample=downsample, base_mpp=base_mpp,
            read=ReadOptions(level=level), reader="openslide",
        )

    def _frame(self, k: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Level ``k``'s origin and shape (in its own pixels) of the level-0 bounds."""
        ds = float(self._slide.level_downsamples[k])
        lw, lh = (int(v) for v in self._slide.level_dimensions[k])
        y0, y1, x0, x1 = self.bounds
        oy, ox = math.floor(y0 / ds + 1e-9), math.floor(x0 / ds + 1e-9)
        ey, ex = min(math.ceil(y1 / ds - 1e-9), lh), min(math.ceil(x1 / ds - 1e-9), lw)
        return (oy, ox), (max(ey - oy, 1), max(ex - ox, 1))

    def _read_region(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8: level pixels from (y, x) of the level's own grid, background composited."""
        location = (round(x * self._ds), round(y * self._ds))
        try:
            rgba = np.asarray(self._slide.read_region(location, self.level, (w, h)))
        except self._errors as exc:
            rows, cols = f"{y - self._oy}:{y - self._oy + h}", f"{x - self._ox}:{x - self._ox + w}"
            raise InputError(f"{self.name}: OpenSlide cannot read level {self.level} rows {rows}, columns {cols} "
                             f"({one_line(exc)})") from None
        rgb = rgba[..., :3]
        alpha = rgba[..., 3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgb)
        a = alpha[..., None].astype(np.float32) / 255.0
        out = rgb.astype(np.float32) * a + self._background * (1.0 - a)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _cell_at(self, cy: int, cx: int) -> np.ndarray:
        with self._lock:
            cached = self._cells.get((cy, cx))
            if cached is not None:
                self._cells.move_to_end((cy, cx))
                return cached
        ch, cw = self._cell
        h, w, _ = self.shape
        y, x = cy * ch, cx * cw
        data = self._read_region(self._oy + y, self._ox + x, min(ch, h - y), min(cw, w - x))
        with self._lock:
            self._cells[(cy, cx)] = data
            while len(self._cells) > _CELL_CACHE:
                self._cells.popitem(last=False)
        return data

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)`` of the bounded level as (y1 - y0, x1 - x0, 3) uint8 (tall
        reads in bands of :data:`_BAND` rows, cells on a fractional level, decoded side by side)."""
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        if self._exact:
            if y1 - y0 <= 2 * _BAND:
                return self._read_region(self._oy + y0, self._ox + x0, y1 - y0, x1 - x0)

            def band(y: int) -> None:
                e = min(y1, y + _BAND)
                out[y - y0 : e - y0] = self._read_region(self._oy + y, self._ox + x0, e - y, x1 - x0)

            for _ in _pool().map(band, range(y0, y1, _BAND)):
                pass
            return out
        ch, cw = self._cell
        cells = [(cy, cx) for cy in range(y0 // ch, (y1 - 1) // ch + 1) for cx in range(x0 // cw, (x1 - 1) // cw + 1)]
        for (cy, cx), cell in zip(cells, _pool().map(lambda c: self._cell_at(*c), cells)):
            ty0, tx0 = max(y0, cy * ch), max(x0, cx * cw)
            ty1, tx1 = min(y1, cy * ch + cell.shape[0]), min(x1, cx * cw + cell.shape[1])
            out[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = cell[ty0 - cy * ch : ty1 - cy * ch,
                                                                 tx0 - cx * cw : tx1 - cx * cw]
        return out

    def close(self) -> None:
        slide = getattr(self, "_slide", None)
        if slide is not None:
            slide.close()
            self._slide = None
