"""Georeferencing: where the pixels are on the Earth.

Owns :class:`~tiler.geo.georef.GeoReference` (read from GeoTIFF tags, scaled with a level or a
resampling) and :mod:`~tiler.geo.tiff_tags` (the GeoTIFF tags written on export); :mod:`~tiler.geo.gdal`
turns a rasterio CRS and transform into a georeference and back (through GeoTIFF tags, as GDAL
writes and reads them).

May import: errors.
"""
