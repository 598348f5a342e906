"""Reading what a run wrote, and what is done with it afterwards.

Owns opening an output (:mod:`~tiler.results.result`), export to OME-TIFF/GeoTIFF/PNG
(:mod:`~tiler.results.export`), the overlay preview (:mod:`~tiler.results.preview`), evaluation
against a reference (:mod:`~tiler.results.evaluate`) and input channel statistics
(:mod:`~tiler.results.stats`).

May import: errors, geo, sources, masks, models (the spec), engine (output kinds), store (the format).
"""
