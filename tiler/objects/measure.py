"""Per-object measurements, summed band by band: pixel count, centroid, mean class probability.

Objects present in a band are indexed densely (:class:`BandIndex`): those continuing from the band
above (ids in its last row) first, then the ids that start in this band, which are consecutive
(see :mod:`~tiler.objects.label`). Sums over a band are then ``numpy.bincount`` over that index,
in column slabs so temporaries stay small, and the sums of objects that go on below are carried to
the next band: memory is one band and one row of open objects, never the whole object count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OutputError

#: Columns per slab of a band when summing (bounds the temporaries to band x SLAB values).
SLAB = 4096
#: The sums kept per object: pixels, sum of column centres, sum of row centres, sum of probability.
FIELDS = ("area", "sum_x", "sum_y", "sum_p")


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
        local = band.astype(np.int32, copy=True)
        local -= start - 1 - len(above)  # new ids
        old = band < start
        if above.size:
            old_ids = band[old]
            pos = np.searchsorted(above, old_ids)
            pos_c = np.minimum(pos, len(above) - 1)
            stray = (old_ids != 0) & (above[pos_c] != old_ids)
            if stray.any():
                raise OutputError(f"{where}: instance ids are not numbered band by band (id "
                                  f"{int(old_ids[stray][0])} reappears below a band that lacks it)")
            local[old] = np.where(old_ids == 0, 0, pos_c + 1)
        else:
            if (band[old] != 0).any():
                raise OutputError(f"{where}: instance ids are not numbered band by band")
            local[old] = 0
        return cls(ids=ids, local=local, continuing=len(above))


def band_sums(index: BandIndex, y0: int, classes: np.ndarray, probability: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Sums over one band starting at row ``y0``.

    Parameters
    ----------
    classes : (h, W) class labels of the band. probability : (C, h, W) class probabilities or None.

    Returns
    -------
    ``(sums, cls)``: (n, 4) float64 :data:`FIELDS` per index (pixel centres at ``+ 0.5``
    added later), and (n,) int64 class of each object.
    """
    local = index.local
    h, w = local.shape
    n = len(index.ids)
    sums = np.zeros((n, len(FIELDS)), np.float64)
    cls = np.zeros(n, np.int64)
    rows = np.arange(y0, y0 + h, dtype=np.float64)[:, None]
    for x0 in range(0, w, SLAB):
        x1 = min(x0 + SLAB, w)
        sl = local[:, x0:x1]
        flat = sl.ravel()
        sums[:, 0] += np.bincount(flat, minlength=n)
        sums[:, 1] += np.bincount(flat, weights=np.broadcast_to(np.arange(x0, x1, dtype=np.float64),
                                                                 sl.shape).ravel(), minlength=n)
        sums[:, 2] += np.bincount(flat, weights=np.broadcast_to(rows, sl.shape).ravel(), minlength=n)
        c = classes[:, x0:x1]
        cls[sl] = c
        if probability is not None:
            p = np.take_along_axis(probability[:, :, x0:x1], c[None].astype(np.intp), 0)[0]
            sums[:, 3] += np.bincount(flat, weights=p.ravel(), minlength=n)
    return sums, cls
