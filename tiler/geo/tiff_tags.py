"""GeoTIFF tags from a georeference record (the output's ``tiler.georeference`` attribute).

Accepted forms, all keys optional and mixable (a record without any of them is no georeference):

* tifffile's ``TiffFile.geotiff_metadata`` dict, as JSON: ``ModelPixelScale``, ``ModelTiepoint``,
  ``ModelTransformation`` and GeoKey names (``GTModelTypeGeoKey``, ``ProjectedCSTypeGeoKey``, ...)
  at the top level, plus ``KeyDirectoryVersion`` / ``KeyRevision`` / ``KeyRevisionMinor``;
* ``geokeys``: a dict of GeoKey names (or numeric ids) to int, float, list of floats or str;
* ``transform`` / ``affine``: 6 numbers ``(a, b, c, d, e, f)`` in rasterio's order
  (``x = a*col + b*row + c``, ``y = d*col + e*row + f``), or a 3 x 3 / 4 x 4 matrix;
  ``geotransform``: GDAL's ``(c, a, b, f, d, e)``;
* raw tag names with their values: ``ModelPixelScaleTag``, ``ModelTiepointTag``,
  ``ModelTransformationTag``, ``GeoKeyDirectoryTag``, ``GeoDoubleParamsTag``, ``GeoAsciiParamsTag``.
"""

from __future__ import annotations

from typing import Any

from tifffile import TIFF

from ..errors import OutputError

MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION = 33550, 33922, 34264
GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS = 34735, 34736, 34737
_RAW = {
    "ModelPixelScaleTag": (MODEL_PIXEL_SCALE, "d"), "ModelTiepointTag": (MODEL_TIEPOINT, "d"),
    "ModelTransformationTag": (MODEL_TRANSFORMATION, "d"), "GeoKeyDirectoryTag": (GEO_KEY_DIRECTORY, "H"),
    "GeoDoubleParamsTag": (GEO_DOUBLE_PARAMS, "d"), "GeoAsciiParamsTag": (GEO_ASCII_PARAMS, "s"),
}
_HEADER = ("KeyDirectoryVersion", "KeyRevision", "KeyRevisionMinor")
_KEY_IDS = {k.name: int(k.value) for k in TIFF.GEO_KEYS}

Tag = tuple[int, str, int, Any, bool]


def _floats(name: str, value: Any) -> list[float]:
    try:
        flat = [float(v) for row in value for v in (row if isinstance(row, (list, tuple)) else [row])]
    except (TypeError, ValueError):
        raise OutputError(f"georeference: {name} must be numbers, got {value!r}") from None
    return flat


def _affine_tags(a: float, b: float, c: float, d: float, e: float, f: float) -> list[Tag]:
    if b == 0 and d == 0:
        return [(MODEL_PIXEL_SCALE, "d", 3, (a, -e, 0.0), True),
                (MODEL_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, c, f, 0.0), True)]
    matrix = (a, b, 0.0, c, d, e, 0.0, f, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    return [(MODEL_TRANSFORMATION, "d", 16, matrix, True)]


def _transform_tags(geo: dict[str, Any]) -> list[Tag]:
    for name in ("transform", "affine"):
        if name in geo:
            v = _floats(name, geo[name])
            if len(v) in (6, 9):
                return _affine_tags(*v[:6])
            if len(v) == 16:
                return [(MODEL_TRANSFORMATION, "d", 16, tuple(v), True)]
            raise OutputError(f"georeference: {name} needs 6, 9 or 16 numbers, got {len(v)}")
    if "geotransform" in geo:
        v = _floats("geotransform", geo["geotransform"])
        if len(v) != 6:
            raise OutputError(f"georeference: geotransform needs 6 numbers (GDAL order), got {len(v)}")
        c, a, b, f, d, e = v
        return _affine_tags(a, b, c, d, e, f)
    tags: list[Tag] = []
    for name, code in (("ModelPixelScale", MODEL_PIXEL_SCALE), ("ModelTiepoint", MODEL_TIEPOINT),
                       ("ModelTransformation", MODEL_TRANSFORMATION)):
        if name in geo:
            v = _floats(name, geo[name])
            tags.append((code, "d", len(v), tuple(v), True))
    return tags


def _key_directory(keys: dict[int, Any], header: tuple[int, int, int]) -> list[Tag]:
    """GeoKeyDirectoryTag with its double and ASCII parameter tags, keys sorted by id."""
    directory = [*header, len(keys)]
    doubles: list[float] = []
    ascii_params = ""
    for key in sorted(keys):
        value = keys[key]
        if isinstance(value, str):
            directory += [key, GEO_ASCII_PARAMS, len(value) + 1, len(ascii_params)]
            ascii_params += value + "|"
        elif isinstance(value, float) or (isinstance(value, (list, tuple)) and value):
            values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            directory += [key, GEO_DOUBLE_PARAMS, len(values), len(doubles)]
            doubles += values
        elif isinstance(value, int) and 0 <= value <= 65535:
            directory += [key, 0, 1, int(value)]
        else:
            raise OutputError(f"georeference: GeoKey {key} has a value tiler cannot write: {value!r}")
    tags: list[Tag] = [(GEO_KEY_DIRECTORY, "H", len(directory), tuple(directory), True)]
    if doubles:
        tags.append((GEO_DOUBLE_PARAMS, "d", len(doubles), tuple(doubles), True))
    if ascii_params:
        tags.append((GEO_ASCII_PARAMS, "s", 0, ascii_params, True))
    return tags


def _geokeys(geo: dict[str, Any]) -> dict[int, Any]:
    found: dict[int, Any] = {}
    nested = geo.get("geokeys") or {}
    if not isinstance(nested, dict):
        raise OutputError(f"georeference: geokeys must be a mapping of names to values, got {nested!r}")
    for name, value in [*geo.items(), *nested.items()]:
        key = _KEY_IDS.get(str(name))
        if key is None and str(name).isdigit() and name in nested:
            key = int(name)
        if key is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        codes = TIFF.GEO_CODES.get(key)
        if isinstance(value, str) and codes is not None:  # an enum name, e.g. "ModelType.Projected"
            try:
                value = int(codes[value.split(".")[-1]])
            except KeyError:
                pass
        found[key] = value
    return found


def geotiff_tags(geo: dict[str, Any] | None) -> list[Tag]:
    """``extratags`` for ``tifffile.TiffWriter.write`` from a georeference record ([] for none).

    >>> tags = geotiff_tags({"transform": [10, 0, 500000, 0, -10, 4000000],
    ...                      "geokeys": {"GTModelTypeGeoKey": 1, "ProjectedCSTypeGeoKey": 32632}})
    >>> [t[0] for t in tags]
    [33550, 33922, 34735]
    >>> tags[0][3], tags[2][3]
    ((10.0, 10.0, 0.0), (1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32632))
    """
    if not geo:
        return []
    raw = [(code, dtype, geo[name]) for name, (code, dtype) in _RAW.items() if name in geo]
    if raw:
        tags: list[Tag] = []
        for code, dtype, value in raw:
            if dtype == "s":
                tags.append((code, "s", 0, str(value), True))
            else:
                v = [float(x) for x in value] if dtype == "d" else [int(x) for x in value]
                tags.append((code, dtype, len(v), tuple(v), True))
        return tags
    tags = _transform_tags(geo)
    keys = _geokeys(geo)
    if keys:
        header = tuple(int(geo.get(h, d)) for h, d in zip(_HEADER, (1, 1, 0)))
        tags += _key_directory(keys, header)  # type: ignore[arg-type]
    return tags
