"""Image sources: lazy 2-D images with channels, read region by region.

A :class:`Source` is anything with ``name``, ``shape = (height, width, channels)``, ``dtype``,
``chunks`` (the file's own tile size, to align reads; ``None`` if it has none) and
``read(y0, y1, x0, x1) -> (y1 - y0, x1 - x0, channels)`` for in-bounds regions. :func:`open_source`
turns a path or an array into one; nothing is loaded until ``read`` is called.

Which image is read is set by :class:`ReadOptions` (level / mpp, series, plane, channels), which
:func:`open_at` records on ``source.info.read`` so dask workers reopen exactly the same pixels.
Only a real channel axis becomes channels (:mod:`._axes`); label and macro images are never read.
Files are opened by one of :data:`READERS` (``--reader``): tifffile, OpenSlide (:mod:`.openslide`,
vendor slide formats), wsidicom (:mod:`.dicom`, DICOM WSI) or rasterio (:mod:`.raster`, GDAL
rasters; :mod:`.stack`, STAC items), chosen by content and name by default.
Inputs may be URLs (``s3://``, ``gs://``, ``https://``): :mod:`.remote` (coalesced range reads).

May import: errors, cores (thread-pool sizes), geo.
"""

from __future__ import annotations

from ._array import ArraySource
from ._base import BAND_RESAMPLING, ReadOptions, Source, SourceInfo
from ._levels import choose_level, level_mpps, open_at
from ._open import READER_NAMES, READERS, ChannelSource, OmeZarrSource, is_dicom_folder, open_source
from ._resample import ResampledSource

__all__ = [
    "BAND_RESAMPLING",
    "READERS",
    "READER_NAMES",
    "ArraySource",
    "ChannelSource",
    "OmeZarrSource",
    "ReadOptions",
    "ResampledSource",
    "Source",
    "SourceInfo",
    "choose_level",
    "is_dicom_folder",
    "level_mpps",
    "open_at",
    "open_source",
]
