"""TIFF, BigTIFF, OME-TIFF and SVS files through tifffile.

Regions are read through tifffile's zarr view of one pyramid level, so only the stored tiles or
strips that a region touches are decoded (by imagecodecs). Axes are normalised to channel-last.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from ..errors import InputError
from ..georef import GeoReference
from ._array import check_image_shape
from ._base import SourceInfo
from ._tiff_tiles import TiffTileReader

#: Exceptions tifffile and imagecodecs raise for broken files or tiles.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    tifffile.TiffFileError,
    ValueError,
    RuntimeError,
    OSError,
    EOFError,
    IndexError,
    KeyError,
    NotImplementedError,
)


def _channel_axes(name: str, axes: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int | None]:
    """Positions to squeeze (size-1 extra axes) and the channel axis, for a series' ``axes``."""
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{name}: the image has axes {axes!r}, with no Y and X")
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    channel = [i for i in others if shape[i] > 1]
    if len(channel) > 1:
        raise InputError(
            f"{name}: the image has axes {axes!r} with shape {shape}; tiler reads 2-D images with "
            "one channel axis (no time or z stacks)"
        )
    squeeze = tuple(i for i in others if shape[i] == 1)
    return squeeze, (channel[0] if channel else None)


class _HeaderWarnings(logging.Filter):
    """Collect what tifffile logs about a malformed header instead of printing it to stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


def _check_chunk_count(name: str, page: tifffile.TiffPage, notes: list[str]) -> None:
    """A header whose dimensions need more (or fewer) tiles/strips than it lists is corrupt."""
    expected, found = math.prod(page.chunked), len(page.dataoffsets)
    if found != expected:
        kind = "tiles" if page.is_tiled else "strips"
        h, w = page.imagelength, page.imagewidth
        raise InputError(
            f"{name}: corrupt header: it claims {h} x {w} pixels, which needs {expected} {kind}, "
            f"but lists {found}"
        )
    if any("shape does not match" in n for n in notes):
        raise InputError(f"{name}: corrupt header: {notes[0].split('> ', 1)[-1]}")


def _check_not_truncated(name: str, page: tifffile.TiffPage, file_size: int) -> None:
    offsets, counts = page.dataoffsets, page.databytecounts
    if not offsets:
        return
    end = max(o + c for o, c in zip(offsets, counts))
    if end > file_size:
        raise InputError(
            f"{name}: file is truncated ({file_size} bytes, but its image data reaches byte {end})"
        )


#: Micrometres per unit of OME's PhysicalSize units (µ as micro sign or Greek mu).
_OME_UNITS = {"µm": 1.0, "\u03bcm": 1.0, "um": 1.0, "nm": 1e-3, "Å": 1e-4, "mm": 1e3, "cm": 1e4, "m": 1e6}
#: Micrometres per ResolutionUnit (2 inch, 3 centimetre; 4 mm and 5 µm are tifffile extensions).
_RESOLUTION_UNITS = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
#: Dots per inch that writers put in by default without knowing the pixel size.
_DEFAULT_DPI = {72.0, 96.0}


def _svs_mpp(description: str) -> tuple[float, float] | None:
    for part in description.split("|"):
        key, _, value = part.partition("=")
        if key.strip() == "MPP":
            try:
                mpp = float(value)
            except ValueError:
                return None
            return (mpp, mpp) if mpp > 0 else None
    return None


def _ome_mpp(ome_xml: str) -> tuple[float, float] | None:
    try:
        image = tifffile.xml2dict(ome_xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        sizes = []
        for axis in ("Y", "X"):
            size = pixels.get(f"PhysicalSize{axis}", pixels.get("PhysicalSizeX"))
            unit = _OME_UNITS.get(str(pixels.get(f"PhysicalSize{axis}Unit", "µm")))
            if size is None or unit is None or float(size) <= 0:
                return None
            sizes.append(float(size) * unit)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return (sizes[0], sizes[1])


def _resolution_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None  # no unit tag: the TIFF default (inch) is rarely meant as a pixel size
    per_um = _RESOLUTION_UNITS.get(int(tags["ResolutionUnit"].value))
    xres = tags["XResolution"].value
    yres = tags["YResolution"].value if "YResolution" in tags else xres
    if not per_um or not xres[0] or not yres[0] or not xres[1] or not yres[1]:
        return None
    if per_um == 25400.0 and xres[0] / xres[1] in _DEFAULT_DPI:
        return None
    return (per_um * yres[1] / yres[0], per_um * xres[1] / xres[0])


def _mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> tuple[float, float] | None:
    """Microns per pixel (y, x) of ``page`` (level 0) from, in order of trust: the SVS description's
    ``MPP``, OME ``PhysicalSizeY/X`` (with their units), TIFF resolution tags (inch, cm)."""
    if tif.is_svs:
        mpp = _svs_mpp(page.description or "")
        if mpp:
            return mpp
    if tif.is_ome and tif.ome_metadata:
        mpp = _ome_mpp(tif.ome_metadata)
        if mpp:
            return mpp
    return _resolution_mpp(page)


def _fast_reader(
    tif: tifffile.TiffFile, level: Any, axes: str, shape: tuple[int, ...], hwc: tuple[int, int, int]
) -> TiffTileReader | None:
    """A thread-pool reader when the level is one interleaved (Y, X[, S]) page, else None."""
    others = [n for a, n in zip(axes, shape) if a not in "YXS"]
    if any(n != 1 for n in others) or not axes.replace("S", "").endswith("YX") or axes.find("S") not in (
        -1, len(axes) - 1
    ):
        return None
    reader = TiffTileReader.create(tif, level)
    if reader is not None and (reader.height, reader.width, reader.samples) != hwc:
        reader.close()
        reader = None
    return reader


class TiffSource:
    """One pyramid level of a TIFF file as a lazy (H, W, C) image.

    Parameters
    ----------
    path : the file.
    level : pyramid level, 0 = full resolution.
    """

    def __init__(self, path: str | os.PathLike[str], *, level: int = 0) -> None:
        self.path = Path(path)
        self.name = str(path)
        notes = _HeaderWarnings()
        logging.getLogger("tifffile").addFilter(notes)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            levels = series.levels
            if not 0 <= level < len(levels):
                self._tif.close()
                raise InputError(
                    f"{self.name}: level {level} does not exist; the file has {len(levels)} "
                    f"pyramid level(s), 0..{len(levels) - 1} (see tiler info)"
                )
            lvl = levels[level]
            page = lvl.keyframe
            _check_chunk_count(self.name, page, notes.messages)
            _check_not_truncated(self.name, page, os.path.getsize(self.path))
            axes, shape = lvl.axes, tuple(lvl.shape)
            self._store = self._tif.aszarr(series=0, level=level)
            self._z: Any = zarr.open_array(self._store, mode="r")
        except InputError:
            raise
        except DECODE_ERRORS as exc:
            raise InputError(f"{self.name}: not a readable TIFF ({exc})") from None
        finally:
            logging.getLogger("tifffile").removeFilter(notes)
        squeeze, channel = _channel_axes(self.name, axes, shape)
        self._squeeze, self._channel = squeeze, channel
        self._yx = (axes.index("Y"), axes.index("X"))
        h, w = shape[self._yx[0]], shape[self._yx[1]]
        c = shape[channel] if channel is not None else 1
        self.shape = check_image_shape(self.name, (h, w, c), lvl.dtype)
        self.dtype = np.dtype(lvl.dtype)
        self.chunks = (
            (int(page.chunks[0]), int(page.chunks[1])) if page.is_tiled else (int(page.rowsperstrip), w)
        )
        self.level = level
        # Fast path: one interleaved 2-D page, decoded on a thread pool (see _tiff_tiles.py).
        self._tiles = _fast_reader(self._tif, lvl, axes, shape, self.shape)
        compression = page.compression.name.lower() if page.compression != 1 else None
        fmt = "svs" if self._tif.is_svs else "ome-tiff" if self._tif.is_ome else "tiff"
        base = levels[0].keyframe
        shapes = tuple((int(s.shape[s.axes.index("Y")]), int(s.shape[s.axes.index("X")])) for s in levels)
        downsample = (shapes[0][0] / h, shapes[0][1] / w)
        base_mpp = _mpp(self._tif, base)
        georef = GeoReference.from_tiff_tags(base.tags)
        self.info = SourceInfo(
            format=fmt,
            compression=compression,
            chunks=self.chunks,
            levels=shapes,
            mpp=(base_mpp[0] * downsample[0], base_mpp[1] * downsample[1]) if base_mpp else None,
            extra={"photometric": page.photometric.name.lower(), "tiled": page.is_tiled},
            level=level,
            downsample=downsample,
            base_mpp=base_mpp,
            georeference=georef.downsampled(downsample) if georef else None,
        )

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._tiles is not None:
            try:
                return self._tiles.read(y0, y1, x0, x1)
            except DECODE_ERRORS as exc:
                raise InputError(
                    f"{self.name}: cannot decode the image data at rows {y0}:{y1}, columns {x0}:{x1} "
                    f"({type(exc).__name__}: {exc})"
                ) from None
        index: list[Any] = [slice(None)] * self._z.ndim
        index[self._yx[0]] = slice(y0, y1)
        index[self._yx[1]] = slice(x0, x1)
        try:
            region = np.asarray(self._z[tuple(index)])
        except DECODE_ERRORS as exc:
            raise InputError(
                f"{self.name}: cannot decode the image data at rows {y0}:{y1}, columns {x0}:{x1} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if self._squeeze:
            region = region.squeeze(axis=self._squeeze)
        # Remaining axes keep their order: move Y, X to the front and the channel to the back.
        axes = [a for i, a in enumerate(range(self._z.ndim)) if i not in self._squeeze]
        y, x = axes.index(self._yx[0]), axes.index(self._yx[1])
        if self._channel is None:
            return region.transpose(y, x)[..., None]
        c = axes.index(self._channel)
        return region.transpose(y, x, c)

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        self._tif.close()

    def __del__(self) -> None:  # close the file handle when dropped (archives open many files)
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
