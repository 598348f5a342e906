"""``tiler run --dry-run``: what a run would do, per input, before a long run; nothing is written.

Per input: the level and pixel size it would read, the tile count (and how many a mask skips), the
output's size against the free space where it would go, and an ETA of the model time from a short
probe (one batch of the image's own first tile, timed after a warm-up call). Reading, blending and
writing come on top of the model time; on a GPU the model dominates, on a CPU they add 5-15 %.
"""

from __future__ import annotations

import shutil
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TilerError

#: Size of the pyramid on top of level 0 (halving: 1/4 + 1/16 + ... < 1/3).
PYRAMID_FACTOR = 4 / 3


def describe(item_input: str, output: str | None, *, model: Any, options: Any, settings: Any,
             read: dict[str, Any], tissue: str | None, roi: Any, overwrite: bool, resume: bool,
             pyramid: bool, probes: dict[Any, tuple[float, int]] | None = None) -> list[str]:
    """The dry-run lines for one input (raises :class:`~tiler.errors.TilerError` for a bad one).

    ``model`` may be a loaded runner (an archive loads it once); ``options`` is a
    :class:`~tiler.config.ModelOptions`, ``settings`` a :class:`~tiler.config.Settings`.
    """
    from ..api import _output_path
    from ..engine.job import build_job
    from ..sources import open_at

    probes = {} if probes is None else probes
    with closing(open_at(item_input, **read)) as source:
        out_path, _ = _output_path(item_input, source, output, overwrite=overwrite, resume=resume)
        job, _ = build_job(item_input, source, model, options, settings, tissue=tissue, roi=roi)
        h, w, c = job.source.shape
        info = source.info
        lines = [f"{item_input} -> {out_path}"]
        mpp = f", {info.mpp[0]:.4g} µm/px" if info.mpp else ", pixel size not stated"
        resampled = "" if tuple(info.downsample) in ((1.0, 1.0), ()) else \
            f" (downsample {info.downsample[0]:.4g} from full resolution)"
        series = f"; {info.series_name}" if info.series_name else ""
        lines.append(f"  read     level {info.level}: {h} x {w} x {c} {source.dtype}{mpp}{resampled}{series}")
        plan = job.plan
        total = plan.n_tiles
        skipped = sum(1 for i in range(plan.rows.count) for j in range(plan.cols.count)
                      if job.skip is not None and job.skip(i, j))
        skip = f", {skipped} skipped by the mask ({total - skipped} to compute)" if skipped else ""
        lines.append(f"  tiles    {plan.rows.count} x {plan.cols.count} = {total} tile(s) of {plan.tile} "
                     f"(overlap {plan.overlap}){skip}")
        shape = job.output.shape(h, w)
        nbytes = int(np.prod(shape)) * np.dtype(job.output.store_dtype).itemsize
        nbytes = int(nbytes * (PYRAMID_FACTOR if pyramid else 1))
        size = (f"output   {' x '.join(map(str, shape))} {job.output.store_dtype} {job.output.kind}: at most "
                f"{_size(nbytes)} uncompressed{' with the pyramid' if pyramid else ''}")
        if not isinstance(out_path, Path):  # an object store: no free space to compare with
            lines.append(f"  {size}; written to an object store")
        else:
            free, where = free_space(out_path)
            verdict = "fits" if nbytes <= free else "DOES NOT FIT"
            lines.append(f"  {size}; {_size(free)} free at {where}: {verdict}")
            if out_path.exists():
                state = "resumed" if resume else "replaced" if overwrite else "refused"
                lines.append(f"  exists   {out_path} (would be {state})")
        key = (plan.tile, c, str(job.source.dtype))
        if key not in probes:  # one probe per tile shape of an archive
            probes[key] = probe_seconds_per_tile(job)
        per_tile, probed = probes[key]
        eta = per_tile * (total - skipped)
        lines.append(f"  model    {job.runner.describe()}: {per_tile:.3g} s per tile (probe of {probed}); "
                     f"ETA about {_duration(eta)} of model time")
    return lines


def free_space(path: Path) -> tuple[int, Path]:
    """Free bytes on the file system where ``path`` would be written, and the folder asked."""
    folder = path.resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free, folder


def probe_seconds_per_tile(job: Any) -> tuple[float, int]:
    """Model seconds per tile: one batch of the image's first tile (real pixels), timed after a
    warm-up call. Returns (seconds per tile, tiles timed)."""
    tile = job.plan.tile
    h, w, _ = job.source.shape
    region = job.source.read(0, min(tile, h), 0, min(tile, w))
    pixels = np.zeros((tile, tile, region.shape[2]), region.dtype)
    pixels[: region.shape[0], : region.shape[1]] = region
    n = job.settings.batch_size
    batch = np.repeat(np.moveaxis(pixels, -1, 0)[None], n, axis=0)  # (n, C, tile, tile)
    job.runner(batch[:1])  # warm-up (first-call costs: allocation, autotuning)
    t0 = time.perf_counter()
    job.runner(batch)
    return (time.perf_counter() - t0) / n, n


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def dry_run(items: list[Any], args: Any, *, log: Any = print, error: Any = None) -> int:
    """Print :func:`describe` for every item; a bad input is one ``error:`` line and exit status 1."""
    import sys

    from ..config import ModelOptions, Settings
    from ..runners.factory import load_runner
    from .options import spec_overrides

    error = error or (lambda line: print(line, file=sys.stderr))
    options = ModelOptions(args.device, args.precision, args.provider, args.trust_model, False, spec_overrides(args))
    settings = Settings(tile=args.tile, overlap=args.overlap, margin=args.margin, window=args.window,
                        batch_size=args.batch_size, output=args.output, dtype=args.dtype, chunk=args.chunk,
                        fill=args.fill)
    runner = load_runner(args.model, **options.runner_keywords(settings.batch_size))
    read = {"level": args.level, "mpp": args.mpp, "series": args.series, "plane": args.plane,
            "channels": args.channels, "reader": args.reader, "resampling": args.resampling}
    failed = 0
    probes: dict[Any, tuple[float, int]] = {}
    for item in items:
        try:
            lines = describe(item.input, item.output, model=runner, options=options, settings=settings,
                             read=read, tissue=args.tissue, roi=args.roi, overwrite=args.overwrite,
                             resume=args.resume, pyramid=args.pyramid, probes=probes)
        except TilerError as exc:
            failed += 1
            error(f"error: {exc}")
            continue
        log("\n".join(lines))
    log(f"dry run: {len(items) - failed} of {len(items)} inputs checked; nothing written")
    return 1 if failed else 0
