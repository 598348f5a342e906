"""Connected components out of core: one global id per object across every chunk border.

The class image is labelled one band of rows at a time (the output's chunk height, full width),
every kept class at once with :func:`cc3d.connected_components` (4- or 8-connected). Pass 1 gives each band's
components provisional ids that follow those of the bands above and finds which touch across the
band's top border (same class; the pixel above, and with 8-connectivity the two diagonal ones).
A component that continues an object from above is written with that object's id so far (its
root); where a band joins objects that had different roots, the pair is kept. Those pairs are
resolved as components of a graph (:func:`scipy.sparse.csgraph.connected_components`, as
``dask_image.ndmeasure.label`` does) into a lookup table, and pass 2 rewrites only the bands whose
ids it changes.

An object's final id is the lowest of its provisional ids (unique, not consecutive), so it is
known as soon as the object is closed (what :mod:`~tiler.objects.polygons` uses to emit objects
during pass 1) and every object that first appears in band ``b`` has an id above those of every
earlier band. The result equals ``scipy.ndimage.label`` of each class on the whole image up to a
renumbering. Memory: two bands (``band x W``) and 4 bytes per provisional id, never the image.

In an output group the instances are an OME-Zarr labels image ``labels/instances`` (uint32
``(H, W)``, level ``0`` plus a pyramid of modes), which napari's OME-Zarr reader shows over the
prediction; its attribute ``tiler_objects`` records the classes, connectivity, object count, the
run it was made from and ``complete`` (written last: a killed labelling is redone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
import zarr
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import SettingsError
from ..results.result import StoredResult
from .classes import ClassImage

#: Where the instance image lives inside an output group.
INSTANCES = "labels/instances"


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in (4, 8):
        raise SettingsError(f"connectivity {connectivity}: use 4 (edge neighbours) or 8 (edges and corners)")


def _border_pairs(above: np.ndarray, above_cls: np.ndarray, below: np.ndarray, below_cls: np.ndarray,
                  connectivity: int) -> np.ndarray:
    """(n, 2) id pairs touching across a border: ``above`` is the last row of one band, ``below``
    the first row of the next (ids (W,), 0 = none; classes (W,))."""
    w = above.shape[0]
    found = []
    for dx in ((0,) if connectivity == 4 else (-1, 0, 1)):
        a = slice(max(0, -dx), w - max(0, dx))
        b = slice(max(0, dx), w - max(0, -dx))
        ok = (above[a] > 0) & (below[b] > 0) & (above_cls[a] == below_cls[b])
        found.append(np.stack([above[a][ok], below[b][ok]], axis=1))
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


@dataclass(frozen=True)
class Band:
    """One labelled band of rows.

    Attributes
    ----------
    y0 : first image row. labels : (h, W) class labels. local : (h, W) uint16 or uint32 component
    ids ``1..n`` within the band (0: not a kept class). offset : provisional id = ``offset + local``.
    classes : (n + 1,) int64 class of each local id (index 0 unused).
    pairs : (m, 2) int64 ``(provisional id above, local id here)`` touching across the top border.
    """

    y0: int
    labels: np.ndarray
    local: np.ndarray
    offset: int
    classes: np.ndarray
    pairs: np.ndarray

    @property
    def count(self) -> int:
        return len(self.classes) - 1


#: Elements per piece of an indexed lookup: NumPy turns an index array into intp (8 bytes each)
#: first, which for a whole band would be the largest array of the labelling.
_PIECE = 1 << 20


def _rows_per_piece(width: int) -> int:
    return max(1, _PIECE // max(1, width))


def _lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for an (h, w) integer ``index``, in pieces of rows (small intp copies)."""
    out = np.empty(index.shape, table.dtype)
    step = _rows_per_piece(index.shape[1])
    for a in range(0, index.shape[0], step):
        np.take(table, index[a : a + step], out=out[a : a + step])
    return out


def _label_band(labels: np.ndarray, keep: Sequence[int], connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, W) local ids ``1..n`` (uint16 when they fit, else uint32) of one band's kept classes
    (each class separately) and the (n + 1,) int64 class of each.

    :func:`cc3d.connected_components` labels every class in one pass (a component never joins two
    classes), 4 or 8-connected; about five times as fast as :func:`scipy.ndimage.label` once per
    class, and without a mask or scratch band per class.
    """
    kept = labels
    top = int(labels.max(initial=0))
    if not set(range(1, top + 1)) <= set(keep) or int(labels.min(initial=0)) < 0:  # others to drop
        kept = np.where(np.isin(labels, keep), labels, 0).astype(labels.dtype)
    local = cc3d.connected_components(kept, connectivity=4 if connectivity == 4 else 8)
    n = int(local.max(initial=0))
    classes = np.zeros(n + 1, np.int64)
    step = _rows_per_piece(local.shape[1])
    for a in range(0, local.shape[0], step):  # every pixel of a component has its class
        classes[local[a : a + step]] = kept[a : a + step]
    return local, classes


def iter_bands(
    read: Callable[[int, int], np.ndarray], *, shape: tuple[int, int], keep: Sequence[int],
    connectivity: int = 4, band: int = 1024,
) -> Iterator[Band]:
    """Label a class image band by band (pass 1).

    ``read(y0, y1)`` gives (y1 - y0, W) integer class labels; provisional ids follow on from band
    to band, and each band carries the pairs that join it to the band above.
    """
    _check_connectivity(connectivity)
    h, _ = shape
    if band < 1:
        raise SettingsError(f"band {band}: must be at least 1 row")
    offset = 0
    above: tuple[np.ndarray, np.ndarray] | None = None
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        labels = np.asarray(read(y0, y1))
        local, classes = _label_band(labels, keep, connectivity)
        if offset + len(classes) >= 2**32 - 1:
            raise SettingsError(f"more than {2**32 - 2} objects: too many for uint32 instance ids")
        if above is None:
            pairs = np.zeros((0, 2), np.int64)
        else:
            pairs = _border_pairs(above[0], above[1], local[0].astype(np.int64), labels[0], connectivity)
        above = (np.where(local[-1] > 0, local[-1].astype(np.int64) + offset, 0), labels[-1].copy())
        band_out = Band(y0, labels, local, offset, classes, pairs.astype(np.int64))
        del labels, local  # only the band handed out holds them: freed before the next is read
        offset += len(classes) - 1
        yield band_out
        del band_out


def resolve(total: int, pairs: np.ndarray) -> np.ndarray:
    """(total + 1,) uint32 lookup provisional -> final id: connected provisional ids share the
    lowest of them; 0 stays 0."""
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(total + 1, total + 1)).tocsr()
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # lowest node of each component
    return first.astype(np.uint32)[comp]


def _slabs(out: Any) -> list[tuple[int, int]]:
    """Column ranges of whole chunks, about 8192 pixels wide: writes and rewrites go slab by slab
    so the temporaries stay a fraction of a band."""
    w = out.shape[1]
    cw = int(getattr(out, "chunks", (w, w))[-1])
    step = max(cw, 8192 // cw * cw)
    return [(x0, min(x0 + step, w)) for x0 in range(0, w, step)]


class _Roots:
    """Pass 1's running union of the ids across band borders.

    For each band, the *root* of each of its components: the lowest provisional id of the object
    it belongs to as far as the bands so far show (an id from a band above when it continues an
    object from there). Pass 1 writes roots, not provisional ids, so pass 2 only rewrites the bands
    of objects that merge further down (a U joined at its bottom), not every band an object crosses.
    """

    def __init__(self) -> None:
        self.prev = np.zeros(1, np.int64)  # local id of the band before -> its root
        self.prev_offset = 0

    def band(self, b: Band) -> tuple[np.ndarray, np.ndarray]:
        """``(root, merges)``: (n + 1,) int64 root of each local id of ``b`` (0 for 0) and (m, 2)
        ``(root, lower root)`` pairs of roots from above that ``b`` joins into one object."""
        n = b.count
        root = b.offset + np.arange(n + 1, dtype=np.int64)
        root[0] = 0
        merges = np.zeros((0, 2), np.int64)
        if len(b.pairs):
            above, index = np.unique(self.prev[b.pairs[:, 0] - self.prev_offset], return_inverse=True)
            k = len(above)
            graph = coo_matrix((np.ones(len(index), np.int8), (index, k + b.pairs[:, 1] - 1)),
                               shape=(k + n, k + n)).tocsr()
            _, comp = connected_components(graph, directed=False)
            lowest = np.full(int(comp.max()) + 1, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(lowest, comp[:k], above)
            np.minimum.at(lowest, comp[k:], root[1:])
            root[1:] = lowest[comp[k:]]
            joined = lowest[comp[:k]]
            moved = joined != above
            merges = np.stack([above[moved], joined[moved]], axis=1)
        self.prev, self.prev_offset = root, b.offset
        return root, merges


def relabel(out: Any, table: np.ndarray, bands: Sequence[tuple[int, int, np.ndarray]]) -> None:
    """Pass 2: rewrite each band ``(y0, y1, ids written there)`` of ``out`` whose ids the table
    changes."""
    slabs = _slabs(out)
    for y0, y1, ids in bands:
        if len(ids) and not np.array_equal(table[ids], ids):
            for x0, x1 in slabs:
                out[y0:y1, x0:x1] = _lookup(table, np.asarray(out[y0:y1, x0:x1]))


def label_bands(
    read: Callable[[int, int], np.ndarray], out: Any, *, shape: tuple[int, int], keep: Sequence[int],
    connectivity: int = 4, band: int = 1024, each: Callable[[Band], None] | None = None,
) -> int:
    """Label a class image band by band into ``out``; return the number of objects.

    Parameters
    ----------
    read : ``read(y0, y1)`` -> (y1 - y0, W) integer class labels of rows ``[y0, y1)``.
    out : writable (H, W) uint32 array-like (NumPy or zarr); each object gets the lowest of its
        provisional ids (unique per object, not consecutive), 0 elsewhere.
    shape : (H, W). keep : class values to label (each separately). connectivity : 4 or 8.
    band : rows per band (a multiple of ``out``'s chunk height, for whole-chunk writes).
    each : called with every :class:`Band` of pass 1 (the streaming polygons use it).
    """
    merges, bands, starts, total = [], [], [], 0
    slabs = _slabs(out)
    roots = _Roots()
    for b in iter_bands(read, shape=shape, keep=keep, connectivity=connectivity, band=band):
        y1 = b.y0 + b.local.shape[0]
        root, joined = roots.band(b)
        ids = root.astype(np.uint32)
        for x0, x1 in slabs:
            out[b.y0 : y1, x0:x1] = _lookup(ids, b.local[:, x0:x1])
        merges.append(joined)
        bands.append((b.y0, y1, np.unique(ids[1:])))
        starts.append(root[1:][root[1:] > b.offset])  # objects that start in this band
        total = b.offset + b.count
        if each is not None:
            each(b)
        del b  # freed before the next band is labelled (a band is 9 bytes per pixel)
    table = resolve(total, np.concatenate(merges) if merges else np.zeros((0, 2), np.int64))
    relabel(out, table, bands)
    return len(np.unique(table[np.concatenate(starts)])) if starts else 0


def label_array(
    image: Any, *, keep: Sequence[int] | None = None, connectivity: int = 4, band: int = 1024,
    out: Any = None,
) -> tuple[Any, int]:
    """Instances of an (H, W) integer class image (NumPy, zarr or any sliceable array).

    Returns ``(instances, count)``: (H, W) uint32 ids (``out`` when given), one per object, each
    object a connected set of one kept class (default: every class but 0).

    >>> image = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 2]], np.uint8)
    >>> ids, n = label_array(image, band=1)
    >>> n, ids.tolist()
    (3, [[1, 0, 2], [1, 0, 2], [0, 0, 5]])
    """
    h, w = image.shape
    if keep is None:
        keep = [c for c in range(1, int(_max(image, band)) + 1)]
    if out is None:
        out = np.zeros((h, w), np.uint32)
    count = label_bands(lambda y0, y1: image[y0:y1], out, shape=(h, w), keep=keep,
                        connectivity=connectivity, band=band)
    return out, count


def _max(image: Any, band: int) -> int:
    return max((int(np.asarray(image[y0 : y0 + band]).max(initial=0)) for y0 in range(0, image.shape[0], band)),
               default=0)


def _ome_axes(result: StoredResult) -> tuple[list[dict[str, Any]], list[float]]:
    """The (y, x) axes and scale of the output's full resolution, from its ``ome`` metadata."""
    try:
        ms = result.attributes["ome"]["multiscales"][0]
        axes = [a for a in ms["axes"] if a["name"] in ("y", "x")]
        scale = [float(s) for s in ms["datasets"][0]["coordinateTransformations"][0]["scale"]][-2:]
        if len(axes) == 2:
            return axes, scale
    except (KeyError, IndexError, TypeError):
        pass
    return [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}], [1.0, 1.0]


def source_stamp(result: StoredResult) -> dict[str, Any]:
    """What identifies the output the instances were made from (its run and completeness)."""
    rec = result.record
    return {"run_id": rec.get("run_id"), "complete": rec.get("complete"), "shape": list(result.shape)}


def open_instances(group: Any, *, keep: Sequence[int], connectivity: int, stamp: dict[str, Any]) -> Any | None:
    """The complete ``labels/instances`` array of ``group`` made with these settings, or None."""
    try:
        node = group[INSTANCES]
    except KeyError:
        return None
    meta = dict(node.attrs.get("tiler_objects", {}))
    if (meta.get("complete") is True and meta.get("classes") == list(keep)
            and meta.get("connectivity") == connectivity and meta.get("source") == stamp):
        return node["0"]
    return None


def write_instances(image: ClassImage, group: zarr.Group, *, connectivity: int = 4,
                    pyramid: bool = True, each: Callable[[Band], None] | None = None) -> Any:
    """Label ``image`` into ``group``'s OME-Zarr labels image ``labels/instances``; return its
    level ``0`` (an (H, W) uint32 zarr array). An earlier ``labels/instances`` is replaced.
    ``each``: called with every band of pass 1 (see :func:`label_bands`)."""
    result = image.result
    h, w = image.shape
    chunk = (min(image.band_height, h), min(int(result.levels[0].chunks[-1]), w))
    labels_group = group.require_group("labels")
    labels_group.attrs["ome"] = {"version": "0.5", "labels": ["instances"]}
    if "instances" in labels_group:
        del labels_group["instances"]
    axes, scale = _ome_axes(result)
    node = labels_group.create_group("instances")
    stamp = source_stamp(result)
    meta: dict[str, Any] = {"classes": list(image.keep), "connectivity": connectivity, "source": stamp,
                            "complete": False}
    names = result.class_names()
    node.attrs.update({
        "ome": {"version": "0.5",
                "multiscales": [{"name": "instances", "axes": axes, "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}],
                "image-label": {"version": "0.5", "source": {"image": "../../"}}},
        "tiler_objects": meta,
    })
    arr = node.create_array("0", shape=(h, w), chunks=chunk, dtype="uint32", fill_value=0,
                            dimension_names=("y", "x"))
    count = label_bands(image.band, arr, shape=(h, w), keep=image.keep, connectivity=connectivity,
                        band=chunk[0], each=each)
    if pyramid:
        from ..store.pyramid import build_pyramid

        build_pyramid(node, method="mode")
    meta.update(count=count, class_names=[names[c] for c in image.keep] if names else None, complete=True)
    node.attrs["tiler_objects"] = meta
    return arr
