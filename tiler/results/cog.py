"""GeoTIFF export as a Cloud-Optimized GeoTIFF, through GDAL's COG driver (rasterio).

tifffile writes the GeoTIFF (the levels as reduced-resolution pages, the GeoTIFF tags of
``tiler.georeference``) to a temporary file beside the target; GDAL then gets the band
descriptions (class names) and the nodata, and its COG driver copies it into the layout
``rio cogeo validate`` accepts — every IFD first, then the tile data, overviews from the coarsest —
keeping tiler's own pyramid levels as the overviews (``OVERVIEWS=FORCE_USE_EXISTING``: probability
means, label modes). GDAL reads the CRS and transform from the same tags, so the COG has exactly
the georeference a GDAL read of the input gives.

Nodata, when the input had nodata (``tiler.nodata`` in the output's record; those pixels hold the
fill value): a ``labels`` output whose fill is no class index gets it as the GDAL nodata value; a
fill that is a class cannot be told apart from that class, so no nodata is written (with a
warning: use ``--fill 255``). Probabilities and logits, whose values are all in use, get an internal
mask instead: a pixel is masked where every channel holds the fill (a softmax output of two or more
classes never does elsewhere; a one-channel output gets the fill as nodata value).

May import: errors, geo.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError

#: tifffile compression -> GDAL COMPRESS.
_COMPRESS = {None: "NONE", "zlib": "DEFLATE", "deflate": "DEFLATE", "zstd": "ZSTD", "lzw": "LZW",
             "lzma": "LZMA", "webp": "WEBP", "jpeg": "JPEG"}

#: Rows written per mask update (whole image width).
_MASK_ROWS = 1024


def nodata_plan(result: Any) -> tuple[str, float] | None:
    """``("value", v)``, ``("mask", v)`` or None: how the output's nodata is written (see module doc)."""
    record = result.record.get("nodata")
    if not isinstance(record, dict):
        return None
    fill = float(record.get("value", 0.0))
    if result.kind == "labels":
        classes = result.classes or 0
        if fill >= classes and float(fill).is_integer() and 0 <= fill <= 255:
            return ("value", fill)
        warnings.warn(f"{result.path}: nodata pixels hold {fill:g}, which is also a class; the GeoTIFF gets no "
                      "nodata (run with --fill 255 to mark them)", stacklevel=4)
        return None
    if result.channels == 1:
        return ("value", fill)
    return ("mask", fill)


def band_descriptions(result: Any) -> list[str]:
    """One description per band: the class names (``labels``: one band named ``labels``)."""
    if result.levels[0].ndim == 2:
        return ["labels"]
    return [str(n) for n in result.class_names(result.channels)]


def to_cog(result: Any, plain: Path, out: Path, *, tile: int, compression: str | None) -> None:
    """Copy the GeoTIFF ``plain`` (written by tifffile) into the COG ``out`` with descriptions and nodata.

    ``plain`` is given descriptions, nodata and the mask in place (a temporary file).
    """
    try:
        import rasterio
        from rasterio.shutil import copy as gdal_copy
        from rasterio.windows import Window
    except ImportError:
        raise OutputError(f"{out}: the GeoTIFF export needs rasterio: pip install 'tiler-engine[geo]'") from None
    plan = nodata_plan(result)
    errors = _gdal_errors()
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(plain, "r+") as ds:
            ds.descriptions = tuple(band_descriptions(result))
            if plan is not None and plan[0] == "value":
                ds.nodata = plan[1]
            elif plan is not None:
                base = result.levels[0]
                h, w = result.shape
                for y0 in range(0, h, _MASK_ROWS):
                    y1 = min(h, y0 + _MASK_ROWS)
                    values = np.asarray(base[:, y0:y1, :])
                    valid = ~(values == np.asarray(plan[1], values.dtype)).all(axis=0)
                    ds.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=Window(0, y0, w, y1 - y0))
        options = {"BLOCKSIZE": str(tile), "COMPRESS": _COMPRESS.get(compression, str(compression).upper()),
                   "OVERVIEWS": "FORCE_USE_EXISTING", "BIGTIFF": "IF_SAFER"}
        if plan is not None and plan[0] == "mask":
            options["OVERVIEWS"] = "AUTO"  # GDAL builds the mask's overviews alongside (nearest)
            options["OVERVIEW_RESAMPLING"] = "NEAREST" if result.kind == "labels" else "AVERAGE"
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            gdal_copy(str(plain), str(out), driver="COG", **options)
    except errors as exc:
        raise OutputError(f"{out}: GDAL cannot write the COG ({str(exc).splitlines()[0]})") from None
    finally:
        for extra in (Path(f"{plain}.aux.xml"), Path(f"{plain}.msk"), Path(f"{out}.aux.xml")):
            if extra.exists() and extra != out:
                os.unlink(extra)


def _gdal_errors() -> tuple[type[BaseException], ...]:
    from rasterio.errors import RasterioError

    try:
        from rasterio._err import CPLE_BaseError
    except ImportError:  # pragma: no cover
        return (RasterioError,)
    return (RasterioError, CPLE_BaseError)
