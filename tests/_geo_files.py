"""Generated rasters for the GDAL tests, written with rasterio (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

#: A UTM zone 32N scene origin and 10 m pixels.
CRS = "EPSG:32632"
TRANSFORM = from_origin(500000.0, 4600000.0, 10.0, 10.0)


def bands(shape: tuple[int, int, int], seed: int = 0, dtype: str = "uint16", low: int = 1) -> np.ndarray:
    """(C, H, W) smooth-ish values in [low, 4000]: a gradient plus noise, never 0 unless low is 0."""
    c, h, w = shape
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin(y / 17.0)[None] + np.cos(x / 23.0)[None] + np.arange(c)[:, None, None]) * 600 + 1800
    return np.clip(base + rng.normal(0, 150, shape), low, 4000).astype(dtype)


def write_geotiff(path: Path, data: np.ndarray, *, crs: Any = CRS, transform: Any = TRANSFORM,
                  block: int = 64, overviews: tuple[int, ...] = (), nodata: float | None = None,
                  descriptions: tuple[str, ...] | None = None, **options: Any) -> Path:
    """A tiled GeoTIFF of (C, H, W) ``data``."""
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype, crs=crs, transform=transform,
                   tiled=True, blockxsize=block, blockysize=block, nodata=nodata, **options)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if descriptions:
            ds.descriptions = descriptions
        if overviews:
            ds.build_overviews(list(overviews), rasterio.enums.Resampling.average)
    return path
