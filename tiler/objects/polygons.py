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
    area : (n,) int64 pixel counts. centroid : (n, 2) float64 ``(x, y)`` mean pixel centre.
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


def band_pieces(ids: np.ndarray, y0: int) -> Iterator[tuple[int, Any]]:
    """``(id, polygon)`` of every 4-connected piece of every object in a band of ids whose first
    row is image row ``y0``."""
    values = ids.astype(np.int32, copy=False)
    for geometry, value in shapes(values, mask=values > 0, connectivity=4,
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
    carried = np.zeros((0, 4), np.float64)
    carried_cls = np.zeros(0, np.int64)
    pieces: dict[int, list[Any]] = {}
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        ids = np.asarray(instances[y0:y1])
        index = BandIndex.build(ids, above, start, where=where)
        probability = probabilities(y0, y1) if probabilities is not None else None
        sums, cls = band_sums(index, y0, np.asarray(classes(y0, y1)), probability)
        sums[1 : 1 + index.continuing] += carried
        cls[1 : 1 + index.continuing] = carried_cls  # those with no pixel in this band keep theirs
        for value, piece in band_pieces(ids, y0):
            pieces.setdefault(value, []).append(piece)
        nxt = np.unique(ids[-1]) if y1 < h else np.zeros(1, np.uint32)
        nxt = nxt[nxt > 0]
        going_on = np.zeros(len(index.ids), bool)
        going_on[np.searchsorted(index.ids, nxt)] = True
        closed = np.flatnonzero(~going_on & (sums[:, 0] > 0))
        closed = closed[closed > 0]
        carried, carried_cls = sums[going_on], cls[going_on]
        above, start = nxt, max(start, int(index.ids[-1]) + 1)
        if not len(closed):
            continue
        done_ids = index.ids[closed]
        geometry = np.empty(len(closed), object)
        for k, value in enumerate(done_ids.tolist()):
            parts = pieces.pop(value)
            geometry[k] = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        s = sums[closed]
        area = s[:, 0]
        yield ObjectBatch(
            ids=done_ids, classes=cls[closed], geometry=geometry, area=area.astype(np.int64),
            centroid=np.stack([s[:, 1] / area + 0.5, s[:, 2] / area + 0.5], axis=1),
            probability=s[:, 3] / area if probability is not None else np.full(len(closed), np.nan),
        )
