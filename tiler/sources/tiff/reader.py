"""TIFF, BigTIFF, OME-TIFF and SVS files through tifffile.

Regions are read through tifffile's zarr view of one pyramid level, so only the stored tiles or
strips that a region touches are decoded (by imagecodecs). Axes are normalised to channel-last:
only a real sample/channel axis becomes channels (see :mod:`._axes`).

Series: a file may hold several images (OME-TIFF images, SVS thumbnail/label/macro). The default is
the largest one (by full-resolution pixels); label and macro images, which carry patient
identifiers on real slides, are never read. Photometric: palette images are expanded through their
colour map to uint8 RGB, MinIsWhite is inverted, JPEG YCbCr is decoded to RGB by tifffile; CMYK and
other interpretations are refused by name.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from ...errors import InputError, SettingsError, TilerError
from ...geo.georef import GeoReference
from .._array import check_image_shape
from .._axes import AxisLayout, axis_layout
from .._base import ReadOptions, SourceInfo, is_label_or_macro
from ..remote import RemoteFile, is_transient, remote_error, remote_errors
from .directories import truncation
from .tiles import TiffTileReader

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


def _unreadable_levels(path: Path, levels: Any) -> list[str]:
    """What of a series' pyramid cannot be read because the file is cut short: one line per level
    whose data runs past the end, and one for a directory chain that does (levels, images lost)."""
    size = os.path.getsize(path)
    lines = []
    for k, lvl in enumerate(levels):
        page = lvl.keyframe
        if page.dataoffsets:
            end = max(o + c for o, c in zip(page.dataoffsets, page.databytecounts))
            if end > size:
                lines.append(f"level {k}: file is truncated ({size} bytes, but its data reaches byte {end})")
    cut = truncation(path)
    if cut:
        lines.append(f"levels or images after level {len(levels) - 1} may be missing: {cut}")
    return lines


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


def _ome_mpp(ome_xml: str, k: int = 0) -> tuple[float, float] | None:
    """PhysicalSizeY/X of OME image ``k`` in µm."""
    try:
        image = tifffile.xml2dict(ome_xml)["OME"]["Image"]
        pixels = (image[k] if isinstance(image, list) else image)["Pixels"]
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


def _philips_mpp(description: str) -> tuple[float, float] | None:
    """``DICOM_PIXEL_SPACING`` (mm, row then column) of a Philips TIFF's WSI image, in µm (y, x)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(description)
    except ET.ParseError:
        return None
    for image in root.iter("DataObject"):
        attrs = {a.get("Name"): (a.text or "") for a in image.findall("Attribute")}
        if image.get("ObjectType") == "DPScannedImage" and attrs.get("PIM_DP_IMAGE_TYPE", "").strip() == "WSI":
            try:
                row, col = (float(v.strip('"')) for v in attrs.get("DICOM_PIXEL_SPACING", "").split())
            except ValueError:
                return None
            return (row * 1000.0, col * 1000.0) if row > 0 and col > 0 else None
    return None


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


def _mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage, k: int = 0) -> tuple[float, float] | None:
    """Microns per pixel (y, x) of ``page`` (level 0) from, in order of trust: the SVS description's
    ``MPP``, a Philips TIFF's ``DICOM_PIXEL_SPACING``, OME ``PhysicalSizeY/X`` (with their units),
    TIFF resolution tags (inch, cm)."""
    if tif.is_philips:
        mpp = _philips_mpp(page.description or "")
        if mpp:
            return mpp
    if tif.is_svs:
        mpp = _svs_mpp(page.description or "")
        if mpp:
            return mpp
    if tif.is_ome and tif.ome_metadata:
        mpp = _ome_mpp(tif.ome_metadata, k)
        if mpp:
            return mpp
    return _resolution_mpp(page)


#: Photometric interpretations read as they are decoded.
_PLAIN = {tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB}
#: JPEG compression codes (tifffile's JPEG decoder returns RGB for YCbCr data).
_JPEG_CODES = {6, 7, 33007, 34892}
def is_protected(series: tifffile.TiffPageSeries) -> bool:
    """A label or macro image (SVS ``Label``/``Macro`` series, OME images named so): never read."""
    return is_label_or_macro(series.name)


def _yx(series: tifffile.TiffPageSeries) -> tuple[int, int]:
    axes, shape = series.axes, series.shape
    if "Y" not in axes or "X" not in axes:
        return (0, 0)
    return (int(shape[axes.index("Y")]), int(shape[axes.index("X")]))


def describe_series(tif: tifffile.TiffFile, k: int) -> str:
    """``"series 1 'Label': 387 x 463 (YXS=387 x 463 x 3) uint8, 1 level"`` for ``tiler info``."""
    s = tif.series[k]
    h, w = _yx(s)
    name = f" {s.name!r}" if s.name else ""
    levels = len(s.levels)
    dims = " x ".join(str(n) for n in s.shape)
    note = " (label/macro: never read)" if is_protected(s) else ""
    return f"series {k}{name}: {h} x {w}, axes {s.axes} = {dims}, {s.dtype}, {levels} level(s){note}"


def default_series(tif: tifffile.TiffFile) -> int:
    """The largest image by full-resolution pixels (first of equals), never a label or macro."""
    sizes = [(-(h * w), k) for k, s in enumerate(tif.series) if not is_protected(s)
             for h, w in [_yx(s)]]
    return min(sizes)[1] if sizes else 0


def _choose_series(name: str, tif: tifffile.TiffFile, series: int | None) -> int:
    count = len(tif.series)
    if count == 0:
        raise InputError(f"{name}: the TIFF holds no image")
    if series is None:
        k = default_series(tif)
        if is_protected(tif.series[k]):
            raise InputError(f"{name}: the file holds only label/macro images, which tiler never reads")
        return k
    if not 0 <= series < count:
        listing = "; ".join(describe_series(tif, k) for k in range(count))
        raise InputError(f"{name}: series {series} does not exist; the file has {count} ({listing})")
    if is_protected(tif.series[series]):
        raise InputError(
            f"{name}: series {series} ({tif.series[series].name!r}) is a label/macro image of the slide, which "
            "can carry patient identifiers; tiler never reads it (choose another with --series N, see tiler info)"
        )
    return series


def _colormap_lut(name: str, page: tifffile.TiffPage) -> np.ndarray:
    """(entries, 3) uint8 RGB lookup table of a palette page (16-bit TIFF colour maps -> 8 bits)."""
    cmap = page.colormap
    if cmap is None:
        raise InputError(f"{name}: palette image without a ColorMap tag; cannot know its colours")
    cmap = np.asarray(cmap)
    if cmap.ndim != 2 or cmap.shape[0] != 3:
        raise InputError(f"{name}: palette ColorMap has shape {cmap.shape}, expected (3, entries)")
    lut = cmap if cmap.max() <= 255 else cmap >> 8  # 16-bit maps (v * 257 or v * 256) to 8 bits
    return np.ascontiguousarray(lut.T.astype(np.uint8))


class _Photometric:
    """Turns decoded samples into what the model should see, per the page's photometric tag.

    ``apply`` maps an (h, w, c_stored) region to (h, w, channels) in ``dtype``.
    """

    def __init__(self, name: str, page: tifffile.TiffPage, channels: int, *, palette: str = "rgb") -> None:
        P = tifffile.PHOTOMETRIC
        kind = page.photometric
        self.lut: np.ndarray | None = None
        self.invert: int | None = None
        self.channels, self.dtype = channels, np.dtype(page.dtype)
        extrasamples = tuple(int(e) for e in (page.extrasamples or ()))
        self.alpha = bool(extrasamples) and extrasamples[-1] in (1, 2) and channels in (2, 4)
        self.bilevel = self.dtype == np.bool_  # 1-bit pages: 0/255 uint8 (white = 255 after MinIsWhite)
        if self.bilevel:
            if kind not in (P.MINISBLACK, P.MINISWHITE):
                raise InputError(f"{name}: 1-bit image with photometric {kind.name}; expected MinIsBlack/White")
            self.invert = 1 if kind == P.MINISWHITE else None
            self.dtype = np.dtype(np.uint8)
            return
        if kind in _PLAIN:
            return
        if kind == P.PALETTE and palette == "index":
            return  # the indices themselves (a palette mask's classes)
        if kind == P.PALETTE:
            if channels != 1:
                raise InputError(f"{name}: palette image with {channels} samples per pixel; expected 1")
            self.lut = _colormap_lut(name, page)
            self.channels, self.dtype = 3, np.dtype(np.uint8)
        elif kind == P.MINISWHITE:
            if self.dtype.kind != "u":
                raise InputError(f"{name}: MinIsWhite image with {self.dtype} pixels is not supported "
                                 "(only unsigned integers can be inverted); convert it to MinIsBlack")
            bits = int(page.bitspersample)
            self.invert = (1 << bits) - 1 if bits < 8 * self.dtype.itemsize else int(np.iinfo(self.dtype).max)
        elif kind == P.YCBCR and page.compression in _JPEG_CODES:
            return  # tifffile's JPEG decoding returns RGB
        else:
            what = {P.SEPARATED: "CMYK (photometric SEPARATED)", P.YCBCR: "YCbCr without JPEG compression",
                    P.CIELAB: "CIE L*a*b*", P.ICCLAB: "ICC L*a*b*", P.ITULAB: "ITU L*a*b*",
                    P.MASK: "a transparency mask", P.CFA: "raw colour-filter-array (Bayer) data",
                    P.LOGL: "LogL", P.LOGLUV: "LogLuv"}.get(kind, f"photometric {getattr(kind, 'name', kind)}")
            raise InputError(f"{name}: the image is {what}, which tiler does not read; convert it to RGB "
                             "or greyscale (e.g. with vips or tifffile)")

    @property
    def identity(self) -> bool:
        return self.lut is None and self.invert is None and not self.bilevel

    def apply(self, region: np.ndarray) -> np.ndarray:
        if self.bilevel:
            on = ~region if self.invert else region
            return on.astype(np.uint8) * np.uint8(255)
        if self.lut is not None:
            return self.lut[region[..., 0]]
        if self.invert is not None:
            return (self.invert - region).astype(self.dtype, copy=False)
        return region


def _fast_reader(
    tif: tifffile.TiffFile, level: Any, axes: str, shape: tuple[int, ...], hwc: tuple[int, int, int],
    ranges: Any = None,
) -> TiffTileReader | None:
    """A thread-pool reader when the level is one interleaved (Y, X[, S]) page, else None."""
    others = [n for a, n in zip(axes, shape) if a not in "YXS"]
    if any(n != 1 for n in others) or not axes.replace("S", "").endswith("YX") or axes.find("S") not in (
        -1, len(axes) - 1
    ):
        return None
    reader = TiffTileReader.create(tif, level, ranges=ranges)
    if reader is not None and (reader.height, reader.width, reader.samples) != hwc:
        reader.close()
        reader = None
    return reader


def _gdal_nodata(page: Any) -> float | None:
    """The GDAL_NODATA tag (42113) of a GeoTIFF page, if any (``--reader auto`` then reads it with GDAL)."""
    tag = page.tags.get(42113)
    if tag is None:
        return None
    try:
        return float(str(tag.value).strip("\x00 "))
    except ValueError:
        return None


_GDAL_DESCRIPTION = re.compile(r'<Item name="DESCRIPTION" sample="(\d+)" role="description">([^<]*)</Item>')


def _gdal_band_names(page: Any, channels: int) -> list[str] | None:
    """Band descriptions from the GDAL_METADATA tag (42112), for ``--channels B04,B03``; None if none."""
    tag = page.tags.get(42112)
    if tag is None:
        return None
    names = [""] * channels
    for sample, name in _GDAL_DESCRIPTION.findall(str(tag.value)):
        if int(sample) < channels:
            names[int(sample)] = name
    return names if any(names) else None


def _has_mask(tif: Any) -> bool:
    """True when a series of the file is a transparency mask (GDAL's internal nodata mask)."""
    return any(int(s.keyframe.subfiletype) & 4 for s in tif.series)


class TiffSource:
    """One pyramid level of one image series of a TIFF file as a lazy (H, W, C) image.

    Parameters
    ----------
    path : the file.
    level : pyramid level, 0 = full resolution.
    series : image series (None: the largest, never a label/macro image; see :func:`default_series`).
    plane : one index per extra axis (``(("Z", 3),)``) for Z stacks, time series, multi-page files.
    palette : "rgb" expands palette images through their colour map; "index" keeps the indices
        (for masks, whose palette indices are the classes).

    ``path`` may also be a :class:`~tiler.sources.remote.RemoteFile` (an object on S3, GCS, a web
    server): tifffile parses the header through its block-cached file object, and the stored tiles
    a region needs are fetched as coalesced, concurrent range requests.
    """

    def __init__(
        self, path: str | os.PathLike[str] | RemoteFile, *, level: int = 0, series: int | None = None,
        plane: tuple[tuple[str, int], ...] = (), palette: str = "rgb",
    ) -> None:
        self._remote = path if isinstance(path, RemoteFile) else None
        self.path: Path | None = None if isinstance(path, RemoteFile) else Path(path)
        self.name = path.url if isinstance(path, RemoteFile) else str(path)
        notes = _HeaderWarnings()
        logging.getLogger("tifffile").addFilter(notes)
        try:
            if self._remote is not None:
                self._tif = tifffile.TiffFile(self._remote.open(), name=self._remote.open().name)
            else:
                self._tif = tifffile.TiffFile(path)
            try:
                if not self._tif.series and self.path is not None and (cut := truncation(self.path)):
                    raise InputError(f"{self.name}: {cut}")
                k = _choose_series(self.name, self._tif, series)
            except InputError:
                self._tif.close()
                raise
            self.series = k
            count = len(self._tif.series)
            listing = tuple(describe_series(self._tif, i) for i in range(count)) if count > 1 else ()
            where = f"series {k}" + (f" ({self._tif.series[k].name!r})" if self._tif.series[k].name else "")
            levels = self._tif.series[k].levels
            if not 0 <= level < len(levels):
                self._tif.close()
                raise InputError(
                    f"{self.name}: level {level} does not exist; {where if count > 1 else 'the file'} "
                    f"has {len(levels)} "
                    f"pyramid level(s), 0..{len(levels) - 1} (see tiler info)"
                )
            lvl = levels[level]
            page = lvl.keyframe
            _check_chunk_count(self.name, page, notes.messages)
            size = self._remote.size if self._remote is not None else os.path.getsize(path)  # type: ignore[arg-type]
            _check_not_truncated(self.name, page, size)
            axes, shape = lvl.axes, tuple(lvl.shape)
            others = "; ".join(line for i, line in enumerate(listing) if i != k)
            try:
                layout: AxisLayout = axis_layout(self.name, axes, shape, plane,
                                                 where=where if count > 1 else "", others=others)
                self._photo = _Photometric(self.name, page, layout.channels, palette=palette)
            except (InputError, SettingsError):
                self._tif.close()
                raise
            self._store = self._tif.aszarr(series=k, level=level)
            self._z: Any = zarr.open_array(self._store, mode="r")
        except (InputError, SettingsError):
            raise
        except remote_errors() as exc:  # DECODE_ERRORS too (OSError): a failed request says so
            if self._remote is not None and not isinstance(exc, tifffile.TiffFileError) and (
                    is_transient(exc) or not isinstance(exc, DECODE_ERRORS)):
                raise remote_error(self.name, exc) from None
            raise InputError(f"{self.name}: not a readable TIFF ({exc})") from None
        except DECODE_ERRORS as exc:
            cut = truncation(self.path) if self.path is not None else None
            raise InputError(f"{self.name}: {cut or f'not a readable TIFF ({exc})'}") from None
        finally:
            logging.getLogger("tifffile").removeFilter(notes)
        self._layout = layout
        h, w = shape[layout.y], shape[layout.x]
        stored = (h, w, layout.channels)
        self.shape = check_image_shape(self.name, (h, w, self._photo.channels), self._photo.dtype)
        self.dtype = self._photo.dtype
        self.chunks: tuple[int, int] | None = (
            (int(page.chunks[0]), int(page.chunks[1])) if page.is_tiled else (int(page.rowsperstrip), w)
        )
        self.level = level
        # Fast path: one interleaved 2-D page, decoded on a thread pool (see _tiff_tiles.py).
        self._tiles = _fast_reader(self._tif, lvl, axes, shape, stored,
                                   self._remote.read_ranges if self._remote is not None else None)
        compression = page.compression.name.lower() if page.compression != 1 else None
        fmt = "svs" if self._tif.is_svs else "ome-tiff" if self._tif.is_ome else "philips" if self._tif.is_philips \
            else "tiff"
        base = levels[0].keyframe
        shapes = tuple((int(s.shape[s.axes.index("Y")]), int(s.shape[s.axes.index("X")])) for s in levels)
        downsample = (shapes[0][0] / h, shapes[0][1] / w)
        base_mpp = _mpp(self._tif, base, k)
        georef = GeoReference.from_tiff_tags(base.tags)
        s = self._tif.series[k]
        desc = f"series {k}" + (f" {s.name!r}" if s.name else "") + (
            f" (the largest of {count}; choose with --series N)" if series is None and count > 1 else "") + (
            "".join(f", {a.lower()}={i}" for a, i in plane))
        self.info = SourceInfo(
            format=fmt,
            compression=compression,
            chunks=self.chunks,
            levels=shapes,
            mpp=(base_mpp[0] * downsample[0], base_mpp[1] * downsample[1]) if base_mpp else None,
            extra={"photometric": page.photometric.name.lower(), "tiled": page.is_tiled,
                   "unreadable": _unreadable_levels(self.path, levels) if self.path is not None else []}
            | ({"bands": names} if (names := _gdal_band_names(base, layout.channels)) else {})
            | ({"gdal_mask": True} if georef is not None and _has_mask(self._tif) else {}),
            level=level,
            downsample=downsample,
            base_mpp=base_mpp,
            georeference=georef.downsampled(downsample) if georef else None,
            series=k,
            series_name=desc if count > 1 or plane else None,
            series_list=listing,
            alpha=self._photo.alpha,
            read=ReadOptions(level=level, series=series, plane=plane),
            nodata=_gdal_nodata(base),
        )

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        try:
            if self._tiles is not None:
                region = self._tiles.read(y0, y1, x0, x1)
            else:
                region = self._layout.read(self._z, y0, y1, x0, x1)
        except TilerError:
            raise
        except remote_errors() as exc:
            if self._remote is not None and (is_transient(exc) or not isinstance(exc, DECODE_ERRORS)):
                raise remote_error(self.name, exc) from None
            raise InputError(
                f"{self.name}: cannot decode the image data at rows {y0}:{y1}, columns {x0}:{x1} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        except DECODE_ERRORS as exc:
            raise InputError(
                f"{self.name}: cannot decode the image data at rows {y0}:{y1}, columns {x0}:{x1} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        return region if self._photo.identity else self._photo.apply(region)

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        self._tif.close()
        if self._remote is not None:
            self._remote.close()

    def __del__(self) -> None:  # close the file handle when dropped (archives open many files)
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
