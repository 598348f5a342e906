"""Rasters through GDAL (rasterio): GeoTIFF/COG, JPEG 2000, VRT, NITF, HDF5 and the rest of GDAL.

:class:`RasterioSource` is one resolution of a raster as a lazy (H, W, bands) image: level 0 is the
full resolution, levels 1, 2, ... the raster's overviews (as ``gdalinfo`` lists them). Reads are
windowed (``DatasetReader.read(window=...)``) and ``chunks`` follows the raster's blocks (whole
block rows, at least ~256 and at most 1024 rows at a time), so the loader asks for whole blocks.
The CRS and transform become a GeoTIFF georeference (:func:`tiler.geo.gdal.georeference_from_gdal`)
that travels to the output and to ``tiler export-result --format geotiff``.

Nodata: when GDAL gives the raster a mask (a nodata value, an internal mask or an alpha band),
``masked`` is True and :meth:`RasterioSource.valid_mask` gives the (h, w) bool "has data" mask of a
region; ``info.nodata`` is the nodata value, if there is one. A run skips tiles that are all
nodata and stores ``--fill`` at nodata pixels (:mod:`tiler.masks.nodata`).

GDAL datasets are not thread-safe: every read of one source holds its lock.

May import: errors, geo.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InputNotFoundError, SettingsError
from ..geo.gdal import georeference_from_gdal
from ._array import check_image_shape
from ._base import ReadOptions, SourceInfo

#: File name endings opened with rasterio when ``--reader auto``.
RASTER_SUFFIXES = (".jp2", ".j2k", ".jpx", ".vrt", ".ntf", ".nitf", ".hdf", ".h5", ".he5", ".img")

#: Short format names of GDAL drivers (others: the driver name in lower case).
_FORMATS = {"GTiff": "geotiff", "COG": "geotiff", "JP2OpenJPEG": "jpeg2000", "VRT": "vrt", "NITF": "nitf",
            "HDF5": "hdf5", "HDF4": "hdf4", "HFA": "erdas-imagine"}


def rasterio_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a GDAL read raises for a bad file (rasterio's I/O and CPL errors)."""
    from rasterio.errors import RasterioError

    try:
        from rasterio._err import CPLE_BaseError
    except ImportError:  # pragma: no cover - rasterio moved it
        return (RasterioError,)
    return (RasterioError, CPLE_BaseError)


def _read_rows(block_height: int) -> int:
    """Rows per read for a raster with blocks ``block_height`` tall.

    >>> _read_rows(512), _read_rows(1), _read_rows(3), _read_rows(10980)
    (512, 256, 258, 1024)
    """
    if block_height < 64:
        return block_height * math.ceil(256 / block_height)
    return min(block_height, 1024)


def _open_dataset(path: Path, overview: int | None = None) -> Any:
    try:
        import rasterio
    except ImportError:
        raise InputError(f"{path}: reading it needs rasterio: pip install 'tiler-engine[geo]'") from None
    try:
        if overview is None:
            return rasterio.open(path)
        return rasterio.open(path, overview_level=overview)
    except rasterio_errors() as exc:
        raise InputError(f"{path}: GDAL cannot read it ({str(exc).splitlines()[0]})") from None


class RasterioSource:
    """One level of a GDAL raster as a lazy (H, W, bands) image.

    Parameters
    ----------
    path : the raster (any GDAL dataset name that is a local file).
    level : 0 = full resolution, ``k`` = the raster's ``k``-th overview.
    """

    def __init__(self, path: str | os.PathLike[str], *, level: int = 0) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not self.path.exists():
            raise InputNotFoundError(f"{path}: no such file or directory")
        base = _open_dataset(self.path)
        try:
            factors = base.overviews(1) if base.count else []
            if not 0 <= level <= len(factors):
                raise InputError(f"{self.name}: level {level} does not exist; the raster has "
                                 f"{len(factors) + 1} level(s) (full resolution and {len(factors)} "
                                 f"overview(s)), 0..{len(factors)} (see tiler info)")
            shapes = [(int(base.height), int(base.width))]
            for k in range(len(factors)):
                with _open_dataset(self.path, k) as ov:
                    shapes.append((int(ov.height), int(ov.width)))
            georef = georeference_from_gdal(base.crs, base.transform)
            crs = base.crs.to_string() if base.crs else None
        except BaseException:
            base.close()
            raise
        if level:
            base.close()
            self._ds = _open_dataset(self.path, level - 1)
        else:
            self._ds = base
        ds = self._ds
        dtypes = set(ds.dtypes)
        if len(dtypes) != 1:
            ds.close()
            raise InputError(f"{self.name}: bands of different pixel types ({', '.join(sorted(dtypes))}); "
                             "tiler reads bands of one type")
        h, w = int(ds.height), int(ds.width)
        try:
            self.shape = check_image_shape(self.name, (h, w, int(ds.count)), np.dtype(ds.dtypes[0]))
        except InputError:
            ds.close()
            raise
        self.dtype = np.dtype(ds.dtypes[0])
        bh, bw = (int(v) for v in ds.block_shapes[0])
        #: Rows per read: whole blocks, but at least ~256 rows (strips of a few rows) and at most 1024
        #: (an untiled JPEG 2000 is one block; GDAL's block cache keeps what a later band reuses).
        self.chunks: tuple[int, int] | None = (_read_rows(bh), bw)
        self._lock = threading.Lock()
        from rasterio.enums import ColorInterp, MaskFlags

        flags = ds.mask_flag_enums
        #: True when GDAL gives some pixels no data (a nodata value, a mask or an alpha band).
        self.masked = any(MaskFlags.all_valid not in f for f in flags)
        alpha = ds.count > 1 and ds.colorinterp[-1] == ColorInterp.alpha
        downsample = (shapes[0][0] / h, shapes[0][1] / w)
        comp = ds.compression
        extra: dict[str, Any] = {"driver": ds.driver, "crs": crs}
        if any(ds.descriptions):
            extra["bands"] = [d or "" for d in ds.descriptions]
        if self.masked:
            extra["mask"] = ", ".join(sorted({m.name for f in flags for m in f}))
        self.info = SourceInfo(
            format=_FORMATS.get(ds.driver, ds.driver.lower()),
            compression=comp.name.lower() if comp is not None else None,
            chunks=(bh, bw), levels=tuple(shapes), extra=extra, level=level, downsample=downsample,
            georeference=georef.downsampled(downsample) if georef is not None else None,
            alpha=alpha, read=ReadOptions(level=level, reader="rasterio"),
            nodata=float(ds.nodata) if ds.nodata is not None else None, reader="rasterio",
        )

    def _window(self, y0: int, y1: int, x0: int, x1: int) -> Any:
        from rasterio.windows import Window

        return Window(x0, y0, x1 - x0, y1 - y0)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0, bands) pixels of the region, all bands."""
        try:
            with self._lock:
                data = self._ds.read(window=self._window(y0, y1, x0, x1))
        except rasterio_errors() as exc:
            raise InputError(f"{self.name}: cannot decode the image data at rows {y0}:{y1}, columns "
                             f"{x0}:{x1} ({str(exc).splitlines()[0]})") from None
        return np.ascontiguousarray(np.moveaxis(data, 0, -1))

    def valid_mask(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) bool: True where the raster has data (GDAL's dataset mask)."""
        try:
            with self._lock:
                mask = self._ds.dataset_mask(window=self._window(y0, y1, x0, x1))
        except rasterio_errors() as exc:
            raise InputError(f"{self.name}: cannot read the nodata mask at rows {y0}:{y1}, columns "
                             f"{x0}:{x1} ({str(exc).splitlines()[0]})") from None
        return np.asarray(mask) != 0

    def close(self) -> None:
        self._ds.close()

    def __del__(self) -> None:  # close the dataset when dropped (archives open many files)
        ds = getattr(self, "_ds", None)
        if ds is not None:
            ds.close()


def is_gdal_raster(path: Path) -> bool:
    """True when GDAL opens ``path`` as a georeferenced raster (a CRS or a transform)."""
    try:
        import rasterio
    except ImportError:
        return False
    try:
        with rasterio.open(path) as ds:
            return ds.count > 0 and (ds.crs is not None or not ds.transform.is_identity)
    except rasterio_errors():
        return False


def check_plain(path: Path, *, series: int | None, plane: tuple[tuple[str, int], ...]) -> None:
    """--series and --plane do not apply to GDAL rasters (bands are channels)."""
    if series is not None or plane:
        raise SettingsError(f"{path}: --series and --plane are for TIFF and OME-Zarr inputs; a GDAL raster's "
                            "bands are its channels (choose them with --channels)")
