"""Where finished chunk rows go: a zarr v3 group on disk, or a NumPy array in memory.

A sink takes aligned region writes (each output chunk has exactly one writer), records which stripes
(chunk row x block column, see :class:`~tiler.plan.partition.Partition`) are complete, and for zarr keeps the
run's attributes, including ``complete``, which is set last, after every chunk is written.

Layout of a zarr output group::

    out.zarr/
      zarr.json         attributes: {"tiler": {settings, versions, "complete"}, "ome": {...}}
      0/                full resolution: (C, H, W) logits/probs or (H, W) labels
      progress/         uint8 (chunk rows, block columns): 1 = stripe written
    out.zarr.owner.json while a run writes it: the one writer's record (:mod:`tiler.store.ownership`)

The ``tiler`` attributes carry ``format`` (:data:`FORMAT`), the layout version: readers and
``--resume`` refuse layouts they do not know (:func:`check_format`).

Durability: zarr (>= 3.1.3) writes every file atomically (a temporary file renamed into place), so
no reader sees half a chunk or half the metadata. Before ``complete`` is recorded every file of the
output is flushed to disk (fsync; finished chunk rows are flushed in the background during the run,
:class:`Flusher`) and the record itself is fsynced, so a crash or power loss never leaves an output
that claims to be complete without its data. ``durable=True`` also flushes each
stripe before it is recorded as done, so ``--resume`` after a power loss trusts only data on disk.

On an object store (``s3://``, ``gs://``, :mod:`~tiler.store.location`) the group is written through zarr's
``FsspecStore``; a PUT is durable once it returns, so there is nothing to flush and ``durable``
changes nothing there.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from ..errors import OutputError
from .location import RemoteLocation, as_location
from .ownership import OutputLock, check_owner

#: Layout version of the output groups this tiler writes (``tiler.format``). 1: tiler 0.1 (no
#: ``format`` key); 2: adds the owner record, run ids renewed on resume and input digests.
FORMAT = 2
#: Layouts whose arrays and attributes the readers (export, eval, preview) understand.
READABLE_FORMATS = (1, 2)
#: Layouts ``--resume`` continues (the resume record must be the one this version writes).
RESUMABLE_FORMATS = (2,)


def output_format(attributes: dict[str, Any]) -> int:
    """The layout version recorded in a group's attributes (1 when none is recorded)."""
    value = attributes.get("tiler", {}).get("format", 1)
    return value if isinstance(value, int) else -1


def check_format(path: Any, attributes: dict[str, Any], *, resume: bool = False) -> None:
    """Raise :class:`OutputError` unless this tiler can read (or, with ``resume``, continue) it."""
    from ..version import __version__

    fmt = output_format(attributes)
    allowed = RESUMABLE_FORMATS if resume else READABLE_FORMATS
    if fmt in allowed:
        return
    wrote = attributes.get("tiler", {}).get("version", "an unknown version")
    what = "resume" if resume else "read"
    raise OutputError(
        f"{path}: written by tiler {wrote} in output format {fmt}; tiler {__version__} can {what} "
        f"format {', '.join(map(str, allowed))} only"
        + ("; start again with --overwrite" if resume else "; rerun it with this tiler version")
    )


def is_tiler_output(path: Path | RemoteLocation) -> bool:
    """True for a zarr group whose attributes hold tiler's run record (``tiler``)."""
    return "tiler" in read_attributes(path)


def read_attributes(path: Path | RemoteLocation) -> dict[str, Any]:
    """The attributes of the zarr v3 group at ``path``; empty when there is none or it cannot be read."""
    if isinstance(path, RemoteLocation):
        attributes = path.attributes()
    else:
        try:
            attributes = json.loads((Path(path) / "zarr.json").read_bytes()).get("attributes", {})
        except (OSError, ValueError, AttributeError):  # no group, not JSON, not an object
            return {}
    return attributes if isinstance(attributes, dict) else {}


def fsync_tree(root: Path, *, under: str | None = None, parents: bool = False) -> None:
    """Flush every file below ``root`` (or ``root / under``: a folder or one file) and their folders
    to disk; with ``parents``, also the folders from ``root / under`` up to ``root``, whose entries
    name new folders (without that a power loss can lose a new chunk row folder)."""
    top = root / under if under else root
    if top.is_file():
        _fsync(top)
    for folder, _, files in os.walk(top):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder), directory=True)
    if parents and under:
        for parent in (top.parent, *top.parent.parents):
            _fsync(parent, directory=True)
            if parent == root:
                break


class Flusher:
    """Flushes finished chunk rows to disk in a background thread while the run goes on, so that the
    flush before ``complete`` finds little left to do (fsync waits on the disk, not the CPU).

    ``submit(folder)`` queues a folder below ``root``; :meth:`drain` waits until all are flushed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, folder: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._flush, name="tiler-flush", daemon=True)
            self._thread.start()
        self._queue.put(folder)

    def _flush(self) -> None:
        while (folder := self._queue.get()) is not None:
            try:
                fsync_tree(self.root, under=folder)
            except OSError:
                pass  # flushed again, with errors reported, before complete is recorded
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def drain(self) -> None:
        """Wait for every submitted folder, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._queue.join()
            self._thread.join()
            self._thread = None


def _fsync(path: Path, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Sink(Protocol):
    """What the engine writes into."""

    def write(self, y0: int, y1: int, x0: int, x1: int, data: np.ndarray) -> None:
        """Store ``data`` ((C, h, w) or (h, w)) at rows ``[y0, y1)``, columns ``[x0, x1)``."""
        ...

    def mark_done(self, chunk_row: int, block_col: int) -> None:
        """Record that one stripe is written."""
        ...

    def done(self) -> np.ndarray:
        """bool array (chunk rows, block columns): stripes already written."""
        ...


class MemorySink:
    """An in-memory output array, for :func:`tiler.predict` and dask blocks.

    ``origin`` is the image position of ``array[..., 0, 0]``, so a block can own a small array.
    ``zeroed``: the array is all zeros (e.g. fresh from ``np.zeros``, whose pages the kernel zeroes
    on first touch anyway), so blending into a :meth:`view` need not clear it first.
    """

    def __init__(
        self, array: np.ndarray, stripes: tuple[int, int], origin: tuple[int, int] = (0, 0), *,
        zeroed: bool = False,
    ):
        self.array = array
        self.origin = origin
        self.zeroed = zeroed
        self._done = np.zeros(stripes, bool)

    def view(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        """Where rows ``[y0, y1)``, columns ``[x0, x1)`` are stored, if float32 (C, h, w): blending
        can accumulate there directly, and :meth:`write` of that same memory copies nothing."""
        if self.array.ndim != 3 or self.array.dtype != np.float32:
            return None
        oy, ox = self.origin
        return self.array[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]

    def write(self, y0: int, y1: int, x0: int, x1: int, data: np.ndarray) -> None:
        oy, ox = self.origin
        dst = self.array[..., y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        if not np.may_share_memory(dst, data):  # blended in place (see view): already there
            dst[...] = data

    def mark_done(self, chunk_row: int, block_col: int) -> None:
        self._done[chunk_row, block_col] = True

    def done(self) -> np.ndarray:
        return self._done


def _disk_error(path: Path | RemoteLocation, exc: OSError) -> OutputError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
    return OutputError(f"{path}: cannot write the output ({reason})")


def compressors_for(dtype: np.dtype) -> Any:
    """The codec of an output array. Integers (uint8 probabilities, labels): zstd at level 1, which
    encoded the built-in UNet's uint8 probabilities at 256 MB/s on this project's VM where zarr's
    default level (3) managed 151 MB/s, for 5 % more bytes (ratio 2.14 against 2.26); a ``tiler
    run`` of 134 MP with two classes spent 18 % of its CPU in zstd at level 3, and took 3.55 s
    instead of 3.75 s at level 1 (median of 5 alternating runs; 59.8 MB instead of 57.5 MB).
    Floats: Blosc LZ4 with byte shuffle, which writes at about 350 MB/s where zstd wrote 110 MB/s
    (a 2 x 32768 x 16384 float32 logits output took 39 s of compression), for 7 % more bytes
    (ratio 1.31 against 1.41)."""
    if np.issubdtype(dtype, np.floating):
        from zarr.codecs import BloscCodec

        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=dtype.itemsize)]
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=1)]


class ZarrSink:
    """A zarr v3 output group (see the module docstring). Use :meth:`create` or :meth:`open`.

    ``owner``: the run's lock, checked before every write and stripe recorded (the process that
    holds it). ``run_id``: for a dask task, the run it belongs to, checked the same way against the
    owner record (:func:`~tiler.store.ownership.check_owner`). ``durable``: fsync each stripe's chunks
    before recording it.
    """

    def __init__(
        self, path: Path | RemoteLocation, group: zarr.Group, run_id: str | None = None, *,
        owner: OutputLock | None = None, durable: bool = False,
    ) -> None:
        self.path = path
        self.group = group
        self.run_id = run_id  # when set, writes stop once the output was replaced by another run
        self.owner = owner
        # an object store's PUT is durable when it returns: nothing to fsync there
        self.local = isinstance(path, Path)
        self.durable = durable and self.local
        self._flusher = Flusher(path if isinstance(path, Path) else Path("."))
        # write_empty_chunks: skip zarr's "is this chunk all fill value?" scan of every chunk
        # (a full pass over the data, about a tenth of a zero-cost run); the output is dense.
        # (Set while opening: Array.with_config exists only from zarr 3.1.6.)
        with zarr.config.set({"array.write_empty_chunks": True}):
            self.array: Any = group["0"]
        self.progress: Any = group["progress"]

    @classmethod
    def create(
        cls,
        path: str | Path | RemoteLocation,
        *,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunk: int,
        stripes: tuple[int, int],
        attributes: dict[str, Any],
        overwrite: bool = False,
        owner: OutputLock | None = None,
        durable: bool = False,
    ) -> ZarrSink:
        """Create the group, its full-resolution array ``0`` and the progress record.

        ``overwrite`` replaces only an earlier tiler output (a group with tiler's run record);
        the owner record of the run doing it is kept.
        """
        path = as_location(path)
        if path.exists():
            if not overwrite:
                raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
            refuse_unless_tiler_output(path)
            if isinstance(path, RemoteLocation):
                path.remove()
            else:
                shutil.rmtree(path)
        dims = ("c", "y", "x") if len(shape) == 3 else ("y", "x")
        chunks = (shape[0], chunk, chunk) if len(shape) == 3 else (chunk, chunk)
        try:
            # the attributes in the group's first metadata write: a run killed right after it
            # leaves a group recognisably tiler's (so --overwrite and --resume can act on it)
            group = zarr.open_group(_store(path), mode="w-", zarr_format=3, attributes=attributes)
            group.create_array(
                "0", shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims, fill_value=0,
                compressors=compressors_for(np.dtype(dtype)),
            )
            group.create_array(
                "progress", shape=stripes, chunks=(1, 1), dtype="uint8", fill_value=0, compressors=None
            )
        except OSError as exc:
            raise _disk_error(path, exc) from None
        return cls(path, group, owner=owner, durable=durable)

    @classmethod
    def open(
        cls, path: str | Path | RemoteLocation, *, run_id: str | None = None, owner: OutputLock | None = None,
        durable: bool = False,
    ) -> ZarrSink:
        """Open an existing output group for resuming (or, for a worker, to write its blocks).

        With ``run_id`` (the run the task was made for), every write first checks that the output
        is still that run's: a task that outlives its run (a cancelled dask task still executing,
        a task of an attempt that was resumed since) stops instead of writing.
        """
        path = as_location(path)
        try:
            group = zarr.open_group(_store(path), mode="r+")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise OutputError(
                f"{path}: is not a readable zarr output ({exc}); pass --overwrite to start again"
            ) from None
        if "0" not in group or "progress" not in group:
            raise OutputError(
                f"{path}: is not a complete tiler output (no array '0' or 'progress': its run was "
                "stopped while creating it); pass --overwrite to start again"
            )
        return cls(path, group, run_id, owner=owner, durable=durable)

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def complete(self) -> bool:
        """Whether the run record says ``complete: true``."""
        return self.group.attrs.get("tiler", {}).get("complete") is True

    def _check_run(self) -> None:
        if self.owner is not None:
            self.owner.check()
        if self.run_id is not None:
            check_owner(self.path, self.run_id)

    def write(self, y0: int, y1: int, x0: int, x1: int, data: np.ndarray) -> None:
        self._check_run()
        try:
            self.array[..., y0:y1, x0:x1] = data
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def mark_done(self, chunk_row: int, block_col: int) -> None:
        self._check_run()
        try:
            if self.durable:
                fsync_tree(self._flusher.root, under=self._chunk_row_folder(chunk_row), parents=True)
            elif self.local:  # flushed behind the run, ready for the flush before complete
                self._flusher.submit(self._chunk_row_folder(chunk_row))
            self.progress[chunk_row, block_col] = 1
            if self.durable:  # the one progress chunk just written, and the folders naming it
                fsync_tree(self._flusher.root, under=f"progress/c/{chunk_row}/{block_col}", parents=True)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def _chunk_row_folder(self, chunk_row: int) -> str:
        """Where zarr's default chunk keys put chunk row ``chunk_row`` of array ``0``."""
        return f"0/c/0/{chunk_row}" if self.array.ndim == 3 else f"0/c/{chunk_row}"

    def done(self) -> np.ndarray:
        return np.asarray(self.progress[:]).astype(bool)

    def close(self) -> None:
        """Finish the background flush of recorded stripes (and end its thread)."""
        self._flusher.drain()

    def set_run_id(self, run_id: str) -> None:
        """Record a new run id (a resume): tasks of earlier attempts stop before their next write."""
        meta = dict(self.group.attrs["tiler"])
        meta["run_id"] = run_id
        self.group.attrs["tiler"] = meta

    def set_complete(self) -> None:
        """Mark the output complete: call only after every stripe is written.

        Every file is flushed to disk first, then the record (written atomically by zarr) is
        flushed too: ``complete`` never reaches the disk before the data it vouches for.
        """
        self._check_run()
        self._flusher.drain()
        root = self._flusher.root
        try:
            if self.local:
                fsync_tree(root)  # what the background flush did not cover (pyramid, metadata)
            meta = dict(self.group.attrs["tiler"])
            meta["complete"] = True
            self.group.attrs["tiler"] = meta  # on an object store: one PUT, after every other returned
            if self.local:
                _fsync(root / "zarr.json")
                _fsync(root, directory=True)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None


def _store(path: Path | RemoteLocation) -> Any:
    """What zarr opens: a local path, or the object store's (retrying) zarr store."""
    return path.zarr_store() if isinstance(path, RemoteLocation) else str(path)


def refuse_unless_tiler_output(path: Path | RemoteLocation) -> None:
    """Raise :class:`OutputError` unless ``path`` is an output tiler wrote (``--overwrite`` may
    replace only those: never an input, a user's folder, or another program's zarr group)."""
    if is_tiler_output(path):
        return
    if isinstance(path, RemoteLocation):
        what = path.describe()
    elif path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
        what = "a zarr group that tiler did not write (no 'tiler' run record)"
    elif path.is_dir():
        what = "a folder that is not a tiler output"
    else:
        what = "a file, not a tiler output"
    raise OutputError(f"{path}: is {what}; --overwrite replaces only tiler's own outputs: choose "
                      "another output path")
