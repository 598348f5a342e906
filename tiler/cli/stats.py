"""``tiler stats``: per-channel mean and standard deviation of an image, out of core."""

from __future__ import annotations

import argparse
import json

from .options import add_command

EXAMPLES = """\
examples:
  $ tiler stats scan.tif
  $ tiler stats scan.tif --roi tissue_mask.png --json
  $ tiler stats scan.svs --tissue auto          # tissue only, as tiler run --tissue auto finds it
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "stats", help="per-channel mean and std of an image (for normalisation)", examples=EXAMPLES,
        description="Per-channel mean and standard deviation of INPUT, read block by block, scaled "
                    "like the model input (0-1 for integer images).",
    )
    p.add_argument("input", metavar="INPUT", help="TIFF, OME-TIFF, SVS, zarr, PNG or JPEG image")
    p.add_argument("--roi", metavar="MASK", help="count only pixels where this mask is nonzero "
                   "(any resolution, read as by tiler run --roi)")
    p.add_argument("--tissue", choices=("auto", "none"), default="none",
                   help="auto: count only tissue, detected as tiler run --tissue auto does")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..results.stats import channel_stats

    stats = channel_stats(args.input, roi=args.roi, tissue=args.tissue == "auto")
    print(json.dumps(stats.to_dict(), indent=2) if args.json else stats.table())
    return 0
