"""Georeferences to and from GDAL (rasterio): a CRS and an affine transform as GeoTIFF tags.

Both directions go through the bytes of a 1 x 1 GeoTIFF in memory, so a CRS is encoded exactly as
GDAL writes it into any GeoTIFF (EPSG codes as geokeys; other CRSs as user-defined keys with GDAL's
citation) and decoded exactly as GDAL reads a GeoTIFF: a raster read through rasterio and one read
through tifffile carry the same :class:`~tiler.geo.georef.GeoReference`, and an export recovers
the same CRS and transform.
"""

from __future__ import annotations

import io
from typing import Any

from ..errors import OutputError
from .georef import GeoReference
from .tiff_tags import geotiff_tags


def georeference_from_gdal(crs: Any, transform: Any) -> GeoReference | None:
    """The GeoTIFF georeference of a raster with rasterio ``crs`` and ``transform`` (Affine).

    None when the raster has neither a CRS nor a transform other than the identity.
    """
    import tifffile
    from rasterio.io import MemoryFile

    if crs is None and (transform is None or transform.is_identity):
        return None
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=1, height=1, count=1, dtype="uint8", crs=crs,
                      transform=transform):
            pass
        data = mem.read()
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return GeoReference.from_tiff_tags(tif.pages[0].tags)


def gdal_crs_transform(record: dict[str, Any] | None) -> tuple[Any, Any]:
    """``(crs, transform)`` as rasterio reads them from a georeference record (``tiler.georeference``
    or any form :func:`~tiler.geo.tiff_tags.geotiff_tags` accepts); ``(None, None)`` for none."""
    import numpy as np
    import tifffile
    from rasterio.io import MemoryFile

    tags = geotiff_tags(record)
    if not tags:
        return None, None
    buffer = io.BytesIO()
    try:
        tifffile.imwrite(buffer, np.zeros((1, 1), np.uint8), extratags=tags, metadata=None)
    except (ValueError, TypeError) as exc:
        raise OutputError(f"georeference: cannot be written as GeoTIFF tags ({exc})") from None
    with MemoryFile(buffer.getvalue()) as mem, mem.open() as ds:
        return ds.crs, ds.transform
