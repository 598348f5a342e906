"""``tiler run``: stream a model's blended output over an image into a zarr group."""

from __future__ import annotations

import argparse
import sys

from .options import add_model_options, add_output_options, add_tiling_options, positive_int

EXAMPLES = """\
examples:
  $ tiler run scan.tif
  $ tiler run scan.tif --output labels -o labels.zarr --overwrite
  $ tiler run scene.tif --model unet.pt --tile 1024 --overlap 128 --window cosine
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
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    g = p.add_argument_group("pyramid and preview")
    g.add_argument("--no-pyramid", dest="pyramid", action="store_false",
                   help="do not add downsampled OME-Zarr levels 1, 2, ... to the output")
    g.add_argument("--pyramid-levels", type=positive_int, metavar="N",
                   help="levels in all, full resolution included (default: halve down to ~1024 px)")
    g.add_argument("--preview", action="store_true",
                   help="also write <OUT>.png (scan.zarr.png): the input's thumbnail, prediction overlaid")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..api import run

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = run(
        args.input, args.model, out=args.out, overwrite=args.overwrite, resume=args.resume,
        device=args.device, precision=args.precision, provider=args.provider,
        trust_model=args.trust_model, progress=progress,
        tile=args.tile, overlap=args.overlap, margin=args.margin, window=args.window,
        batch_size=args.batch_size, output=args.output, dtype=args.dtype, chunk=args.chunk,
        pyramid=args.pyramid, pyramid_levels=args.pyramid_levels, preview=args.preview,
    )
    print(result.summary())
    return 0
