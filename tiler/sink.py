"""Where finished chunk rows go: a zarr v3 group on disk, or a NumPy array in memory.

A sink takes aligned region writes (each output chunk has exactly one writer), records which stripes
(chunk row x block column, see :class:`~tiler.plan.Partition`) are complete, and for zarr keeps the
run's attributes, including ``complete``, which is set last, after every chunk is written.

Layout of a zarr output group::

    out.zarr/
      zarr.json         attributes: {"tiler": {settings, versions, "complete"}, "ome": {...}}
      0/                full resolution: (C, H, W) logits/probs or (H, W) labels
      progress/         uint8 (chunk rows, block columns): 1 = stripe written
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from .errors import OutputError


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


def _disk_error(path: Path, exc: OSError) -> OutputError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
    return OutputError(f"{path}: cannot write the output ({reason})")


def _is_zarr_group(path: Path) -> bool:
    """True for a directory holding zarr group metadata (v3 ``zarr.json`` or v2 ``.zgroup``)."""
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


class ZarrSink:
    """A zarr v3 output group (see the module docstring). Use :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, group: zarr.Group, run_id: str | None = None) -> None:
        self.path = path
        self.group = group
        self.run_id = run_id  # when set, writes stop once the output was replaced by another run
        # write_empty_chunks: skip zarr's "is this chunk all fill value?" scan of every chunk
        # (a full pass over the data, about a tenth of a zero-cost run); the output is dense.
        self.array: Any = group["0"].with_config({"write_empty_chunks": True})
        self.progress: Any = group["progress"]

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunk: int,
        stripes: tuple[int, int],
        attributes: dict[str, Any],
        overwrite: bool = False,
    ) -> ZarrSink:
        """Create the group, its full-resolution array ``0`` and the progress record."""
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
            if not _is_zarr_group(path):  # never delete a folder or file of the user's
                raise OutputError(
                    f"{path}: exists and is not a zarr group; --overwrite replaces only earlier "
                    "outputs: pick another output path"
                )
            shutil.rmtree(path)
        dims = ("c", "y", "x") if len(shape) == 3 else ("y", "x")
        chunks = (shape[0], chunk, chunk) if len(shape) == 3 else (chunk, chunk)
        try:
            group = zarr.open_group(str(path), mode="w-", zarr_format=3)
            group.attrs.update(attributes)
            group.create_array(
                "0", shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims, fill_value=0
            )
            group.create_array(
                "progress", shape=stripes, chunks=(1, 1), dtype="uint8", fill_value=0, compressors=None
            )
        except OSError as exc:
            raise _disk_error(path, exc) from None
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path, *, run_id: str | None = None) -> ZarrSink:
        """Open an existing output group for resuming (or, for a worker, to write its blocks).

        With ``run_id`` (the ``tiler.run_id`` attribute the output had when the task was made),
        every write first checks that the output is still that run's: a task that outlives its run
        (a cancelled dask task still executing) stops instead of writing into a replacement.
        """
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="r+")
            if "0" not in group or "progress" not in group:
                raise OutputError(
                    f"{path}: is not a tiler output (no array '0' or 'progress'); "
                    "pass --overwrite to start again"
                )
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise OutputError(
                f"{path}: is not a readable zarr output ({exc}); pass --overwrite to start again"
            ) from None
        return cls(path, group, run_id)

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def _check_run(self) -> None:
        if self.run_id is None:
            return
        try:
            current = zarr.open_group(str(self.path), mode="r").attrs.get("tiler", {}).get("run_id")
        except (FileNotFoundError, ValueError, KeyError):
            current = None
        if current != self.run_id:
            raise OutputError(f"{self.path}: the output was replaced by another run; this task stops")

    def write(self, y0: int, y1: int, x0: int, x1: int, data: np.ndarray) -> None:
        self._check_run()
        try:
            self.array[..., y0:y1, x0:x1] = data
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def mark_done(self, chunk_row: int, block_col: int) -> None:
        self._check_run()
        try:
            self.progress[chunk_row, block_col] = 1
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def done(self) -> np.ndarray:
        return np.asarray(self.progress[:]).astype(bool)

    def set_complete(self) -> None:
        """Mark the output complete: call only after every stripe is written."""
        meta = dict(self.group.attrs["tiler"])
        meta["complete"] = True
        self.group.attrs["tiler"] = meta
