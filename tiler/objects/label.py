"""Connected components out of core: one global id per object across every chunk border.

The class image is labelled one band of rows at a time (the output's chunk height, full width),
each kept class with :func:`scipy.ndimage.label` (4- or 8-connected). Pass 1 gives each band's
components provisional ids that follow those of the bands above, writes them, and records which
provisional ids touch across the band's top border (same class; the pixel above, and with
8-connectivity the two diagonal ones). The pairs are resolved as components of a graph
(:func:`scipy.sparse.csgraph.connected_components`, as ``dask_image.ndmeasure.label`` does) into
a lookup table provisional -> final, and pass 2 rewrites every band through it.

Final ids are ``1..N`` ordered by each object's lowest provisional id, so the objects that first
appear in band ``b`` have consecutive ids above those of every earlier band (what
:mod:`~tiler.objects.polygons` relies on). The result equals ``scipy.ndimage.label`` of each class
on the whole image up to a renumbering. Memory: two bands (``band x W``) and 4 bytes per
provisional id, never the whole image.

In an output group the instances are an OME-Zarr labels image ``labels/instances`` (uint32
``(H, W)``, level ``0`` plus a pyramid of modes), which napari's OME-Zarr reader shows over the
prediction; its attribute ``tiler_objects`` records the classes, connectivity, object count, the
run it was made from and ``complete`` (written last: a killed labelling is redone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import zarr
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import SettingsError
from ..results.result import StoredResult
from .classes import ClassImage

#: Where the instance image lives inside an output group.
INSTANCES = "labels/instances"


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise SettingsError(f"connectivity {connectivity}: use 4 (edge neighbours) or 8 (edges and corners)")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _border_pairs(above: np.ndarray, above_cls: np.ndarray, below: np.ndarray, below_cls: np.ndarray,
                  connectivity: int) -> np.ndarray:
    """(n, 2) provisional id pairs touching across a border: ``above`` is the last row of one band,
    ``below`` the first row of the next (ids (W,), 0 = none; classes (W,))."""
    w = above.shape[0]
    found = []
    for dx in ((0,) if connectivity == 4 else (-1, 0, 1)):
        a = slice(max(0, -dx), w - max(0, dx))
        b = slice(max(0, dx), w - max(0, -dx))
        ok = (above[a] > 0) & (below[b] > 0) & (above_cls[a] == below_cls[b])
        found.append(np.stack([above[a][ok], below[b][ok]], axis=1))
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def _label_band(labels: np.ndarray, keep: Sequence[int], structure: np.ndarray, offset: int,
                scratch: np.ndarray) -> tuple[np.ndarray, int]:
    """(h, W) uint32 provisional ids of one band's kept classes, numbered from ``offset + 1``."""
    ids = np.zeros(labels.shape, np.uint32)
    work = scratch[: labels.shape[0]]
    for c in keep:
        mask = labels == c
        n = int(ndimage.label(mask, structure, output=work))
        if n:
            np.add(work, offset, out=ids, where=mask, casting="unsafe")
            offset += n
    return ids, offset


def label_bands(
    read: Callable[[int, int], np.ndarray], out: Any, *, shape: tuple[int, int], keep: Sequence[int],
    connectivity: int = 4, band: int = 1024,
) -> int:
    """Label a class image band by band into ``out``; return the number of objects.

    Parameters
    ----------
    read : ``read(y0, y1)`` -> (y1 - y0, W) integer class labels of rows ``[y0, y1)``.
    out : writable (H, W) uint32 array-like (NumPy or zarr), filled with ids 1..N (0 elsewhere).
    shape : (H, W). keep : class values to label (each separately). connectivity : 4 or 8.
    band : rows per band (a multiple of ``out``'s chunk height, for whole-chunk writes).
    """
    structure = _structure(connectivity)
    h, w = shape
    if band < 1:
        raise SettingsError(f"band {band}: must be at least 1 row")
    scratch = np.empty((min(band, h), w), np.int32)
    offset = 0
    pairs = []
    above: tuple[np.ndarray, np.ndarray] | None = None
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        labels = np.asarray(read(y0, y1))
        ids, offset = _label_band(labels, keep, structure, offset, scratch)
        if offset >= 2**32 - 1:
            raise SettingsError(f"more than {2**32 - 2} objects: too many for uint32 instance ids")
        if above is not None:
            pairs.append(_border_pairs(above[0], above[1], ids[0], labels[0], connectivity))
        above = (ids[-1].copy(), labels[-1].copy())
        out[y0:y1] = ids
    table = _final_ids(offset, np.concatenate(pairs) if pairs else np.zeros((0, 2), np.uint32))
    count = int(table.max(initial=0))
    if count != offset:  # some provisional ids were merged: renumber
        for y0 in range(0, h, band):
            y1 = min(y0 + band, h)
            out[y0:y1] = table[np.asarray(out[y0:y1])]
    return count


def _final_ids(n: int, pairs: np.ndarray) -> np.ndarray:
    """(n + 1,) uint32 lookup provisional -> final id: connected provisional ids share one, final
    ids ordered by the lowest provisional id of each object; 0 stays 0."""
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n + 1, n + 1)).tocsr()
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # lowest node of each component
    rank = np.empty(len(first), np.uint32)
    rank[np.argsort(first)] = np.arange(len(first), dtype=np.uint32)  # node 0's component -> 0
    return rank[comp]


def label_array(
    image: Any, *, keep: Sequence[int] | None = None, connectivity: int = 4, band: int = 1024,
    out: Any = None,
) -> tuple[Any, int]:
    """Instances of an (H, W) integer class image (NumPy, zarr or any sliceable array).

    Returns ``(instances, count)``: (H, W) uint32 ids ``1..count`` (``out`` when given), each
    object a connected set of one kept class (default: every class but 0).

    >>> image = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 2]], np.uint8)
    >>> ids, n = label_array(image, band=1)
    >>> n, ids.tolist()
    (3, [[1, 0, 2], [1, 0, 2], [0, 0, 3]])
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
                    pyramid: bool = True) -> Any:
    """Label ``image`` into ``group``'s OME-Zarr labels image ``labels/instances``; return its
    level ``0`` (an (H, W) uint32 zarr array). An earlier ``labels/instances`` is replaced."""
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
                        band=chunk[0])
    if pyramid:
        from ..store.pyramid import build_pyramid

        build_pyramid(node, method="mode")
    meta.update(count=count, class_names=[names[c] for c in image.keep] if names else None, complete=True)
    node.attrs["tiler_objects"] = meta
    return arr
