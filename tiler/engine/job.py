"""One output's work: the image, the runner, the settings, the lattice and the partition (:class:`Job`).

:meth:`Job.create` validates the settings against the image and the model; :func:`grid_for_workers`
chooses a partition for a number of workers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..config import ModelOptions, Settings
from ..errors import ModelError
from ..masks.nodata import ValidPixels, data_mask, valid_pixels
from ..masks.skip import build_skip, skip_predicate
from ..masks.tissue import Mask
from ..plan import windows
from ..plan.lattice import TilePlan
from ..plan.partition import Block, Partition
from ..runners.base import Runner
from ..runners.factory import load_runner
from ..sources import ChannelSource, Source
from . import exact
from .exact import ExactReport
from .outputs import OutputSpec


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
    #: Where the input has nodata: ``valid(source, y0, y1, x0, x1) -> (h, w) bool or None (all
    #: valid)``; False pixels get ``fill`` (:class:`tiler.masks.nodata.ValidPixels`). None: no nodata.
    valid: ValidPixels | None = None
    #: What ``exact=True`` found (context radius, crop, measured residual); None otherwise.
    exact: ExactReport | None = None

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
        report = None
        if settings.exact:  # tile, overlap, margin, context and window follow from the model
            try:
                settings, report = exact.resolve(settings, runner, c, np.dtype(source.dtype), name=source.name)
            except runner.out_of_memory_errors:
                raise _out_of_memory() from None
        plan = TilePlan.create(
            (h, w), tile=settings.tile, overlap=settings.overlap, margin=settings.margin,
            multiple=spec.multiple, context=settings.border_context,
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
        return cls(source, runner, settings, plan, partition, window, output, skip, valid=valid_pixels(source),
                   exact=report)

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


def _out_of_memory() -> ModelError:
    return ModelError(
        "out of device memory with a single tile per batch; use a smaller --tile or --precision bf16/fp16"
    )


def build_job(
    image: Any, source: Source, model: Any, options: ModelOptions, settings: Settings, *,
    tissue: Any = None, roi: Any = None,
) -> tuple[Job, list[Mask]]:
    """The runner for ``model``, the job over ``source`` (opened from ``image``) and its skip table
    for ``tissue``/``roi``; with the masks it was built from (recorded by :func:`tiler.run`)."""
    runner = load_runner(model, **options.runner_keywords(settings.batch_size))
    job = Job.create(source, runner, settings)
    nodata = data_mask(job.source)  # the input's nodata: a skip mask and the per-pixel check
    skip, masks = build_skip(job.plan, image, source, tissue=tissue, roi=roi,
                             extra=[nodata[0]] if nodata is not None else None)
    if skip is not None:
        job = replace(job, skip=skip_predicate(skip))
    if nodata is not None:
        job = replace(job, valid=nodata[1])
    return job, masks
