"""``tiler calibrate``: measure seam error and cost of tiling settings on crops of your image; pick one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import add_command, positive_float, positive_int

EXAMPLES = """\
examples:
  $ tiler calibrate scan.tif                                   # the built-in model, default grid
  $ tiler calibrate scan.tif --tolerance 0.01 --json calib.json --plot calib.png
  $ tiler run scan.tif --settings calib.json                   # run with the chosen setting
  $ tiler calibrate scene.tif --model unet.onnx --tiles 512,1024 --windows gaussian,constant
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if any(v < 16 for v in values):
        raise argparse.ArgumentTypeError(f"tiles must be at least 16 px, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "calibrate", help="measure seam error vs cost of tiling settings; choose the cheapest",
        description="On a few crops of INPUT (the most varied regions, each at least 3 tiles across), "
        "compare the model's tiled output under a grid of settings (tile, overlap, window, exact) with "
        "one whole-image pass: max and p99 |difference| of the logits, label agreement, cost (tile pixels "
        "per image pixel) and measured tiles/s. Prints the table and the cheapest setting whose max "
        "|difference| is within --tolerance; --json writes it for tiler run --settings.",
        examples=EXAMPLES,
    )
    p.add_argument("input", metavar="INPUT", help="image to calibrate on (any format tiler run reads)")
    p.add_argument("--model", "-m", metavar="M", help="checkpoint, TorchScript or ONNX file (default: built-in)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="fp32 (default), fp16 (CUDA) or bf16")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="tiles per model call (default: the pixels of 8 tiles of 512)")
    p.add_argument("--tolerance", type=positive_float, default=0.05, metavar="E",
                   help="largest max |tiled - whole| logit difference accepted (default 0.05)")
    p.add_argument("--tiles", type=_int_list, default=(512,), metavar="T,T",
                   help="tile sizes of the grid (default 512); overlaps 1/8, 1/4, 1/2 of each, and exact")
    p.add_argument("--windows", default="gaussian,cosine,constant", metavar="W,W",
                   help="windows of the grid (constant gets margin = overlap/2; default gaussian,cosine,constant)")
    p.add_argument("--no-exact", dest="exact", action="store_false", help="leave exact tiling out of the grid")
    p.add_argument("--crops", type=positive_int, default=3, metavar="N", help="crops to measure on (default 3)")
    p.add_argument("--crop-size", type=positive_int, metavar="N",
                   help="crop edge in pixels (default: 3 tiles across for the largest tile)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--level", type=int, metavar="N", help="pyramid level to read")
    res.add_argument("--mpp", type=positive_float, metavar="X", help="pixel size in µm to read at")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the result as JSON to FILE (what tiler run --settings reads); alone: to stdout")
    p.add_argument("--plot", metavar="PNG", help="error vs cost plot, one line per window, the chosen point ringed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json or --plot file")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..calibrate import calibrate, default_grid, write_plot
    from ..errors import OutputError
    from ..plan.windows import list_windows

    windows = tuple(w.strip() for w in args.windows.split(","))
    unknown = [w for w in windows if w not in list_windows()]
    if unknown:
        from ..errors import SettingsError

        raise SettingsError(f"unknown window {unknown[0]!r}; choose from {', '.join(list_windows())}")
    for path in (args.json, args.plot):
        if path and path != "-" and Path(path).exists() and not args.overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it")
    to_stdout = args.json == "-"
    log = (lambda line: print(line, file=sys.stderr)) if to_stdout else print
    log(f"calibrating on {args.input}:")
    result = calibrate(args.input, args.model, tolerance=args.tolerance,
                       grid=default_grid(args.tiles, windows, exact=args.exact), crops=args.crops,
                       crop_size=args.crop_size, device=args.device, precision=args.precision,
                       level=args.level, mpp=args.mpp, batch_size=args.batch_size)
    log(result.table())
    best = result.best
    if best is None:
        log(f"no setting is within the tolerance {args.tolerance:g}; the closest is "
            f"{min(result.measurements, key=lambda m: m.max_abs).label}")
    else:
        log(f"chosen: {best.label} (max |Δ| {best.max_abs:.2g} <= {args.tolerance:g}, cost {best.cost:.2f}x)")
    if to_stdout:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.json:
        result.to_json(args.json)
        log(f"wrote {args.json}: tiler run INPUT --settings {args.json}")
    if args.plot:
        write_plot(result, args.plot)
        log(f"wrote {args.plot}")
    return 0 if best is not None else 1
