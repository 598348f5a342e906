"""The pipeline for one block: load -> run -> stitch -> convert -> write, overlapped on threads.

:func:`run_block` is the one work unit that a single process, each dask task and a resumed run all
execute. Tiles are read and batched ahead of the model in a background thread; the model runs in the
calling thread; blending and writing run in two more threads behind bounded queues, so decoding,
inference, blending and compression overlap and memory stays bounded.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..cores import pool_threads
from ..errors import ModelOutputError
from ..models.spec import Normalisation
from ..plan.box import Box
from ..plan.partition import Block
from ..runners.base import Runner
from ..store.sink import Sink
from .buffers import BufferPool
from .job import BlockStats, Job, _out_of_memory
from .load import TileLoader
from .stitch import NonFiniteOutput, Stitcher, accumulation_rows
from .threads import Prefetcher, Worker


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
                out = _host(_run_model(job, batch.tiles, normalised=norm is not None))
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



def _run_model(job: Job, tiles: np.ndarray, *, normalised: bool = False) -> np.ndarray:
    """``job.runner(tiles, normalised=..., tta=...)`` in slices of ``job.model_batch`` tiles; halves
    that on OOM.

    (N, C, t, t) raw tiles -> (N, C_out, t, t) float32. Tiles are independent, so the slicing does
    not change any value. The first halving warns once per job.
    """
    runner = job.runner
    step = job.model_batch or len(tiles)
    parts: list[np.ndarray] = []
    start = 0
    while start < len(tiles):
        try:
            parts.append(runner(tiles[start : start + step], normalised=normalised, tta=job.settings.tta))
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
    if len(parts) == 1:
        return parts[0]
    if not isinstance(parts[0], np.ndarray):  # device tensors (a runner that blends on its device)
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


def _may_share(outputs: Any, tiles: np.ndarray) -> bool:
    """Whether the model's outputs may be a view of the batch's tile buffer (then the buffer is
    given back only once every stitcher has added them). Device tensors never are."""
    if not isinstance(outputs, np.ndarray):
        if outputs.device.type != "cpu":
            return False
        outputs = outputs.numpy()
    return bool(np.may_share_memory(outputs, tiles))


def _host(outputs: Any) -> np.ndarray:
    """Model outputs as a NumPy array (device tensors copied back)."""
    return outputs if isinstance(outputs, np.ndarray) else outputs.detach().cpu().numpy()


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
    on_device = bool(getattr(job.runner, "blend_on_device", False))
    # On the device: one stitcher (the device works in parallel on its own); on the host: bands of
    # chunk columns side by side, one thread each.
    parts = [block] if on_device else column_parts(
        block, job.partition.chunk, job.settings.stitch_threads or default_stitch_threads())
    # batches in the loader's queue, in the model, and in every stitcher's queue
    pool = BufferPool(job.settings.prefetch + 2 + 2 * len(parts))
    normalisation = _loader_normalisation(job)
    loader = TileLoader(
        job.source, job.plan, rows, cols, batch_size=job.settings.batch_size, skip=job.skip, pool=pool,
        normalisation=normalisation,
        # batches in the layout the runner hands its module (PyTorch channels-last on the CPU)
        channels_last=normalisation is not None and bool(getattr(job.runner, "channels_last", False)),
    )
    view = getattr(sink, "view", None)
    in_place = view is not None and job.output.kind == "logits" and job.skip is None

    def target(part: Block) -> Callable[[int, int], np.ndarray] | None:
        """Rows ``[y0, y1)`` of ``part`` in the sink's own array, to blend into in place."""
        if not in_place or view is None:
            return None
        return lambda y0, y1: view(y0, y1, part.x0, part.x1)

    make: Callable[..., Stitcher] = Stitcher
    if on_device:
        from .device_stitch import TorchStitcher

        make = functools.partial(TorchStitcher, device=job.runner.device)  # type: ignore[attr-defined]
    chunk = job.partition.chunk
    # Float32 logits are stored as blended, a chunk row at a time; other kinds are converted band
    # by band into their chunk row, so only a tile's height of float32 rows is held
    band_height = chunk if on_device or job.output.kind == "logits" else accumulation_rows(chunk)
    stitchers = [
        make(
            job.plan, part, job.window, job.output.channels, band_height, target(part),
            complete=job.skip is None, target_zeroed=getattr(sink, "zeroed", False),
        )
        for part in parts
    ]
    written: dict[int, int] = {}  # chunk row -> parts written (the writer thread's own)

    def write(item: tuple[int, Box, np.ndarray, Stitcher]) -> None:
        index, (y0, y1, x0, x1), data, stitcher = item
        sink.write(y0, y1, x0, x1, data)
        stitcher.recycle(data)  # written: its buffer can hold a later chunk row (logits)
        written[index] = written.get(index, 0) + 1
        if written[index] == len(parts):
            sink.mark_done(index, block.col)
            del written[index]

    writer: Worker[Any] = Worker(write, maxsize=len(parts), name="tiler-write")

    def stitch_with(stitcher: Stitcher) -> Callable[[Any], None]:
        # chunk row -> (its stored values, rows converted into them so far): the stitcher's own
        converting: dict[int, tuple[np.ndarray, int]] = {}

        def stitch(item: tuple[np.ndarray | None, np.ndarray, list[int], _Countdown | None]) -> None:
            outputs, index, rows_done, release = item
            # Each tile row this batch completes: its tiles, then the bands it finishes; then the
            # next row's tiles. No band is held for two tile rows' tiles at once.
            start = 0
            for done in rows_done:
                stop = int(np.searchsorted(index[:, 0], done, side="right"))
                if outputs is not None and stop > start:
                    stitcher.add(outputs[start:stop], index[start:stop])
                start = stop
                release_finished(done)
            if outputs is not None and start < len(index):
                stitcher.add(outputs[start:], index[start:])
            if release is not None:  # the outputs were a view of the tiles: free once all added
                release.done()

        def release_finished(tile_rows_done: int) -> None:
            """Convert every band that ``tile_rows_done`` finishes; queue the chunk rows complete."""
            for band in stitcher.finished(tile_rows_done):
                covered = band.covered
                if job.valid is not None:  # the input's nodata pixels get the fill value
                    valid = job.valid(job.source, band.y0, band.y1, band.x0, band.x1)
                    if valid is not None:
                        covered = valid if covered is None else covered & valid
                if job.output.kind == "logits":  # the band is the chunk row
                    data = job.output.convert(band.logits, covered)
                    if data is not band.logits:
                        stitcher.recycle(band.logits)
                    writer.put((band.index, Box(band.y0, band.y1, band.x0, band.x1), data, stitcher))
                    continue
                # converted here, in parallel across the parts, into the band's chunk row; the
                # write queue holds stored values (uint8 probs are a quarter of the float32)
                c = band.y0 // chunk
                y0, y1 = max(block.y0, c * chunk), min(block.y1, (c + 1) * chunk)
                if c not in converting:
                    shape = job.output.shape(y1 - y0, band.x1 - band.x0)
                    converting[c] = (stitcher.take(shape, job.output.store_dtype), 0)
                out, done = converting[c]
                job.output.convert(band.logits, covered, out[..., band.y0 - y0 : band.y1 - y0, :])
                stitcher.recycle(band.logits)
                done += band.y1 - band.y0
                if done < y1 - y0:
                    converting[c] = (out, done)
                    continue
                del converting[c]
                writer.put((c, Box(y0, y1, band.x0, band.x1), out, stitcher))
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
                if outputs is None or not _may_share(outputs, batch.tiles):
                    pool.give(batch.tiles)
                else:
                    release = _Countdown(len(workers), functools.partial(pool.give, batch.tiles))
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
    """Stitcher threads when the settings leave it open: one per core of this process's share of the
    host (:func:`~tiler.cores.available_cores`), at most 4."""
    return pool_threads()


