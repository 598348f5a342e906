"""Where a TIFF's image directories (IFDs) lie, read from the raw bytes, to tell a truncated file.

Writers such as libtiff (PIL), libvips and GDAL's overview builder put image data first and the
directories after it, so a file cut short loses its directories before its pixels; tifffile then
sees no image, or a corrupt one ("invalid offset to first page", "corrupted IFD structure"). This
module follows the chain of first-level directories (classic TIFF and BigTIFF, either byte order)
and says where it runs past the end of the file.

>>> import io, struct
>>> header = b"II*\\x00" + struct.pack("<I", 5000)      # the first directory at byte 5000 ...
>>> directory_past_end(io.BytesIO(header + bytes(100)), 108)  # ... of a 108-byte file
(5000, 108)
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

#: Directories followed at most (a loop in a corrupt chain stops here too).
MAX_DIRECTORIES = 100_000


def directory_past_end(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """``(offset, size)`` of the first directory in the chain that does not fit in the file's ``size``
    bytes, or ``None`` when every directory fits (or the bytes are not a TIFF header)."""
    f.seek(0)
    head = f.read(16)
    if head[:2] not in (b"II", b"MM"):
        return None
    order = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack(order + "H", head[2:4])[0]
    if magic == 42 and len(head) >= 8:
        offset = struct.unpack(order + "I", head[4:8])[0]
        count_fmt, entry, next_fmt = "H", 12, "I"
    elif magic == 43 and len(head) >= 16:
        offset = struct.unpack(order + "Q", head[8:16])[0]
        count_fmt, entry, next_fmt = "Q", 20, "Q"
    else:
        return None
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < MAX_DIRECTORIES:
        seen.add(offset)
        if offset + count_size > size:
            return offset, size
        f.seek(offset)
        (count,) = struct.unpack(order + count_fmt, f.read(count_size))
        end = offset + count_size + count * entry + next_size
        if end > size:
            return offset, size
        f.seek(end - next_size)
        (offset,) = struct.unpack(order + next_fmt, f.read(next_size))
    return None


def truncation(path: str | os.PathLike[str]) -> str | None:
    """``"file is truncated (108 bytes; an image directory at byte 5000 runs past the end)"`` when the
    directory chain of the TIFF at ``path`` runs past its end; ``None`` otherwise."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            found = directory_past_end(f, size)
    except (OSError, struct.error):
        return None
    if found is None:
        return None
    offset, size = found
    return f"file is truncated ({size} bytes; an image directory at byte {offset} runs past the end)"
