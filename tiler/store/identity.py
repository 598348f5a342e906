"""What identifies an input, so that ``--resume`` refuses when the input changed.

Recorded with every output (``tiler.input``) and compared on resume:

- a **file**: its size and modification time (a changed file is rewritten, so both move);
- a **zarr store** (a folder): a digest of every file below it — path, size and modification time —
  which covers the metadata and each chunk without reading the pixels;
- a **NumPy array**: a CRC-32 of its bytes (about 2 GB/s), with shape and dtype;
- a **dask array**: its graph name, which dask derives from the content (``from_array`` of NumPy
  data tokenises the data) and the operations, plus the digest of every zarr array it reads;
- an **object** on a store (``s3://``, ``https://``): its size and ETag;
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

from ..sources.remote import is_url

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


def _local_root(store: Any) -> Path | None:
    """The local folder of a zarr store: a ``LocalStore``'s root, or an fsspec store's path when it
    is a folder on this machine (``dask.array.from_zarr("scan.zarr")`` opens one of those)."""
    for attr in ("root", "path"):
        value = getattr(store, attr, None)
        if isinstance(value, (str, os.PathLike)) and str(value) and Path(value).is_dir():
            return Path(value)
    return None


def _zarr_array_digest(array: Any) -> str | None:
    root = _local_root(getattr(array, "store", None))
    if root is not None:
        folder = root / getattr(array, "path", "")
        return f"tree:{tree_digest(folder)}"
    if array.nbytes <= 1 << 30:  # in memory or remote, and small enough to read once
        return array_crc(array[...])
    return None


def input_digest(image: Any) -> str | None:
    """A string that changes when the input's pixels may have changed, or None if unknowable."""
    if is_url(image):  # an object: its size and ETag (a rewritten object gets a new one); a prefix
        from ..sources.remote import object_version  # (a zarr store): every object's

        return f"object:{object_version(image)}"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            return f"tree:{tree_digest(path)}"
        st = path.stat()
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    if isinstance(image, np.ndarray):
        return array_crc(image)
    if hasattr(image, "dask") and hasattr(image, "name"):
        return _dask_digest(image)
    if type(image).__module__.startswith("zarr"):
        return _zarr_array_digest(image)
    return None


def _dask_leaves(array: Any) -> list[Any]:
    """The data a dask array's graph holds: NumPy arrays, zarr arrays, anything else."""
    leaves = []
    for value in dict(array.__dask_graph__()).values():
        for item in (value, getattr(value, "value", None)):  # a plain object, or a DataNode's
            if isinstance(item, np.ndarray) or type(item).__module__.startswith("zarr"):
                leaves.append(item)
    return leaves


def _dask_digest(array: Any) -> str | None:
    """The graph name when dask derived it from the data (``from_array`` of NumPy arrays); with
    zarr leaves, their digests too (``from_zarr`` names the graph after the store's path, not its
    content); None when some data cannot be digested."""
    parts = [str(array.name)]
    for leaf in _dask_leaves(array):
        if not isinstance(leaf, np.ndarray):
            digest = _zarr_array_digest(leaf)
            if digest is None:
                return None
            parts.append(digest)
    return "dask:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def store_root(path: Path) -> Path:
    """The outermost zarr store folder that holds ``path`` (a node inside a group), else ``path``."""
    root = path
    for parent in path.parents:
        if any((parent / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray")):
            root = parent
        else:
            break
    return root


def input_paths(image: Any) -> list[Path]:
    """The files or folders an input reads from, whole zarr stores for nodes inside them (for "the
    output must not be, be inside or contain the input"): paths, zarr arrays, Sources opened from a
    path, dask arrays over zarr arrays."""
    def with_store(path: Path) -> list[Path]:
        path = path.resolve()
        root = store_root(path)
        return [path] if root == path else [path, root]

    if is_url(image):
        return []  # not on this machine's disk (URL outputs are compared by refuse_input_as_output)
    if isinstance(image, (str, os.PathLike)):
        return with_store(Path(image))
    paths = []
    root = _local_root(getattr(image, "store", None)) if type(image).__module__.startswith("zarr") else None
    if root is not None:
        paths += with_store(root / getattr(image, "path", ""))
    if hasattr(image, "read"):  # a Source opened from a file or store keeps its path, or its name
        for value in (getattr(image, "path", None), getattr(image, "name", None)):
            if isinstance(value, (str, os.PathLike)) and Path(value).exists():
                paths += with_store(Path(value))
    inner = getattr(image, "source", None)  # wrappers (channel selection, resampling) keep theirs
    if inner is not None and inner is not image:
        paths += input_paths(inner)
    if hasattr(image, "dask"):
        paths += [p for leaf in _dask_leaves(image) if not isinstance(leaf, np.ndarray)
                  for p in input_paths(leaf)]
    return paths
