"""What identifies an input, so that ``--resume`` refuses when the input changed.

Recorded with every output (``tiler.input``) and compared on resume:

- a **file**: its size and modification time (a changed file is rewritten, so both move);
- a **zarr store** (a folder): a digest of every file below it — path, size and modification time —
  which covers the metadata and each chunk without reading the pixels;
- a **NumPy array**: a CRC-32 of its bytes (about 2 GB/s), with shape and dtype;
- a **dask array**: its graph name, which dask derives from the content (``from_array`` of NumPy
  data tokenises the data) and the operations;
- a **zarr array** object: the digest of its folder when it lives on a local disk, else of its bytes.

Anything else (a custom array-like, a :class:`~tiler.sources.Source` object) cannot be checked:
:func:`input_digest` returns None and a resume needs ``resume="force"``.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

#: Bytes of an array hashed at a time (bounds the contiguous copy of a strided array).
_BAND_BYTES = 64 << 20


def tree_digest(root: Path) -> str:
    """SHA-256 (16 hex digits) over the relative path, size and mtime of every file below ``root``."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def array_crc(array: Any) -> str:
    """CRC-32 of an array's values, row band by row band (no full copy of a strided array).

    >>> array_crc(np.zeros((4, 4), np.uint8)) == array_crc(np.zeros((4, 4), np.uint8))
    True
    >>> array_crc(np.zeros((4, 4), np.uint8)) == array_crc(np.ones((4, 4), np.uint8))
    False
    """
    arr = np.asarray(array) if not isinstance(array, np.ndarray) else array
    crc = zlib.crc32(repr((arr.shape, arr.dtype.str)).encode())
    if arr.ndim == 0 or arr.size == 0:
        return f"crc32:{crc:08x}"
    row_bytes = max(1, arr.nbytes // max(1, arr.shape[0]))
    step = max(1, _BAND_BYTES // row_bytes)
    for y in range(0, arr.shape[0], step):
        band = np.ascontiguousarray(arr[y : y + step])
        crc = zlib.crc32(band.data.cast("B"), crc)
    return f"crc32:{crc:08x}"


def _zarr_array_digest(array: Any) -> str | None:
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    if root is not None and Path(root).is_dir():
        folder = Path(root) / getattr(array, "path", "")
        return f"tree:{tree_digest(folder)}"
    if array.nbytes <= 1 << 30:  # in memory or remote, and small enough to read once
        return array_crc(array[...])
    return None


def input_digest(image: Any) -> str | None:
    """A string that changes when the input's pixels may have changed, or None if unknowable."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            return f"tree:{tree_digest(path)}"
        st = path.stat()
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    if isinstance(image, np.ndarray):
        return array_crc(image)
    if hasattr(image, "dask") and hasattr(image, "name"):
        return f"dask:{image.name}"
    if type(image).__module__.startswith("zarr"):
        return _zarr_array_digest(image)
    return None


def input_paths(image: Any) -> list[Path]:
    """The files or folders an input reads from (for "the output must not be the input")."""
    if isinstance(image, (str, os.PathLike)):
        return [Path(image)]
    root = getattr(getattr(image, "store", None), "root", None)
    if root is not None:
        return [Path(root) / getattr(image, "path", "")]
    path = getattr(image, "path", None)  # a Source of a file
    return [Path(path)] if isinstance(path, (str, os.PathLike)) else []
