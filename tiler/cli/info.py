"""``tiler info``: what an image is and how it would be tiled."""

from __future__ import annotations

import argparse

EXAMPLES = """\
example:
  $ tiler info scan.tif
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show an image's shape, dtype, storage and levels", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--tile", type=int, default=512, help="tile edge for the tiling line (default 512)")
    p.add_argument("--overlap", type=int, default=128, help="overlap for the tiling line (default 128)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..sources import open_source

    src = open_source(args.input)
    try:
        return _describe(src, args)
    finally:
        src.close()


def _describe(src, args: argparse.Namespace) -> int:
    from ..plan import TilePlan

    h, w, c = src.shape
    info = src.info
    lines = [
        f"{src.name}",
        f"  format       {info.format}",
        f"  shape        {h} x {w} x {c} (height x width x channels), {src.dtype}",
        f"  megapixels   {h * w / 1e6:.1f}",
    ]
    if info.chunks:
        kind = "tiles" if info.extra.get("tiled", True) else "strips"
        lines.append(f"  storage      {kind} of {info.chunks[0]} x {info.chunks[1]}, "
                     f"compression {info.compression or 'none'}")
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
    if info.georeference is not None:
        g = info.georeference
        a, b, c, d, e, f = g.affine
        lines.append(f"  georef       x = {a:.6g}*col + {b:.6g}*row + {c:.12g}")
        lines.append(f"               y = {d:.6g}*col + {e:.6g}*row + {f:.12g}")
        epsg = _epsg(g.geokeys)
        if epsg or g.ascii_params:
            citation = g.ascii_params.rstrip("|").replace("|", "; ")
            lines.append(f"  projection   {('EPSG:' + str(epsg)) if epsg else ''} {citation}".rstrip())
    plan = TilePlan.create((h, w), tile=args.tile, overlap=args.overlap)
    lines.append(f"  tiling       {plan.rows.count} x {plan.cols.count} = {plan.n_tiles} tiles of "
                 f"{plan.tile} (overlap {plan.overlap})")
    print("\n".join(lines))
    return 0


def _epsg(geokeys: tuple[int, ...]) -> int | None:
    """ProjectedCSType (3072) or GeographicType (2048) code from a raw GeoKeyDirectory."""
    found = {geokeys[n]: geokeys[n + 3] for n in range(4, len(geokeys) - 3, 4) if geokeys[n + 1] == 0}
    code = found.get(3072) or found.get(2048)
    return code if code and code != 32767 else None
