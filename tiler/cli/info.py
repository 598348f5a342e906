"""``tiler info``: what an image is and how it would be tiled."""

from __future__ import annotations

import argparse
import logging
import sys

from .options import add_command, add_read_options, non_negative_int, positive_int

EXAMPLES = """\
examples:
  $ tiler info scan.tif
  $ tiler info slide.svs --tile 1024 --overlap 256  # levels, µm/px and the tile count at these settings
  $ tiler info stack.ome.tif --plane z=3      # one plane of a Z stack
  $ tiler info slide.ome.tif --series 1       # another image of a multi-series file
  $ tiler info scan.ndpi                      # read through OpenSlide (the 'reader' line says)
  $ tiler info slide.svs --reader openslide   # the same file through another library
  $ tiler info dicom_series/                  # a DICOM WSI folder (wsidicom)
  $ tiler info T32TNS.jp2                      # a GDAL raster: reader, bands, nodata, CRS, overviews
  $ tiler info scene.tif --reader rasterio    # read a TIFF through GDAL instead of tifffile
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "info", help="show an image's shape, dtype, storage and levels", examples=EXAMPLES,
        description="Describe INPUT without reading its pixels: format, shape and dtype, the image "
                    "series, storage (tiles or strips, compression), pixel size, pyramid levels with "
                    "their downsample and µm/px, a georeference, and how tiler run would tile it.",
    )
    p.add_argument("input", metavar="INPUT", help="TIFF, OME-TIFF, SVS, zarr, PNG or JPEG image")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="N",
                   help="tile edge for the tiling line (default 1024, as tiler run)")
    p.add_argument("--overlap", type=non_negative_int, metavar="N",
                   help="overlap for the tiling line (default: a quarter of the tile, as tiler run)")
    add_read_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..sources import open_source

    try:
        src = open_source(args.input, series=args.series, plane=args.plane, channels=args.channels,
                          reader=args.reader, resampling=args.resampling)
    except InputError:
        listing = _series_listing(args.input)
        if listing:  # say what is there before the error explains what could not be read
            print("\n".join([f"{args.input}", *(f"  {line}" for line in listing)]), file=sys.stderr)
        raise
    try:
        return _describe(src, args)
    finally:
        src.close()


def _describe(src, args: argparse.Namespace) -> int:
    from ..config import Settings
    from ..plan.lattice import TilePlan

    h, w, c = src.shape
    info = src.info
    lines = [
        f"{src.name}",
        f"  format       {info.format}",
        *([f"  reader       {info.reader}"] if info.reader else []),
        f"  shape        {h} x {w} x {c} (height x width x channels), {src.dtype}",
        f"  megapixels   {h * w / 1e6:.1f}",
    ]
    if info.series_list:
        lines.append(f"  series       {len(info.series_list)} in the file; reading {info.series_name}")
        lines.extend(f"    {line}" for line in info.series_list)
    elif info.series_name:
        lines.append(f"  reading      {info.series_name}")
    if info.extra.get("bands"):
        lines.append(f"  bands        {', '.join(str(b) or '-' for b in info.extra['bands'])}")
    if getattr(src, "masked", False):
        value = f"value {info.nodata:g}" if info.nodata is not None else str(info.extra.get("mask", "a mask"))
        lines.append(f"  nodata       {value}: tiles all nodata are skipped, nodata pixels get --fill")
    if "axes" in info.extra:
        lines.append(f"  axes         {', '.join(info.extra['axes'])}")
    photometric = {"palette": "palette (expanded through its colour map to RGB)",
                   "miniswhite": "MinIsWhite (inverted: 0 is black)",
                   "ycbcr": "YCbCr JPEG (decoded to RGB)"}.get(str(info.extra.get("photometric")))
    if photometric:
        lines.append(f"  photometric  {photometric}")
    if info.extra.get("associated"):
        lines.append(f"  associated   {', '.join(info.extra['associated'])} (OpenSlide's other images: never read)")
    if info.alpha:
        lines.append("  alpha        the last channel is transparency (dropped for a model taking one channel fewer)")
    if info.chunks:
        kind = "tiles" if info.extra.get("tiled", True) else "strips"
        codec = info.compression or ("(decoded by OpenSlide)" if info.reader == "openslide" else "none")
        lines.append(f"  storage      {kind} of {info.chunks[0]} x {info.chunks[1]}, compression {codec}")
    if info.mpp:
        lines.append(f"  pixel size   {info.mpp[0]:.4g} x {info.mpp[1]:.4g} µm (y x)")
    else:
        lines.append("  pixel size   not stated in the file (--mpp unavailable; use --level)")
    for k, (lh, lw) in enumerate(info.levels):
        fy, fx = info.level_downsample(k)
        down = f"{fy:.4g}" if abs(fy - fx) < 1e-3 * fy else f"{fy:.4g} x {fx:.4g}"
        mpp = info.level_mpp(k)
        size = f", {mpp[0]:.4g} µm" if mpp else ""
        lines.append(f"  level {k:<6} {lh} x {lw} (downsample {down}{size})")
    for line in info.extra.get("unreadable", ()):
        lines.append(f"  unreadable   {line}")
    if info.georeference is not None:
        g = info.georeference
        a, b, c, d, e, f = g.affine
        lines.append(f"  georef       x = {a:.6g}*col + {b:.6g}*row + {c:.12g}")
        lines.append(f"               y = {d:.6g}*col + {e:.6g}*row + {f:.12g}")
        epsg = _epsg(g.geokeys)
        if epsg or g.ascii_params:
            citation = g.ascii_params.rstrip("|").replace("|", "; ")
            lines.append(f"  projection   {('EPSG:' + str(epsg)) if epsg else ''} {citation}".rstrip())
    settings = Settings(tile=args.tile, overlap=args.overlap)
    plan = TilePlan.create((h, w), tile=settings.tile, overlap=settings.overlap, margin=settings.margin,
                           context=settings.border_context)
    lines.append(f"  tiling       {plan.rows.count} x {plan.cols.count} = {plan.n_tiles} tiles of "
                 f"{plan.tile} (overlap {plan.overlap})")
    print("\n".join(lines))
    return 0


def _series_listing(path: str) -> list[str]:
    """One line per image series of a TIFF file (empty for anything else or an unreadable file)."""
    import tifffile

    from ..sources.tiff.reader import describe_series

    quiet = logging.Filter("tiler")  # tifffile's own log lines about a broken file: the error says it
    logging.getLogger("tifffile").addFilter(quiet)
    try:
        with tifffile.TiffFile(path) as tif:
            return [describe_series(tif, k) for k in range(len(tif.series))]
    except (OSError, ValueError, RuntimeError, tifffile.TiffFileError):
        return []
    finally:
        logging.getLogger("tifffile").removeFilter(quiet)


def _epsg(geokeys: tuple[int, ...]) -> int | None:
    """ProjectedCSType (3072) or GeographicType (2048) code from a raw GeoKeyDirectory."""
    found = {geokeys[n]: geokeys[n + 3] for n in range(4, len(geokeys) - 3, 4) if geokeys[n + 1] == 0}
    code = found.get(3072) or found.get(2048)
    return code if code and code != 32767 else None
