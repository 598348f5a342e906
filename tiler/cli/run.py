"""``tiler run``: stream a model's blended output over one image or an archive into zarr groups."""

from __future__ import annotations

import argparse
import sys

from .options import (
    add_model_options,
    add_output_options,
    add_slide_options,
    add_spec_options,
    add_tiling_options,
    positive_int,
    spec_overrides,
)

EXAMPLES = """\
examples:
  $ tiler run scan.tif
  $ tiler run scan.tif --kind labels -o labels.zarr --overwrite
  $ tiler run scene.tif --model unet.pt --tile 1024 --overlap 128 --window cosine
  $ tiler run slide.svs --mpp 1.0 --tissue auto --kind labels  # 1 µm pixels, skip the glass
  $ tiler run slides/ --out-dir preds/ --report report.json      # every image in a directory
  $ tiler run 'slides/*.svs' --manifest more.csv --resume          # a glob and a manifest
  $ tiler run big.tif --workers 4                                  # local dask cluster
  $ tiler run big.tif --scheduler tcp://head:8786                  # existing dask cluster
  $ tiler run scan.tif --exact --tile 1024                         # equal to one whole-image pass
  $ tiler run scan.tif --tta flips                                 # average 4 flipped passes
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a model over images, write zarr groups", epilog=EXAMPLES,
        description="Run a model over each INPUT tile by tile and stream the blended result to zarr. "
        "A failed input is reported and the others go on; the exit code is 1 if any failed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", nargs="*",
                   help="TIFF, OME-TIFF, SVS, zarr, PNG or JPEG image, a directory of them, or a glob")
    add_model_options(p)
    add_spec_options(p)
    add_tiling_options(p)
    p.add_argument("--settings", metavar="FILE",
                   help="tiling settings from a JSON file (what tiler calibrate --json writes); flags "
                        "given beside it win, e.g. tiler run scan.tif --settings calib.json")
    add_output_options(p)
    add_slide_options(p)
    g = p.add_argument_group("archives and clusters")
    g.add_argument("--manifest", metavar="FILE",
                   help="inputs, one path per line, or a CSV with an 'input' and optional 'output' column")
    g.add_argument("--out-dir", metavar="DIR", help="write outputs here (default: beside each input)")
    g.add_argument("--report", metavar="FILE", help="write a JSON report: each input's status, tiles, "
                   "seconds, output and error")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="start a local dask cluster: one worker per GPU, or N CPU workers")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask cluster")
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


def register_defaults() -> dict[str, object]:
    """The defaults of ``tiler run``'s flags, by destination."""
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    parser = sub.choices["run"]
    return {a.dest: a.default for a in parser._actions}


def apply_settings_file(args: argparse.Namespace, defaults: dict[str, object]) -> None:
    """Fill the tiling flags left at their defaults from ``args.settings`` (a calibration or a flat
    JSON of Settings fields); flags given on the command line win."""
    from ..config import read_settings

    for key, value in read_settings(args.settings).items():
        dest = key if hasattr(args, key) else None
        if dest is None:
            continue
        if getattr(args, dest) == defaults.get(dest):
            setattr(args, dest, value)


def main(args: argparse.Namespace) -> int:
    from ..errors import SettingsError
    from . import batch

    if not args.input and not args.manifest:
        raise SettingsError("no input: name an image, a directory, a glob or --manifest FILE")
    if args.workers and args.scheduler:
        raise SettingsError("--workers starts a local cluster and --scheduler uses another; pick one")
    if args.settings:
        apply_settings_file(args, register_defaults())
    items = batch.collect(args.input, args.manifest)
    if args.out:
        if len(items) != 1:
            raise SettingsError(f"--out names one output but there are {len(items)} inputs; use --out-dir")
        items[0].output = args.out
    batch.assign_outputs(items, args.out_dir)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    client = None
    if args.workers or args.scheduler:
        from ..distributed.cluster import connect

        client = connect(workers=args.workers, scheduler=args.scheduler, device=args.device)
    try:
        batch.run_batch(
            items, model=args.model, device=args.device, precision=args.precision, provider=args.provider,
            overrides=spec_overrides(args),
            trust_model=args.trust_model, compile=args.compile, client=client, report=args.report, debug=args.debug,
            overwrite=args.overwrite, resume=args.resume, break_lock=args.break_lock, durable=args.durable,
            progress=progress, tile=args.tile,
            overlap=args.overlap, margin=args.margin, window=args.window, batch_size=args.batch_size,
            context=args.context, exact=args.exact, tta=args.tta,
            output=args.output, dtype=args.dtype, chunk=args.chunk, pyramid=args.pyramid,
            pyramid_levels=args.pyramid_levels, preview=args.preview,
            level=args.level, mpp=args.mpp, series=args.series, plane=args.plane, channels=args.channels,
            tissue=args.tissue, roi=args.roi, fill=args.fill,
        )
    finally:
        if client is not None:
            from ..distributed.cluster import close_client

            close_client(client)
    if len(items) > 1:
        print(batch.summary(items))
    return 1 if any(i.status != "ok" for i in items) else 0
