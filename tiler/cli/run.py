"""``tiler run``: stream a model's blended output over one image or an archive into zarr groups."""

from __future__ import annotations

import argparse
import sys

from .options import (
    add_command,
    add_model_options,
    add_output_options,
    add_slide_options,
    add_spec_options,
    add_tiling_options,
    positive_int,
    spec_overrides,
    unit_interval,
)

EXAMPLES = """\
examples:
  $ tiler run scan.tif                                             # logits -> scan.zarr
  $ tiler run scan.tif --kind probs --preview -o probs.zarr        # + probs.zarr.png overlay
  $ tiler run scan.tif --kind labels -o labels.zarr --overwrite
  $ tiler run slide.svs --level 1 --kind labels                    # pyramid level 1 (see tiler info)
  $ tiler run slide.svs --mpp 1.0 --tissue auto --kind labels      # 1 µm pixels, skip the glass
  $ tiler run slide.svs --roi mask.png                             # only tiles inside the mask
  $ tiler run scene.tif --model unet.pt --tile 1024 --overlap 128 --window cosine
  $ tiler run scan.ndpi --model unet.onnx --model-mpp 0.5          # read at the model's 0.5 µm/px
  $ tiler run dicom_series/ --reader wsidicom                       # a DICOM WSI folder
  $ tiler run slide.svs --reader openslide                          # OpenSlide instead of tifffile
  $ tiler run scene.tif --model unet.onnx --provider cuda          # ONNX Runtime on CUDA, or an error
  $ tiler stats scan.tif --json > stats.json && tiler run scan.tif --stats stats.json
  $ tiler run slide.svs --resume                                   # continue a killed run
  $ tiler run slides/ --out-dir preds/ --tissue auto --dry-run     # tiles, sizes, free space, ETA
  $ tiler run slides/ --out-dir preds/ --report report.json        # every image in a directory
  $ tiler run 'slides/*.svs' --manifest more.csv --resume          # a glob and a manifest
  $ tiler run big.tif --workers 4                                  # local dask cluster
  $ tiler run big.tif --scheduler tcp://head:8786                  # existing dask cluster
  $ tiler run slide.svs --kind labels --objects qupath             # + slide.qupath.geojson
  $ tiler run scenes/ --kind labels --objects '{name}.gpkg'        # one GeoPackage per input
  $ tiler run s3://bucket/scan.tif --out s3://bucket/preds/scan.zarr # object store in and out
  $ tiler run 's3://bucket/slides/*.svs' --out-dir s3://bucket/preds/ # an archive on S3 (or .../slides/)
  $ tiler run gs://bucket/scan.tif --out gs://bucket/preds/scan.zarr # Google Cloud Storage
  $ tiler run https://host/scan.tif -o scan.zarr                   # read-only web server
  $ tiler run s3://b/scan.tif --resume     # with AWS_ENDPOINT_URL=http://minio:9000: S3-compatible store
  $ tiler run T32TNS.jp2 --model s2.onnx --channels 3,2,1 --fill 255 --kind labels  # GDAL; nodata -> 255
  $ tiler run item.json --channels red,green,blue,B08 --model s2.onnx   # STAC assets on the 10 m grid
  $ tiler run item.json --resampling bilinear --model s2.onnx      # 20/60 m bands interpolated
  $ tiler run scene.tif --reader rasterio                          # force GDAL for a TIFF
  $ tiler run scan.tif --exact --tile 1024                         # equal to one whole-image pass
  $ tiler run scan.tif --tta flips                                 # average 4 flipped passes
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "run", help="run a model over images, write zarr groups", examples=EXAMPLES,
        description="Run a model over each INPUT tile by tile and stream the blended result to zarr. "
        "A failed input is reported and the others go on; the exit code is 1 if any failed. "
        "Object stores: credentials and endpoints come from each cloud's standard variables and files "
        "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/config, ...); transient failures are "
        "retried with backoff and counted in --report (\"retries\").",
    )
    p.add_argument("input", metavar="INPUT", nargs="*",
                   help="TIFF, OME-TIFF, SVS, NDPI/MRXS/SCN/BIF/VMS (OpenSlide), DICOM WSI folder or file, zarr, "
                        "PNG or JPEG image, a directory of them, or a glob; or an s3://, gs:// or https:// URL "
                        "of a TIFF, PNG, JPEG or zarr store")
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
    g.add_argument("--out-dir", metavar="DIR", help="write outputs here, a folder or an s3:// or gs:// prefix "
                   "(default: beside each input)")
    g.add_argument("--report", metavar="FILE", help="write a JSON report: each input's status, tiles, "
                   "seconds, output and error")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="start a local dask cluster: one worker per GPU, or N CPU workers")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask cluster")
    p.add_argument("--dry-run", action="store_true",
                   help="write nothing; per input print the level and pixel size it would read, the tile "
                        "count, the output size against the free space there and an ETA from a short probe")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    g = p.add_argument_group("pyramid and preview")
    g.add_argument("--no-pyramid", dest="pyramid", action="store_false",
                   help="do not add downsampled OME-Zarr levels 1, 2, ... to the output")
    g.add_argument("--pyramid-levels", type=positive_int, metavar="N",
                   help="levels in all, full resolution included (default: halve down to ~1024 px)")
    g.add_argument("--preview", action="store_true",
                   help="also write <OUT>.png (scan.zarr.png): the input's thumbnail, prediction overlaid, "
                        "with a legend of the class names and colours")
    g.add_argument("--opacity", type=unit_interval, default=0.4, metavar="X",
                   help="--preview: opacity of the class colours, 0 to 1 (default 0.4)")
    g.add_argument("--objects", metavar="FILE|FORMAT",
                   help="labels/probs outputs: also write one polygon per object at the end (as tiler "
                        "export-result does, default settings): a FORMAT (geojson, qupath, gpkg, "
                        "geoparquet) beside each output (scan.objects.gpkg), or a FILE ({name}: the "
                        "output's stem, for several inputs); --resume writes only what is missing")
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
    if args.objects:
        batch.check_objects(args.objects, args.output)
    if args.settings:
        apply_settings_file(args, register_defaults())
    items = batch.collect(args.input, args.manifest)
    if args.out:
        if len(items) != 1:
            raise SettingsError(f"--out names one output but there are {len(items)} inputs; use --out-dir")
        items[0].output = args.out
    batch.assign_outputs(items, args.out_dir)
    if args.dry_run:
        from .dry_run import dry_run

        return dry_run(items, args)
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
            pyramid_levels=args.pyramid_levels, preview=args.opacity if args.preview else False,
            objects=args.objects,
            level=args.level, mpp=args.mpp, series=args.series, plane=args.plane, channels=args.channels,
            reader=args.reader, resampling=args.resampling, tissue=args.tissue, roi=args.roi, fill=args.fill,
        )
    finally:
        if client is not None:
            from ..distributed.cluster import close_client

            close_client(client)
    if len(items) > 1:
        print(batch.summary(items))
    return 1 if any(i.status != "ok" for i in items) else 0
