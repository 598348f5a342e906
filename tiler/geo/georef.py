"""Georeferencing: a GeoTIFF's raster-to-map transform and geokeys, carried to the output.

A GeoTIFF places its raster on the map with either a pixel scale and tie point(s)
(tags 33550 ``ModelPixelScale`` and 33922 ``ModelTiepoint``) or a 4 x 4 matrix (34264
``ModelTransformation``); the projection is in the geokey directory (34735) with its double (34736)
and ASCII (34737) parameters. :class:`GeoReference` keeps all of them as the file states them and
knows how they change when the raster is read at a coarser level or resampled: the pixel scale is
multiplied by the downsample, tie points keep their map position, a matrix gets its raster axes
scaled. :func:`geotiff_tags` gives the tags for writing an output of a given downsample with
tifffile (``extratags``).

>>> g = GeoReference(pixel_scale=(10.0, 10.0, 0.0), tiepoints=((0, 0, 0, 500000.0, 4600000.0, 0),))
>>> g.affine
(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)
>>> g.downsampled(4).affine
(40.0, 0.0, 500000.0, 0.0, -40.0, 4600000.0)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: TIFF tag codes.
PIXEL_SCALE, TIEPOINT, TRANSFORMATION = 33550, 33922, 34264
GEOKEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS = 34735, 34736, 34737
_RASTER_TYPE_KEY = 1025  # GTRasterTypeGeoKey: 1 = PixelIsArea (default), 2 = PixelIsPoint
TAG_NAMES = {
    PIXEL_SCALE: "ModelPixelScaleTag", TIEPOINT: "ModelTiepointTag", TRANSFORMATION: "ModelTransformationTag",
    GEOKEY_DIRECTORY: "GeoKeyDirectoryTag", GEO_DOUBLE_PARAMS: "GeoDoubleParamsTag",
    GEO_ASCII_PARAMS: "GeoAsciiParamsTag",
}


@dataclass(frozen=True)
class GeoReference:
    """The raster-to-model transform and projection of a georeferenced raster.

    Attributes
    ----------
    pixel_scale : ``(sx, sy, sz)`` model units per pixel (ModelPixelScale), or None.
    tiepoints : tuples ``(i, j, k, x, y, z)``: raster point (column i, row j) lies at model (x, y).
    transformation : 4 x 4 row-major matrix (16 floats) mapping ``(i, j, k, 1)`` to model, or None.
    geokeys : the raw GeoKeyDirectory shorts (header + 4 per key), or ().
    double_params, ascii_params : the GeoDoubleParams and GeoAsciiParams the geokeys point into.
    """

    pixel_scale: tuple[float, ...] | None = None
    tiepoints: tuple[tuple[float, ...], ...] = ()
    transformation: tuple[float, ...] | None = None
    geokeys: tuple[int, ...] = ()
    double_params: tuple[float, ...] = ()
    ascii_params: str = ""

    @classmethod
    def from_tiff_tags(cls, tags: Any) -> GeoReference | None:
        """Read from a tifffile ``TiffTags`` (``page.tags``); None when the page is not georeferenced."""

        def value(code: int) -> Any:
            tag = tags.get(code)
            return None if tag is None else tag.value

        scale, ties, matrix = value(PIXEL_SCALE), value(TIEPOINT), value(TRANSFORMATION)
        if matrix is None and (scale is None or ties is None):
            return None
        tie = np.asarray(ties if ties is not None else (), float).reshape(-1, 6)
        return cls(
            pixel_scale=tuple(float(v) for v in scale) if scale is not None else None,
            tiepoints=tuple(tuple(float(v) for v in row) for row in tie),
            transformation=tuple(float(v) for v in matrix) if matrix is not None else None,
            geokeys=tuple(int(v) for v in value(GEOKEY_DIRECTORY) or ()),
            double_params=tuple(float(v) for v in value(GEO_DOUBLE_PARAMS) or ()),
            ascii_params=_text(value(GEO_ASCII_PARAMS)),
        )

    @property
    def pixel_is_point(self) -> bool:
        """True when GTRasterTypeGeoKey says raster coordinates name pixel centres."""
        keys = self.geokeys
        for n in range(4, len(keys) - 3, 4):
            if keys[n] == _RASTER_TYPE_KEY and keys[n + 1] == 0:
                return keys[n + 3] == 2
        return False

    @property
    def affine(self) -> tuple[float, float, float, float, float, float]:
        """GDAL-order ``(a, b, c, d, e, f)``: ``x = a*col + b*row + c``, ``y = d*col + e*row + f``.

        ``(col, row)`` are raster coordinates as the file means them (pixel corners unless
        :attr:`pixel_is_point`). From the matrix if there is one, else the first tie point and the
        pixel scale (y pointing down the raster, so ``e = -sy``).
        """
        if self.transformation is not None:
            m = self.transformation
            return (m[0], m[1], m[3], m[4], m[5], m[7])
        if self.pixel_scale is None or not self.tiepoints:
            raise ValueError("the georeference has neither a transformation nor scale and tie point")
        sx, sy = self.pixel_scale[0], self.pixel_scale[1]
        i, j, _, x, y, _ = self.tiepoints[0]
        return (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)

    def downsampled(self, factor: float | tuple[float, float]) -> GeoReference:
        """The georeference of this raster read with ``factor = (fy, fx)`` source pixels per pixel.

        Output pixel ``n`` covers source pixels ``[n * f, (n + 1) * f)`` along each axis (corners
        aligned, as pyramid levels and :class:`~tiler.sources.ResampledSource` do), so a corner
        at source raster ``i`` is at output ``i / f``; for PixelIsPoint rasters a centre ``i`` is at
        ``(i + 0.5) / f - 0.5``.
        """
        fy, fx = (factor, factor) if isinstance(factor, (int, float, np.number)) else factor
        fy, fx = float(fy), float(fx)
        if fy == 1.0 and fx == 1.0:
            return self
        shift = 0.5 if self.pixel_is_point else 0.0

        def raster(v: float, f: float) -> float:
            return (v + shift) / f - shift

        scale = None
        if self.pixel_scale is not None:
            sx, sy, *rest = self.pixel_scale
            scale = (sx * fx, sy * fy, *rest)
        ties = tuple((raster(t[0], fx), raster(t[1], fy), *t[2:]) for t in self.tiepoints)
        matrix = None
        if self.transformation is not None:
            # model = M @ (i, j, k, 1) with source i = fx * i' + shift * (fx - 1): M' = M @ S.
            s = np.eye(4)
            s[0, 0], s[1, 1] = fx, fy
            s[0, 3], s[1, 3] = shift * (fx - 1), shift * (fy - 1)
            matrix = tuple(float(v) for v in (np.asarray(self.transformation).reshape(4, 4) @ s).ravel())
        return replace(self, pixel_scale=scale, tiepoints=ties, transformation=matrix)

    def named_geokeys(self) -> dict[str, Any]:
        """The geokeys decoded: ``{name: value}`` (ints, floats or lists of floats, strings)."""
        from tifffile import TIFF

        keys, found = self.geokeys, {}
        for n in range(4, len(keys) - 3, 4):
            key, where, count, offset = keys[n : n + 4]
            if where == 0:
                value: Any = offset
            elif where == GEO_DOUBLE_PARAMS:
                doubles = list(self.double_params[offset : offset + count])
                value = doubles[0] if count == 1 and doubles else doubles
            elif where == GEO_ASCII_PARAMS:
                value = self.ascii_params[offset : offset + count].rstrip("|\x00")
            else:
                continue
            try:
                name = TIFF.GEO_KEYS(key).name
            except ValueError:
                name = str(key)
            found[name] = value
        return found

    def to_attrs(self) -> dict[str, Any]:
        """A JSON-ready dict (zarr attribute ``tiler.georeference``); :meth:`from_attrs` reads it.

        Keys: ``affine`` (6 numbers, ``x = a*col + b*row + c``, ``y = d*col + e*row + f``),
        ``pixel_is_point``, ``geokeys`` (decoded, by name) and the raw GeoTIFF tags by their tag
        names (``ModelPixelScaleTag``, ``ModelTiepointTag`` or ``ModelTransformationTag``,
        ``GeoKeyDirectoryTag``, ``GeoDoubleParamsTag``, ``GeoAsciiParamsTag``), which
        ``tiler export-result`` writes as they are.
        """
        attrs: dict[str, Any] = {"affine": list(self.affine), "pixel_is_point": self.pixel_is_point,
                                 "geokeys": self.named_geokeys()}
        for code, _, _, value, _ in geotiff_tags(self):
            attrs[TAG_NAMES[code]] = value if isinstance(value, str) else list(value)
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> GeoReference:
        """Read the raw tags of a :meth:`to_attrs` record."""
        ties = np.asarray(attrs.get("ModelTiepointTag", ()), float).reshape(-1, 6)
        scale, matrix = attrs.get("ModelPixelScaleTag"), attrs.get("ModelTransformationTag")
        return cls(
            pixel_scale=tuple(float(v) for v in scale) if scale else None,
            tiepoints=tuple(tuple(float(v) for v in row) for row in ties),
            transformation=tuple(float(v) for v in matrix) if matrix else None,
            geokeys=tuple(int(v) for v in attrs.get("GeoKeyDirectoryTag", ())),
            double_params=tuple(float(v) for v in attrs.get("GeoDoubleParamsTag", ())),
            ascii_params=str(attrs.get("GeoAsciiParamsTag", "")),
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def geotiff_tags(
    georef: GeoReference, downsample: float | tuple[float, float] = 1.0
) -> list[tuple[int, str, int, Any, bool]]:
    """tifffile ``extratags`` for an output written ``downsample`` source pixels per pixel.

    >>> g = GeoReference(pixel_scale=(10.0, 10.0, 0.0), tiepoints=((0, 0, 0, 5.0, 9.0, 0),),
    ...                  geokeys=(1, 1, 0, 0))
    >>> [(code, value) for code, _, _, value, _ in geotiff_tags(g, 2)][:2]
    [(33550, (20.0, 20.0, 0.0)), (33922, (0.0, 0.0, 0.0, 5.0, 9.0, 0.0))]
    """
    g = georef.downsampled(downsample)
    tags: list[tuple[int, str, int, Any, bool]] = []
    if g.pixel_scale is not None:
        tags.append((PIXEL_SCALE, "d", len(g.pixel_scale), tuple(g.pixel_scale), True))
    if g.tiepoints:
        flat = tuple(float(v) for t in g.tiepoints for v in t)
        tags.append((TIEPOINT, "d", len(flat), flat, True))
    if g.transformation is not None:
        tags.append((TRANSFORMATION, "d", 16, tuple(g.transformation), True))
    if g.geokeys:
        tags.append((GEOKEY_DIRECTORY, "H", len(g.geokeys), tuple(g.geokeys), True))
    if g.double_params:
        tags.append((GEO_DOUBLE_PARAMS, "d", len(g.double_params), tuple(g.double_params), True))
    if g.ascii_params:
        tags.append((GEO_ASCII_PARAMS, "s", 0, g.ascii_params, True))
    return tags
