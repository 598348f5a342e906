"""Blocks of one job as dask tasks: a ``dask.distributed`` cluster, or a lazy dask array.

Every task runs :func:`~tiler.engine.pipeline.run_block` on one :class:`~tiler.plan.partition.Block`, the same work
unit a single process runs, so the output does not depend on how the work is split:

- :func:`run_blocks` (used by ``tiler.run(..., client=...)`` and ``tiler run --workers/--scheduler``)
  writes each block straight into the shared zarr output. Blocks own whole chunk columns and rows,
  so each stripe has one writer and no locks are needed; completion is recorded per stripe by the
  worker after the data is written, and ``complete`` by the client after every block.
- :func:`predict_dask` returns a lazy dask array; each of its chunks is one block computed into a
  :class:`~tiler.store.sink.MemorySink`.

Models and file sources are loaded once per worker process (a cache keyed by the model's path,
size and mtime, or by a token for an in-memory model that is scattered once to every worker).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SETTING_KEYWORDS, ModelOptions, Settings, check_keywords, keyword_names
from ..engine.job import BlockStats, Job, build_job, grid_for_workers
from ..engine.pipeline import run_block
from ..engine.resolution import model_mpp
from ..errors import SettingsError
from ..plan.partition import Block, Partition
from ..runners.factory import load_runner
from ..sources import open_at
from ..sources.remote import is_url
from ..store.sink import MemorySink, ZarrSink
from .worker import (
    JobTemplate,
    ModelRef,
    SourceRef,
    WindowSource,
    _open,
    _remember_batch,
    _runner,
    source_window,
)

__all__ = ["partition_for", "predict_dask", "run_blocks", "workers_of"]

#: Blocks submitted per worker ahead of the results (load balance without holding every window).
IN_FLIGHT_PER_WORKER = 2


def _write_block(
    template: JobTemplate, source: Any, model: Any, block: Block, out: str, run_id: str | None = None,
    durable: bool = False,
) -> BlockStats:
    """Task: compute what is left of ``block`` and write it into the zarr output at ``out``.

    ``run_id`` is the run the task belongs to: if the output's owner record names another run
    (the run was restarted with --overwrite or resumed) or its holder stopped renewing it, the task
    stops before its next write (:func:`~tiler.store.ownership.check_owner`).
    """
    runner, key = _runner(model)
    job = template.job(_open(source), runner, key)
    sink = ZarrSink.open(out, run_id=run_id, durable=durable)
    todo = job.remaining(block, sink.done())  # a retried task skips the stripes already written
    if todo is None:
        return BlockStats()
    try:
        stats = run_block(job, todo, sink)
    finally:
        sink.close()
    _remember_batch(job, key)
    return stats


def _share(client: Any, ref: ModelRef) -> Any:
    """A path is loaded by each worker itself; an in-memory model is sent to every worker once."""
    if ref.model is None or isinstance(ref.model, str):
        return ref
    return client.scatter(ref, broadcast=True, hash=False)


def workers_of(client: Any) -> int:
    """Number of workers the client's cluster has now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))


def partition_for(job: Job, client: Any) -> Partition:
    """The partition for a run on ``client``'s workers (see :func:`~tiler.engine.job.grid_for_workers`)."""
    return grid_for_workers(job, workers_of(client))


def run_blocks(
    client: Any,
    job: Job,
    blocks: list[Block],
    out: str | os.PathLike[str],
    *,
    image: Any,
    model: Any,
    model_options: dict[str, Any],
    on_tiles: Callable[[int], None] | None = None,
    level: int | None = None,
    mpp: float | None = None,
    run_id: str | None = None,
    durable: bool = False,
) -> BlockStats:
    """Run ``blocks`` of ``job`` as tasks on ``client`` writing into the zarr output ``out``.

    ``run_id``: the run holding the output's owner record (every task checks it before writing).

    ``image`` and ``model`` are what the user gave: a path is opened by each worker; a NumPy or
    zarr array and an in-memory model are shipped once per worker; a dask array is sliced per block
    (the block's pixels plus the halo its tiles read). Progress is reported per finished block, in
    tiles. The first failing block cancels the rest and its error is raised here; stripes already
    written stay recorded, so the output can be resumed.
    """
    from distributed import as_completed

    def source_of(block: Block) -> Any:
        if not hasattr(image, "dask"):
            return shared
        y0, y1, x0, x1 = source_window(job.plan, block) or (0, 1, 0, 1)
        # the block's window (with its halo) is computed on the cluster, never the whole image,
        # and reaches the task as its chunks (a grid of futures), not assembled into one array
        window = image[y0:y1, x0:x1]
        if picked is not None:  # --channels, or alpha dropped for the model
            window = window[..., list(picked)]
        grid = _chunk_grid(window)
        chunks = client.compute([d for row in grid for d in row])
        n = len(grid[0])
        return ([chunks[k : k + n] for k in range(0, len(chunks), n)], (y0, x0), job.source.shape, job.source.name)

    picked = getattr(getattr(job.source.info, "read", None), "channels", None)
    shared: Any = None
    if isinstance(image, (str, os.PathLike)):
        # workers open the same level / resampling, series, plane and channels (alpha dropped too)
        shared = SourceRef.of(image, level=level, mpp=mpp, read=getattr(job.source.info, "read", None))
    elif not hasattr(image, "dask"):  # NumPy or zarr: sent to each worker once
        shared = client.scatter(SourceRef.of(image, read=getattr(job.source.info, "read", None)),
                                broadcast=True, hash=False)
    model_ref = _share(client, ModelRef.of(model, model_options))
    template = JobTemplate.of(job)
    out_path = str(out) if is_url(str(out)) else str(Path(out).resolve())  # an S3 location: its URL
    if run_id is None:
        run_id = ZarrSink.open(out_path).attributes.get("tiler", {}).get("run_id")
    # A few blocks per worker in flight, the next submitted as one finishes: a dask image's block
    # windows are then computed a few at a time, never the whole image into cluster memory at once.
    todo = iter(blocks)
    futures: dict[Any, Block] = {}
    queue = as_completed()

    def submit_next() -> None:
        b = next(todo, None)
        if b is not None:
            f = client.submit(_write_block, template, source_of(b), model_ref, b, out_path, run_id, durable,
                              key=f"tiler-block-{b.row}-{b.col}-{uuid.uuid4().hex[:8]}", pure=False)
            futures[f] = b
            queue.add(f)

    for _ in range(IN_FLIGHT_PER_WORKER * workers_of(client)):
        submit_next()
    stats = BlockStats()
    try:
        for future in queue:
            stats += future.result()
            if on_tiles:
                on_tiles(job.tiles_in(futures[future]))
            submit_next()
    except BaseException:
        client.cancel(list(futures))
        raise
    return stats


def _block_of(template: JobTemplate, model: Any, block: Block, window: Any, origin: tuple[int, int],
              shape: tuple[int, int, int], name: str) -> np.ndarray:
    """Task: one block of :func:`predict_dask` as an in-memory array."""
    runner, key = _runner(model)
    if isinstance(window, SourceRef):
        source = window.open()
    else:
        source = WindowSource(window, origin, shape, name)
    job = template.job(source, runner, key)
    h, w = block.shape
    out = np.empty(template.output.shape(h, w), template.output.store_dtype)
    run_block(job, block, MemorySink(out, template.partition.stripes, origin=(block.y0, block.x0)))
    _remember_batch(job, key)
    return out


def _chunk_grid(window: Any) -> list[list[Any]]:
    """A dask array's chunks as a grid (rows of delayed (h, w[, C]) arrays) for a task to read
    band by band (:class:`~tiler.distributed.worker.WindowSource`): dask would otherwise assemble the
    whole window into one array first (for an 8192² block of float32 RGB and its halo, about 0.8 GB
    per task, every pixel copied once more)."""
    if window.ndim == 3 and len(window.chunks[2]) > 1:
        window = window.rechunk({2: -1})  # channels in one chunk: pieces are (h, w, C)
    delayed = window.to_delayed()
    if delayed.ndim == 3:
        delayed = delayed[..., 0]
    return [list(row) for row in delayed]


def predict_dask(
    image: Any,
    model: Any = None,
    *,
    block: int = 8192,
    device: str | None = "auto", precision: str = "fp32", provider: str = "auto", trust_model: bool = False,
    compile: bool = False, overrides: dict[str, Any] | None = None,  # config.ModelOptions
    level: int | None = None, mpp: float | None = None, series: int | None = None, plane: Any = None,
    channels: Any = None, reader: str | None = None, resampling: str | None = None,  # sources.ReadOptions
    tissue: str | None = None, roi: Any = None,  # masks
    **settings: Any,
) -> Any:
    """A lazy dask array of the blended model output over ``image``.

    Parameters
    ----------
    image : (H, W[, C]) dask, zarr or NumPy array, or a file path. A dask array is sliced per
        block (the block plus the halo its tiles read), so the graph never holds the whole image.
    model : as for :func:`tiler.predict`; a path is loaded once per worker process.
    block : edge in pixels of the output's dask chunks (whole multiples of ``chunk``). Each border
        between blocks repeats about ``tile / block`` of the work (see ``docs-scale.md``);
        ``block_height`` / ``block_width``, if given, replace it along one axis.
    device, precision, provider, trust_model, compile, overrides, level, mpp, series, plane, channels,
        reader, tissue, roi : as for :func:`tiler.predict` (a path model is loaded by each worker with the
        same options; a path image is opened by each with the same read options).
    **settings : fields of :class:`~tiler.config.Settings` (tile, overlap, window, output, ...);
        every keyword of :data:`tiler.config.VALUE_KEYWORDS` is accepted, as by :func:`tiler.run`.

    Returns
    -------
    dask array, (C_out, H, W) float32 logits/probs or (H, W) uint8 labels, chunked by block; equal
    to :func:`tiler.run`'s output for the same settings.

    Notes
    -----
    ``.compute()`` hands back one NumPy array: dask copies the blocks into it (even a single block);
    for a zero-cost model on a 4096² image that took 26-66 % more time than ``.persist()`` on the
    development VM (``benchmarks/bench_strips.py``). ``.persist()``, ``.to_zarr()`` or ``da.store``
    keep or write the blocks as they are.

    Examples
    --------
    >>> import dask.array as da
    >>> from tiler.runners.base import FunctionRunner
    >>> image = da.ones((300, 200, 3), dtype="float32", chunks=(128, 128, 3))
    >>> out = predict_dask(image, FunctionRunner(lambda x: x + 1, normalise=False), tile=64, overlap=16,
    ...                    block=128, chunk=64)
    >>> out.shape, out.chunks[1], float(out.max().compute())
    ((3, 300, 200), (128, 128, 44), 2.0)
    """
    import dask
    import dask.array as da

    check_keywords("tiler.predict_dask", settings, keyword_names(predict_dask) | set(SETTING_KEYWORDS))
    if block < 1:
        raise SettingsError(f"block {block} must be a positive number of pixels")
    base = Settings(**{"block_height": block, "block_width": block,
                       **{k: v for k, v in settings.items() if v is not None}})
    options = ModelOptions(device, precision, provider, trust_model, compile, overrides)
    local = load_runner(model, **options.runner_keywords(base.batch_size))
    mpp = model_mpp(image, local.spec, level=level, mpp=mpp, series=series, plane=plane, channels=channels,
                    reader=reader, resampling=resampling)
    source = open_at(image, level=level, mpp=mpp, series=series, plane=plane, channels=channels, reader=reader,
                     resampling=resampling)
    job, _masks = build_job(image, source, local, replace(options, compile=False), base, tissue=tissue, roi=roi)
    runner, model_options = job.runner, options.runner_keywords(base.batch_size)
    by_path = model is None or isinstance(model, (str, os.PathLike))
    # a path is loaded by each worker with the same options; a loaded runner is shipped as it is
    ref = ModelRef.of(model, model_options) if by_path else ModelRef.of(runner, {})
    model_node = ref if by_path else dask.delayed(ref, pure=False)  # one key: shipped once per worker
    template = JobTemplate.of(job)
    h, w, c = source.shape
    lazy = isinstance(image, (str, os.PathLike))
    src_ref = SourceRef.of(image, read=getattr(job.source.info, "read", None)) if lazy else None
    array: Any = None
    kept = None if lazy or image.ndim != 3 else getattr(getattr(job.source.info, "read", None), "channels", None)
    views = isinstance(image, np.ndarray) and kept is None  # each task gets a view of its window
    if not lazy and not views:
        chunks = (2048, 2048) + (-1,) * (image.ndim - 2)
        # name=False: a random key instead of hashing every byte of an in-memory array
        array = image if hasattr(image, "dask") else da.from_array(image, chunks=chunks, name=False)
        if kept is not None:  # --channels, or an alpha channel dropped
            array = array[..., list(kept)]
    grid: list[list[Any]] = []
    for b in job.partition.blocks():
        if b.col == 0:
            grid.append([])
        win = source_window(job.plan, b)
        assert win is not None  # every block of an image has tiles touching it
        y0, y1, x0, x1 = win
        data = src_ref if lazy else image[y0:y1, x0:x1] if views else _chunk_grid(array[y0:y1, x0:x1])
        task = dask.delayed(_block_of, pure=False)(
            template, model_node, b, data, (y0, x0), (h, w, c), source.name
        )
        grid[-1].append(da.from_delayed(task, shape=job.output.shape(*b.shape), dtype=job.output.store_dtype))
    return da.block(grid)
