"""``tiler export-result --format geojson|qupath|gpkg|geoparquet``: an output's objects as vectors.

Steps: open the output (complete, unless ``partial``), choose the classes, label the instances
into ``labels/instances`` and take each object out of that pass as soon as it is closed
(:class:`~tiler.objects.polygons.ObjectTracker`), or, when the stored instances were made with the
same settings from the same run, stream them (:func:`~tiler.objects.polygons.iter_objects`); drop
objects under ``min_area`` pixels, simplify, move them into the output's coordinates and write them
(and optionally the measurement table), band by band.

Coordinates: for a georeferenced output, its CRS (the recorded GeoTIFF transform; the CRS from the
EPSG code of the geokeys); otherwise level-0 pixels of the input (x = column, y = row, pixel
edges), scaled by the downsample the run read at, which is what QuPath expects for a slide.
Areas: pixels, and µm² (slides with a pixel size) or m² (a CRS in metres).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import zarr

from ..errors import OutputError, SettingsError
from ..results.result import StoredResult, open_result
from .classes import ClassImage, check_kind, select_classes
from .label import INSTANCES, Band, open_instances, source_stamp, write_instances
from .polygons import ObjectBatch, ObjectTracker, default_piece_workers, iter_objects
from .writers import Features, GeoJSONWriter, GeoPackageWriter, GeoParquetWriter, TableWriter, Writer

#: Vector formats of :func:`export_objects`.
VECTOR_FORMATS = ("geojson", "qupath", "gpkg", "geoparquet")
_SUFFIX = {"geojson": ".objects.geojson", "qupath": ".qupath.geojson", "gpkg": ".objects.gpkg",
           "geoparquet": ".objects.parquet"}
#: Class colours for QuPath (RGB), class c >= 1 uses PALETTE[(c - 1) % 12 + 1] (as the preview).
PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (170, 110, 40),
], np.uint8)


def default_objects_path(result_path: str | os.PathLike[str], fmt: str) -> Path:
    """``scan.zarr`` -> ``scan.objects.geojson`` (``.qupath.geojson``, ``.objects.gpkg``,
    ``.objects.parquet``)."""
    path = Path(os.fspath(result_path).rstrip("/"))
    stem = path.name[:-5] if path.name.lower().endswith(".zarr") else path.name
    return path.with_name(stem + _SUFFIX[fmt])


def format_of(path: str | os.PathLike[str]) -> str:
    """The vector format a file name asks for: ``.gpkg``, ``.parquet``/``.geoparquet``,
    ``.qupath.geojson``/``.qupath.json``, ``.geojson``/``.json``."""
    name = Path(path).name.lower()
    for fmt, ends in (("qupath", (".qupath.geojson", ".qupath.json")), ("gpkg", (".gpkg",)),
                      ("geoparquet", (".parquet", ".geoparquet")), ("geojson", (".geojson", ".json"))):
        if name.endswith(ends):
            return fmt
    raise SettingsError(f"{path}: cannot tell the vector format from the name; end it in .geojson, "
                        ".qupath.geojson, .gpkg or .parquet")


@dataclass(frozen=True)
class Placement:
    """Output pixel coordinates -> the written coordinates, and what a pixel's area is in units.

    ``affine``: GDAL order ``(a, b, c, d, e, f)``, ``X = a*x + b*y + c``, ``Y = d*x + e*y + f``.
    """

    affine: tuple[float, float, float, float, float, float]
    crs: str | None = None  #: "EPSG:n", or None (pixels, or a CRS without an EPSG code)
    unit_area: float | None = None  #: physical area of one output pixel
    area_column: str | None = None  #: "area_um2" or "area_m2"

    def apply(self, geometry: np.ndarray) -> np.ndarray:
        a, b, c, d, e, f = self.affine
        if (a, b, c, d, e, f) == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
            return geometry
        m = np.array([[a, d], [b, e]])
        return shapely.transform(geometry, lambda xy: xy @ m + (c, f))

    def points(self, xy: np.ndarray) -> np.ndarray:
        a, b, c, d, e, f = self.affine
        return np.stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f], axis=1)


def placement(result: StoredResult) -> Placement:
    geo = result.georeference
    if geo and "affine" in geo:
        a, b, c, d, e, f = (float(v) for v in geo["affine"])
        if geo.get("pixel_is_point"):  # the affine names pixel centres; polygons are on edges
            c, f = c - 0.5 * (a + b), f - 0.5 * (d + e)
        keys = geo.get("geokeys", {}) or {}
        code = keys.get("ProjectedCSTypeGeoKey") or keys.get("GeographicTypeGeoKey")
        crs = f"EPSG:{int(code)}" if isinstance(code, int) and 0 < code < 32767 else None
        if crs is None:
            warnings.warn(f"{result.path}: its georeference names no EPSG code; objects are written in "
                          "map coordinates without a CRS", stacklevel=3)
        area_col, unit = None, None
        if crs is not None:
            from pyproj import CRS

            info = CRS.from_user_input(crs).axis_info
            if info and all(ax.unit_name in ("metre", "meter") for ax in info[:2]):
                area_col, unit = "area_m2", abs(a * e - b * d)
        return Placement((a, b, c, d, e, f), crs, unit, area_col)
    fy, fx = (float(v) for v in (result.record.get("input", {}).get("downsample") or (1.0, 1.0)))
    mpp = result.mpp
    return Placement((fx, 0.0, 0.0, 0.0, fy, 0.0), None, mpp[0] * mpp[1] if mpp else None,
                     "area_um2" if mpp else None)


def _objects_group(result: StoredResult, scratch: list[Path]) -> tuple[zarr.Group, bool]:
    """Where the instances go: the output group itself, or a scratch group beside it (an incomplete
    or unwritable output); and whether it is the output's."""
    if result.record.get("complete") is not False:
        try:
            return zarr.open_group(str(result.path), mode="r+"), True
        except OSError:  # a read-only output: label beside it
            pass
    tmp = Path(tempfile.mkdtemp(prefix=".tiler-instances-", dir=Path(result.path).parent))  # local (export_objects)
    scratch.append(tmp)
    return zarr.open_group(str(tmp / "instances.zarr"), mode="w", zarr_format=3), False


def _stream(result: StoredResult, image: ClassImage, connectivity: int, scratch: list[Path],
            emit: Callable[[ObjectBatch], None]) -> None:
    """Every object to ``emit``, band by band: from the stored instances when they were made with
    these settings from this run, else while labelling them (the objects come out of pass 1)."""
    group, own = _objects_group(result, scratch)
    found = open_instances(group, keep=image.keep, connectivity=connectivity, stamp=source_stamp(result)) \
        if own else None
    if found is not None:
        for batch in iter_objects(found, image.band, band=int(found.chunks[0]), probabilities=image.class_probability,
                                  where=str(result.path),
                                  workers=default_piece_workers(image.shape[0], int(found.chunks[0]))):
            emit(batch)
        return
    tracker = ObjectTracker(image.shape[0], workers=default_piece_workers(image.shape[0], image.band_height))

    def each(band: Band) -> None:
        for batch in tracker.push(band, image.class_probability(band.y0, band.y0 + band.local.shape[0],
                                                               band.labels)):
            emit(batch)

    try:
        write_instances(image, group, connectivity=connectivity, pyramid=own, each=each)
    except BaseException:
        tracker.close()
        raise
    for batch in tracker.finish():
        emit(batch)


def _features(batch: ObjectBatch, where: Placement, names: list[str],
              simplify: float) -> Features:
    geometry = batch.geometry
    if simplify > 0:
        geometry = shapely.simplify(geometry, simplify, preserve_topology=True)
    geometry = where.apply(geometry)
    centroid = where.points(batch.centroid)
    bounds = shapely.bounds(geometry)
    labels = np.asarray([names[c] if c < len(names) else str(c) for c in batch.classes.tolist()], object)
    cols: dict[str, np.ndarray] = {
        "id": batch.ids, "class": batch.classes, "class_name": labels, "area_px": batch.area,
        "centroid_x": centroid[:, 0], "centroid_y": centroid[:, 1],
        "bbox_x0": bounds[:, 0], "bbox_y0": bounds[:, 1], "bbox_x1": bounds[:, 2], "bbox_y1": bounds[:, 3],
        "mean_probability": batch.probability,
    }
    if where.area_column and where.unit_area is not None:
        cols[where.area_column] = batch.area * where.unit_area
    colours = PALETTE[np.where(batch.classes == 0, 0, (batch.classes - 1) % (len(PALETTE) - 1) + 1)]
    return Features(geometry, cols, colours)


def export_objects(
    result: str | os.PathLike[str] | StoredResult,
    out: str | os.PathLike[str] | None = None,
    *,
    format: str | None = None,
    classes: Sequence[str | int] | None = None,
    connectivity: int = 4,
    min_area: float = 0,
    simplify: float = 0,
    table: str | os.PathLike[str] | None = None,
    partial: bool = False,
    overwrite: bool = False,
    object_type: str = "annotation",
) -> Path:
    """Write one polygon per object of an output (holes kept, never split at a chunk border).

    Parameters
    ----------
    result : the output group (of ``tiler run --kind labels`` or ``--kind probs``).
    out : the vector file (default :func:`default_objects_path`); format : one of
        :data:`VECTOR_FORMATS` (default: from ``out``'s name, else geojson).
    classes : class names or numbers (default: all but background and ``fill``).
    connectivity : 4 (edge neighbours) or 8 (also corners: such objects become MultiPolygons).
    min_area : drop objects of fewer pixels (of the output). simplify : Douglas-Peucker tolerance
        in output pixels (0: exact pixel outlines, which rasterise back to the mask).
    table : also write the measurements to this ``.parquet`` or ``.csv`` file.
    partial : accept an output whose run has not finished (what is written so far).
    overwrite : replace existing files. object_type : QuPath ``annotation`` or ``detection``.

    Returns the vector file's path.
    """
    if format is None:
        format = format_of(out) if out is not None else "geojson"
    if format not in VECTOR_FORMATS:
        raise SettingsError(f"unknown vector format {format!r}; choose one of {', '.join(VECTOR_FORMATS)}")
    if connectivity not in (4, 8):
        raise SettingsError(f"--connectivity {connectivity}: use 4 or 8")
    if min_area < 0 or simplify < 0:
        raise SettingsError("--min-area and --simplify must not be negative")
    if object_type not in ("annotation", "detection"):
        raise SettingsError(f"QuPath object type {object_type!r}: use annotation or detection")
    if not isinstance(result, StoredResult):
        result = open_result(result, require_complete=not partial)
    if not isinstance(result.path, Path):
        raise OutputError(f"{result.path}: objects are written from a local output; copy it here first "
                          "(an object-store output is not labelled in place)")
    check_kind(result)
    keep = select_classes(result, classes)
    path = Path(out) if out is not None else default_objects_path(result.path, format)
    targets = [path] + ([Path(table)] if table is not None else [])
    for target in targets:
        if target.exists() and not overwrite:
            raise OutputError(f"{target}: already exists; pass --overwrite to replace it")
        if target.resolve() == result.path.resolve() or (
                result.input_path is not None and target.resolve() == result.input_path.resolve()):
            raise OutputError(f"{target}: is this output or its input; choose another file")
        if not target.parent.is_dir():
            raise OutputError(f"{target}: its folder does not exist")
    if table is not None and Path(table).resolve() == path.resolve():
        raise OutputError(f"{table}: the table and the vector file must be different files")
    where = placement(result)
    image = ClassImage(result, tuple(keep))
    names = result.class_names() or [str(c) for c in range(max(keep, default=0) + 1)]
    props = ["id", "class", "class_name", "area_px", *([where.area_column] if where.area_column else []),
             "centroid_x", "centroid_y", "mean_probability"]
    table_cols = props[:-1] + ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "mean_probability"]
    scratch: list[Path] = []
    writers: list[Writer] = []
    try:
        multi = connectivity == 8
        if format in ("geojson", "qupath"):
            writers.append(GeoJSONWriter(path, props, crs=where.crs, qupath=format == "qupath",
                                         object_type=object_type))
        elif format == "gpkg":
            writers.append(GeoPackageWriter(path, props, crs=_wkt(where.crs), multi=multi))
        else:
            writers.append(GeoParquetWriter(path, props, crs_json=_projjson(where.crs), multi=multi))
        if table is not None:
            writers.append(TableWriter(Path(table), table_cols))

        def emit(batch: ObjectBatch) -> None:
            if min_area > 0:
                batch = batch.take(batch.area >= min_area)
            if len(batch):
                features = _features(batch, where, names, simplify)
                for writer in writers:
                    writer.write(features)

        _stream(result, image, connectivity, scratch, emit)
        for writer in writers:
            writer.close()
        writers.clear()
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the objects ({exc.strerror or exc})") from None
    finally:
        for writer in writers:
            writer.abort()
        for tmp in scratch:
            shutil.rmtree(tmp, ignore_errors=True)
    _record_export(result, path, scratch)
    return path


def _record_export(result: StoredResult, path: Path, scratch: list[Path]) -> None:
    """Note the written file in ``labels/instances`` (what ``tiler run --objects`` resumes by)."""
    if scratch:
        return
    try:
        node = zarr.open_group(str(Path(result.path) / INSTANCES), mode="r+")
        meta = dict(node.attrs.get("tiler_objects", {}))
        meta["exports"] = sorted(set(meta.get("exports", [])) | {str(path.resolve())})
        node.attrs["tiler_objects"] = meta
    except (OSError, KeyError, ValueError):
        pass


def exported(result_path: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists and was written from the current instances of this output."""
    try:
        node = zarr.open_group(str(Path(result_path) / INSTANCES), mode="r")
    except (OSError, KeyError, ValueError, FileNotFoundError):
        return False
    meta = node.attrs.get("tiler_objects", {})
    return Path(path).exists() and str(Path(path).resolve()) in meta.get("exports", [])


def _wkt(crs: str | None) -> str | None:
    if crs is None:
        return None
    from pyproj import CRS

    return str(CRS.from_user_input(crs).to_wkt())


def _projjson(crs: str | None) -> dict[str, Any] | None:
    if crs is None:
        return None
    from pyproj import CRS

    return dict(CRS.from_user_input(crs).to_json_dict())
