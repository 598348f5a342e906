"""``tiler run``: stream a model's blended output over an image into a zarr group."""

from __future__ import annotations

import argparse
import sys

from .options import add_model_options, add_output_options, add_slide_options, add_tiling_options

EXAMPLES = """\
examples:
  $ tiler run scan.tif
  $ tiler run scan.tif --output labels -o labels.zarr --overwrite
  $ tiler run scene.tif --model unet.pt --tile 1024 --overlap 128 --window cosine
  $ tiler run slide.svs --mpp 1.0 --tissue auto --output labels
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a model over an image, write a zarr group", epilog=EXAMPLES,
        description="Run a model over INPUT tile by tile and stream the blended result to zarr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="TIFF, OME-TIFF, SVS, zarr, PNG or JPEG image")
    add_model_options(p)
    add_tiling_options(p)
    add_output_options(p)
    add_slide_options(p)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..api import run

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = run(
        args.input, args.model, out=args.out, overwrite=args.overwrite, resume=args.resume,
        device=args.device, precision=args.precision, progress=progress,
        tile=args.tile, overlap=args.overlap, margin=args.margin, window=args.window,
        batch_size=args.batch_size, output=args.output, dtype=args.dtype, chunk=args.chunk,
        level=args.level, mpp=args.mpp, tissue=args.tissue, roi=args.roi, fill=args.fill,
    )
    print(result.summary())
    return 0
