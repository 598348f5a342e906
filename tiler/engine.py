"""The pipeline for one block: load -> run -> stitch -> convert -> write, overlapped on threads.

:func:`run_block` is the one work unit that a single process, each dask task and a resumed run all
execute. Tiles are read and batched ahead of the model in a background thread; the model runs in the
calling thread; blending and writing run in two more threads behind bounded queues, so decoding,
inference, blending and compression overlap and memory stays bounded.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import windows
from ._threads import Prefetcher, Worker
from .errors import ModelError, ModelOutputError, SettingsError
from .load import BufferPool, TileLoader
from .outputs import OutputSpec
from .plan import Block, Partition, TilePlan
from .runners.base import Normalisation, Runner
from .sink import Sink
from .sources import ChannelSource, Source
from .stitch import NonFiniteOutput, Stitcher


@dataclass(frozen=True)
class Settings:
    """Every setting of a run that is not the input, the model or the output path.

    Defaults: 512-pixel tiles with 128 pixels (25 %) of overlap and a gaussian window
    (sigma = 0.125 x tile), as MONAI and nnU-Net use: seams fall 64 pixels from tile edges, where a
    UNet's border effects have faded, at 1.78x the work of no overlap. ``margin = 0``: the gaussian
    already gives tile edges little weight. Chunks of 1024 pixels; blocks as wide as 16384 pixels.

    ``overlap`` is in pixels, or, as in MONAI's ``sliding_window_inference``, a fraction of the
    tile (``0 < overlap < 1``): it is then converted to ``round(overlap * tile)`` pixels, and
    those pixels are what is stored and recorded (``Settings(tile=512, overlap=0.25).overlap``
    is 128). Pixel counts given as integral floats (``128.0``) or NumPy integers become ``int``.
    """

    tile: int = 512
    overlap: int = 128
    margin: int = 0
    window: str = "gaussian"
    sigma_scale: float = windows.SIGMA_SCALE
    batch_size: int = 8
    output: str = "logits"
    dtype: str | None = None
    fill: float = 0.0
    chunk: int = 1024
    block_height: int | None = None
    block_width: int | None = 16384
    prefetch: int = 2
    #: Threads blending and converting side by side (None: one per core, at most 4). Any number
    #: gives the same values: each owns whole chunk columns and sums in lattice order.
    stitch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("tile", "margin", "batch_size", "chunk", "prefetch"):
            object.__setattr__(self, name, _pixels(name, getattr(self, name)))
        overlap = self.overlap
        if isinstance(overlap, (float, np.floating)) and 0 < overlap < 1:
            object.__setattr__(self, "overlap", round(float(overlap) * self.tile))
        else:
            object.__setattr__(self, "overlap", _pixels(
                "overlap", overlap, "give whole pixels (e.g. 128) or a fraction of the tile between 0 "
                "and 1 (e.g. 0.25)"))

    def record(self) -> dict[str, Any]:
        """The settings that determine the output values (recorded and checked on resume)."""
        keys = ("tile", "overlap", "margin", "window", "sigma_scale", "output", "dtype", "fill", "chunk")
        return {k: getattr(self, k) for k in keys} | {"block_width": self.block_width}


def _pixels(name: str, value: Any, fix: str = "give a whole number") -> int:
    """``value`` as an ``int`` (NumPy integers and integral floats too), else a SettingsError."""
    if isinstance(value, (bool, np.bool_)):
        raise SettingsError(f"{name} {value!r} is not a number of pixels; {fix}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise SettingsError(f"{name} {value!r} is not a whole number; {fix}")


def fit_channels(source: Source, in_channels: int | None) -> Source:
    """``source`` without its alpha channel when the model takes exactly the other channels.

    An RGBA (or grey + alpha) input for a 3- (or 1-) channel model: alpha is transparency, not
    image content, so it is dropped with a one-line note. Any other mismatch is left for the
    runner's channel check to refuse.
    """
    c = source.shape[2]
    info = getattr(source, "info", None)
    if in_channels and c == in_channels + 1 and getattr(info, "alpha", False):
        warnings.warn(f"{source.name}: dropping the alpha channel (the model takes {in_channels} "
                      f"channel(s), the image has {c - 1} plus alpha)", stacklevel=3)
        return ChannelSource(source, tuple(range(c - 1)))
    return source


def warn_input_scale(source: Source, runner: Runner) -> None:
    """Warn when non-uint8 pixels meet a model that declares no input scale (scaled by dtype)."""
    spec, dtype = runner.spec, np.dtype(source.dtype)
    if spec.scale is not None or dtype == np.uint8:
        return
    if dtype.kind in "ui":
        factor = f"1/{np.iinfo(dtype).max} (the full {dtype} range)"
        hint = f"if the data use fewer bits (12-bit: --scale {1 / 4095:.6g})"
    else:
        factor = "1 (float pixels as they are)"
        hint = "if the model expects another range"
    warnings.warn(f"{source.name}: {dtype} pixels, and the model {spec.name!r} declares no input scale: "
                  f"scaling by {factor}; pass --scale X {hint}", stacklevel=3)


@dataclass
class Job:
    """Everything needed to compute any block of one output.

    Build with :meth:`create`, which validates the settings against the image and the model.
    """

    source: Source
    runner: Runner
    settings: Settings
    plan: TilePlan
    partition: Partition
    window: np.ndarray
    output: OutputSpec
    skip: Callable[[int, int], bool] | None = None
    #: Tiles per model call after an out-of-memory error halved it (None: the batch size).
    model_batch: int | None = None

    @classmethod
    def create(
        cls,
        source: Source,
        runner: Runner,
        settings: Settings,
        *,
        skip: Callable[[int, int], bool] | None = None,
    ) -> Job:
        spec = runner.spec
        source = fit_channels(source, spec.in_channels)
        warn_input_scale(source, runner)
        h, w, c = source.shape
        plan = TilePlan.create(
            (h, w), tile=settings.tile, overlap=settings.overlap, margin=settings.margin,
            multiple=spec.multiple,
        )
        window = windows.window_2d(
            settings.window, settings.tile, margin=settings.margin, sigma_scale=settings.sigma_scale
        )
        try:
            probe = runner(np.zeros((1, c, settings.tile, settings.tile), source.dtype))
        except runner.out_of_memory_errors:
            raise _out_of_memory() from None
        except ModelError as exc:  # e.g. channels that do not fit: name the input
            raise type(exc)(f"{source.name}: {exc}") from None
        if spec.out_channels and probe.shape[1] != spec.out_channels:
            raise ModelError(
                f"the model's metadata says {spec.out_channels} output channels, "
                f"but it returned {probe.shape[1]}"
            )
        output = OutputSpec(
            kind=settings.output, channels=int(probe.shape[1]), dtype=settings.dtype,
            activation=spec.activation, fill=settings.fill,
        )
        partition = Partition.create(
            (h, w), chunk=settings.chunk, block_height=settings.block_height,
            block_width=settings.block_width,
        )
        return cls(source, runner, settings, plan, partition, window, output, skip)

    def tiles_in(self, block: Block) -> int:
        rows, cols = self.plan.tiles_touching(block)
        return len(rows) * len(cols)

    def remaining(self, block: Block, done: np.ndarray) -> Block | None:
        """The part of ``block`` from its first unfinished chunk row on, or None if finished."""
        for j in self.partition.chunk_rows(block):
            if not done[j, block.col]:
                y0 = max(block.y0, j * self.partition.chunk)
                return Block(block.row, block.col, y0, block.y1, block.x0, block.x1)
        return None


@dataclass
class BlockStats:
    """What one block cost."""

    tiles: int = 0
    skipped: int = 0
    source_rows: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __iadd__(self, other: BlockStats) -> BlockStats:
        self.tiles += other.tiles
        self.skipped += other.skipped
        self.source_rows += other.source_rows
        self.seconds += other.seconds
        self.model_seconds += other.model_seconds
        return self


def _loader_normalisation(job: Job) -> Normalisation | None:
    """The normalisation the tile loader applies while copying tiles (then the runner is called
    with ``normalised=True``); None when the runner normalises itself: on its device, or in a
    ``normalise()`` of its own."""
    if type(job.runner).normalise is not Runner.normalise:
        return None
    return job.runner.normalisation(job.source.dtype)


def _non_finite(job: Job, exc: NonFiniteOutput) -> ModelOutputError:
    """The error for a NaN/inf blended pixel, naming the tile that produced it.

    Only the blended rows are checked while running (one cheap pass); on a hit, the tiles covering
    the pixel are loaded and run again, one by one, to find the culprit.
    """
    norm = _loader_normalisation(job)
    for i in job.plan.rows.touching(exc.y, exc.y + 1):
        for j in job.plan.cols.touching(exc.x, exc.x + 1):
            if job.skip is not None and job.skip(i, j):
                continue
            loader = TileLoader(job.source, job.plan, range(i, i + 1), range(j, j + 1), batch_size=1,
                                normalisation=norm)
            y, x = job.plan.rows.origin(i), job.plan.cols.origin(j)
            for batch in (b for b in loader if len(b.index)):
                out = _run_model(job, batch.tiles, normalised=norm is not None)
                if not np.isfinite(out[0, :, exc.y - y, exc.x - x]).all():
                    return ModelOutputError(
                        f"{job.source.name}: the model returned NaN or infinite values for the tile "
                        f"at row {y}, column {x} (lattice position {i}, {j}); check the model and "
                        "the input's normalisation"
                    )
    return ModelOutputError(
        f"{job.source.name}: the blended output is NaN or infinite at row {exc.y}, column {exc.x} "
        "(the model's outputs there are too large for float32, or not reproducible)"
    )


def _out_of_memory() -> ModelError:
    return ModelError(
        "out of device memory with a single tile per batch; use a smaller --tile or --precision bf16/fp16"
    )


def _run_model(job: Job, tiles: np.ndarray, *, normalised: bool = False) -> np.ndarray:
    """``job.runner(tiles, normalised=...)`` in slices of ``job.model_batch`` tiles; halves that on OOM.

    (N, C, t, t) raw tiles -> (N, C_out, t, t) float32. Tiles are independent, so the slicing does
    not change any value. The first halving warns once per job.
    """
    runner = job.runner
    step = job.model_batch or len(tiles)
    parts: list[np.ndarray] = []
    start = 0
    while start < len(tiles):
        try:
            parts.append(runner(tiles[start : start + step], normalised=normalised))
            start += step
        except runner.out_of_memory_errors:
            runner.release_memory()
            if step == 1:
                raise _out_of_memory() from None
            step = max(1, step // 2)
            if job.model_batch is None:
                warnings.warn(
                    f"out of device memory: running the model on {step} tiles at a time "
                    f"(batch size was {len(tiles)})",
                    stacklevel=2,
                )
            job.model_batch = step
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def column_parts(block: Block, chunk: int, parts: int) -> list[Block]:
    """``block`` cut into at most ``parts`` side-by-side blocks of whole chunk columns.

    Each part gets its own stitcher (thread): accumulation and conversion run in parallel, and
    every output chunk is still written whole, by one writer.
    """
    first, last = block.x0 // chunk, math.ceil(block.x1 / chunk)
    n = max(1, min(parts, last - first))
    cuts = [first + (last - first) * p // n for p in range(n + 1)]
    return [
        Block(block.row, block.col, block.y0, block.y1, max(block.x0, a * chunk), min(block.x1, b * chunk))
        for a, b in zip(cuts, cuts[1:])
    ]


class _Countdown:
    """Call ``action`` once ``done`` has been called ``n`` times (from any threads)."""

    def __init__(self, n: int, action: Callable[[], None]) -> None:
        self.n, self.action, self._lock = n, action, threading.Lock()

    def done(self) -> None:
        with self._lock:
            self.n -= 1
            last = self.n == 0
        if last:
            self.action()


def run_block(
    job: Job, block: Block, sink: Sink, *, on_tiles: Callable[[int], None] | None = None
) -> BlockStats:
    """Compute ``block`` and write it into ``sink``, stripe by stripe, recording each as done.

    Threads: the loader (with its decoders) reads and normalises tiles ahead; the model runs in
    the calling thread; ``Settings.stitch_threads`` stitchers, each owning a band of the block's
    chunk columns, blend every batch and convert finished chunk rows side by side; one writer
    writes them and records a stripe once all of its parts are written.
    """
    t0 = time.perf_counter()
    stats = BlockStats()
    rows, cols = job.plan.tiles_touching(block)
    parts = column_parts(block, job.partition.chunk, job.settings.stitch_threads or default_stitch_threads())
    # batches in the loader's queue, in the model, and in every stitcher's queue
    pool = BufferPool(job.settings.prefetch + 2 + 2 * len(parts))
    normalisation = _loader_normalisation(job)
    loader = TileLoader(
        job.source, job.plan, rows, cols, batch_size=job.settings.batch_size, skip=job.skip, pool=pool,
        normalisation=normalisation,
    )
    view = getattr(sink, "view", None)
    in_place = view is not None and job.output.kind == "logits" and job.skip is None
    stitchers = [
        Stitcher(
            job.plan, part, job.window, job.output.channels, job.partition.chunk,
            (lambda y0, y1, p=part: view(y0, y1, p.x0, p.x1)) if in_place else None,
            complete=job.skip is None, target_zeroed=getattr(sink, "zeroed", False),
        )
        for part in parts
    ]
    written: dict[int, int] = {}  # chunk row -> parts written (the writer thread's own)

    def write(item: tuple[int, tuple[int, int, int, int], np.ndarray, Stitcher]) -> None:
        index, (y0, y1, x0, x1), data, stitcher = item
        sink.write(y0, y1, x0, x1, data)
        stitcher.recycle(data)  # written: its buffer can hold a later chunk row (logits)
        written[index] = written.get(index, 0) + 1
        if written[index] == len(parts):
            sink.mark_done(index, block.col)
            del written[index]

    writer: Worker[Any] = Worker(write, maxsize=2 * len(parts), name="tiler-write")

    def stitch_with(stitcher: Stitcher) -> Callable[[Any], None]:
        def stitch(item: tuple[np.ndarray | None, np.ndarray, list[int], _Countdown | None]) -> None:
            outputs, index, rows_done, release = item
            if outputs is not None:
                stitcher.add(outputs, index)
            if release is not None:  # the outputs were a view of the tiles: free once all added
                release.done()
            if rows_done:
                for row in stitcher.finished(rows_done[-1]):
                    # converted here, in parallel across the parts; the write queue holds stored
                    # values (uint8 probs are a quarter of the float32 logits)
                    out = None
                    if job.output.kind != "logits":
                        shape = job.output.shape(row.y1 - row.y0, row.x1 - row.x0)
                        out = stitcher.take(shape, job.output.store_dtype)
                    data = job.output.convert(row.logits, row.covered, out)
                    if data is not row.logits:
                        stitcher.recycle(row.logits)
                    writer.put((row.index, (row.y0, row.y1, row.x0, row.x1), data, stitcher))
        return stitch

    workers: list[Worker[Any]] = [
        Worker(stitch_with(s), maxsize=2, name=f"tiler-stitch-{k}") for k, s in enumerate(stitchers)
    ]
    try:
        with Prefetcher(loader, maxsize=job.settings.prefetch, name="tiler-load") as batches:
            for batch in batches:
                outputs = None
                if len(batch.index):
                    m0 = time.perf_counter()
                    outputs = _run_model(job, batch.tiles, normalised=normalisation is not None)
                    stats.model_seconds += time.perf_counter() - m0
                release = None
                if outputs is None or not np.may_share_memory(outputs, batch.tiles):
                    pool.give(batch.tiles)
                else:
                    release = _Countdown(len(workers), lambda tiles=batch.tiles: pool.give(tiles))
                for worker in workers:
                    worker.put((outputs, batch.index, batch.rows_done, release))
                if on_tiles:
                    skipped_now = loader.tiles_skipped - stats.skipped
                    stats.skipped = loader.tiles_skipped
                    on_tiles(len(batch.index) + skipped_now)
        for worker in workers:
            worker.finish()
        writer.finish()
    except BaseException as exc:
        for worker in workers:
            worker.abandon()
        writer.abandon()
        if isinstance(exc, NonFiniteOutput):  # the first bad pixel any stitcher found
            found = [w.error for w in workers if isinstance(w.error, NonFiniteOutput)]
            first = min([exc, *found], key=lambda e: (e.y, e.x))
            raise _non_finite(job, first) from None
        raise
    stats.tiles = loader.tiles_loaded
    stats.skipped = loader.tiles_skipped
    stats.source_rows = loader.cache.rows_read
    stats.seconds = time.perf_counter() - t0
    return stats


def default_stitch_threads() -> int:
    """Stitcher threads when the settings leave it open: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def repeated_fraction(job: Job, partition: Partition | None = None) -> float:
    """(tiles computed over all blocks) / (tiles in the lattice) - 1: work repeated at block borders.

    Blocks stream top to bottom through a rolling accumulator, so a block's height costs no memory;
    only the number of block borders repeats work (about ``tile / block edge`` per border).
    """
    partition = partition or job.partition
    total = sum(job.tiles_in(block) for block in partition.blocks())
    return total / job.plan.n_tiles - 1.0


def grid_for_workers(job: Job, workers: int, *, budget: float = 0.05, per_worker: int = 4) -> Partition:
    """A partition giving every one of ``workers`` work, with repeated work within ``budget``.

    Only the block height changes (block columns are a recorded setting, so resumes stay valid).
    Tries ``per_worker`` blocks per worker (load balance, progress, resume granularity), then
    fewer, down to one block per worker, which is kept even over budget (small images).
    """
    part = job.partition
    chunk_rows = math.ceil(part.height / part.chunk)
    cols = part.grid[1]
    best = part
    for k in range(max(1, per_worker), 0, -1):
        block_rows = min(chunk_rows, max(1, math.ceil(k * max(1, workers) / cols)))
        height = math.ceil(chunk_rows / block_rows) * part.chunk
        best = Partition.create(
            (part.height, part.width), chunk=part.chunk, block_height=height, block_width=part.block_width
        )
        if repeated_fraction(job, best) <= budget:
            return best
    return best
