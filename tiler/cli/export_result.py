"""``tiler export-result``: an output group as a pyramidal OME-TIFF, a GeoTIFF, a PNG preview, or
its objects as polygons (GeoJSON, QuPath GeoJSON, GeoPackage, GeoParquet)."""

from __future__ import annotations

import argparse
from typing import Any

from .options import add_command, add_result_argument, positive_int, unit_interval

RASTER_FORMATS = ("tiff", "geotiff", "png")
VECTOR_FORMATS = ("geojson", "qupath", "gpkg", "geoparquet")

EXAMPLES = """\
examples:
  $ tiler export-result scan.zarr                       # scan.pred.ome.tif, tiled, with SubIFD levels
  $ tiler export-result scene.zarr --format geotiff     # scene.pred.tif: a COG (CRS, band names, nodata)
  $ tiler export-result scan.zarr --format png --out scan.png --opacity 0.6   # with a legend
  $ tiler export-result scan.zarr --format qupath --classes nuclei --min-area 20   # scan.qupath.geojson
  $ tiler export-result scene.zarr --format gpkg --connectivity 8 --table scene.csv # polygons + measurements
  $ tiler export-result scene.zarr --format geoparquet --simplify 0.5 --out fields.parquet
"""


def _classes(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value:g}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "export-result", help="write an output as a TIFF, GeoTIFF, PNG preview, or its objects as polygons",
        examples=EXAMPLES,
        description="Write the output group OUT (of tiler run) as a tiled, pyramidal TIFF, streamed "
                    "tile by tile from its zarr levels, as a PNG preview over the input, or (labels "
                    "and probs outputs) one polygon per connected object, streamed chunk row by chunk "
                    "row and never cut at a chunk border; the instances are kept in OUT/labels/instances.",
    )
    add_result_argument(p)
    p.add_argument("--format", "-f", choices=RASTER_FORMATS + VECTOR_FORMATS,
                   help="tiff: OME-TIFF (default); geotiff: GeoTIFF with the recorded georeference; png: "
                        "preview; geojson, qupath (GeoJSON for QuPath), gpkg (GeoPackage), geoparquet: "
                        "polygons (default for an --out ending in .geojson, .gpkg or .parquet)")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="file to write (default: OUT.pred.ome.tif, OUT.pred.tif, OUT.zarr.png, "
                        "OUT.objects.geojson, OUT.qupath.geojson, OUT.objects.gpkg or OUT.objects.parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    g = p.add_argument_group("TIFF and PNG")
    g.add_argument("--tile", type=positive_int, default=512, metavar="N", help="TIFF tile edge (default 512)")
    g.add_argument("--compression", default="zlib", choices=("zlib", "zstd", "lzw", "none"),
                   help="TIFF compression (default zlib, which every reader supports)")
    g.add_argument("--max-side", type=positive_int, default=1536, metavar="N",
                   help="PNG: long side in pixels (default 1536)")
    g.add_argument("--opacity", type=unit_interval, default=0.4, metavar="X",
                   help="PNG: opacity of the class colours over the image, 0 to 1 (default 0.4)")
    g = p.add_argument_group("polygons (geojson, qupath, gpkg, geoparquet)")
    g.add_argument("--classes", type=_classes, metavar="A,B",
                   help="class names (or numbers) to turn into objects (default: all but class 0 and --fill)")
    g.add_argument("--connectivity", type=int, choices=(4, 8), default=4,
                   help="4: pixels touching by an edge form one object (default); 8: corners too "
                        "(objects touching only at a corner become MultiPolygons)")
    g.add_argument("--min-area", type=_non_negative, default=0, metavar="A",
                   help="drop objects of fewer than A output pixels")
    g.add_argument("--simplify", type=_non_negative, default=0, metavar="T",
                   help="simplify outlines with tolerance T output pixels (default 0: exact pixel edges)")
    g.add_argument("--table", metavar="FILE",
                   help="also write the per-object measurements (id, class, area, centroid, bbox, mean "
                        "probability) to FILE.parquet or FILE.csv")
    g.add_argument("--object-type", choices=("annotation", "detection"), default="annotation",
                   help="qupath: QuPath object type (detection is lighter for many nuclei)")
    g.add_argument("--partial", action="store_true",
                   help="accept an output whose run has not finished (the rows written so far)")
    p.set_defaults(func=main)


def objects_module() -> Any:
    """:mod:`tiler.objects.export`, or a one-line error naming the extra to install."""
    try:
        from ..objects import export
    except ImportError as exc:
        from ..errors import SettingsError

        raise SettingsError(f"polygons need the vector extra ({exc.name} is missing): "
                            "pip install 'tiler-engine[vector]'") from None
    return export


def _format(args: argparse.Namespace) -> str:
    """--format, else the vector format --out's name asks for, else tiff."""
    if args.format:
        return str(args.format)
    if args.out:
        from ..errors import SettingsError
        from ..objects.export import format_of

        try:
            return format_of(args.out)
        except SettingsError:
            pass
    return "tiff"


def main(args: argparse.Namespace) -> int:
    args.format = _format(args)
    if args.format in VECTOR_FORMATS:
        path = objects_module().export_objects(args.result, args.out, format=args.format, classes=args.classes,
                              connectivity=args.connectivity, min_area=args.min_area, simplify=args.simplify,
                              table=args.table, partial=args.partial, overwrite=args.overwrite,
                              object_type=args.object_type)
        print(f"wrote {path}" + (f" and {args.table}" if args.table else ""))
        return 0
    from ..results.export import export_result

    path = export_result(args.result, args.out, format=args.format, tile=args.tile,
                         compression=args.compression, max_side=args.max_side, opacity=args.opacity,
                         overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
