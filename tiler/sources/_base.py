"""The source interface that the rest of the pipeline consumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..errors import SettingsError

if TYPE_CHECKING:
    from ..geo.georef import GeoReference


def _parse_plane(plane: Any) -> tuple[tuple[str, int], ...]:
    """``"z=3,t=0"``, ``{"z": 3}`` or pairs -> (("Z", 3), ("T", 0)) (axis letters upper-case)."""
    if plane is None or plane == "" or plane == ():
        return ()
    if isinstance(plane, str):
        items: list[tuple[str, Any]] = []
        for part in plane.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise SettingsError(f"--plane {plane!r}: expected AXIS=INDEX pairs such as z=3 or z=3,t=0")
            items.append((key.strip(), value.strip()))
    elif isinstance(plane, dict):
        items = list(plane.items())
    else:
        items = [tuple(p) for p in plane]
    out: dict[str, int] = {}
    for key, value in items:
        axis = str(key).strip().upper()
        if axis in ("Y", "X"):
            raise SettingsError(f"--plane {axis.lower()}=...: y and x are the image plane itself; "
                                "choose along another axis (z, t, ...)")
        try:
            index = int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"--plane {key}={value!r}: the index must be a whole number") from None
        if index < 0:
            raise SettingsError(f"--plane {key}={index}: the index must be >= 0")
        out[axis] = index
    return tuple(out.items())


def _parse_channels(channels: Any) -> tuple[int | str, ...] | None:
    """``"0,1,2"`` or a sequence of ints -> (0, 1, 2); None = all channels as stored.

    Names (``"B04,B03,B02"``: band descriptions, STAC asset keys or band names) stay strings.
    """
    if channels is None or channels == "":
        return None
    parts = channels.split(",") if isinstance(channels, str) else list(channels)
    out: list[int | str] = []
    for c in parts:
        text = str(c).strip()
        if not text:
            raise SettingsError(f"--channels {channels!r}: expected channel numbers such as 0,1,2 (or band names)")
        try:
            out.append(int(text))
        except ValueError:
            if text.lstrip("-").isdigit() or not (text[0].isalpha() or text[0] == "_"):
                raise SettingsError(f"--channels {channels!r}: expected channel numbers such as 0,1,2 "
                                    "(or band names)") from None
            out.append(text)
    if not out or any(isinstance(c, int) and c < 0 for c in out):
        raise SettingsError(f"--channels {channels!r}: channel numbers must be >= 0")
    return tuple(out)


@dataclass(frozen=True)
class ReadOptions:
    """Which image of a file to read, and how: everything a worker needs to open the same pixels.

    Attributes
    ----------
    level : pyramid level (None: full resolution, or the one ``mpp`` chooses).
    mpp : pixel size in µm to resample to (see :func:`~tiler.sources.open_at`).
    series : image series of a multi-series file (None: the largest pyramid, never a label or
        macro image).
    plane : one index per extra axis, e.g. ``(("Z", 3),)`` for ``--plane z=3``.
    channels : input channels to keep, in this order (``--channels 0,1,2``); None = all.
    reader : the library that opens a file (``--reader``: a name of
        :data:`~tiler.sources.READERS`: "tifffile", "openslide", "wsidicom", "rasterio"); None =
        ``"auto"``, chosen by content and name.
    resampling : how a band-per-file stack brings coarser bands onto its finest grid
        (``--resampling``): "nearest" (each fine pixel takes the coarse pixel containing its
        centre) or "bilinear" (interpolated between the four coarse pixel centres around it).
    """

    level: int | None = None
    mpp: float | None = None
    series: int | None = None
    plane: tuple[tuple[str, int], ...] = ()
    channels: tuple[int | str, ...] | None = None
    reader: str | None = None
    resampling: str = "nearest"

    @classmethod
    def of(cls, *, level: int | None = None, mpp: float | None = None, series: int | None = None,
           plane: Any = None, channels: Any = None, reader: str | None = None,
           resampling: str | None = None) -> ReadOptions:
        """Options from user values: ``plane`` as ``"z=3,t=0"``/dict, ``channels`` as ``"0,1,2"``/ints."""
        if series is not None and (not isinstance(series, int) or series < 0):
            raise SettingsError(f"--series must be a series number >= 0, got {series!r}")
        if reader is not None and not isinstance(reader, str):
            raise SettingsError(f"--reader must be a reader's name, got {reader!r}")
        reader = None if reader in (None, "", "auto") else reader
        resampling = resampling or "nearest"
        if resampling not in BAND_RESAMPLING:
            raise SettingsError(f"--resampling must be one of {', '.join(BAND_RESAMPLING)}, got {resampling!r}")
        return cls(level, mpp, series, _parse_plane(plane), _parse_channels(channels), reader, resampling)

    @property
    def is_default(self) -> bool:
        return self == ReadOptions()


#: How a band stack resamples its coarser bands (:attr:`ReadOptions.resampling`).
BAND_RESAMPLING = ("nearest", "bilinear")


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
    georeference : the GeoTIFF georeference of the image as read (:mod:`tiler.geo.georef`), if any.
    series : index of the image series read (multi-series TIFF: OME images, SVS label/macro).
    series_name : a human-readable description of that series (for the run summary), if any.
    series_list : one line per series in the file (``tiler info``), if the file has several.
    alpha : the last channel is transparency (RGBA, grey + alpha), not image content.
    read : how the source was opened (:class:`ReadOptions`): workers reopen it with the same.
    reader : the library that read it ("tifffile", "openslide", "wsidicom", "rasterio", "zarr", ...).
    nodata : the raster's nodata value (GDAL), if it states one.
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
    series: int = 0
    series_name: str | None = None
    series_list: tuple[str, ...] = ()
    alpha: bool = False
    read: ReadOptions | None = None
    reader: str | None = None
    nodata: float | None = None

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


#: Whole names of images that show a slide's label or overview (which carry patient identifiers on
#: real slides): SVS ``Label``/``Macro``, OME/bioformats "label image", "macro image", "slide label".
_PROTECTED_NAME = re.compile(r"^\s*(slide[ _-]?)?(label|macro)([ _-]?(image|photo))?\s*$", re.IGNORECASE)


def is_label_or_macro(name: str | None) -> bool:
    """True for a label/macro image's name, never for names that merely contain the word.

    >>> [is_label_or_macro(n) for n in ("Label", "macro image", "Label-free brightfield", "cell labels")]
    [True, True, False, False]
    """
    return bool(name) and _PROTECTED_NAME.match(name or "") is not None
