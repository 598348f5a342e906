"""Polygons of instances, streamed band by band; an object is emitted as soon as it is closed.

Each band of the instance image (the output's chunk height, full width) is polygonised into the
4-connected pieces of each object (:mod:`~tiler.objects.pieces`: GDAL's polygonize, in pixel
coordinates on pixel edges; in a worker process beside the labelling when there are two cores).
An object whose id appears in the band's last row goes on into the
next band and stays *open*; the others are *closed*: their pieces (several when the object crossed
band borders, or, with 8-connectivity, when it is made of parts touching at corners) are merged
with :func:`shapely.union_all`, which removes the shared band-border edges, keeps holes and turns
parts that touch only at a corner into a valid MultiPolygon. So no object is ever cut at a chunk
border, and memory holds one band and the open objects of one row, never every object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .label import Band
from .measure import BandIndex, band_sums, sum_by
from .pieces import PieceMaker


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


def _merged(parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def _batch(ids: np.ndarray, classes: np.ndarray, geometry: np.ndarray, sum_p: np.ndarray | None) -> ObjectBatch:
    area = np.rint(shapely.area(geometry)).astype(np.int64)  # exact: unions of unit squares
    centre = shapely.get_coordinates(shapely.centroid(geometry)).reshape(-1, 2)
    prob = sum_p / area if sum_p is not None else np.full(len(ids), np.nan)
    return ObjectBatch(ids=ids.astype(np.uint32), classes=classes, geometry=geometry, area=area,
                       centroid=centre, probability=prob)


def _by_id(ids: np.ndarray, pieces: np.ndarray) -> dict[int, list[Any]]:
    """Local id -> its pieces (one, unless its pixels touch only at corners)."""
    out: dict[int, list[Any]] = {}
    for i, piece in zip(ids.tolist(), pieces.tolist()):
        out.setdefault(i, []).append(piece)
    return out


def default_piece_workers(height: int, band: int) -> int:
    """Worker processes for the polygons (:class:`~tiler.objects.pieces.PieceMaker`): one when this
    process has two cores or more and the image has more than one band, else none."""
    from ..cores import available_cores

    return 1 if available_cores() >= 2 and height > band else 0


@dataclass
class _Closing:
    """The objects a band closes, waiting for that band's pieces.

    ``parts``: per object, its ``(band, local id)`` pieces: of this band and of earlier ones."""

    band: int
    ids: np.ndarray
    classes: np.ndarray
    sum_p: np.ndarray | None
    parts: list[list[tuple[int, int]]]


class ObjectTracker:
    """Objects of pass 1 of the labelling (:func:`~tiler.objects.label.iter_bands`), each emitted
    when it is closed, under its final id (the lowest of its provisional ids).

    Holds the open objects (those in the last row of the band before): their ids, class and
    probability sums and the ``(band, local id)`` pieces they are made of, and the polygons of
    those pieces once made. :meth:`push` takes the next band and returns the objects closed in the
    bands whose polygons are ready; with ``workers`` (see :class:`~tiler.objects.pieces.PieceMaker`)
    the bands are polygonised in a worker process meanwhile, and :meth:`finish` waits for the rest.
    :meth:`add` takes a band and returns the objects it closes (``workers=0``).
    """

    def __init__(self, height: int, *, workers: int = 0) -> None:
        self.height = height
        self.open_ids: np.ndarray = np.zeros(0, np.int64)  # sorted
        self.open_cls: np.ndarray = np.zeros(0, np.int64)
        self.open_p: np.ndarray = np.zeros(0, np.float64)
        self.open_parts: list[list[tuple[int, int]]] = []  # by open object, as open_ids
        self.prev_root = np.zeros(1, np.int64)  # local id of the band before -> its object's id
        self.prev_offset = 0
        self._maker = PieceMaker(workers)
        self._closing: deque[_Closing] = deque()
        self._pieces: dict[tuple[int, int], list[Any]] = {}  # made pieces of open objects
        self._bands = 0

    def add(self, band: Band, own: tuple[np.ndarray, float] | None = None) -> ObjectBatch:
        """Take the next band, and the probability of each pixel's class (``(values, scale)``, see
        :meth:`~tiler.objects.classes.ClassImage.class_probability`) or None; return the objects
        it closes."""
        batches = self.push(band, own) + self._drain(wait=True)
        if len(batches) != 1:
            raise RuntimeError("ObjectTracker.add is for a tracker without workers")  # pragma: no cover
        return batches[0]

    def push(self, band: Band, own: tuple[np.ndarray, float] | None = None) -> list[ObjectBatch]:
        """Take the next band (as :meth:`add`); return the objects closed so far whose polygons are
        made, a batch per band, in band order."""
        try:
            self._group(band, own, self._bands)
            self._maker.submit(band.local, band.count, band.y0)
            self._bands += 1
            return self._drain(wait=False)
        except BaseException:
            self._maker.close()
            raise

    def finish(self) -> list[ObjectBatch]:
        """The objects still waiting for their polygons; stops the worker."""
        try:
            return self._drain(wait=True)
        finally:
            self._maker.close()

    def close(self) -> None:
        """Stop the worker without waiting for the bands it still has (after a failure)."""
        self._maker.close()

    def _group(self, band: Band, own: tuple[np.ndarray, float] | None, seq: int) -> None:
        """Join the band's ids to the open objects; queue the objects it closes."""
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
        parts: list[list[tuple[int, int]]] = [[] for _ in range(ncomp)]
        for i, c in enumerate(comp[:k].tolist()):
            parts[c].extend(self.open_parts[i])
        for lid, c in enumerate(comp[k:].tolist(), 1):
            parts[c].append((seq, lid))
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
        kept = np.flatnonzero(going)
        kept = kept[np.argsort(root[kept])]
        self.open_ids, self.open_cls = root[kept], cls[kept]
        self.open_p = sum_p[kept] if sum_p is not None else np.zeros(len(kept))
        self.open_parts = [parts[c] for c in kept.tolist()]
        self.prev_root = np.concatenate([np.zeros(1, np.int64), root[comp[k:]]])
        self.prev_offset = band.offset
        self._closing.append(_Closing(seq, root[closed], cls[closed], sum_p[closed] if sum_p is not None else None,
                                      [parts[c] for c in closed.tolist()]))

    def _drain(self, *, wait: bool) -> list[ObjectBatch]:
        """Batches of the queued bands whose pieces are made (all of them with ``wait``)."""
        out = []
        while self._closing and (wait or self._maker.ready(self._closing[0].band)):
            c = self._closing.popleft()
            made = _by_id(*self._maker.take(c.band))
            geometry = np.empty(len(c.ids), object)
            for j, parts in enumerate(c.parts):
                geometry[j] = _merged([g for b, lid in parts for g in
                                       (made.pop(lid) if b == c.band else self._pieces.pop((b, lid)))])
            self._pieces.update(((c.band, lid), g) for lid, g in made.items())  # of open objects
            out.append(_batch(c.ids, c.classes, geometry, c.sum_p))
        return out


def iter_objects(
    instances: Any,
    classes: Callable[[int, int], np.ndarray],
    *,
    band: int,
    probabilities: Callable[[int, int, np.ndarray], tuple[np.ndarray, float] | None] | None = None,
    where: str = "",
    workers: int = 0,
) -> Iterator[ObjectBatch]:
    """Every object of an instance image, a batch per band that closes some, each object when it
    is closed.

    Parameters
    ----------
    instances : (H, W) uint32 ids numbered as :mod:`~tiler.objects.label` does (NumPy or zarr).
    classes : ``classes(y0, y1)`` -> (y1 - y0, W) class labels of those rows.
    band : rows per band. probabilities : ``probabilities(y0, y1, labels)`` -> the probability of
        each pixel's class, as :meth:`~tiler.objects.classes.ClassImage.class_probability`.
    where : the output's path, for errors. workers : polygon worker processes (see
        :class:`~tiler.objects.pieces.PieceMaker`): bands are read and indexed ahead meanwhile.
    """
    h = instances.shape[0]
    above = np.zeros(0, np.uint32)
    start = 1
    carried_p = np.zeros(0, np.float64)
    carried_cls = np.zeros(0, np.int64)
    pieces: dict[int, list[Any]] = {}
    waiting: deque[tuple[int, np.ndarray, int, np.ndarray, np.ndarray, np.ndarray | None]] = deque()
    maker = PieceMaker(workers)

    def closed_batch() -> ObjectBatch | None:
        """The objects the oldest waiting band closes, once its pieces are made: those continuing
        from above or with pixels here (ids between are not all used) that do not go on below."""
        seq, index_ids, k, going_on, cls, sum_p = waiting.popleft()
        piece_ids, made = maker.take(seq)
        present = np.zeros(len(index_ids), bool)
        present[1 : 1 + k] = True
        present[piece_ids] = True
        for value, piece in zip(index_ids[piece_ids].tolist(), made.tolist()):
            pieces.setdefault(value, []).append(piece)
        closed = np.flatnonzero(present & ~going_on)
        if not len(closed):
            return None
        done = index_ids[closed]
        geometry = np.empty(len(closed), object)
        for j, value in enumerate(done.tolist()):
            geometry[j] = _merged(pieces.pop(value))
        return _batch(done, cls[closed], geometry, sum_p[closed] if sum_p is not None else None)

    try:
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
            nxt = np.unique(ids[-1]) if y1 < h else np.zeros(1, np.uint32)
            nxt = nxt[nxt > 0]
            going_on = np.zeros(len(index.ids), bool)
            going_on[np.searchsorted(index.ids, nxt)] = True
            carried_p, carried_cls = sum_p[going_on], cls[going_on]
            above, start = nxt, max(start, int(index.ids[-1]) + 1)
            seq = maker.submit(index.local, len(index.ids) - 1, y0)
            waiting.append((seq, index.ids, k, going_on, cls, sum_p if probability is not None else None))
            del ids, index, labels, probability
            while waiting and maker.ready(waiting[0][0]):
                if (batch := closed_batch()) is not None:
                    yield batch
        while waiting:
            if (batch := closed_batch()) is not None:
                yield batch
    finally:
        maker.close()
