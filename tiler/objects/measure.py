"""Per-object measurements summed band by band: the class and the mean class probability.

Reading stored instances, the objects present in a band are indexed densely (:class:`BandIndex`):
those continuing from the band above (ids in its last row) first, then the ids that start in this
band, which all lie above every earlier band's (see :mod:`~tiler.objects.label`). Sums over a
band are ``numpy.bincount`` over such an index (:func:`sum_by`, in column slabs so temporaries
stay small), and the sums of objects that go on below are carried to the next band: memory is one
band and one row of open objects, never the whole object count. Areas, centroids and bounding
boxes are not summed: they come exactly from the polygons (unions of unit pixel squares).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OutputError

#: Bands whose ids are all below this are indexed through a lookup table (4 bytes per id).
LOOKUP_MAX = 1 << 24
#: Columns per slab of a band when summing (bounds the temporaries to band x SLAB values).
SLAB = 4096


@dataclass(frozen=True)
class BandIndex:
    """Dense indices of the objects in one band.

    Attributes
    ----------
    ids : (n,) uint32 global ids by index, ascending; index 0 is the background (id 0).
    local : (h, W) int32 index of each pixel's object (0: background).
    continuing : how many of ``ids[1:]`` came from the band above.
    """

    ids: np.ndarray
    local: np.ndarray
    continuing: int

    @classmethod
    def build(cls, band: np.ndarray, above: np.ndarray, start: int, *, where: str = "") -> BandIndex:
        """Index ``band`` ((h, W) ids) given ``above`` (sorted ids in the previous band's last row)
        and ``start`` (the lowest id no earlier band holds)."""
        top = int(band.max(initial=0))
        ids = np.concatenate([np.zeros(1, np.uint32), above.astype(np.uint32),
                              np.arange(start, max(top + 1, start), dtype=np.uint32)])
        if top < LOOKUP_MAX:  # one gather through a table id -> index
            table = np.zeros(top + 1, np.int32)
            table[ids[1:]] = np.arange(1, len(ids), dtype=np.int32)
            local = table[band]
            if np.count_nonzero(local) != np.count_nonzero(band):
                raise OutputError(f"{where}: instance ids are not numbered band by band (an id "
                                  "reappears below a band that lacks it)")
            return cls(ids=ids, local=local, continuing=len(above))
        local = band.astype(np.int32, copy=True)
        local -= start - 1 - len(above)  # new ids
        old = band < start
        old_ids = band[old]
        pos = np.minimum(np.searchsorted(above, old_ids), max(len(above) - 1, 0))
        stray = (old_ids != 0) & ((above[pos] != old_ids) if len(above) else True)
        if stray.any():
            raise OutputError(f"{where}: instance ids are not numbered band by band (id "
                              f"{int(old_ids[stray][0])} reappears below a band that lacks it)")
        local[old] = np.where(old_ids == 0, 0, pos + 1)
        return cls(ids=ids, local=local, continuing=len(above))


def sum_by(local: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """(n,) float64 sums of (h, W) ``values`` per index of ``local`` (0..n-1), in column slabs."""
    total = np.zeros(n, np.float64)
    for x0 in range(0, local.shape[1], SLAB):
        total += np.bincount(local[:, x0 : x0 + SLAB].ravel(), weights=values[:, x0 : x0 + SLAB].ravel(),
                             minlength=n)
    return total


def band_sums(index: BandIndex, classes: np.ndarray, own: tuple[np.ndarray, float] | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per-object sums over one band.

    Parameters
    ----------
    classes : (h, W) class labels of the band. own : ``(values, scale)``: (h, W) probability of
        each pixel's class (times ``1 / scale``), or None.

    Returns
    -------
    ``(sum_p, cls)``: (n,) float64 sum of each object's class probability over its pixels here
    (zeros without ``own``), and (n,) int64 class of each object present. Areas, centroids
    and bounding boxes come exactly from the polygons (unions of pixel squares).
    """
    local = index.local
    n = len(index.ids)
    cls = np.zeros(n, np.int64)
    for x0 in range(0, local.shape[1], SLAB):
        cls[local[:, x0 : x0 + SLAB]] = classes[:, x0 : x0 + SLAB]
    sum_p = sum_by(local, n, own[0]) * own[1] if own is not None else np.zeros(n, np.float64)
    return sum_p, cls
