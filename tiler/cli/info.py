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
        lines.append(f"  pixel size   {info.mpp[0]:.4g} x {info.mpp[1]:.4g} µm")
    for k, (lh, lw) in enumerate(info.levels):
        lines.append(f"  level {k:<6} {lh} x {lw} (downsample {h / lh:.4g})")
    plan = TilePlan.create((h, w), tile=args.tile, overlap=args.overlap)
    lines.append(f"  tiling       {plan.rows.count} x {plan.cols.count} = {plan.n_tiles} tiles of "
                 f"{plan.tile} (overlap {plan.overlap})")
    print("\n".join(lines))
    return 0
