"""Which tiles are computed at all.

Owns tissue detection (:mod:`~tiler.masks.tissue`), region-of-interest masks (:mod:`~tiler.masks.roi`)
and the per-tile skip table built from them (:mod:`~tiler.masks.skip`).

May import: errors, sources, plan.
"""
