"""``tiler eval``: Dice, IoU, mIoU and the confusion matrix of an output against ground truth."""

from __future__ import annotations

import argparse
import json

from .options import add_command, add_result_argument

EXAMPLES = """\
examples:
  $ tiler eval labels.zarr truth.tif
  $ tiler eval probs.zarr truth.png --roi fov_mask.png --json
  $ tiler eval vessels.zarr manual.tif --truth-threshold 128     # DRIVE-style 0/255 masks
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "eval", help="per-class Dice, IoU, mIoU and confusion matrix against ground truth", examples=EXAMPLES,
        description="Compare an output group (labels, or the argmax of probabilities/logits) with a "
                    "ground-truth label image, chunk row by chunk row, never loading either whole.",
    )
    add_result_argument(p)
    p.add_argument("truth", metavar="TRUTH", help="label image of the output's size (class indices)")
    p.add_argument("--roi", metavar="MASK", help="evaluate only where this mask is nonzero "
                   "(any resolution, read as by tiler run --roi)")
    p.add_argument("--ignore-index", type=int, metavar="V", help="leave out truth pixels with value V")
    p.add_argument("--truth-threshold", type=float, metavar="T",
                   help="binary truth: class 1 where TRUTH >= T (for 0/255 masks)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..results.evaluate import evaluate

    scores = evaluate(args.result, args.truth, roi=args.roi, ignore_index=args.ignore_index,
                      truth_threshold=args.truth_threshold)
    print(json.dumps(scores.to_dict(), indent=2) if args.json else scores.table())
    return 0
