"""Writers of objects, batch by batch: GeoJSON, QuPath GeoJSON, GeoPackage, GeoParquet, and the
measurement table as Parquet or CSV.

Each writer streams into a hidden partial file beside its target (``.stem.partial.suffix``) and renames
it into place in :meth:`Writer.close`, so a failed or killed export never leaves half a file or
destroys an earlier one. Libraries: the GeoJSON text is written directly (shapely's
``to_geojson`` for the geometries), GeoPackage through pyogrio's Arrow writer (GDAL, appending one
batch at a time), GeoParquet and the tables through pyarrow's streaming Parquet and CSV writers
(GeoParquet 1.0 ``geo`` metadata: WKB geometry column and its CRS as PROJJSON, so geopandas reads
the CRS back).

A batch is a :class:`Features`: geometries in the output's coordinates and a column dict.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import shapely

from ..errors import OutputError


@dataclass(frozen=True)
class Features:
    """A batch of objects to write.

    Attributes
    ----------
    geometry : (n,) shapely Polygons / MultiPolygons in output coordinates.
    columns : name -> (n,) array (ids, classes, class names, areas, centroids, probability).
    colours : (n, 3) uint8 RGB class colours (QuPath).
    """

    geometry: np.ndarray
    columns: dict[str, np.ndarray]
    colours: np.ndarray

    def __len__(self) -> int:
        return len(self.geometry)


#: Arrow types of the columns (the schema of every table and vector layer).
COLUMN_TYPES: dict[str, pa.DataType] = {
    "id": pa.uint32(), "class": pa.int32(), "class_name": pa.string(), "area_px": pa.int64(),
    "area_um2": pa.float64(), "area_m2": pa.float64(), "centroid_x": pa.float64(), "centroid_y": pa.float64(),
    "bbox_x0": pa.float64(), "bbox_y0": pa.float64(), "bbox_x1": pa.float64(), "bbox_y1": pa.float64(),
    "mean_probability": pa.float64(),
}


def schema(names: list[str], *, geometry: bool = False, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    fields = [pa.field(n, COLUMN_TYPES[n]) for n in names]
    if geometry:
        fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields, metadata=metadata)


def arrow_table(batch: Features, names: list[str], *, geometry: bool = False,
                sch: pa.Schema | None = None) -> pa.Table:
    arrays = [pa.array(batch.columns[n], type=COLUMN_TYPES[n], from_pandas=True) for n in names]
    if geometry:
        arrays.append(pa.array(shapely.to_wkb(batch.geometry), pa.binary()))
    return pa.Table.from_arrays(arrays, schema=sch or schema(names, geometry=geometry))


class Writer(ABC):
    """Streams batches to ``path`` through a partial file; :meth:`close` puts it in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # the suffix GDAL expects
        self.partial.unlink(missing_ok=True)

    @abstractmethod
    def write(self, batch: Features) -> None: ...

    @abstractmethod
    def _finish(self) -> None: ...

    def close(self) -> None:
        try:
            self._finish()
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        finally:
            self.partial.unlink(missing_ok=True)

    def abort(self) -> None:
        try:
            self._finish()
        except Exception:
            pass
        self.partial.unlink(missing_ok=True)


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v


class GeoJSONWriter(Writer):
    """A GeoJSON FeatureCollection; ``qupath`` gives each feature QuPath's ``objectType`` and
    ``classification`` (name and colour) and puts the numbers under ``measurements``.

    Coordinates are the output's (level-0 pixels, or the CRS, named in a ``crs`` member as GDAL
    writes it for a CRS other than WGS 84).
    """

    def __init__(self, path: Path, names: list[str], *, crs: str | None = None, qupath: bool = False,
                 object_type: str = "annotation") -> None:
        super().__init__(path)
        self.names, self.qupath, self.object_type = names, qupath, object_type
        self._file: TextIO = open(self.partial, "w", encoding="utf-8")
        head = '{"type": "FeatureCollection", '
        if crs:
            head += f'"crs": {{"type": "name", "properties": {{"name": {json.dumps(crs)}}}}}, '
        self._file.write(head + '"features": [')
        self._first = True

    def write(self, batch: Features) -> None:
        if not len(batch):
            return
        geoms = shapely.to_geojson(batch.geometry)
        cols = {n: batch.columns[n].tolist() for n in self.names}
        parts = []
        for i, geom in enumerate(geoms):
            props = {n: _json_value(cols[n][i]) for n in self.names}
            if self.qupath:
                r, g, b = (int(v) for v in batch.colours[i])
                props = {"objectType": self.object_type,
                         "classification": {"name": props.pop("class_name"), "color": [r, g, b]},
                         "measurements": {k: v for k, v in props.items() if v is not None}}
                feature = f'{{"type": "Feature", "geometry": {geom}, "properties": {json.dumps(props)}}}'
            else:
                feature = (f'{{"type": "Feature", "id": {props["id"]}, "geometry": {geom}, '
                           f'"properties": {json.dumps(props)}}}')
            parts.append(feature)
        sep = "\n" if self._first else ",\n"
        self._file.write(sep + ",\n".join(parts))
        self._first = False

    def _finish(self) -> None:
        if not self._file.closed:
            self._file.write("\n]}\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class GeoPackageWriter(Writer):
    """A GeoPackage layer ``objects`` through pyogrio (GDAL), one appended batch at a time."""

    def __init__(self, path: Path, names: list[str], *, crs: str | None = None, multi: bool = False) -> None:
        super().__init__(path)
        self.names, self.crs, self.multi = names, crs, multi
        self._created = False

    def write(self, batch: Features) -> None:
        if not len(batch) and self._created:
            return
        import pyogrio

        geometry = batch.geometry
        if self.multi and len(geometry):
            single = shapely.get_type_id(geometry) == 3
            geometry = geometry.copy()
            geometry[single] = [shapely.MultiPolygon([g]) for g in geometry[single]]
        table = arrow_table(Features(geometry, batch.columns, batch.colours), self.names, geometry=True)
        pyogrio.write_arrow(table, str(self.partial), layer="objects", driver="GPKG", geometry_name="geometry",
                            geometry_type="MultiPolygon" if self.multi else "Polygon", crs=self.crs,
                            append=self._created)
        self._created = True

    def _finish(self) -> None:
        if not self._created:  # no objects: still a valid, empty layer
            empty = {n: np.zeros(0) if COLUMN_TYPES[n] != pa.string() else np.zeros(0, object) for n in self.names}
            self.write(Features(np.zeros(0, object), empty, np.zeros((0, 3), np.uint8)))


def geo_metadata(crs_json: dict[str, Any] | None, *, multi: bool) -> dict[bytes, bytes]:
    """GeoParquet 1.0 file metadata for a WKB ``geometry`` column (``crs`` null: unknown, e.g.
    pixel coordinates)."""
    column = {"encoding": "WKB", "geometry_types": ["MultiPolygon", "Polygon"] if multi else ["Polygon"],
              "crs": crs_json}
    return {b"geo": json.dumps({"version": "1.0.0", "primary_column": "geometry",
                                "columns": {"geometry": column}}).encode()}


class GeoParquetWriter(Writer):
    """GeoParquet: one row group per batch, WKB geometries."""

    def __init__(self, path: Path, names: list[str], *, crs_json: dict[str, Any] | None = None,
                 multi: bool = False) -> None:
        import pyarrow.parquet as pq

        super().__init__(path)
        self.names = names
        self.schema = schema(names, geometry=True, metadata=geo_metadata(crs_json, multi=multi))
        self._writer = pq.ParquetWriter(str(self.partial), self.schema, compression="zstd")

    def write(self, batch: Features) -> None:
        if len(batch):
            self._writer.write_table(arrow_table(batch, self.names, geometry=True, sch=self.schema))

    def _finish(self) -> None:
        self._writer.close()


class TableWriter(Writer):
    """The measurement table: Parquet (``.parquet``) or CSV (any other suffix)."""

    def __init__(self, path: Path, names: list[str]) -> None:
        super().__init__(path)
        self.names = names
        self.schema = schema(names)
        self.csv = path.suffix.lower() != ".parquet"
        if self.csv:
            import pyarrow.csv as pcsv

            self._writer: Any = pcsv.CSVWriter(str(self.partial), self.schema)
        else:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(str(self.partial), self.schema, compression="zstd")

    def write(self, batch: Features) -> None:
        if len(batch):
            self._writer.write_table(arrow_table(batch, self.names, sch=self.schema))

    def _finish(self) -> None:
        self._writer.close()
