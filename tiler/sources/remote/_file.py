"""One object opened for reading: coalesced concurrent range reads and a block-cached file view."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ...errors import InputError
from ._fs import _version, filesystem
from ._retry import COUNTERS, with_retries

#: Ranges closer than this many bytes are fetched as one request (the gap is read and dropped).
MAX_GAP = 256 << 10
#: A coalesced request grows to at most this many bytes (larger ones run concurrently instead).
MAX_REQUEST = 16 << 20


def coalesce(offsets: Sequence[int], counts: Sequence[int], *, max_gap: int = MAX_GAP,
             max_request: int = MAX_REQUEST) -> list[tuple[int, int, list[int]]]:
    """Group byte ranges into requests: ``[(start, end, [indices of the ranges inside])]``.

    Ranges are sorted by offset; one is added to the current request when the gap to it is at most
    ``max_gap`` and the request stays within ``max_request`` bytes.

    >>> coalesce([0, 100, 10_000_000], [100, 50, 10], max_gap=10)
    [(0, 150, [0, 1]), (10000000, 10000010, [2])]
    """
    order = sorted((o, i) for i, o in enumerate(offsets) if counts[i] > 0)
    groups: list[tuple[int, int, list[int]]] = []
    for offset, i in order:
        end = offset + counts[i]
        if groups and offset - groups[-1][1] <= max_gap and max(end, groups[-1][1]) - groups[-1][0] <= max_request:
            start, last, members = groups[-1]
            groups[-1] = (start, max(last, end), [*members, i])
        else:
            groups.append((offset, end, [i]))
    return groups


class RemoteFile:
    """One object on an object store or web server, opened for reading.

    ``size``, ``version`` (ETag or modification time: what changes when the object is rewritten),
    ``open()`` (a file-like object with a block cache, for tifffile's header parsing) and
    :meth:`read_ranges`.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = url
        self.fs, self.path = filesystem(url)
        info = with_retries(lambda: self.fs.info(self.path), url)
        COUNTERS.add(requests=1)
        if info.get("type") == "directory":
            raise InputError(f"{url}: is a prefix (a folder), not an object; name a file")
        size = info.get("size")
        if size is None:
            raise InputError(f"{url}: the server does not say how large the file is (no Content-Length); "
                             "download it first")
        self.size = int(size)
        self.version = _version(info)
        self._handle: Any = None

    def open(self) -> BlockFile:
        """A binary file-like object over the object (256 KiB blocks, cached: headers, IFDs)."""
        if self._handle is None:
            self._handle = BlockFile(self)
        return self._handle

    def read_block(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` in one request (retried, counted)."""
        COUNTERS.add(requests=1, nbytes=end - start)
        return bytes(with_retries(lambda: self.fs.cat_file(self.path, start=start, end=end), self.url))

    def read_head(self, n: int) -> bytes:
        COUNTERS.add(requests=1, nbytes=n)
        return bytes(with_retries(lambda: self.fs.cat_file(self.path, start=0, end=min(n, self.size)), self.url))

    def read_all(self) -> bytes:
        COUNTERS.add(requests=1, nbytes=self.size)
        return bytes(with_retries(lambda: self.fs.cat_file(self.path), self.url))

    def read_ranges(self, offsets: Sequence[int], counts: Sequence[int]) -> list[bytes | None]:
        """The bytes ``[offsets[i], offsets[i] + counts[i])`` for every ``i`` (None for an empty
        range), fetched as few coalesced requests (:func:`coalesce`) sent concurrently."""
        groups = coalesce(offsets, counts)
        if not groups:
            return [None] * len(offsets)
        starts = [g[0] for g in groups]
        ends = [g[1] for g in groups]

        def fetch() -> list[Any]:
            return list(self.fs.cat_ranges([self.path] * len(groups), starts, ends, on_error="raise"))

        blobs = with_retries(fetch, self.url)
        COUNTERS.add(requests=len(groups), nbytes=sum(e - s for s, e in zip(starts, ends)))
        out: list[bytes | None] = [None] * len(offsets)
        for (start, end, members), blob in zip(groups, blobs):
            if len(blob) != end - start:
                raise InputError(f"{self.url}: the object is shorter than its TIFF header says (asked for "
                                 f"bytes {start}:{end}, got {len(blob)}); it may have been truncated")
            view = memoryview(blob)
            for i in members:
                a = offsets[i] - start
                out[i] = bytes(view[a : a + counts[i]])
        return out

    def close(self) -> None:
        self._handle = None


class BlockFile(io.RawIOBase):
    """A seekable, read-only binary file over a :class:`RemoteFile`, fetched in blocks of
    ``block`` bytes that are kept (up to ``cached`` of them, least recently used dropped): what
    tifffile needs to parse headers and IFDs scattered through a file with few requests."""

    def __init__(self, remote: RemoteFile, *, block: int = 256 << 10, cached: int = 64) -> None:
        super().__init__()
        self.remote, self.block, self.cached = remote, block, cached
        self.name = remote.path.rsplit("/", 1)[-1]
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.remote.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _get(self, k: int) -> bytes:
        with self._lock:
            data = self._blocks.get(k)
            if data is not None:
                self._blocks.move_to_end(k)
                return data
        start = k * self.block
        data = self.remote.read_block(start, min(self.remote.size, start + self.block))
        with self._lock:
            self._blocks[k] = data
            while len(self._blocks) > self.cached:
                self._blocks.popitem(last=False)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.remote.size, self._pos + len(view))
        n = 0
        while self._pos < end:
            k, a = divmod(self._pos, self.block)
            data = self._get(k)
            take = min(end - self._pos, len(data) - a)
            if take <= 0:
                break
            view[n : n + take] = data[a : a + take]
            n += take
            self._pos += take
        return n

    def read(self, size: int = -1) -> bytes:
        size = self.remote.size - self._pos if size is None or size < 0 else size
        buffer = bytearray(max(0, min(size, self.remote.size - self._pos)))
        n = self.readinto(buffer)
        return bytes(buffer[:n])
