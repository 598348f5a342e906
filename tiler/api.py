"""The Python API: :func:`predict` (in memory) and :func:`run` (streamed to zarr).

Both build one :class:`~tiler.engine.Job` and execute its blocks with
:func:`~tiler.engine.run_block`; they differ only in the sink.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .engine import BlockStats, Job, Settings, run_block
from .errors import OutputError, SettingsError
from .identity import _store_root, input_digest, input_paths
from .keywords import SETTING_KEYWORDS, check_keywords, keyword_names
from .masks import build_skip, skip_predicate
from .models.load import load_runner
from .ownership import OutputLock, read_owner
from .sink import FORMAT, MemorySink, ZarrSink, check_format, refuse_unless_tiler_output
from .sources import Source, open_at


def _settings(**kwargs: Any) -> Settings:
    return Settings(**{k: v for k, v in kwargs.items() if v is not None})


def predict(
    image: Any,
    model: Any = None,
    *,
    tile: int = 512,
    overlap: int = 128,
    margin: int = 0,
    window: str = "gaussian",
    sigma_scale: float | None = None,
    batch_size: int = 8,
    device: str | None = "auto",
    precision: str = "fp32",
    provider: str = "auto",
    trust_model: bool = False,
    compile: bool = False,
    overrides: dict[str, Any] | None = None,
    level: int | None = None,
    mpp: float | None = None,
    series: int | None = None,
    plane: Any = None,
    channels: Any = None,
    tissue: str | None = None,
    roi: Any = None,
    fill: float = 0.0,
    **settings: Any,
) -> np.ndarray:
    """Blended model outputs for a whole image, in memory.

    Parameters
    ----------
    image : (H, W) or channel-last (H, W, C) array (NumPy, zarr or dask), or a path.
    model : an ``nn.Module``, a :class:`~tiler.runners.Runner`, a path, or None (built-in UNet).
    tile, overlap, margin : pixels (see :class:`~tiler.engine.Settings` for the defaults);
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
        label/macro image), which plane of a stack (``"z=3"``), which input channels (``"0,1,2"``);
        see :class:`~tiler.sources.ReadOptions`.
    tissue, roi : ``tissue="auto"`` and/or a ``roi`` mask (path or array, any resolution): tiles
        touching no foreground are not computed; pixels no computed tile covers get ``fill``.
    **settings : the other fields of :class:`~tiler.engine.Settings` (output, dtype, chunk, ...);
        every keyword of :data:`tiler.keywords.VALUE_KEYWORDS` is accepted here as by :func:`run`.

    Returns
    -------
    (C_out, H, W) float32 array: ``Σ w·y / Σ w`` over the tiles covering each pixel (with
    ``output="labels"``: (H, W) uint8; see :class:`~tiler.outputs.OutputSpec`).

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
    source = open_at(image, level=level, mpp=mpp, series=series, plane=plane, channels=channels)
    model_options = {"device": device, "precision": precision, "provider": provider, "trust_model": trust_model,
                     "overrides": overrides, "compile": batch_size if compile else False}
    try:
        return _predict(source, model, model_options, Settings(
            **{"block_width": None, **settings}, tile=tile, overlap=overlap, margin=margin, window=window,
            batch_size=batch_size,
            sigma_scale=Settings.sigma_scale if sigma_scale is None else sigma_scale, fill=fill,
        ), lambda plan: build_skip(plan, image, source, tissue=tissue, roi=roi)[0])
    finally:
        source.close()


def _predict(
    source: Source, model: Any, model_options: dict[str, Any], settings: Settings,
    skip_for: Callable[[Any], np.ndarray | None] | None = None,
) -> np.ndarray:
    runner = load_runner(model, **model_options)
    job = Job.create(source, runner, settings)
    skip = skip_for(job.plan) if skip_for else None
    if skip is not None:
        job = replace(job, skip=skip_predicate(skip))
    h, w, _ = source.shape
    out = np.zeros(job.output.shape(h, w), job.output.store_dtype)  # lazily zeroed by the kernel
    sink = MemorySink(out, job.partition.stripes, zeroed=True)
    for block in job.partition.blocks():
        run_block(job, block, sink)
    return out


@dataclass
class RunResult:
    """What :func:`run` did."""

    path: Path
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

    def summary(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else float("inf")
        shape = " x ".join(str(s) for s in self.shape)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        on = f" on {self.runtime}" if self.runtime else ""
        return (
            f"wrote {self.path}: {shape} {self.dtype}; {self.tiles} tiles{skipped} in "
            f"{self.seconds:.1f} s ({rate:.1f} MP/s){on}"
        ) + (f"; preview {self.preview}" if self.preview else "") + (
            f"; read {self.input_read}" if self.input_read else "")


def default_output_path(image: Any) -> Path:
    """The output beside the input: ``scan.tif`` -> ``scan.zarr`` (``scan.ome.tif``, ``scan.svs``,
    ``scan.png`` likewise); a zarr input ``scan.zarr`` (or ``scan.ome.zarr``) -> ``scan.pred.zarr``,
    never the input itself.

    >>> str(default_output_path("a/scan.ome.tif")), str(default_output_path("a/scan.zarr"))
    ('a/scan.zarr', 'a/scan.pred.zarr')
    """
    if not isinstance(image, (str, os.PathLike)):
        raise OutputError("an output path (out=...) is needed when the input is not a file")
    path = Path(image)
    name = path.name
    store = _store_root(path.resolve()) if path.exists() else path.resolve()
    if store != path.resolve():  # a node inside a zarr store (scan.zarr/0): beside the store
        inner = path.resolve().relative_to(store).parts
        outer = path
        for _ in inner:
            outer = outer.parent
        stem = store.name[: -len(".zarr")] if store.name.lower().endswith(".zarr") else store.name
        return outer.with_name(f"{stem}.{'-'.join(inner)}.pred.zarr")
    if name.lower().endswith((".zarr", ".zarr/")) or path.is_dir():  # a zarr store: never itself
        for suffix in (".ome.zarr", ".zarr"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return path.with_name(name + ".pred.zarr")
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".zarr")


def _input_record(image: Any, source: Source, masks: Any = (), roi: Any = None) -> dict[str, Any]:
    record: dict[str, Any] = {"shape": list(source.shape), "dtype": str(source.dtype)}
    info = source.info
    record.update(level=info.level, downsample=list(info.downsample),
                  mpp=list(info.mpp) if info.mpp else None)
    record.update({k: v for k, v in _read_record(info).items() if v is not None})
    if masks:
        record["mask"] = {m.kind: {"foreground": round(m.fraction, 4), "shape": list(m.array.shape)}
                          for m in masks}
        if isinstance(roi, (str, os.PathLike)):
            record["mask"]["roi"]["path"] = str(Path(roi).resolve())
        if roi is not None and "roi" in record["mask"]:  # the same area elsewhere is another mask
            record["mask"]["roi"]["digest"] = input_digest(roi)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).resolve()
        record["path"] = str(path)
        if path.is_file():
            stat = path.stat()
            record["bytes"] = stat.st_size
            record["mtime_ns"] = stat.st_mtime_ns
    record["digest"] = input_digest(image)
    return record


def _read_record(info: Any) -> dict[str, Any]:
    """The series (when not 0, as before series could be chosen), plane and channels read."""
    read = getattr(info, "read", None)
    return {"series": info.series or None,
            "plane": {a.lower(): i for a, i in read.plane} if read is not None and read.plane else None,
            "channels": list(read.channels) if read is not None and read.channels is not None else None}


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def run(
    image: Any,
    model: Any = None,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool | str = False,
    break_lock: bool = False,
    durable: bool = False,
    device: str | None = "auto",
    precision: str = "fp32",
    provider: str = "auto",
    trust_model: bool = False,
    compile: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool | Callable[[int, int], None] = False,
    pyramid: bool = True,
    pyramid_levels: int | None = None,
    preview: bool = False,
    client: Any = None,
    level: int | None = None,
    mpp: float | None = None,
    series: int | None = None,
    plane: Any = None,
    channels: Any = None,
    tissue: str | None = None,
    roi: Any = None,
    **settings: Any,
) -> RunResult:
    """Stream the blended output of ``model`` over ``image`` into a zarr v3 group.

    Parameters
    ----------
    image : a path (TIFF, OME-TIFF, SVS, zarr, PNG, JPEG) or an (H, W[, C]) array.
    model : as for :func:`predict`.
    out : output group path; default: :func:`default_output_path`. It may not be the input.
    overwrite : replace an existing output (only one that tiler wrote). resume : continue an
        incomplete one; refused when the input, the model or a value-determining setting changed.
        ``resume="force"`` also resumes where the model or input cannot be checked (a
        ``FunctionRunner``, a ``Runner`` without a weight digest, a custom array-like).
    break_lock : take over an output whose owner record names a run that is gone but cannot be
        recognised as such (on another host, within its lease; see :mod:`tiler.ownership`).
    durable : fsync each stripe before recording it as done (``complete`` is always recorded
        only after every file is flushed to disk).
    device, precision, provider, trust_model, compile : as for :func:`predict`.
    overrides : model metadata fields to replace (``ModelSpec`` names: in_channels, mean, std, ...).
    progress : show a progress bar (True) or call ``progress(done, total)`` with tile counts.
    pyramid : add downsampled OME-Zarr levels ``1``, ``2``, ... (see :mod:`tiler.pyramid`);
        ``pyramid_levels`` = total level count (default: down to about 1024 pixels).
    preview : also write ``<out>.png``, the input's thumbnail with the prediction overlaid.
    client : a ``dask.distributed.Client``: run the blocks as tasks on its workers (see
        :mod:`tiler.distributed`); the input and ``out`` must be at the same path on every worker.
    level, mpp : read pyramid ``level``, or resample to ``mpp`` µm per pixel; the output has that
        image's size and records its pixel size (OME scale) and georeference.
    series, plane, channels : as for :func:`predict` (recorded with the input).
    tissue, roi : ``tissue="auto"`` and/or a ``roi`` mask (path or array): tiles touching no
        foreground are skipped (counted in ``RunResult.skipped``); uncovered pixels get ``fill``.
    **settings : fields of :class:`~tiler.engine.Settings` (tile, overlap, margin, window,
        batch_size, output, dtype, fill, chunk, ...); ``overlap`` in pixels or as a fraction of the
        tile (``0 < overlap < 1``). Any other keyword is a SettingsError naming the valid ones.

    Returns
    -------
    RunResult with the output path, shape, dtype and what it cost. The group's key ``0`` holds
    (C, H, W) logits/probabilities or (H, W) labels; its attributes hold the run under ``tiler``,
    with ``complete: true`` written last.
    """
    check_keywords("tiler.run", settings, keyword_names(run) | set(SETTING_KEYWORDS))
    model_options = {"device": device, "precision": precision, "provider": provider, "trust_model": trust_model,
                     "overrides": overrides,
                     "compile": settings.get("batch_size", Settings.batch_size) if compile else False}
    if overwrite and resume:
        raise OutputError("--overwrite and --resume contradict each other; pick one")
    if resume not in (False, True, "force"):
        raise SettingsError(f"resume must be True, False or 'force', got {resume!r}")
    with closing(open_at(image, level=level, mpp=mpp, series=series, plane=plane, channels=channels)) as source:
        t0 = time.perf_counter()
        out_path = Path(out) if out is not None else default_output_path(image)
        _refuse_input_as_output(image, source, out_path)
        target = out_path.resolve()  # one name for the lock, the sink and the tasks (symlinks)
        if out_path.exists() and not (overwrite or resume):
            _refuse_existing(out_path, target)
        if overwrite and out_path.exists():
            refuse_unless_tiler_output(target)
        runner = load_runner(model, **model_options)
        job = Job.create(source, runner, _settings(**settings))
        skip, masks = build_skip(job.plan, image, source, tissue=tissue, roi=roi)
        if skip is not None:
            job = replace(job, skip=skip_predicate(skip))
        if client is not None:
            from .distributed import partition_for

            job = replace(job, partition=partition_for(job, client))
        h, w, _ = source.shape
        shape = job.output.shape(h, w)
        record = _run_record(image, source, runner, job, masks, roi)
        run_id = uuid.uuid4().hex  # names this run: tasks of any other run stop before writing
        lock = OutputLock(target, run_id)
        lock.acquire(break_lock=break_lock)
        sink: ZarrSink | None = None
        try:
            if resume and out_path.exists():
                sink = ZarrSink.open(target, owner=lock, durable=durable)
                _check_resumable(out_path, sink.attributes, record, force=resume == "force")
                sink.set_run_id(run_id)  # before any work: an earlier attempt's tasks stop
            else:
                attributes = {"tiler": {**record, "complete": False, "run_id": run_id}, "ome": _ome(shape, source)}
                sink = ZarrSink.create(
                    target, shape=shape, dtype=job.output.store_dtype, chunk=job.partition.chunk,
                    stripes=job.partition.stripes, attributes=attributes, overwrite=overwrite,
                    owner=lock, durable=durable,
                )
            done = sink.done()
            todo = [(b, job.remaining(b, done)) for b in job.partition.blocks()]
            work = [r for _, r in todo if r is not None]
            total = sum(job.tiles_in(b) for b in work)
            report = _progress(progress, total, h * w)
            stats = BlockStats()
            try:
                if client is None:
                    for block in work:
                        stats += run_block(job, block, sink, on_tiles=report)
                else:
                    from .distributed import run_blocks

                    stats = run_blocks(client, job, work, target, image=image, model=model,
                                       model_options=model_options, on_tiles=report, level=level, mpp=mpp,
                                       run_id=run_id, durable=durable)
            finally:
                report.close()
            if not sink.done().all():  # never claim complete unless every stripe is recorded
                raise OutputError(f"{out_path}: some blocks were not written; rerun with --resume")
            if pyramid:
                from .pyramid import build_pyramid

                lock.check()
                build_pyramid(sink.group, method="mode" if job.output.kind == "labels" else "mean",
                              levels=pyramid_levels)
            sink.set_complete()
        finally:
            if sink is not None:
                sink.close()
            lock.release()
        preview_path = None
        if preview:
            from .preview import write_preview

            preview_path = write_preview(out_path)
        return RunResult(
            path=out_path, shape=shape, dtype=str(job.output.store_dtype), tiles=stats.tiles,
            skipped=stats.skipped, seconds=time.perf_counter() - t0, megapixels=h * w / 1e6,
            resumed_blocks=len(todo) - len(work), stats=stats, preview=preview_path,
            runtime=runner.describe(),
            input_read=source.info.series_name,
        )


def _run_record(image: Any, source: Source, runner: Any, job: Job, masks: Any, roi: Any) -> dict[str, Any]:
    """What the output records about its run under ``tiler`` (compared on ``--resume``)."""
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": __version__,
        "input": _input_record(image, source, masks, roi),
        "model": {"name": runner.spec.name, "runner": runner.describe(), "spec": runner.spec.to_dict()},
        "settings": job.settings.record(),
    }
    fingerprint = getattr(runner, "fingerprint", None)
    record["model"]["fingerprint"] = fingerprint() if callable(fingerprint) else None
    if source.info.georeference is not None:
        record["georeference"] = source.info.georeference.to_attrs()
    record["fingerprint"] = _fingerprint(record["input"], record["model"]["spec"], record["settings"],
                                         record["model"]["fingerprint"])
    return record


def _check_resumable(path: Path, attributes: dict[str, Any], record: dict[str, Any], *, force: bool) -> None:
    """Raise :class:`OutputError` unless the output at ``path`` is this run's to continue."""
    check_format(path, attributes, resume=True)
    recorded = attributes.get("tiler", {})
    if recorded.get("fingerprint") != record["fingerprint"]:
        from ._resume import differences

        raise OutputError(
            f"{path}: cannot resume: {differences(recorded, record)}; use --overwrite to start again"
        )
    unknown = []
    if record["model"]["fingerprint"] is None:
        unknown.append(f"the model ({record['model']['runner']} has no weight digest)")
    if record["input"].get("digest") is None:
        unknown.append("the input (an array-like tiler cannot digest)")
    if unknown and not force:
        raise OutputError(
            f"{path}: cannot resume: cannot check that {' or '.join(unknown)} is unchanged; "
            "pass resume='force' if it is"
        )


def _refuse_input_as_output(image: Any, source: Source, out: Path) -> None:
    """The output may not be the input, lie inside it (or inside its zarr store), or contain it
    (``--overwrite`` would delete it)."""
    target = out.resolve()
    for path in dict.fromkeys([*input_paths(image), *input_paths(source)]):  # in order, each once
        source_path = path.resolve()
        if target == source_path or source_path in target.parents or target in source_path.parents:
            relation = ("is" if target == source_path else "is inside" if source_path in target.parents
                        else "contains")
            raise OutputError(f"{out}: the output {relation} the input {path}; choose another output path")


def _refuse_existing(path: Path, target: Path) -> None:
    """The error for an existing output without --overwrite or --resume (``target``: its real path)."""
    holder = read_owner(target)
    if holder is not None and not holder.is_dead():
        raise OutputError(f"{path}: another tiler run is writing this output: {holder.describe()}")
    try:
        complete = ZarrSink.open(path).attributes.get("tiler", {}).get("complete", False)
    except OutputError:
        raise OutputError(
            f"{path}: already exists and is not a tiler output; choose another output path"
        ) from None
    if complete:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    raise OutputError(
        f"{path}: an incomplete output exists; pass --resume to continue it or --overwrite to start again"
    )


def _ome(shape: tuple[int, ...], source: Source) -> dict[str, Any]:
    """OME-Zarr 0.5 ``multiscales`` for the full-resolution array (pixel size where known)."""
    mpp = getattr(source.info, "mpp", None)
    space = {"type": "space", "unit": "micrometer"} if mpp else {"type": "space"}
    axes = [{"name": "y", **space}, {"name": "x", **space}]
    scale = list(mpp) if mpp else [1.0, 1.0]
    if len(shape) == 3:
        axes.insert(0, {"name": "c", "type": "channel"})
        scale.insert(0, 1.0)
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": "prediction",
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            }
        ],
    }


class _Progress:
    """Tile counts to a callback or a tqdm bar (tiles, megapixels/s, ETA)."""

    def __init__(self, callback: Callable[[int, int], None] | None, bar: Any, total: int, pixels: int) -> None:
        self.callback, self.bar, self.total, self.done = callback, bar, total, 0
        self.pixels, self.t0 = pixels, time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            rate = self.pixels * self.done / max(self.total, 1) / elapsed / 1e6
            self.bar.set_postfix_str(f"{rate:.1f} MP/s", refresh=False)
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(progress: bool | Callable[[int, int], None], total: int, pixels: int) -> _Progress:
    if callable(progress):
        return _Progress(progress, None, total, pixels)
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="tile", dynamic_ncols=True, smoothing=0.1, leave=False)
        return _Progress(None, bar, total, pixels)
    return _Progress(None, None, total, pixels)
