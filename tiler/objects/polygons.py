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
from itertools import chain
from typing import Any

import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .label import Band
from .measure import BandIndex, band_sums, sum_by


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
    flat = np.fromiter(chain.from_iterable(coords), np.float64, 2 * len(coords))
    return shapely.linearrings(flat.reshape(-1, 2))


def _polygon(geometry: dict[str, Any]) -> Any:
    rings = geometry["coordinates"]
    return shapely.polygons(_ring(rings[0]), [_ring(r) for r in rings[1:]] or None)


def band_pieces(local: np.ndarray, n: int, y0: int) -> Iterator[tuple[int, Any]]:
    """``(local id, polygon)`` of every 4-connected piece of every object in a band of dense ids
    ``local`` ((h, W) int32 in ``0..n``, 0: none) whose first row is image row ``y0``."""
    # GDAL's polygonize is fastest on small integer types: the dense ids mostly fit uint16
    values = local.astype(np.uint16) if n < 2**16 else local
    for geometry, value in shapes(values, mask=local > 0, connectivity=4,
                                  transform=Affine(1.0, 0.0, 0.0, 0.0, 1.0, float(y0))):
        yield int(value), _polygon(geometry)


def _merged(parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def _batch(ids: np.ndarray, classes: np.ndarray, geometry: np.ndarray, sum_p: np.ndarray | None) -> ObjectBatch:
    area = np.rint(shapely.area(geometry)).astype(np.int64)  # exact: unions of unit squares
    centre = shapely.get_coordinates(shapely.centroid(geometry)).reshape(-1, 2)
    prob = sum_p / area if sum_p is not None else np.full(len(ids), np.nan)
    return ObjectBatch(ids=ids.astype(np.uint32), classes=classes, geometry=geometry, area=area,
                       centroid=centre, probability=prob)


class ObjectTracker:
    """Objects of pass 1 of the labelling (:func:`~tiler.objects.label.iter_bands`), each emitted
    when it is closed, under its final id (the lowest of its provisional ids).

    Holds the open objects (those in the last row of the band before): their ids, pieces, class and
    probability sums. :meth:`add` takes the next band and returns the objects it closes.
    """

    def __init__(self, height: int) -> None:
        self.height = height
        self.open_ids: np.ndarray = np.zeros(0, np.int64)  # sorted
        self.open_cls: np.ndarray = np.zeros(0, np.int64)
        self.open_p: np.ndarray = np.zeros(0, np.float64)
        self.pieces: dict[int, list[Any]] = {}
        self.prev_root = np.zeros(1, np.int64)  # local id of the band before -> its object's id
        self.prev_offset = 0

    def add(self, band: Band, own: tuple[np.ndarray, float] | None = None) -> ObjectBatch:
        """Take the next band, and the probability of each pixel's class (``(values, scale)``, see
        :meth:`~tiler.objects.classes.ClassImage.class_probability`) or None."""
        k, n = len(self.open_ids), band.count
        gid = np.concatenate([self.open_ids, band.offset + np.arange(1, n + 1, dtype=np.int64)])
        if len(band.pairs):
            roots = self.prev_root[band.pairs[:, 0] - self.prev_offset]
            a = np.searchsorted(self.open_ids, roots)
            b = k + band.pairs[:, 1] - 1
            graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(k + n, k + n)).tocsr()
            _, comp = connected_components(graph, directed=False)
        else:
            comp = np.arange(k + n)
        labels, first = np.unique(comp, return_index=True)  # nodes are in id order: first = lowest
        ncomp = len(labels)
        root = gid[first]
        groups: list[list[Any]] = [[] for _ in range(ncomp)]
        for i, value in enumerate(self.open_ids.tolist()):
            groups[comp[i]].extend(self.pieces.pop(value))
        for value, piece in band_pieces(band.local, n, band.y0):
            groups[comp[k + value - 1]].append(piece)
        cls = np.zeros(ncomp, np.int64)
        cls[comp] = np.concatenate([self.open_cls, band.classes[1:]])
        sum_p = None
        if own is not None:
            local_p = sum_by(band.local, n + 1, own[0])[1:] * own[1]
            sum_p = np.bincount(comp, weights=np.concatenate([self.open_p, local_p]), minlength=ncomp)
        going = np.zeros(ncomp, bool)
        if band.y0 + band.local.shape[0] < self.height:
            last = np.unique(band.local[-1])
            going[comp[k + last[last > 0] - 1]] = True
        closed = np.flatnonzero(~going)
        geometry = np.empty(len(closed), object)
        for j, c in enumerate(closed.tolist()):
            geometry[j] = _merged(groups[c])
        kept = np.flatnonzero(going)
        kept = kept[np.argsort(root[kept])]
        self.open_ids, self.open_cls = root[kept], cls[kept]
        self.open_p = sum_p[kept] if sum_p is not None else np.zeros(len(kept))
        self.pieces = {int(root[c]): groups[c] for c in kept.tolist()}
        self.prev_root = np.concatenate([np.zeros(1, np.int64), root[comp[k:]]])
        self.prev_offset = band.offset
        return _batch(root[closed], cls[closed], geometry, sum_p[closed] if sum_p is not None else None)


def iter_objects(
    instances: Any,
    classes: Callable[[int, int], np.ndarray],
    *,
    band: int,
    probabilities: Callable[[int, int, np.ndarray], tuple[np.ndarray, float] | None] | None = None,
    where: str = "",
) -> Iterator[ObjectBatch]:
    """Every object of an instance image, one batch per band, each object when it is closed.

    Parameters
    ----------
    instances : (H, W) uint32 ids numbered as :mod:`~tiler.objects.label` does (NumPy or zarr).
    classes : ``classes(y0, y1)`` -> (y1 - y0, W) class labels of those rows.
    band : rows per band. probabilities : ``probabilities(y0, y1, labels)`` -> the probability of
        each pixel's class, as :meth:`~tiler.objects.classes.ClassImage.class_probability`.
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
        labels = np.asarray(classes(y0, y1))
        probability = probabilities(y0, y1, labels) if probabilities is not None else None
        sum_p, cls = band_sums(index, labels, probability)
        k = index.continuing
        sum_p[1 : 1 + k] += carried_p
        cls[1 : 1 + k] = carried_cls  # those with no pixel in this band keep theirs
        present = np.zeros(len(index.ids), bool)
        present[1 : 1 + k] = True
        for value, piece in band_pieces(index.local, len(index.ids), y0):
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
            geometry[j] = _merged(pieces.pop(value))
        yield _batch(done_ids, cls[closed], geometry, sum_p[closed] if probability is not None else None)
