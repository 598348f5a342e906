"""Polygons of instances, streamed band by band; an object is emitted as soon as it is closed.

Each band of the instance image (the output's chunk height, full width) is polygonised with
:func:`rasterio.features.shapes` (GDAL's polygonize) into the 4-connected pieces of each object,
in pixel coordinates (x = column, y = row, on pixel edges: pixel ``(r, c)`` is the square
``[c, c + 1] x [r, r + 1]``). An object whose id appears in the band's last row goes on into the
next band and stays *open*; the others are *closed*: their pieces (several when the object crossed
band borders, or, with 8-connectivity, when it is made of parts touching at corners) are merged
with :func:`shapely.union_all`, which removes the shared band-border edges, keeps holes and turns
parts that touch only at a corner into a valid MultiPolygon. So no object is ever cut at a chunk
border, and memory holds one band and the open objects of one row, never every object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine

from .measure import BandIndex, band_sums


@dataclass(frozen=True)
class ObjectBatch:
    """Objects closed in one band.

    Attributes
    ----------
    ids : (n,) uint32 instance ids. classes : (n,) int64 class values.
    geometry : (n,) shapely Polygons / MultiPolygons in output pixel coordinates (pixel edges).
    area : (n,) int64 pixel counts. centroid : (n, 2) float64 ``(x, y)`` mean pixel centre (the
        polygon's centroid, exact).
    probability : (n,) float64 mean probability of the object's class (NaN for labels outputs).
    """

    ids: np.ndarray
    classes: np.ndarray
    geometry: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    probability: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, keep: np.ndarray) -> ObjectBatch:
        """The objects where ``keep`` ((n,) bool or indices) selects."""
        return ObjectBatch(self.ids[keep], self.classes[keep], self.geometry[keep], self.area[keep],
                           self.centroid[keep], self.probability[keep])


def _ring(coords: list[tuple[float, float]]) -> Any:
    flat = np.fromiter((v for point in coords for v in point), np.float64, 2 * len(coords))
    return shapely.linearrings(flat.reshape(-1, 2))


def _polygon(geometry: dict[str, Any]) -> Any:
    rings = geometry["coordinates"]
    return shapely.polygons(_ring(rings[0]), [_ring(r) for r in rings[1:]] or None)


def band_pieces(index: BandIndex, y0: int) -> Iterator[tuple[int, Any]]:
    """``(index, polygon)`` of every 4-connected piece of every object in a band whose first row
    is image row ``y0`` (``index``: into ``index.ids``)."""
    local = index.local
    # GDAL's polygonize is fastest on small integer types: the dense index fits uint16 mostly
    values = local.astype(np.uint16) if len(index.ids) < 2**16 else local
    for geometry, value in shapes(values, mask=local > 0, connectivity=4,
                                  transform=Affine(1.0, 0.0, 0.0, 0.0, 1.0, float(y0))):
        yield int(value), _polygon(geometry)


def iter_objects(
    instances: Any,
    classes: Callable[[int, int], np.ndarray],
    *,
    band: int,
    probabilities: Callable[[int, int], np.ndarray | None] | None = None,
    where: str = "",
) -> Iterator[ObjectBatch]:
    """Every object of an instance image, one batch per band, each object when it is closed.

    Parameters
    ----------
    instances : (H, W) uint32 ids numbered as :mod:`~tiler.objects.label` does (NumPy or zarr).
    classes : ``classes(y0, y1)`` -> (y1 - y0, W) class labels of those rows.
    band : rows per band. probabilities : ``probabilities(y0, y1)`` -> (C, y1 - y0, W) or None.
    where : the output's path, for errors.
    """
    h = instances.shape[0]
    above = np.zeros(0, np.uint32)
    start = 1
    carried_p = np.zeros(0, np.float64)
    carried_cls = np.zeros(0, np.int64)
    pieces: dict[int, list[Any]] = {}
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        ids = np.asarray(instances[y0:y1])
        index = BandIndex.build(ids, above, start, where=where)
        probability = probabilities(y0, y1) if probabilities is not None else None
        sum_p, cls = band_sums(index, np.asarray(classes(y0, y1)), probability)
        k = index.continuing
        sum_p[1 : 1 + k] += carried_p
        cls[1 : 1 + k] = carried_cls  # those with no pixel in this band keep theirs
        present = np.zeros(len(index.ids), bool)
        present[1 : 1 + k] = True
        for value, piece in band_pieces(index, y0):
            present[value] = True
            pieces.setdefault(int(index.ids[value]), []).append(piece)
        nxt = np.unique(ids[-1]) if y1 < h else np.zeros(1, np.uint32)
        nxt = nxt[nxt > 0]
        going_on = np.zeros(len(index.ids), bool)
        going_on[np.searchsorted(index.ids, nxt)] = True
        closed = np.flatnonzero(present & ~going_on)
        carried_p, carried_cls = sum_p[going_on], cls[going_on]
        above, start = nxt, max(start, int(index.ids[-1]) + 1)
        if not len(closed):
            continue
        done_ids = index.ids[closed]
        geometry = np.empty(len(closed), object)
        for j, value in enumerate(done_ids.tolist()):
            parts = pieces.pop(value)
            geometry[j] = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        area = np.rint(shapely.area(geometry)).astype(np.int64)  # exact: unions of unit squares
        centre = shapely.get_coordinates(shapely.centroid(geometry))
        yield ObjectBatch(
            ids=done_ids, classes=cls[closed], geometry=geometry, area=area, centroid=centre,
            probability=sum_p[closed] / area if probability is not None else np.full(len(closed), np.nan),
        )
