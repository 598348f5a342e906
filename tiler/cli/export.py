"""``tiler export``: a PyTorch model to ONNX or TorchScript, verified, with its metadata inside."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OutputError, SettingsError
from .options import add_spec_options, positive_int, spec_overrides

EXAMPLES = """\
examples:
  $ tiler export --out tissue.onnx                      # the built-in default model
  $ tiler export unet.pt --format onnx --out unet.onnx --opset 17
  $ tiler export unet.pt --out unet-fp16.onnx --fp16
  $ tiler export unet.pt --format torchscript --out unet.ts.pt
  $ tiler export net.ts --out net.onnx --in-channels 3 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
  $ tiler run scan.tif --model unet.onnx --provider auto
"""

_SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
                   ".torchscript": "torchscript"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model to ONNX or TorchScript (verified)", epilog=EXAMPLES,
        description="Export MODEL (a checkpoint of a UNet in the built-in or Pytorch-UNet layout, or a "
                    "TorchScript file; default: the built-in model) with its metadata, then check that "
                    "the export and the PyTorch model agree on random batches.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help="checkpoint or TorchScript file")
    p.add_argument("--format", "-f", choices=("onnx", "torchscript"),
                   help="output format (default: from the --out suffix: .onnx -> onnx; .pt, .pth, .ts "
                   "-> torchscript)")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--fp16", action="store_true",
                   help="ONNX in half precision (verified to 1e-2 x logit scale)")
    p.add_argument("--opset", type=positive_int, metavar="N", help="ONNX opset (default 17)")
    p.add_argument("--fixed-size", type=positive_int, metavar="N",
                   help="fix the ONNX spatial axes to N x N (default: dynamic height and width)")
    p.add_argument("--tolerance", type=float, metavar="X",
                   help="largest allowed |exported - pytorch| (default 1e-4; fp16: 1e-2 x logit scale)")
    p.add_argument("--trust-model", action="store_true",
                   help="allow a checkpoint that needs full unpickling (can run code: trusted files only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    add_spec_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from exporters import export

    out = Path(args.out)
    fmt = args.format or _SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise SettingsError(f"{out}: cannot tell the format from the suffix; pass --format onnx|torchscript")
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out}: already exists; pass --overwrite to replace it")
    result = export(
        args.model, out, format=fmt, fp16=args.fp16, opset=args.opset, size=args.fixed_size,
        tolerance=args.tolerance, trust_model=args.trust_model, overrides=spec_overrides(args),
    )
    what = "ONNX" if fmt == "onnx" else "TorchScript"
    detail = f", opset {args.opset or 17}" if fmt == "onnx" else ""
    precision = "fp16" if args.fp16 else "fp32"
    print(f"wrote {out}: {what} ({precision}{detail}), max difference {result.max_abs_diff:.3g}")
    return 0
