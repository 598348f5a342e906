"""What a worker process keeps and rebuilds: models and sources loaded once, and small job templates.

A dask task receives a :class:`JobTemplate` (settings, plan, partition, output: small), a
:class:`SourceRef` (a path opened once per process, or an array) or a block's window of pixels, and
a :class:`ModelRef` (a path loaded once per process, or an in-memory model shipped once per
worker); it rebuilds the :class:`~tiler.engine.job.Job` and runs :func:`~tiler.engine.pipeline.run_block`.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..engine.job import Job
from ..engine.outputs import OutputSpec
from ..errors import DeviceWarning
from ..masks.nodata import ValidPixels
from ..plan import windows
from ..plan.box import Box
from ..plan.lattice import TilePlan, reflect_index
from ..plan.partition import Block, Partition
from ..sources import ChannelSource, ReadOptions, Source, SourceInfo, open_at, open_source
from ..sources.remote import is_url

_LOCK = threading.Lock()
_RUNNERS: OrderedDict[str, Any] = OrderedDict()
_SOURCES: OrderedDict[str, Source] = OrderedDict()
#: Entries each per-process cache keeps (an archive streams through many inputs: keep few files
#: open; a dropped source closes its file once no task uses it).
CACHE_SIZE = {"runners": 2, "sources": 4}
_WINDOWS: dict[tuple[Any, ...], np.ndarray] = {}
_MODEL_BATCH: dict[str, int] = {}


def _cached(cache: OrderedDict[str, Any], key: str, size: int, make: Callable[[], Any]) -> Any:
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()
    with _LOCK:
        cache[key] = value
        while len(cache) > size:
            cache.popitem(last=False)
    return value


def _path_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class ModelRef:
    """How a worker gets the model: a path (or None, the built-in weights) loaded there, or an
    in-memory ``nn.Module``/:class:`~tiler.runners.Runner` shipped once (see :func:`_share`)."""

    model: Any
    options: tuple[tuple[str, Any], ...]  # load_runner keyword arguments: device, precision, ...
    key: str

    @classmethod
    def of(cls, model: Any, options: dict[str, Any]) -> ModelRef:
        items = tuple(sorted(options.items()))
        tag = ":".join(f"{k}={v}" for k, v in items)
        if model is None or isinstance(model, (str, os.PathLike)):
            name = "default" if model is None else _path_key(Path(model))
            path = None if model is None else str(Path(model).resolve())
            return cls(path, items, f"{name}:{tag}")
        return cls(model, items, f"object:{uuid.uuid4().hex}:{tag}")

    def load(self) -> Any:
        """The runner, loaded at most once per process."""
        from ..runners.factory import load_runner

        def load() -> Any:
            with warnings.catch_warnings():  # the client already said where the model runs
                warnings.simplefilter("ignore", DeviceWarning)
                return load_runner(self.model, **dict(self.options))

        return _cached(_RUNNERS, self.key, CACHE_SIZE["runners"], load)


@dataclass(frozen=True)
class SourceRef:
    """How a worker reads the input: a file path opened there (once per process), or an array.

    ``read`` (:class:`~tiler.sources.ReadOptions`: level / mpp, series, plane, channels) opens the
    same image, pyramid level, resampling and channels as the client (``open_at``).
    """

    image: Any
    key: str
    read: ReadOptions = ReadOptions()

    @property
    def level(self) -> int | None:
        return self.read.level

    @property
    def mpp(self) -> float | None:
        return self.read.mpp

    @classmethod
    def of(cls, image: Any, *, level: int | None = None, mpp: float | None = None,
           read: ReadOptions | None = None) -> SourceRef:
        """``read`` (e.g. the client source's ``info.read``) wins over ``level`` / ``mpp``."""
        read = read if read is not None else ReadOptions(level=level, mpp=mpp)
        if is_url(image):  # an object: workers open the URL itself (its version keys the cache)
            from ..sources.remote import object_version

            key = f"{image}:{object_version(image)}" + ("" if read.is_default else f":{read!r}")
            return cls(image, key, read)
        if isinstance(image, (str, os.PathLike)):
            key = _path_key(Path(image)) + ("" if read.is_default else f":{read!r}")
            return cls(str(Path(image).resolve()), key, read)
        return cls(image, f"array:{uuid.uuid4().hex}", read)

    def open(self) -> Source:
        """The source, opened at most once per process (for files; arrays are cheap to wrap)."""
        if not isinstance(self.image, str):
            source = open_source(self.image)
            picked = self.read.channels
            return ChannelSource(source, tuple(int(c) for c in picked)) if picked is not None else source
        if not self.read.is_default:
            r = self.read
            return _cached(_SOURCES, self.key, CACHE_SIZE["sources"],
                           lambda: open_at(self.image, level=r.level, mpp=r.mpp, series=r.series,
                                           plane=r.plane, channels=r.channels, reader=r.reader,
                                           resampling=r.resampling))
        return _cached(_SOURCES, self.key, CACHE_SIZE["sources"], lambda: open_source(self.image))


class WindowSource:
    """A source of the full image's shape whose pixels are only the window ``data`` at ``origin``.

    For a block whose tiles read only that window (with the halo and reflection they need).
    ``data`` is one (h, w[, C]) array, or the window as a grid of them, row-major (a list of rows
    of arrays: a dask array's chunks as they are, not concatenated). One array is read as views,
    in one band (the whole window). A grid is read in bands of :data:`GRID_BAND` rows, each
    assembled from the pieces of the chunks it crosses (a view when it lies inside one chunk): one
    copy of each pixel, a band at a time, instead of the whole window assembled first.
    """

    def __init__(self, data: Any, origin: tuple[int, int], shape: tuple[int, int, int], name: str):
        grid = data if isinstance(data, list) else [[data]]
        self._grid = [[_channels_last(np.asarray(a)) for a in row] for row in grid]
        #: chunk-row and chunk-column borders inside the window, from 0 to its height / width
        self._ys = list(itertools.accumulate((row[0].shape[0] for row in self._grid), initial=0))
        self._xs = list(itertools.accumulate((a.shape[1] for a in self._grid[0]), initial=0))
        self.origin, self.shape, self.name = origin, shape, name
        self.dtype = self._grid[0][0].dtype
        single = len(self._ys) == 2 and len(self._xs) == 2
        # one array: one band, the whole window (views, no copies); a grid: bands of GRID_BAND rows
        self.chunks: tuple[int, int] | None = (max(1, self._ys[-1]) if single else GRID_BAND, shape[1])
        self.rows = (origin[0], origin[0] + self._ys[-1])
        self.info = SourceInfo(format="window")

    def close(self) -> None:
        """Nothing to close: the window is arrays."""

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        oy, ox = self.origin
        if y0 < oy or x0 < ox or y1 - oy > self._ys[-1] or x1 - ox > self._xs[-1]:
            raise IndexError(f"read {y0}:{y1}, {x0}:{x1} outside the block's window at {self.origin}")
        y0, y1, x0, x1 = y0 - oy, y1 - oy, x0 - ox, x1 - ox
        rows = range(bisect.bisect_right(self._ys, y0) - 1, bisect.bisect_left(self._ys, y1))
        cols = range(bisect.bisect_right(self._xs, x0) - 1, bisect.bisect_left(self._xs, x1))
        if len(rows) == 1 and len(cols) == 1:  # inside one chunk: a view
            ya, xa = self._ys[rows[0]], self._xs[cols[0]]
            return self._grid[rows[0]][cols[0]][y0 - ya : y1 - ya, x0 - xa : x1 - xa]
        out = np.empty((y1 - y0, x1 - x0, self._grid[0][0].shape[2]), self.dtype)
        for i in rows:
            ya, yb = max(y0, self._ys[i]), min(y1, self._ys[i + 1])
            for j in cols:
                xa, xb = max(x0, self._xs[j]), min(x1, self._xs[j + 1])
                piece = self._grid[i][j][ya - self._ys[i] : yb - self._ys[i], xa - self._xs[j] : xb - self._xs[j]]
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = piece
        return out


#: Rows per band of a :class:`WindowSource` over a grid of chunks (a few MB per band of a wide window).
GRID_BAND = 256


def _channels_last(a: np.ndarray) -> np.ndarray:
    """(h, w) -> (h, w, 1); (h, w, C) as it is."""
    return a if a.ndim == 3 else a[..., None]


def source_window(plan: TilePlan, block: Block) -> Box | None:
    """The :class:`~tiler.plan.box.Box`: the source pixels the tiles of ``block`` read (halo and reflection
    included), or None if no tile touches the block."""
    rows, cols = plan.tiles_touching(block)
    if not len(rows) or not len(cols):
        return None
    t, r, c = plan.tile, plan.rows, plan.cols
    ys = reflect_index(np.arange(r.origin(rows.start), r.origin(rows.stop - 1) + t), plan.height)
    xs = reflect_index(np.arange(c.origin(cols.start), c.origin(cols.stop - 1) + t), plan.width)
    return Box(int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)


@dataclass(frozen=True)
class JobTemplate:
    """A :class:`~tiler.engine.job.Job` without its source and runner: small, sent with every task."""

    settings: Settings
    plan: TilePlan
    partition: Partition
    output: OutputSpec
    skip: Callable[[int, int], bool] | None = None
    valid: ValidPixels | None = None  # the input's nodata (a small table, see tiler.masks.nodata)

    @classmethod
    def of(cls, job: Job) -> JobTemplate:
        return cls(job.settings, job.plan, job.partition, job.output, job.skip, job.valid)

    def job(self, source: Source, runner: Any, model_key: str) -> Job:
        s = self.settings
        key = (s.window, s.tile, s.margin, s.sigma_scale)
        with _LOCK:
            window = _WINDOWS.get(key)
            if window is None:
                window = windows.window_2d(s.window, s.tile, margin=s.margin, sigma_scale=s.sigma_scale)
                _WINDOWS[key] = window
        job = Job(source, runner, s, self.plan, self.partition, window, self.output, self.skip,
                  valid=self.valid)
        job.model_batch = _MODEL_BATCH.get(model_key)
        return job


def _runner(model: ModelRef | Any) -> tuple[Any, str]:
    if isinstance(model, ModelRef):
        return model.load(), model.key
    return model, f"object:{id(model)}"


def _remember_batch(job: Job, key: str) -> None:
    if job.model_batch is not None:
        _MODEL_BATCH[key] = job.model_batch


def _open(source: SourceRef | tuple[Any, ...]) -> Source:
    """A :class:`SourceRef`, or ``(window pixels, origin, image shape, name)`` for one block."""
    if isinstance(source, SourceRef):
        return source.open()
    data, origin, shape, name = source
    return WindowSource(data, origin, shape, name)
