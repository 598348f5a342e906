"""TIFF, OME-TIFF and SVS input: the reader (:mod:`~tiler.sources.tiff.reader`: series, levels, axes,
metadata) and the fast path that decodes stored tiles on a thread pool (:mod:`~tiler.sources.tiff.tiles`).

May import: errors, geo, the rest of sources.
"""
