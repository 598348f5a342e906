"""The Python API: :func:`predict` (in memory) and :func:`run` (streamed to zarr).

Both build one :class:`~tiler.engine.job.Job` and execute its blocks with
:func:`~tiler.engine.pipeline.run_block`; they differ only in the sink.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import SETTING_KEYWORDS, ModelOptions, Settings, check_keywords, keyword_names, read_settings
from .engine.job import BlockStats, Job, build_job
from .engine.pipeline import run_block
from .engine.progress import progress_counter
from .engine.resolution import model_mpp
from .errors import OutputError, SettingsError
from .masks.tissue import Mask
from .plan.partition import Block
from .runners.factory import load_runner
from .sources import Source, open_at
from .sources.remote import COUNTERS
from .store.location import RemoteLocation, as_location
from .store.ome import ome_metadata
from .store.ownership import OutputLock
from .store.paths import default_output_path, refuse_existing, refuse_input_as_output
from .store.pyramid import StreamingPyramid, build_pyramid
from .store.record import check_resumable, recorded_chunk, run_record
from .store.sink import MemorySink, Sink, ZarrSink, refuse_unless_tiler_output


def _settings(given: Mapping[str, Any], **defaults: Any) -> Settings:
    """:class:`Settings` from ``defaults`` and the keywords ``given`` that are not None (None: the default)."""
    return Settings(**(defaults | {k: v for k, v in given.items() if v is not None}))


def predict(
    image: Any,
    model: Any = None,
    *,
    device: str | None = "auto", precision: str = "fp32", provider: str = "auto", trust_model: bool = False,
    compile: bool = False, overrides: dict[str, Any] | None = None,  # config.ModelOptions
    level: int | None = None, mpp: float | None = None, series: int | None = None, plane: Any = None,
    channels: Any = None, reader: str | None = None, resampling: str | None = None,  # sources.ReadOptions
    tissue: str | None = None, roi: Any = None,  # masks
    **settings: Any,
) -> np.ndarray:
    """Blended model outputs for a whole image, in memory.

    Parameters
    ----------
    image : (H, W) or channel-last (H, W, C) array (NumPy, zarr or dask), or a path.
    model : an ``nn.Module``, a :class:`~tiler.runners.Runner`, a path, or None (built-in UNet).
    tile, overlap, margin : pixels (see :class:`~tiler.config.Settings` for the defaults);
        ``overlap`` may also be a fraction of the tile, ``0 < overlap < 1`` (MONAI's convention),
        used as ``round(overlap * tile)`` pixels.
    window : "gaussian", "constant", "linear" or "cosine".
    batch_size, device, precision : how the model runs.
    provider : ONNX Runtime execution provider for ``.onnx`` models: auto, tensorrt, cuda or cpu.
    trust_model : allow checkpoints that need full unpickling (they can run code).
    overrides : model metadata fields to replace (``ModelSpec`` names: in_channels, mean, std, ...).
    compile : run a PyTorch model through ``torch.compile``, every batch padded to ``batch_size``
        tiles (one shape: compiled once; pays off on GPUs and long runs).
    level, mpp : read pyramid ``level``, or resample to ``mpp`` µm per pixel (see
        :func:`~tiler.sources.open_at`); H, W are then that image's size.
    series, plane, channels : which image of a multi-series file (default: the largest, never a
        label/macro image), which plane of a stack (``"z=3"``), which input channels (``"0,1,2"``,
        or band names: ``"B08,B04"``); see :class:`~tiler.sources.ReadOptions`.
    reader : the library that opens a file: ``"auto"``/None (by content and name), ``"tifffile"``,
        ``"openslide"``, ``"wsidicom"``, ``"rasterio"`` (:data:`tiler.sources.READERS`).
    tissue, roi : ``tissue="auto"`` and/or a ``roi`` mask (path or array, any resolution): tiles
        touching no foreground are not computed; pixels no computed tile covers get ``fill``.
    **settings : the other fields of :class:`~tiler.config.Settings` (output, dtype, chunk, ...);
        every keyword of :data:`tiler.config.VALUE_KEYWORDS` is accepted here as by :func:`run`.

    Returns
    -------
    (C_out, H, W) float32 array: ``Σ w·y / Σ w`` over the tiles covering each pixel (with
    ``output="labels"``: (H, W) uint8; see :class:`~tiler.engine.outputs.OutputSpec`).

    Examples
    --------
    >>> import numpy as np, tiler
    >>> from tiler.runners.base import FunctionRunner
    >>> plus_one = FunctionRunner(lambda x: x + 1, normalise=False)
    >>> out = tiler.predict(np.zeros((100, 70, 3), np.float32), plus_one, tile=64, overlap=16)
    >>> out.shape, float(out.min()), float(out.max())
    ((3, 100, 70), 1.0, 1.0)
    """
    check_keywords("tiler.predict", settings, keyword_names(predict) | set(SETTING_KEYWORDS))
    options = ModelOptions(device, precision, provider, trust_model, compile, overrides)
    job_settings = _settings(settings, block_width=None)  # in memory: one block column
    runner, local, mpp = _runner_and_mpp(image, model, options, job_settings, level=level, mpp=mpp,
                                         read={"series": series, "plane": plane, "channels": channels,
                                               "reader": reader, "resampling": resampling})
    with closing(open_at(image, level=level, mpp=mpp, series=series, plane=plane, channels=channels,
                         reader=reader, resampling=resampling)) as source:
        job, _masks = _make_job(image, source, runner, local, job_settings, tissue=tissue, roi=roi)
        h, w, _ = source.shape
        out = np.zeros(job.output.shape(h, w), job.output.store_dtype)  # lazily zeroed by the kernel
        sink = MemorySink(out, job.partition.stripes, zeroed=True)
        for block in job.partition.blocks():
            run_block(job, block, sink)
        return out


def _runner_and_mpp(
    image: Any, model: Any, options: ModelOptions, settings: Settings, *, level: int | None, mpp: float | None,
    read: dict[str, Any],
) -> tuple[Any, ModelOptions, float | None]:
    """Step 0: the runner (loaded once), the options to build the job with, and the pixel size to
    read at: ``mpp``, or the model's own where neither ``level`` nor ``mpp`` is given (see
    :func:`~tiler.engine.resolution.model_mpp`)."""
    runner = load_runner(model, **options.runner_keywords(settings.batch_size))
    chosen = model_mpp(image, runner.spec, level=level, mpp=mpp, **read)
    return runner, replace(options, compile=False), chosen  # compiled already, if asked


def _make_job(
    image: Any, source: Source, model: Any, options: ModelOptions, settings: Settings, *,
    tissue: Any = None, roi: Any = None, client: Any = None,
) -> tuple[Job, list[Mask]]:
    """Step 1: the runner, the job, its skip table (``tissue``/``roi``) and, on a cluster, its partition."""
    job, masks = build_job(image, source, model, options, settings, tissue=tissue, roi=roi)
    if client is not None:
        from .distributed.tasks import partition_for

        job = replace(job, partition=partition_for(job, client))
    return job, masks


@dataclass
class RunResult:
    """What :func:`run` did (``path``: a local path, or the S3 location written)."""

    path: Path | RemoteLocation
    shape: tuple[int, ...]
    dtype: str
    tiles: int
    skipped: int
    seconds: float
    megapixels: float
    resumed_blocks: int = 0
    stats: BlockStats = field(default_factory=BlockStats)
    preview: Path | None = None
    #: The runtime and device the model ran on, as the runner describes itself
    #: (``PyTorch 2.x on cuda:0 (fp16)``, ``ONNX Runtime 1.x CUDAExecutionProvider on cuda:0 (fp32)``).
    runtime: str = ""
    input_read: str | None = None  # the series / plane read, e.g. "series 1 'big' (the largest of 2; ...)"
    #: ``resume`` found the output complete (same input, model and settings) and changed nothing.
    already_complete: bool = False
    #: Object-store requests this run made (input and output), and how many of them were retries
    #: of a transient failure (see :mod:`tiler.sources.remote`); 0 for local files.
    requests: int = 0
    retries: int = 0
    #: With ``exact=True``: the context radius, crop and measured residual, in words.
    exact: str | None = None

    def summary(self) -> str:
        if self.already_complete:
            return f"{self.path}: already complete (same input, model and settings); nothing to do"
        rate = self.megapixels / self.seconds if self.seconds > 0 else float("inf")
        shape = " x ".join(str(s) for s in self.shape)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        on = f" on {self.runtime}" if self.runtime else ""
        return (
            f"wrote {self.path}: {shape} {self.dtype}; {self.tiles} tiles{skipped} in "
            f"{self.seconds:.1f} s ({rate:.1f} MP/s){on}"
        ) + (f"; preview {self.preview}" if self.preview else "") + (
            f"; read {self.input_read}" if self.input_read else "") + (
            f"; {self.requests} object-store requests ({self.retries} retried)" if self.requests else "") + (
            f"; {self.exact}" if self.exact else "")


def run(
    image: Any,
    model: Any = None,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False, resume: bool | str = False, break_lock: bool = False, durable: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    pyramid: bool = True, pyramid_levels: int | None = None, preview: bool | float = False,
    client: Any = None,
    device: str | None = "auto", precision: str = "fp32", provider: str = "auto", trust_model: bool = False,
    compile: bool = False, overrides: dict[str, Any] | None = None,  # config.ModelOptions
    level: int | None = None, mpp: float | None = None, series: int | None = None, plane: Any = None,
    channels: Any = None, reader: str | None = None, resampling: str | None = None,  # sources.ReadOptions
    tissue: str | None = None, roi: Any = None,  # masks
    **settings: Any,
) -> RunResult:
    """Stream the blended output of ``model`` over ``image`` into a zarr v3 group.

    Parameters
    ----------
    image : a path (TIFF, OME-TIFF, SVS, zarr, PNG, JPEG) or an (H, W[, C]) array.
    model : as for :func:`predict`.
    out : output group path, or an ``s3://bucket/scan.zarr`` URL; default:
        :func:`default_output_path` (beside the input, also on S3). It may not be the input.
        ``image`` may be an ``s3://``, ``gs://`` or ``https://`` URL too (credentials and endpoints
        from each cloud's standard variables and files, e.g. ``AWS_ENDPOINT_URL``).
    overwrite : replace an existing output (only one that tiler wrote). resume : continue an
        incomplete one; refused when the input, the model or a value-determining setting changed.
        ``resume="force"`` also resumes where the model or input cannot be checked (a
        ``FunctionRunner``, a ``Runner`` without a weight digest, a custom array-like).
    break_lock : take over an output whose owner record names a run that is gone but cannot be
        recognised as such (on another host, within its lease; see :mod:`tiler.store.ownership`).
    durable : fsync each stripe before recording it as done (``complete`` is always recorded
        only after every file is flushed to disk).
    device, precision, provider, trust_model, compile : as for :func:`predict`.
    overrides : model metadata fields to replace (``ModelSpec`` names: in_channels, mean, std, ...).
    progress : show a progress bar (True) or call ``progress(done, total)`` with tile counts.
    pyramid : add downsampled OME-Zarr levels ``1``, ``2``, ... (see :mod:`tiler.store.pyramid`);
        ``pyramid_levels`` = total level count (default: down to about 1024 pixels).
    preview : also write ``<out>.png``, the input's thumbnail with the prediction overlaid and a
        legend; a number from 0 to 1 is the overlay's opacity (``True``: 0.4).
    client : a ``dask.distributed.Client``: run the blocks as tasks on its workers (see
        :mod:`tiler.distributed.tasks`); the input and ``out`` must be at the same path on every worker.
    level, mpp : read pyramid ``level``, or resample to ``mpp`` µm per pixel; the output has that
        image's size and records its pixel size (OME scale) and georeference.
    series, plane, channels, reader : as for :func:`predict` (recorded with the input).
    tissue, roi : ``tissue="auto"`` and/or a ``roi`` mask (path or array): tiles touching no
        foreground are skipped (counted in ``RunResult.skipped``); uncovered pixels get ``fill``.
    **settings : fields of :class:`~tiler.config.Settings` (tile, overlap, margin, window,
        context, exact, tta, batch_size, output, dtype, fill, chunk, ...); ``overlap`` in pixels or
        as a fraction of the tile (``0 < overlap < 1``). Any other keyword is a SettingsError naming
        the valid ones. ``settings=``: a file written by ``tiler calibrate --json`` (or a dict, a
        ``Settings``) giving the defaults; keywords given beside it win.

    Returns
    -------
    RunResult with the output path, shape, dtype and what it cost. The group's key ``0`` holds
    (C, H, W) logits/probabilities or (H, W) labels; its attributes hold the run under ``tiler``,
    with ``complete: true`` written last.
    """
    base = settings.pop("settings", None)  # a calibration file, a dict or a Settings: keywords win
    check_keywords("tiler.run", settings, keyword_names(run) | set(SETTING_KEYWORDS))
    if base is not None:
        settings = read_settings(base) | settings
    if overwrite and resume:
        raise OutputError("--overwrite and --resume contradict each other; pick one")
    if resume not in (False, True, "force"):
        raise SettingsError(f"resume must be True, False or 'force', got {resume!r}")
    options = ModelOptions(device, precision, provider, trust_model, compile, overrides)
    job_settings = _settings(settings)
    runner, local, mpp = _runner_and_mpp(image, model, options, job_settings, level=level, mpp=mpp,
                                         read={"series": series, "plane": plane, "channels": channels,
                                               "reader": reader, "resampling": resampling})
    io_before = COUNTERS.snapshot()
    with closing(open_at(image, level=level, mpp=mpp, series=series, plane=plane, channels=channels,
                         reader=reader, resampling=resampling)) as source:
        t0 = time.perf_counter()
        out_path, target = _output_path(image, source, out, overwrite=overwrite, resume=resume)
        if preview and isinstance(target, RemoteLocation):
            raise OutputError(f"{out_path}: --preview writes a local PNG beside the output; make it "
                              "afterwards with tiler export-result --format png")
        if resume and settings.get("chunk") is None and (chunk := recorded_chunk(target)) is not None:
            job_settings = replace(job_settings, chunk=chunk)  # the written arrays' chunk, whatever the default
        job, masks = _make_job(image, source, runner, local, job_settings, tissue=tissue, roi=roi,
                               client=client)
        record = run_record(image, source, job.runner, job.settings.record(), masks, roi)
        if job.exact is not None:  # what exact tiling found (not fingerprinted: it follows from the rest)
            record["exact"] = job.exact.to_dict()
        run_id = uuid.uuid4().hex  # names this run: tasks of any other run stop before writing
        lock = OutputLock(target, run_id)
        lock.acquire(break_lock=break_lock)
        sink: ZarrSink | None = None
        try:
            sink = _open_sink(job, out_path, target, record, lock, resume=resume, overwrite=overwrite,
                              durable=durable)
            done = sink.done()
            todo = [(b, job.remaining(b, done)) for b in job.partition.blocks()]
            work = [r for _, r in todo if r is not None]
            complete = bool(resume) and sink.complete
            stats = BlockStats()
            if not complete:  # a resumed complete output (checked: the same run) is left as it is
                stream = _pyramid_stream(job, sink, done, pyramid=pyramid, levels=pyramid_levels, client=client)
                stats = _execute(job, work, stream or sink, target, run_id, progress=progress, client=client,
                                 image=image, model=model, options=options, level=level, mpp=mpp,
                                 durable=durable)
                _finalise(job, sink, out_path, lock, pyramid=pyramid, pyramid_levels=pyramid_levels,
                          stream=stream)
        finally:
            if sink is not None:
                sink.close()
            lock.release()
        preview_path = None
        if preview and isinstance(out_path, Path):
            from .results.preview import write_preview

            preview_path = write_preview(out_path, alpha=0.4 if preview is True else float(preview))
        h, w, _ = source.shape
        requests, _, retries = (a - b for a, b in zip(COUNTERS.snapshot(), io_before))
        return RunResult(
            path=out_path, shape=job.output.shape(h, w), dtype=str(job.output.store_dtype), tiles=stats.tiles,
            skipped=stats.skipped, seconds=time.perf_counter() - t0, megapixels=h * w / 1e6,
            resumed_blocks=len(todo) - len(work), stats=stats, preview=preview_path,
            runtime=job.runner.describe(),
            input_read=source.info.series_name, already_complete=complete, requests=requests, retries=retries,
            exact=job.exact.describe() if job.exact is not None else None,
        )


def _output_path(image: Any, source: Source, out: Any, *, overwrite: bool,
                 resume: bool | str) -> tuple[Path | RemoteLocation, Path | RemoteLocation]:
    """The output path (``out``, or beside the input) and its real path (one name for the lock, the
    sink and the tasks: symlinks resolved), refused where writing it would be unsafe. An output
    on an object store is a :class:`~tiler.store.location.RemoteLocation` (its own real path)."""
    out_path = as_location(out if out is not None else default_output_path(image))
    refuse_input_as_output(image, source, out_path)
    if isinstance(out_path, RemoteLocation):
        out_path.check_bucket()  # before the owner record is written there
    target = out_path.resolve()
    if out_path.exists() and not (overwrite or resume):
        refuse_existing(out_path, target)
    if overwrite and out_path.exists():
        refuse_unless_tiler_output(target)
    return out_path, target


def _open_sink(job: Job, path: Path | RemoteLocation, target: Path | RemoteLocation, record: dict[str, Any],
               lock: OutputLock, *,
               resume: bool | str, overwrite: bool, durable: bool) -> ZarrSink:
    """Step 2: the output group at ``target`` (``path`` resolved), continued (checked against
    ``record``) or created (``complete: false``)."""
    if resume and path.exists():
        sink = ZarrSink.open(target, owner=lock, durable=durable)
        try:
            check_resumable(path, sink.attributes, record, force=resume == "force")
        except BaseException:
            sink.close()
            raise
        if not sink.complete:  # complete: nothing to do, nothing written
            sink.set_run_id(lock.run_id)  # before any work: an earlier attempt's tasks stop
        return sink
    h, w, _ = job.source.shape
    shape = job.output.shape(h, w)
    attributes = {"tiler": {**record, "complete": False, "run_id": lock.run_id},
                  "ome": ome_metadata(shape, job.source)}
    return ZarrSink.create(
        target, shape=shape, dtype=job.output.store_dtype, chunk=job.partition.chunk,
        stripes=job.partition.stripes, attributes=attributes, overwrite=overwrite, owner=lock, durable=durable,
    )


def _pyramid_stream(job: Job, sink: ZarrSink, done: np.ndarray, *, pyramid: bool, levels: int | None,
                    client: Any) -> StreamingPyramid | None:
    """The pyramid built while level 0 is written, when this process writes all of level 0 (a fresh
    run, no dask client); None: built after level 0 by :func:`~tiler.store.pyramid.build_pyramid`."""
    if not pyramid or client is not None or done.any() or not StreamingPyramid.applies(job.partition.chunk):
        return None
    return StreamingPyramid(sink, method=_pyramid_method(job), levels=levels)


def _pyramid_method(job: Job) -> str:
    return "mode" if job.output.kind == "labels" else "mean"


def _execute(job: Job, work: list[Block], sink: Sink, path: Path | RemoteLocation, run_id: str, *,
             progress: bool | Callable[[int, int], None], client: Any, image: Any, model: Any,
             options: ModelOptions, level: int | None, mpp: float | None, durable: bool) -> BlockStats:
    """Step 3: the blocks still to do, here or as tasks on ``client``'s workers."""
    h, w, _ = job.source.shape
    report = progress_counter(progress, sum(job.tiles_in(b) for b in work), h * w)
    try:
        if client is None:
            stats = BlockStats()
            for block in work:
                stats += run_block(job, block, sink, on_tiles=report)
            return stats
        from .distributed.tasks import run_blocks

        out = str(path) if isinstance(path, RemoteLocation) else path
        return run_blocks(client, job, work, out, image=image, model=model,
                          model_options=options.runner_keywords(job.settings.batch_size), on_tiles=report,
                          level=level, mpp=mpp, run_id=run_id, durable=durable)
    finally:
        report.close()


def _finalise(job: Job, sink: ZarrSink, path: Path | RemoteLocation, lock: OutputLock, *, pyramid: bool,
              pyramid_levels: int | None, stream: StreamingPyramid | None = None) -> None:
    """Step 4: check every stripe is recorded, finish the pyramid, then record ``complete`` (last)."""
    if not sink.done().all():  # never claim complete unless every stripe is recorded
        raise OutputError(f"{path}: some blocks were not written; rerun with --resume")
    if pyramid:
        lock.check()
        if stream is None or not stream.finish():
            build_pyramid(sink.group, method=_pyramid_method(job), levels=pyramid_levels)
    lock.check()
    _add_class_metadata(job, sink)
    sink.set_complete()


def _add_class_metadata(job: Job, sink: ZarrSink) -> None:
    """Class names and colours where viewers look: ``omero`` channels for probabilities/logits, an
    OME-Zarr label image (``labels/prediction``) for labels (see :mod:`tiler.store.ome`)."""
    from .models.colours import class_colours, hex_colour
    from .store.ome import add_label_image, omero_metadata

    spec, output = job.runner.spec, job.output
    classes = max(output.channels, 2)
    names = list(spec.class_names) if len(spec.class_names) == classes else [str(k) for k in range(classes)]
    if output.channels == 1 and len(spec.class_names) == 1:
        names = ["background", spec.class_names[0]]
    colours = class_colours(classes, spec.class_colours)
    if output.kind == "labels":
        if not isinstance(sink.path, Path):  # an object store: the label image links local chunk files
            return
        add_label_image(sink.group, sink.path, names, [(int(c[0]), int(c[1]), int(c[2])) for c in colours])
        return
    channel_colours = colours[1:] if output.channels == 1 else colours  # one channel: the foreground
    channel_names = names[1:] if output.channels == 1 else names
    ome = dict(sink.group.attrs["ome"])
    ome["omero"] = omero_metadata(channel_names, [hex_colour(c) for c in channel_colours], kind=output.kind,
                                  dtype=str(output.store_dtype))
    sink.group.attrs["ome"] = ome
