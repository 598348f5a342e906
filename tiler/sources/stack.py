"""A band-per-file product as one multi-channel image: a STAC item's assets on one pixel grid.

Sentinel-2 and Landsat products store one band per file, at different resolutions (10, 20, 60 m).
:func:`open_stac` reads a STAC item (``pystac``), takes its data assets — or the ones
``--channels`` names, by asset key, ``eo:bands`` name or common name (``red``, ``nir``), or number —
and :class:`StackSource` stacks them as channels on the grid of the finest of them. A coarser band
is resampled through the transforms, by nearest neighbour by default: fine pixel ``(y, x)`` takes
the coarse pixel containing its centre, so a 20 m band on a 10 m grid is that band with every pixel
repeated 2 x 2, exactly what stacking by hand gives. ``resampling="bilinear"`` (``--resampling
bilinear``) interpolates between the centres of the 2 x 2 coarse pixels around the fine pixel's
centre instead (clamped at the edges, as GDAL's bilinear upsampling is), rows then columns in
float32, so a region and its halves give the same pixels; a band already on the fine grid is
copied exactly either way. A fine pixel whose interpolation weighs a nodata pixel is nodata
(its value would mix the nodata value in). (A GDAL VRT with ``-separate`` bands stacks inside GDAL and is read by
:class:`~tiler.sources.raster.RasterioSource`.)

All assets must share the CRS and cover the same extent (within one pixel of the coarsest); each
is a local file GDAL can read.

May import: errors, geo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SettingsError
from ._base import BAND_RESAMPLING, ReadOptions, SourceInfo
from .raster import RasterioSource

#: Asset roles that are never image data.
_NOT_DATA = {"thumbnail", "overview", "metadata", "visual"}
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")


def is_stac_item(path: Path) -> bool:
    """True for a JSON file that is a STAC item (``"type": "Feature"`` with ``stac_version``)."""
    try:
        with open(path, "rb") as fh:
            head = json.loads(fh.read(1 << 24))
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("type") == "Feature" and "stac_version" in head


def _band_names(asset: Any) -> list[str]:
    names = []
    for entry in [*(asset.extra_fields.get("eo:bands") or []), *(asset.extra_fields.get("bands") or [])]:
        if isinstance(entry, dict):
            names += [str(entry[k]) for k in ("name", "common_name") if entry.get(k)]
    return names


def _is_data(asset: Any) -> bool:
    roles = set(asset.roles or ())
    if roles:
        return "data" in roles or not roles & _NOT_DATA
    media = (asset.media_type or "").split(";")[0].strip()
    return media.startswith(_RASTER_TYPES) or Path(asset.href).suffix.lower() in (".tif", ".tiff", ".jp2")


def choose_assets(path: Path, item: Any, channels: tuple[int | str, ...] | None) -> list[tuple[str, Any]]:
    """``[(key, asset)]``: the item's data assets in order, or those ``channels`` names/numbers."""
    data = [(k, a) for k, a in item.assets.items() if _is_data(a)]
    if channels is None:
        if not data:
            raise InputError(f"{path}: the STAC item has no data assets (roles 'data' or raster media types)")
        return data
    chosen = []
    for c in channels:
        if isinstance(c, int):
            if not 0 <= c < len(data):
                raise SettingsError(f"{path}: --channels {c}: the item has {len(data)} data asset(s), numbered "
                                    f"0..{len(data) - 1} ({', '.join(k for k, _ in data)})")
            chosen.append(data[c])
            continue
        found = [(k, a) for k, a in item.assets.items() if k == c] or [
            (k, a) for k, a in item.assets.items() if c in _band_names(a)]
        if not found:
            raise SettingsError(f"{path}: --channels {c!r}: no asset or band of that name; the item has "
                                f"{', '.join(item.assets)}")
        chosen.append(found[0])
    return chosen


class StackSource:
    """Single- or multi-band rasters stacked as channels on the grid of the finest one.

    Parameters
    ----------
    name : the stack's name (the STAC item's path).
    paths : one raster per group of channels; all their bands are used, in order.
    labels : a name per raster (asset keys), for ``tiler info``.
    resampling : "nearest" or "bilinear", for bands coarser than the grid (see the module docstring).
    """

    def __init__(self, name: str, paths: list[Path], labels: list[str] | None = None, *,
                 resampling: str = "nearest") -> None:
        if resampling not in BAND_RESAMPLING:
            raise SettingsError(f"{name}: --resampling must be one of {', '.join(BAND_RESAMPLING)}, "
                                f"got {resampling!r}")
        self.name = name
        self.resampling = resampling
        self.sources = [RasterioSource(p) for p in paths]
        try:
            self._setup(labels or [p.name for p in paths])
        except BaseException:
            self.close()
            raise

    def _setup(self, labels: list[str]) -> None:
        crs = {s.info.extra.get("crs") for s in self.sources}
        if len(crs) > 1:
            raise InputError(f"{self.name}: the bands are in different CRSs ({', '.join(map(str, crs))}); "
                             "reproject them to one first (gdalwarp)")
        affines = []
        for s in self.sources:
            g = s.info.georeference
            if g is None:
                raise InputError(f"{s.name}: has no georeference, so it cannot be placed on the stack's grid")
            affine = g.affine
            if affine[1] or affine[3]:
                raise InputError(f"{s.name}: a rotated raster; tiler stacks north-up rasters only")
            affines.append(affine)
        fine = min(range(len(self.sources)), key=lambda k: abs(affines[k][0]) * abs(affines[k][4]))
        a, _, c, _, e, f = affines[fine]
        h, w, _ = self.sources[fine].shape
        self._maps = []
        for s, (ak, _, ck, _, ek, fk) in zip(self.sources, affines):
            hk, wk, _ = s.shape
            # the extents agree within one pixel of this band
            if (abs(c - ck) > abs(ak) or abs((c + w * a) - (ck + wk * ak)) > abs(ak)
                    or abs(f - fk) > abs(ek) or abs((f + h * e) - (fk + hk * ek)) > abs(ek)):
                raise InputError(f"{s.name}: covers another extent than {self.sources[fine].name}; the bands "
                                 "of a stack must cover the same area")
            # band pixel of the fine pixel centre: floor((map - origin_k) / size_k)
            self._maps.append(((f - fk) / ek, e / ek, (c - ck) / ak, a / ak, hk, wk))
        dtype = np.result_type(*(s.dtype for s in self.sources))
        channels = sum(s.shape[2] for s in self.sources)
        self.shape = (h, w, channels)
        if self.resampling == "bilinear" and any(m[1] != 1 or m[3] != 1 for m in self._maps):
            dtype = np.result_type(dtype, np.float32)  # interpolated values are not integers
        self.dtype = np.dtype(dtype)
        self.chunks: tuple[int, int] | None = self.sources[fine].chunks
        self.masked = any(s.masked for s in self.sources)
        names = [lab if s.shape[2] == 1 else f"{lab}:{b}" for lab, s in zip(labels, self.sources)
                 for b in range(s.shape[2])]
        nodata = {s.info.nodata for s in self.sources}
        self.info = SourceInfo(
            format="stac", chunks=self.sources[fine].info.chunks, levels=((h, w),),
            georeference=self.sources[fine].info.georeference,
            extra={"bands": names, "crs": crs.pop(),
                   "resolutions": [abs(m[0]) for m in affines], "resampling": self.resampling},
            nodata=nodata.pop() if len(nodata) == 1 else None, read=ReadOptions(), reader="rasterio",
        )

    def _index(self, k: int, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        oy, sy, ox, sx, hk, wk = self._maps[k]
        ys = np.clip(np.floor(oy + (np.arange(y0, y1) + 0.5) * sy).astype(np.int64), 0, hk - 1)
        xs = np.clip(np.floor(ox + (np.arange(x0, x1) + 0.5) * sx).astype(np.int64), 0, wk - 1)
        return ys, xs

    def _band(self, k: int, read: str, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        _, sy, _, sx, _, _ = self._maps[k]
        if self.resampling == "bilinear" and (sy != 1 or sx != 1):
            return self._bilinear(k, y0, y1, x0, x1) if read == "read" else self._bilinear_valid(k, y0, y1, x0, x1)
        ys, xs = self._index(k, y0, y1, x0, x1)
        a, b, c, d = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        data = getattr(self.sources[k], read)(a, b, c, d)
        return data[np.ix_(ys - a, xs - c)]

    def _taps(self, k: int, y0: int, y1: int, x0: int, x1: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """``(iy, wy, ix, wx)`` of band ``k`` for the fine region (:func:`_linear_taps`), the
        indices made relative to the band region ``(a, b, c, d)`` they read, which comes last."""
        oy, sy, ox, sx, hk, wk = self._maps[k]
        (iy, wy), (ix, wx) = _linear_taps(oy, sy, y0, y1, hk), _linear_taps(ox, sx, x0, x1, wk)
        a, c = int(iy.min()), int(ix.min())
        return iy - a, wy, ix - c, wx, (a, int(iy.max()) + 1, c, int(ix.max()) + 1)

    def _bilinear(self, k: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0, bands) float32: band ``k`` interpolated at the fine pixel centres."""
        iy, wy, ix, wx, region = self._taps(k, y0, y1, x0, x1)
        data = self.sources[k].read(*region).astype(np.float32, copy=False)
        rows = data[iy[:, 0]] * wy[:, :1, None] + data[iy[:, 1]] * wy[:, 1:, None]
        return rows[:, ix[:, 0]] * wx[None, :, :1] + rows[:, ix[:, 1]] * wx[None, :, 1:]

    def _bilinear_valid(self, k: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) bool: where every coarse pixel the interpolation weighs has data (a
        pixel next to a nodata pixel of band ``k`` is nodata too: its value would mix that in)."""
        iy, wy, ix, wx, region = self._taps(k, y0, y1, x0, x1)
        valid = self.sources[k].valid_mask(*region)
        rows = (valid[iy[:, 0]] | (wy[:, :1] == 0)) & (valid[iy[:, 1]] | (wy[:, 1:] == 0))
        return (rows[:, ix[:, 0]] | (wx[None, :, 0] == 0)) & (rows[:, ix[:, 1]] | (wx[None, :, 1] == 0))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0, channels): every band on the stack's grid."""
        out = np.empty((y1 - y0, x1 - x0, self.shape[2]), self.dtype)
        n = 0
        for k, s in enumerate(self.sources):
            out[..., n : n + s.shape[2]] = self._band(k, "read", y0, y1, x0, x1)
            n += s.shape[2]
        return out

    def valid_mask(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(h, w) bool: where every band has data."""
        valid = np.ones((y1 - y0, x1 - x0), bool)
        for k, s in enumerate(self.sources):
            if s.masked:
                valid &= self._band(k, "valid_mask", y0, y1, x0, x1)
        return valid

    def close(self) -> None:
        for s in self.sources:
            s.close()


def _linear_taps(origin: float, step: float, n0: int, n1: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Band pixels and weights of fine pixels ``[n0, n1)`` along an axis: two (n1 - n0, 2) arrays.

    The fine pixel centre ``n + 0.5`` lies at band coordinate ``u = origin + (n + 0.5) * step``;
    band pixel ``j``'s centre is at ``j + 0.5``. Indices are clamped to ``[0, size)``.

    >>> idx, w = _linear_taps(0.0, 0.5, 0, 4, 2)  # a band at twice the pixel size
    >>> idx.tolist(), w[:, 1].tolist()
    ([[0, 0], [0, 1], [0, 1], [1, 1]], [0.0, 0.25, 0.75, 0.0])
    """
    centre = origin + (np.arange(n0, n1, dtype=np.float64) + 0.5) * step - 0.5
    first = np.floor(centre)
    t = centre - first
    idx = np.clip(first.astype(np.int64)[:, None] + np.arange(2)[None, :], 0, size - 1)
    w = np.stack([1.0 - t, t], axis=1)
    w[idx[:, 0] == idx[:, 1]] = (1.0, 0.0)  # clamped at an edge: the edge pixel itself
    return idx, w.astype(np.float32)


def open_stac(path: str | os.PathLike[str], *, level: int = 0,
              channels: tuple[int | str, ...] | None = None, resampling: str = "nearest") -> StackSource:
    """The STAC item at ``path`` as a :class:`StackSource` of its chosen assets."""
    path = Path(path)
    try:
        import pystac
    except ImportError:
        raise InputError(f"{path}: STAC items need the geo extra: pip install 'tiler-engine[geo]'") from None
    if level:
        raise InputError(f"{path}: a STAC stack has one resolution level (its finest band); level {level} "
                         "does not exist")
    try:
        item = pystac.Item.from_file(str(path))
    except (ValueError, KeyError, TypeError, pystac.STACError) as exc:
        raise InputError(f"{path}: not a readable STAC item ({exc})") from None
    chosen = choose_assets(path, item, channels)
    files = []
    for key, asset in chosen:
        href = asset.get_absolute_href() or asset.href
        if "://" in href and not href.startswith("file://"):
            raise InputError(f"{path}: asset {key!r} is remote ({href}); tiler stacks local files")
        files.append(Path(href.removeprefix("file://")))
    return StackSource(str(path), files, [k for k, _ in chosen], resampling=resampling)
