"""``tiler export-result``: an output group as a pyramidal OME-TIFF, a GeoTIFF or a PNG preview."""

from __future__ import annotations

import argparse

from .options import add_command, add_result_argument, positive_int

EXAMPLES = """\
examples:
  $ tiler export-result scan.zarr                       # scan.pred.ome.tif, tiled, with SubIFD levels
  $ tiler export-result scene.zarr --format geotiff     # scene.pred.tif: a COG with the input's CRS,
                                                        # class names as band names, nodata marked
  $ tiler export-result scan.zarr --format png --out scan.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "export-result", help="write an output as a pyramidal OME-TIFF, GeoTIFF or PNG preview",
        examples=EXAMPLES,
        description="Write the output group OUT (of tiler run) as a tiled, pyramidal TIFF, streamed "
                    "tile by tile from its zarr levels, or as a PNG preview over the input.",
    )
    add_result_argument(p)
    p.add_argument("--format", "-f", default="tiff", choices=("tiff", "geotiff", "png"),
                   help="tiff: OME-TIFF; geotiff: GeoTIFF with the recorded georeference; png: preview")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="file to write (default: OUT.pred.ome.tif, OUT.pred.tif or OUT.zarr.png)")
    p.add_argument("--tile", type=positive_int, default=512, metavar="N", help="TIFF tile edge (default 512)")
    p.add_argument("--compression", default="zlib", choices=("zlib", "zstd", "lzw", "none"),
                   help="TIFF compression (default zlib, which every reader supports)")
    p.add_argument("--max-side", type=positive_int, default=1536, metavar="N",
                   help="PNG: long side in pixels (default 1536)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..results.export import export_result

    path = export_result(args.result, args.out, format=args.format, tile=args.tile,
                         compression=args.compression, max_side=args.max_side, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
