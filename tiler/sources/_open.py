"""Turn a path or an array into a :class:`Source`, choosing the reader by content."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InputNotFoundError
from ._array import ArraySource
from ._base import Source, SourceInfo

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def _open_small_image(path: Path) -> Source:
    """PNG or JPEG: decoded whole (these formats have no random access), for small images."""
    import imagecodecs

    try:
        array = imagecodecs.imread(str(path))
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"{path}: cannot decode the image ({exc})") from None
    fmt = "png" if path.read_bytes()[:8] == _PNG_MAGIC else "jpeg"
    return ArraySource(array, name=str(path), info=SourceInfo(format=fmt))


def _open_zarr(path: Path) -> Source:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable zarr array or group ({exc})") from None
    if isinstance(node, zarr.Group):
        if "0" not in node:
            raise InputError(f"{path}: zarr group has no array '0' (full resolution) to read")
        node = node["0"]
    return ArraySource(node, name=str(path), info=SourceInfo(format="zarr", chunks=node.chunks[:2]))


def open_source(image: Any, *, level: int = 0) -> Source:
    """Open ``image``: a path (TIFF family, zarr, PNG, JPEG), an array-like or a Source.

    Raises :class:`~tiler.errors.InputError` naming the file for anything unreadable.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise InputNotFoundError(f"{path}: no such file or directory")
        if path.is_dir():
            if (path / "zarr.json").exists() or (path / ".zarray").exists() or (path / ".zgroup").exists():
                return _open_zarr(path)
            raise InputError(f"{path}: is a directory, not an image (nor a zarr store)")
        with open(path, "rb") as fh:
            head = fh.read(8)
        if not head:
            raise InputError(f"{path}: file is empty (0 bytes)")
        if head[:4] in _TIFF_MAGIC:
            from ._tiff import TiffSource

            return TiffSource(path, level=level)
        if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
            return _open_small_image(path)
        raise InputError(
            f"{path}: not an image tiler can read (expected TIFF, PNG, JPEG or zarr; "
            f"file starts with {head[:4]!r})"
        )
    if all(hasattr(image, a) for a in ("read", "shape", "dtype", "name")):
        return image  # already a Source
    if hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__"):
        return ArraySource(image)
    if isinstance(image, (list, tuple)):
        return ArraySource(np.asarray(image))
    raise InputError(f"cannot read an image from a {type(image).__name__}")
