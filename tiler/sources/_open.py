"""Turn a path or an array into a :class:`Source`, choosing the reader by content."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InputNotFoundError, SettingsError
from ._array import ArraySource, check_image_shape
from ._axes import AxisLayout, axis_layout
from ._base import ReadOptions, Source, SourceInfo, is_label_or_macro
from .remote import RemoteFile, is_url, is_zarr_url, zarr_store

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def _open_small_image(path: Path) -> Source:
    """PNG or JPEG: decoded whole (these formats have no random access), for small images."""
    import imagecodecs

    try:
        array = imagecodecs.imread(str(path))
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"{path}: cannot decode the image ({exc})") from None
    fmt = "png" if path.read_bytes()[:8] == _PNG_MAGIC else "jpeg"
    # PNG/JPEG with 2 or 4 channels are grey + alpha and RGBA (imagecodecs expands palettes)
    alpha = array.ndim == 3 and array.shape[2] in (2, 4)
    return ArraySource(array, name=str(path), info=SourceInfo(format=fmt, alpha=alpha))


#: Micrometres per OME-Zarr space unit.
_ZARR_UNITS = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6,
               "angstrom": 1e-4}


def _multiscales(node: Any) -> dict[str, Any] | None:
    """The first OME-Zarr ``multiscales`` entry of a group (0.5: under ``ome``; 0.4: top level)."""
    attrs = dict(node.attrs)
    ms = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if isinstance(ms, list) and ms and isinstance(ms[0], dict) and ms[0].get("datasets"):
        return ms[0]
    return None


def _dataset_scale(entry: dict[str, Any]) -> list[float] | None:
    for t in entry.get("coordinateTransformations", []) or []:
        if t.get("type") == "scale" and isinstance(t.get("scale"), list):
            return [float(v) for v in t["scale"]]
    return None


class OmeZarrSource:
    """One level of an OME-Zarr image (``multiscales`` axes such as ``c, y, x`` or ``t, c, z, y, x``)
    as a lazy (H, W, C) image; tiler's own output groups are read this way too."""

    def __init__(self, path: Path | str, group: Any, ms: dict[str, Any], *, level: int = 0,
                 plane: tuple[tuple[str, int], ...] = ()) -> None:
        self.name = str(path)
        datasets = ms["datasets"]
        names = [str(a.get("name", "?") if isinstance(a, dict) else a) for a in ms.get("axes", [])]
        arrays = []
        for d in datasets:
            key = str(d.get("path", ""))
            if key not in group:
                raise InputError(f"{path}: OME-Zarr multiscales names the array {key!r}, which the group lacks")
            arrays.append(group[key])
        if not names:  # OME-Zarr 0.1-0.3: always t, c, z, y, x (fewer: the last ones)
            names = ["t", "c", "z", "y", "x"][-arrays[0].ndim:]
        if len(names) != arrays[0].ndim:
            raise InputError(f"{path}: OME-Zarr axes {names} do not match the array's {arrays[0].ndim} dimensions")
        if not 0 <= level < len(arrays):
            raise InputError(f"{path}: level {level} does not exist; the group has {len(arrays)} "
                             f"level(s), 0..{len(arrays) - 1} (see tiler info)")
        types = {str(a.get("name")): a for a in ms.get("axes", []) if isinstance(a, dict)}
        letters = ["C" if (types.get(n, {}).get("type") == "channel" or n.lower() in ("c", "channel")) else n.upper()
                   for n in names]
        self._array = arrays[level]
        self._layout: AxisLayout = axis_layout(self.name, letters, self._array.shape, plane)
        shape = self._array.shape
        h, w = int(shape[self._layout.y]), int(shape[self._layout.x])
        self.shape = check_image_shape(self.name, (h, w, self._layout.channels), self._array.dtype)
        self.dtype = np.dtype(self._array.dtype)
        ch = self._array.chunks
        self.chunks: tuple[int, int] | None = (int(ch[self._layout.y]), int(ch[self._layout.x]))
        yi, xi = letters.index("Y"), letters.index("X")
        levels = tuple((int(a.shape[yi]), int(a.shape[xi])) for a in arrays)
        base_mpp = None
        scale = _dataset_scale(datasets[0])
        unit = {types.get(names[i], {}).get("unit") for i in (yi, xi)}
        if scale and len(scale) == len(names) and len(unit) == 1 and (u := unit.pop()) in _ZARR_UNITS:
            base_mpp = (scale[yi] * _ZARR_UNITS[u], scale[xi] * _ZARR_UNITS[u])
        downsample = (levels[0][0] / h, levels[0][1] / w)
        self.info = SourceInfo(
            format="ome-zarr", chunks=self.chunks, levels=levels, level=level, downsample=downsample,
            base_mpp=base_mpp, mpp=(base_mpp[0] * downsample[0], base_mpp[1] * downsample[1]) if base_mpp else None,
            extra={"axes": names}, series_name=("".join(f"{a.lower()}={i}, " for a, i in plane)[:-2] or None),
            read=ReadOptions(level=level, plane=plane),
        )

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self._layout.read(self._array, y0, y1, x0, x1)

    def close(self) -> None:
        pass


def _bioformats_names(path: Path) -> list[str]:
    """Image names from a bioformats2raw layout's ``OME/METADATA.ome.xml`` (empty if none)."""
    xml = path / "OME" / "METADATA.ome.xml"
    if not xml.is_file():
        return []
    import tifffile

    try:
        images = tifffile.xml2dict(xml.read_text(errors="replace"))["OME"]["Image"]
    except (KeyError, TypeError, ValueError):
        return []
    images = images if isinstance(images, list) else [images]
    return [str(i.get("Name", "")) if isinstance(i, dict) else "" for i in images]


def _open_zarr(
    path: Path | str, *, level: int = 0, plane: tuple[tuple[str, int], ...] = (), series: int | None = None
) -> Source:
    """A zarr array or (OME-)zarr group at a local ``path`` or a URL (``s3://b/scan.zarr``)."""
    import zarr

    try:
        node = zarr.open(zarr_store(path) if isinstance(path, str) else str(path), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable zarr array or group ({exc})") from None
    if isinstance(node, zarr.Group):
        ms = _multiscales(node)
        if ms is not None:
            if series is not None:
                raise SettingsError(f"{path}: --series chooses an image of a multi-image file; this OME-Zarr "
                                    "group holds one")
            return OmeZarrSource(path, node, ms, level=level, plane=plane)
        if "0" in node and isinstance(node["0"], zarr.Group):  # bioformats2raw layout: one group per image
            return _open_bioformats(path, node, level=level, plane=plane, series=series)
        if "0" not in node:
            raise InputError(f"{path}: zarr group has no array '0' (full resolution) to read")
        node = node["0"]
    if series is not None:
        raise SettingsError(f"{path}: --series is for multi-image files; this zarr array is one image")
    if plane:
        raise SettingsError(f"{path}: --plane needs named axes (OME-Zarr multiscales); this zarr array has "
                            "none and is read as (H, W) or (H, W, C)")
    return ArraySource(node, name=str(path), info=SourceInfo(format="zarr", chunks=node.chunks[:2]))


def _open_bioformats(path: Path | str, root: Any, *, level: int, plane: tuple[tuple[str, int], ...],
                     series: int | None) -> Source:
    """Image ``series`` (default 0, never a label/macro image) of a bioformats2raw zarr."""
    import zarr

    count = 0
    while str(count) in root and isinstance(root[str(count)], zarr.Group):
        count += 1
    names = (_bioformats_names(path) if isinstance(path, Path) else []) + [""] * count
    protected = [is_label_or_macro(names[k]) for k in range(count)]
    listing = "; ".join(f"series {k}" + (f" {names[k]!r}" if names[k] else "") for k in range(count))
    if series is None:
        series = next((k for k in range(count) if not protected[k]), None)
        if series is None:
            raise InputError(f"{path}: the store holds only label/macro images, which tiler never reads")
    elif not 0 <= series < count:
        raise InputError(f"{path}: series {series} does not exist; the store has {count} ({listing})")
    elif protected[series]:
        raise InputError(f"{path}: series {series} ({names[series]!r}) is a label/macro image of the slide, "
                         "which can carry patient identifiers; tiler never reads it (choose another with --series N)")
    group = root[str(series)]
    ms = _multiscales(group)
    if ms is None:
        raise InputError(f"{path}: image group {series!s} has no OME-Zarr multiscales metadata")
    source = OmeZarrSource(path, group, ms, level=level, plane=plane)
    desc = f"series {series}" + (f" {names[series]!r}" if names[series] else "")
    source.info = replace(source.info, series=series, series_name=desc if count > 1 else source.info.series_name,
                          series_list=tuple(listing.split("; ")) if count > 1 else (),
                          read=replace(source.info.read or ReadOptions(), series=series))
    return source


class ChannelSource:
    """Some channels of a source, in a chosen order (``--channels 0,1,2``; dropping alpha).

    ``read`` returns (h, w, len(channels)) arrays: ``source.read(...)[..., channels]``.
    """

    def __init__(self, source: Source, channels: tuple[int, ...]) -> None:
        c = source.shape[2]
        bad = [k for k in channels if not 0 <= k < c]
        if bad:
            raise SettingsError(f"{source.name}: --channels {','.join(map(str, channels))}: the image has "
                                f"{c} channel(s), numbered 0..{c - 1}")
        self.source = source
        self.name, self.dtype, self.chunks = source.name, source.dtype, source.chunks
        self.channels = tuple(channels)
        self.shape = (source.shape[0], source.shape[1], len(channels))
        info = source.info
        read = info.read or ReadOptions()
        before = read.channels
        names = info.extra.get("bands")
        extra = info.extra | ({"bands": [names[k] for k in channels]} if names and len(names) == c else {})
        self.info = replace(
            info, alpha=False, extra=extra,
            read=replace(read, channels=tuple(before[k] for k in channels) if before else self.channels),
        )
        self._identity = self.channels == tuple(range(c))
        #: The source's nodata mask applies to every channel (see :mod:`tiler.sources.raster`).
        self.masked = bool(getattr(source, "masked", False))

    def valid_mask(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(h, w) bool: where the source has data (its ``valid_mask``; all True if it has none)."""
        if not self.masked:
            return np.ones((y1 - y0, x1 - x0), bool)
        mask: np.ndarray = self.source.valid_mask(y0, y1, x0, x1)  # type: ignore[attr-defined]
        return mask

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        region = self.source.read(y0, y1, x0, x1)
        return region if self._identity else region[..., list(self.channels)]

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()


def open_source(
    image: Any, *, level: int = 0, series: int | None = None, plane: Any = (), channels: Any = None,
    palette: str = "rgb", reader: str | None = None, resampling: str | None = None,
) -> Source:
    """Open ``image``: a path (TIFF family, slide formats, DICOM WSI, GDAL rasters, STAC items, zarr,
    PNG, JPEG), an array-like or a Source.

    ``series`` chooses the image of a multi-series TIFF, ``plane`` (``"z=3"`` or pairs) one plane
    of a stack, ``channels`` (``"0,1,2"`` or ints, or band names such as ``"B04,B03"``) the input
    channels (see :class:`ReadOptions`); ``palette="index"`` reads a palette TIFF's indices instead
    of its colours (masks). ``reader`` names the library that opens a file (a key of
    :data:`READERS`; None or ``"auto"``: by content and name, see :func:`auto_reader`); the
    source's ``info.reader`` says which one did.
    Raises :class:`~tiler.errors.InputError` naming the file for anything unreadable.
    """
    options = ReadOptions.of(level=level, series=series, plane=plane, channels=channels, reader=reader,
                             resampling=resampling)
    if options.reader is not None and options.reader not in READERS:
        raise SettingsError(f"--reader {options.reader!r}: unknown reader; choose one of {', '.join(READER_NAMES)}")
    if options.reader in (None, "rasterio") and _is_stac(image):
        from .stack import open_stac

        if options.series is not None or options.plane:
            raise SettingsError(f"{image}: --series and --plane are for TIFF and OME-Zarr inputs")
        # --channels picks the assets (keys, band or common names, numbers)
        return _named(open_stac(image, level=level, channels=options.channels, resampling=options.resampling),
                      "rasterio")
    source = _open_plain(image, level=level, series=options.series, plane=options.plane, palette=palette,
                         reader=options.reader)
    if options.channels is not None:
        source = ChannelSource(source, _channel_numbers(source, options.channels))
    return source


def _channel_numbers(source: Source, channels: tuple[int | str, ...]) -> tuple[int, ...]:
    """``--channels`` as numbers: band names (``info.extra["bands"]``: GDAL band descriptions) looked up."""
    names = [str(n) for n in (source.info.extra.get("bands") or [])]
    out = []
    for c in channels:
        if isinstance(c, int):
            out.append(c)
        elif c in names:
            out.append(names.index(c))
        else:
            if not names:
                raise SettingsError(f"{source.name}: --channels {c!r}: the image has no band names; expected "
                                    "channel numbers such as 0,1,2")
            raise SettingsError(f"{source.name}: --channels {c!r}: no band of that name (its bands are "
                                f"{', '.join(names)})")
    return tuple(out)


#: An opener: ``(path, *, level, series, plane, palette) -> Source``.
Opener = Callable[..., Source]


def _open_tifffile(path: Path, *, level: int, series: int | None, plane: tuple[tuple[str, int], ...],
                   palette: str = "rgb") -> Source:
    from .tiff.reader import TiffSource

    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head not in _TIFF_MAGIC:
            raise InputError(f"{path}: --reader tifffile reads TIFF files; this file starts with {head!r}")
    return TiffSource(path, level=level, series=series, plane=plane, palette=palette)


def _open_openslide(path: Path, *, level: int, series: int | None, plane: tuple[tuple[str, int], ...],
                    palette: str = "rgb") -> Source:
    from .openslide import OpenSlideSource

    return OpenSlideSource(path, level=level, series=series, plane=plane)


def _open_wsidicom(path: Path, *, level: int, series: int | None, plane: tuple[tuple[str, int], ...],
                   palette: str = "rgb") -> Source:
    from .dicom import DicomSource

    return DicomSource(path, level=level, series=series, plane=plane)


def _open_rasterio(path: Path, *, level: int, series: int | None, plane: tuple[tuple[str, int], ...],
                   palette: str = "rgb") -> Source:
    from .raster import RasterioSource, check_plain

    check_plain(path, series=series, plane=plane)
    if _is_stac(path):  # --reader rasterio on a STAC item: all its data assets, stacked
        from .stack import open_stac

        return open_stac(path, level=level)
    return RasterioSource(path, level=level)


#: The readers ``--reader NAME`` chooses from, by name (``auto``: :func:`auto_reader`). A new reader
#: is one entry here and one module beside this one.
READERS: dict[str, Opener] = {
    "tifffile": _open_tifffile,
    "openslide": _open_openslide,
    "wsidicom": _open_wsidicom,
    "rasterio": _open_rasterio,
}
#: The names ``--reader`` accepts.
READER_NAMES: tuple[str, ...] = ("auto", *READERS)


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """A folder whose files are DICOM (a whole-slide series: one file per level, label, overview)."""
    files = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return bool(files) and any(p.suffix.lower() == ".dcm" or _is_dicom(p) for p in files[:16])


def _is_stac(image: Any) -> bool:
    """A path to a STAC item (a ``.json`` file, see :func:`~tiler.sources.stack.is_stac_item`)."""
    if not isinstance(image, (str, os.PathLike)) or Path(image).suffix.lower() != ".json":
        return False
    from .stack import is_stac_item

    return Path(image).is_file() and is_stac_item(Path(image))


def auto_reader(path: Path, head: bytes) -> str | None:
    """The reader ``--reader auto`` uses for the file ``path`` starting with ``head`` (None: not a
    file for any of :data:`READERS`): OpenSlide for the slide formats tifffile cannot read
    (:data:`~tiler.sources.openslide.OPENSLIDE_SUFFIXES`), rasterio for GDAL rasters by name
    (:data:`~tiler.sources.raster.RASTER_SUFFIXES`: .jp2, .vrt, .ntf, .hdf, ...) and for STAC items,
    wsidicom for DICOM, tifffile for TIFF. Opening a TIFF may still hand it on (see
    :func:`_open_tiff_auto`): to OpenSlide (a vendor's slide tifffile cannot read), to rasterio (a
    GeoTIFF with a nodata value or mask, or one tifffile cannot read)."""
    from .openslide import OPENSLIDE_SUFFIXES
    from .raster import RASTER_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES:
        return "openslide"
    if suffix in RASTER_SUFFIXES or _is_stac(path):
        return "rasterio"
    if _is_dicom(path):
        return "wsidicom"
    if head[:4] in _TIFF_MAGIC:
        return "tifffile"
    return None


#: OpenSlide vendors of TIFF-based slides that tifffile may not read (never Aperio or generic TIFF:
#: tifffile reads those, so its error is the one to show).
_FALLBACK = frozenset({"philips", "ventana", "leica", "hamamatsu", "trestle", "sakura"})


def _open_tiff_or_slide(path: Path, **kw: Any) -> Source:
    """tifffile, and OpenSlide where tifffile cannot read a TIFF that OpenSlide knows as a vendor's
    slide (Philips, Ventana, ...); tifffile's error where neither reads it."""
    from .openslide import detect_format

    try:
        return _open_tifffile(path, **kw)
    except InputError as first:
        broken = any(word in str(first) for word in ("truncated", "corrupt"))
        if broken or kw.get("series") is not None or kw.get("plane") or detect_format(path) not in _FALLBACK:
            raise
        try:
            return _open_openslide(path, **kw)
        except InputError:
            raise first from None


def _open_tiff_auto(path: Path, **kw: Any) -> Source:
    """A TIFF under ``--reader auto``: tifffile (or OpenSlide, see :func:`_open_tiff_or_slide`),
    and rasterio for a GeoTIFF tifffile cannot read (a codec or layout it lacks) or one with a
    nodata value or an internal mask (GDAL honours it: all-nodata tiles skipped, nodata pixels get
    ``--fill``); ``info.reader`` names the library that opened it."""
    from .raster import is_gdal_raster

    plain = kw.get("series") is None and not kw.get("plane")
    try:
        tiff = _open_tiff_or_slide(path, **kw)
    except InputError as exc:
        if "truncated" in str(exc) or not plain or not is_gdal_raster(path):
            raise
        return _named(_open_rasterio(path, **kw), "rasterio")
    info = tiff.info
    nodata = info.nodata is not None or info.extra.get("gdal_mask")
    if not nodata or kw.get("palette", "rgb") != "rgb" or not plain or info.reader not in (None, "tifffile"):
        return _named(tiff, "tifffile")
    tiff.close()
    return _named(_open_rasterio(path, **kw), "rasterio")


def _named(source: Source, reader: str) -> Source:
    if isinstance(getattr(source, "info", None), SourceInfo) and source.info.reader is None:
        source.info = replace(source.info, reader=reader)
    return source


def _open_url(
    url: str, *, level: int, series: int | None, plane: tuple[tuple[str, int], ...], palette: str = "rgb"
) -> Source:
    """A TIFF (read by ranges), PNG or JPEG (read whole), or a zarr store, on an object store or
    web server."""
    if is_zarr_url(url):
        return _open_zarr(url, level=level, plane=plane, series=series)
    remote = RemoteFile(url)
    head = remote.read_head(8) if remote.size else b""
    if not head:
        raise InputError(f"{url}: the object is empty (0 bytes)")
    if head[:4] in _TIFF_MAGIC:
        from .tiff.reader import TiffSource

        return TiffSource(remote, level=level, series=series, plane=plane, palette=palette)
    if series is not None or plane:
        raise SettingsError(f"{url}: --series and --plane are for TIFF inputs")
    if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
        import imagecodecs

        try:
            array = imagecodecs.imread(remote.read_all())
        except (ValueError, RuntimeError, OSError) as exc:
            raise InputError(f"{url}: cannot decode the image ({exc})") from None
        fmt = "png" if head.startswith(_PNG_MAGIC) else "jpeg"
        return ArraySource(array, name=url, info=SourceInfo(
            format=fmt, alpha=array.ndim == 3 and array.shape[2] in (2, 4)))
    raise InputError(f"{url}: not an image tiler can read from a URL (expected TIFF, PNG or JPEG; "
                     f"the object starts with {head[:4]!r})")


def _open_plain(
    image: Any, *, level: int, series: int | None, plane: tuple[tuple[str, int], ...], palette: str = "rgb",
    reader: str | None = None,
) -> Source:
    if reader is not None and reader not in READERS:
        raise SettingsError(f"--reader {reader!r}: unknown reader; choose one of {', '.join(READER_NAMES)}")
    if series is not None and not isinstance(image, (str, os.PathLike)):
        raise SettingsError("--series chooses an image inside a TIFF file; the input is not a file")
    if is_url(image):
        return _open_url(image, level=level, series=series, plane=plane, palette=palette)
    if reader is not None and not isinstance(image, (str, os.PathLike)):
        raise SettingsError(f"--reader {reader} opens files; the input is a {type(image).__name__}")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise InputNotFoundError(f"{path}: no such file or directory")
        kw: dict[str, Any] = {"level": level, "series": series, "plane": plane, "palette": palette}
        if reader is not None:
            return _named(READERS[reader](path, **kw), reader)
        if path.is_dir():
            if (path / "zarr.json").exists() or (path / ".zarray").exists() or (path / ".zgroup").exists():
                return _named(_open_zarr(path, level=level, plane=plane, series=series), "zarr")
            if is_dicom_folder(path):
                return _named(_open_wsidicom(path, **kw), "wsidicom")
            raise InputError(f"{path}: is a directory, not an image (nor a zarr store or a DICOM series)")
        with open(path, "rb") as fh:
            head = fh.read(8)
        if not head:
            raise InputError(f"{path}: file is empty (0 bytes)")
        chosen = auto_reader(path, head)
        if chosen == "tifffile":
            return _open_tiff_auto(path, **kw)
        if chosen is not None:
            return _named(READERS[chosen](path, **kw), chosen)
        if series is not None or plane:
            raise SettingsError(f"{path}: --series and --plane are for TIFF and OME-Zarr inputs")
        if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
            return _named(_open_small_image(path), "imagecodecs")
        raise InputError(
            f"{path}: not an image tiler can read (expected TIFF, a slide format, DICOM, PNG, JPEG, zarr, "
            f"a GDAL raster (.jp2, .vrt, ...) or a STAC item; file starts with {head[:4]!r})"
        )
    if plane:
        raise SettingsError("--plane needs named axes (TIFF, OME-Zarr); an array is read as (H, W[, C])")
    if all(hasattr(image, a) for a in ("read", "shape", "dtype", "name")):
        return image  # already a Source
    if hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__"):
        return ArraySource(image)
    if isinstance(image, (list, tuple)):
        return ArraySource(np.asarray(image))
    raise InputError(f"cannot read an image from a {type(image).__name__}")
