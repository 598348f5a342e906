"""Export an output group as a tiled, pyramidal OME-TIFF or GeoTIFF, or as a PNG preview.

The TIFF is written tile by tile from the zarr levels: tifffile takes an iterator of tiles, and each
tile comes from one piece of ``tile`` rows of one channel (whole zarr chunks wide, about 4096
pixels), so memory does not depend on the image size.

* ``tiff``: OME-TIFF (BigTIFF), one page per channel ((H, W) labels: one page), the OME-Zarr
  levels as SubIFDs of each page (the OME-TIFF pyramid layout QuPath, napari and Bio-Formats read),
  pixel size and channel names in the OME-XML when known. uint8 outputs of one or three channels
  (labels, probabilities of 3 classes) take the layout slide viewers read too: one page (three
  classes as RGB), and the levels written a second time as reduced-resolution pages in the main
  IFD chain, where OpenSlide finds a generic TIFF's pyramid (the file grows by about a quarter).
* ``geotiff``: a Cloud-Optimized GeoTIFF (:mod:`tiler.results.cog`): one band per channel named
  by its class, tiler's pyramid levels as overviews, the GeoTIFF tags made from the output's
  ``tiler.georeference`` attribute (see :mod:`tiler.geo.tiff_tags`), when there is one, and the
  input's nodata (a nodata value or an internal mask). tifffile writes it, GDAL's COG driver
  lays it out.
* ``png``: the preview of :mod:`tiler.results.preview`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError, SettingsError
from ..geo.tiff_tags import geotiff_tags
from .result import StoredResult, open_result

FORMATS = ("tiff", "geotiff", "png")


def default_export_path(result_path: str | os.PathLike[str], fmt: str) -> Path:
    """``scan.zarr`` -> ``scan.pred.ome.tif`` (tiff), ``scan.pred.tif`` (geotiff), ``scan.zarr.png``.

    The ``.pred`` part keeps an export from ever taking the input's own name (``scan.tif``).
    """
    path = Path(os.fspath(result_path).rstrip("/"))
    if fmt == "png":
        return Path(f"{path}.png")
    stem = path.name[:-5] if path.name.lower().endswith(".zarr") else path.name
    return path.with_name(stem + (".pred.ome.tif" if fmt == "tiff" else ".pred.tif"))


def iter_tiles(array: Any, tile: int) -> Iterator[np.ndarray]:
    """Tiles of a (C, H, W) or (H, W) array in TIFF order: channel by channel, then row-major.

    Reads ``tile`` rows of one channel at a time, in column pieces of whole zarr chunks (about 4096
    pixels wide), so memory does not depend on the image; edge tiles are smaller (tifffile pads them).
    """
    h, w = array.shape[-2:]
    cw = int(getattr(array, "chunks", (w,))[-1])
    lcm = math.lcm(tile, cw)  # pieces hold whole tiles and whole chunks
    piece = lcm * max(1, 4096 // lcm)
    planes = [None] if array.ndim == 2 else range(array.shape[0])
    for c in planes:
        for y0 in range(0, h, tile):
            for p0 in range(0, w, piece):
                index = (slice(y0, y0 + tile), slice(p0, p0 + piece))
                band = np.asarray(array[index] if c is None else array[(c, *index)])
                for x0 in range(0, band.shape[1], tile):
                    yield band[:, x0 : x0 + tile]


def iter_tiles_interleaved(array: Any, tile: int) -> Iterator[np.ndarray]:
    """Tiles of a (C, H, W) array as (h, w, C) pixel-interleaved tiles (an RGB page), row-major;
    memory as :func:`iter_tiles` times C."""
    h, w = array.shape[-2:]
    cw = int(getattr(array, "chunks", (w,))[-1])
    lcm = math.lcm(tile, cw)
    piece = lcm * max(1, 4096 // lcm)
    for y0 in range(0, h, tile):
        for p0 in range(0, w, piece):
            band = np.moveaxis(np.asarray(array[:, y0 : y0 + tile, p0 : p0 + piece]), 0, -1)
            for x0 in range(0, band.shape[1], tile):
                yield np.ascontiguousarray(band[:, x0 : x0 + tile])


def viewer_layout(result: StoredResult) -> bool:
    """Whether the OME-TIFF export takes the layout slide viewers read: uint8 with one channel
    (labels, a one-class probability) or three (shown as RGB)."""
    base = result.levels[0]
    return base.dtype == np.uint8 and (base.ndim == 2 or base.shape[0] in (1, 3))


def _resolution(result: StoredResult, k: int) -> dict[str, Any]:
    mpp = result.mpp
    if not mpp:
        return {}
    f = 2**k
    return {"resolution": (1e4 / (mpp[1] * f), 1e4 / (mpp[0] * f)), "resolutionunit": "CENTIMETER"}


def _ome_metadata(result: StoredResult, axes: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"axes": axes, "Name": "prediction"}
    if result.mpp:
        meta.update(PhysicalSizeY=result.mpp[0], PhysicalSizeYUnit="µm",
                    PhysicalSizeX=result.mpp[1], PhysicalSizeXUnit="µm")
    if axes == "CYX":
        meta["Channel"] = {"Name": result.class_names(result.channels)}
    return meta


def _write_tiff(result: StoredResult, path: Path, *, geotiff: bool, tile: int, compression: str) -> None:
    import tifffile

    levels = result.levels
    base = levels[0]
    nbytes = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in levels)
    options: dict[str, Any] = {"tile": (tile, tile), "compression": compression, "photometric": "minisblack",
                               "dtype": base.dtype}
    if base.ndim == 3 and base.shape[0] > 1 and geotiff:
        options["planarconfig"] = "separate"
    extratags: list[Any] = []
    if geotiff:
        extratags = geotiff_tags(result.georeference)
        if not extratags:
            warnings.warn(f"{result.path}: has no georeference (attribute tiler.georeference); writing a "
                          "GeoTIFF without geotags", stacklevel=3)
    viewer = not geotiff and viewer_layout(result)
    axes = "YX" if base.ndim == 2 else "CYX"
    tiles, shape = iter_tiles, (lambda a: a.shape)
    if viewer and base.ndim == 3:
        if base.shape[0] == 3:  # one RGB page: OpenSlide and viewers show the three classes in colour
            axes, options["photometric"] = "YXS", "rgb"
            tiles, shape = iter_tiles_interleaved, (lambda a: (*a.shape[1:], 3))
        else:
            axes, shape = "YX", (lambda a: a.shape[1:])
    with tifffile.TiffWriter(path, bigtiff=(not geotiff) or nbytes > 2**31 - 2**26, ome=not geotiff) as tif:
        first: dict[str, Any] = dict(options, **_resolution(result, 0), extratags=extratags)
        if geotiff:
            first["metadata"] = None
        else:
            first.update(metadata=_ome_metadata(result, axes), subifds=len(levels) - 1)
        tif.write(tiles(base, tile), shape=shape(base), **first)
        # OME-TIFF's pyramid: SubIFDs of the page (tifffile, Bio-Formats, QuPath); GeoTIFF's:
        # reduced pages in the main chain (GDAL)
        for k, arr in enumerate(levels[1:], start=1):
            tif.write(tiles(arr, tile), shape=shape(arr), subfiletype=1, metadata=None,
                      **options, **_resolution(result, k))
        if viewer:  # and once more as reduced pages in the main chain, where OpenSlide looks for levels
            for k, arr in enumerate(levels[1:], start=1):
                tif.write(tiles(arr, tile), shape=shape(arr), subfiletype=1, metadata=None,
                          **options, **_resolution(result, k))


def export_result(
    result: str | os.PathLike[str] | StoredResult,
    out: str | os.PathLike[str] | None = None,
    *,
    format: str = "tiff",
    tile: int = 512,
    compression: str = "zlib",
    max_side: int = 1536,
    opacity: float = 0.4,
    overwrite: bool = False,
) -> Path:
    """Write an output group as ``format`` ("tiff", "geotiff" or "png"); return the file's path.

    Parameters
    ----------
    result : the output group (path) of :func:`tiler.run`.
    out : the file to write (default :func:`default_export_path`).
    tile : TIFF tile edge, a multiple of 16. compression : a tifffile compression ("zlib", "zstd",
        "lzw", "none"). max_side : PNG long side in pixels.
    overwrite : replace an existing file.
    """
    if format not in FORMATS:
        raise SettingsError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if tile < 16 or tile % 16:
        raise SettingsError(f"--tile {tile}: TIFF tiles must be a positive multiple of 16")
    if not isinstance(result, StoredResult):
        result = open_result(result)
    # an output on an object store: the export's default goes to the current folder
    here = result.path if isinstance(result.path, Path) else Path(result.path.rsplit("/", 1)[-1])
    path = Path(out) if out is not None else default_export_path(here, format)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    if result.input_path is not None and path.resolve() == result.input_path.resolve():
        raise OutputError(f"{path}: is the input image of this output; choose another --out")
    if format == "png":
        from .preview import write_preview

        return write_preview(result, path, max_side=max_side, alpha=opacity)
    comp = None if compression == "none" else compression
    # Written beside the target and renamed when whole: a failed export leaves no partial file and
    # keeps an earlier one.
    partial = path.with_name(f".{path.name}.partial")
    plain = path.with_name(f".{path.name}.plain.tif")
    try:
        if format == "geotiff":
            from .cog import to_cog

            _write_tiff(result, plain, geotiff=True, tile=tile, compression=comp)  # type: ignore[arg-type]
            to_cog(result, plain, partial, tile=tile, compression=comp)
        else:
            _write_tiff(result, partial, geotiff=False, tile=tile, compression=comp)  # type: ignore[arg-type]
        os.replace(partial, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the export ({exc.strerror or exc})") from None
    finally:
        partial.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)
    return path
