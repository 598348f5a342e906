"""Objects and polygons out of core: connected components with one global id, their outlines and
measurements, in the formats GIS and QuPath read.

Owns the class image read band by band from an output (:mod:`~tiler.objects.classes`), the
instance labelling with border equivalences (:mod:`~tiler.objects.label`), the streaming
polygonisation (:mod:`~tiler.objects.polygons`, its pieces made in a worker process by
:mod:`~tiler.objects.pieces`), per-object measurements
(:mod:`~tiler.objects.measure`), the vector and table writers (:mod:`~tiler.objects.writers`) and
the export that ties them together (:mod:`~tiler.objects.export`).

May import: errors, cores (the polygon worker on two cores or more), geo, store (the output layout,
pyramid), results (opening outputs, to_labels).
"""

from .export import VECTOR_FORMATS, export_objects
from .label import label_array

__all__ = ["VECTOR_FORMATS", "export_objects", "label_array"]
