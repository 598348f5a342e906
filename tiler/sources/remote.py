"""Files on object stores and web servers: ``s3://``, ``gs://``, ``https://`` URLs through fsspec.

- :func:`is_url` tells a URL from a local path; :func:`filesystem` opens the URL's file system
  with the standard configuration of each cloud (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_PROFILE``, ``~/.aws/config``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...): nothing new to learn.
- :func:`with_retries` repeats a request that failed for a transient reason (a dropped or refused
  connection, a timeout, a 5xx/SlowDown answer) with exponential backoff, up to :data:`ATTEMPTS`
  times, and counts each retry in :data:`COUNTERS`; anything else, and the last failure, becomes one
  :class:`~tiler.errors.TilerError` line (:func:`remote_error`: no such object, access denied, ...).
- :class:`RemoteFile` is one object opened for reading: its size and version (for resume), a
  file-like view with a block cache (for headers), and :meth:`RemoteFile.read_ranges`, which
  coalesces byte ranges that are close together into few requests and sends them concurrently.

The S3 client's own retries are turned off (``AWS_MAX_ATTEMPTS`` or a config file's
``max_attempts`` turn them back on) so that every retry is tiler's, counted and reported.
"""

from __future__ import annotations

import functools
import io
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from zarr.storage import WrapperStore

from ..errors import InputError, InputNotFoundError, TilerError

#: Attempts per request before a transient error is reported (1 + 4 retries).
ATTEMPTS = 5
#: Seconds before the first retry; doubled for each further one (with up to 50 % jitter).
BACKOFF = 0.2
#: Ranges closer than this many bytes are fetched as one request (the gap is read and dropped).
MAX_GAP = 256 << 10
#: A coalesced request grows to at most this many bytes (larger ones run concurrently instead).
MAX_REQUEST = 16 << 20
#: URL schemes that can be written (the others are read-only).
WRITABLE = ("s3", "gs", "gcs", "memory")

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_EXTRAS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "http": "aiohttp",
           "https": "aiohttp"}

T = TypeVar("T")


def is_url(value: Any) -> bool:
    """True for a string naming a URL (``s3://b/k``, ``https://h/p``); ``file://`` counts as local.

    >>> is_url("s3://bucket/scan.tif"), is_url("scan.tif"), is_url("C:/scan.tif")
    (True, False, False)
    """
    if not isinstance(value, str):
        return False
    match = _URL.match(value)
    return match is not None and match.group(1).lower() != "file"


def scheme(url: str) -> str:
    match = _URL.match(url)
    return match.group(1).lower() if match else ""


@dataclass
class Counters:
    """Requests, bytes moved and retries of this process's object-store I/O (thread-safe)."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, *, requests: int = 0, nbytes: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes
            self.retries += retries

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return (self.requests, self.bytes, self.retries)


#: Every object-store request tiler makes in this process (inputs and outputs).
COUNTERS = Counters()


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import botocore.exceptions as be

        types += [be.ConnectionError, be.HTTPClientError]
    except ImportError:
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError]
    except ImportError:
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        types.append(FSTimeoutError)
    except ImportError:
        pass
    return tuple(types)


def _remote_types() -> tuple[type[BaseException], ...]:
    """Every exception a remote request may raise that is about the request, not a bug."""
    types: list[type[BaseException]] = [OSError, *_transient_types()]
    try:
        import botocore.exceptions as be

        types.append(be.BotoCoreError)
    except ImportError:
        pass
    try:
        import aiohttp

        types.append(aiohttp.ClientError)
    except ImportError:
        pass
    return tuple(types)


@functools.cache
def transient_errors() -> tuple[type[BaseException], ...]:
    """Exception types of failures worth retrying (botocore and aiohttp imported on first use)."""
    return _transient_types()


@functools.cache
def remote_errors() -> tuple[type[BaseException], ...]:
    """Exception types a remote request raises about the request (not a bug in tiler)."""
    return _remote_types()


_TRANSIENT_WORDS = ("SlowDown", "reduce your request rate", "InternalError", "ServiceUnavailable",
                    "503", "500 Internal", "RequestTimeout")


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: no connection, a timeout, or the server saying "try again"."""
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError)):
        return False
    return isinstance(exc, transient_errors()) or any(w in str(exc) for w in _TRANSIENT_WORDS)


def remote_error(url: str, exc: BaseException, *, writing: bool = False,
                 error: type[TilerError] = InputError) -> TilerError:
    """One line for a failed request on ``url`` (``error``: the type to raise, InputError for
    inputs, OutputError for outputs)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        if writing:
            return error(f"{url}: the bucket does not exist ({reason})")
        return (InputNotFoundError if error is InputError else error)(
            f"{url}: no such object or bucket ({reason})")
    if isinstance(exc, PermissionError):
        return error(f"{url}: access denied ({reason}); check the credentials (AWS_ACCESS_KEY_ID, "
                     "AWS_PROFILE, ...) and the bucket's policy")
    if is_transient(exc):
        return error(f"{url}: the object store did not answer ({type(exc).__name__}: {reason}) after "
                     f"{ATTEMPTS} attempts")
    verb = "write" if writing else "read"
    return error(f"{url}: cannot {verb} ({type(exc).__name__}: {reason})")


def with_retries(call: Callable[[], T], url: str, *, writing: bool = False,
                 error: type[TilerError] = InputError) -> T:
    """``call()``, retried with backoff while it fails transiently; a one-line error otherwise."""
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except remote_errors() as exc:
            if not is_transient(exc) or attempt == ATTEMPTS - 1:
                raise remote_error(url, exc, writing=writing, error=error) from None
            COUNTERS.add(retries=1)
            time.sleep(BACKOFF * 2**attempt * (1 + 0.5 * random.random()))
    raise AssertionError("unreachable")


async def with_retries_async(call: Callable[[], Any], url: str, *, writing: bool = False,
                             error: type[TilerError] = InputError) -> Any:
    """:func:`with_retries` for coroutines (``call`` returns a new awaitable per attempt)."""
    import asyncio

    for attempt in range(ATTEMPTS):
        try:
            return await call()
        except remote_errors() as exc:
            if not is_transient(exc) or attempt == ATTEMPTS - 1:
                raise remote_error(url, exc, writing=writing, error=error) from None
            COUNTERS.add(retries=1)
            await asyncio.sleep(BACKOFF * 2**attempt * (1 + 0.5 * random.random()))
    raise AssertionError("unreachable")


def _storage_options(protocol: str, asynchronous: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"asynchronous": asynchronous} if asynchronous else {}
    if protocol in ("s3", "gs", "gcs"):
        # other processes write these objects (a resumed run, dask workers): never trust a listing cache
        options["use_listings_cache"] = False
    if protocol == "s3":
        import os

        if not any(k in os.environ for k in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")):
            # tiler retries (counted); botocore's own retries only when the user asks for them
            options["config_kwargs"] = {"retries": {"total_max_attempts": 1}}
    return options


def filesystem(url: str, *, asynchronous: bool = False) -> tuple[Any, str]:
    """``(fs, path)`` for ``url``: the fsspec file system of its scheme and the path on it.

    A missing extra is a one-line error naming what to install.
    """
    import fsspec

    protocol = scheme(url)
    try:
        fs, path = fsspec.url_to_fs(url, **_storage_options(protocol, asynchronous))
    except ImportError:
        package = _EXTRAS.get(protocol, f"an fsspec implementation for {protocol}://")
        raise InputError(f"{url}: reading {protocol}:// needs {package}: pip install 'tiler-engine[cloud]' "
                         f"{package}") from None
    except ValueError as exc:
        raise InputError(f"{url}: not a URL tiler can open ({exc})") from None
    if protocol == "s3":
        fs.retries = 1  # s3fs's own retry loop: off, tiler retries (see the module docstring)
    return fs, path


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


class RetryStore(WrapperStore[Any]):
    """A zarr store wrapping another (``FsspecStore``): transient failures of ``get``, ``set``,
    ``exists`` and ``delete`` are retried with backoff (:func:`with_retries_async`)
    and other failures become one-line errors (``error``: :class:`InputError` for inputs,
    :class:`OutputError` for outputs); every request and its bytes are counted."""

    def __init__(self, store: Any, *, url: str, error: type[TilerError] = InputError) -> None:
        super().__init__(store)
        self.url = url
        self.error = error
        self._writing = error is not InputError

    def _with_store(self, store: Any) -> RetryStore:
        return type(self)(store, url=self.url, error=self.error)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        value = await with_retries_async(lambda: self._store.get(key, prototype, byte_range), self.url,
                                         writing=self._writing, error=self.error)
        COUNTERS.add(requests=1, nbytes=len(value) if value is not None else 0)
        return value

    async def set(self, key: str, value: Any) -> None:
        await with_retries_async(lambda: self._store.set(key, value), self.url, writing=self._writing, error=self.error)
        COUNTERS.add(requests=1, nbytes=len(value))

    async def _set_many(self, values: Iterable[tuple[str, Any]]) -> None:
        import asyncio

        await asyncio.gather(*(self.set(key, value) for key, value in values))

    async def exists(self, key: str) -> bool:
        COUNTERS.add(requests=1)
        return bool(await with_retries_async(lambda: self._store.exists(key), self.url,
                                             writing=self._writing, error=self.error))

    async def delete(self, key: str) -> None:
        COUNTERS.add(requests=1)
        await with_retries_async(lambda: self._store.delete(key), self.url, writing=self._writing, error=self.error)


def object_version(url: str) -> str:
    """What changes when the object (or, for a prefix such as a zarr store, any object below it) is
    rewritten: size and ETag, or a digest over every object's key, size and ETag."""
    fs, path = filesystem(url)
    info = with_retries(lambda: fs.info(path), url)
    COUNTERS.add(requests=1)
    if info.get("type") != "directory":
        return _version(info)
    import hashlib

    listing = with_retries(lambda: fs.find(path, detail=True), url)
    COUNTERS.add(requests=1 + len(listing) // 1000)
    h = hashlib.sha256()
    for key in sorted(listing):
        h.update(f"{key}\0{_version(listing[key])}\n".encode())
    return f"tree:{h.hexdigest()[:16]}"


def _version(info: dict[str, Any]) -> str:
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    return f"{info.get('size')}:{str(tag).strip(chr(34))}"


def zarr_store(url: str) -> RetryStore:
    """A read-only zarr store over ``url`` (asynchronous fsspec, retried and counted)."""
    from zarr.storage import FsspecStore

    fs, path = filesystem(url, asynchronous=True)
    return RetryStore(FsspecStore(fs, read_only=True, path=path.rstrip("/")), url=url)


def is_zarr_url(url: str) -> bool:
    """A URL naming a zarr store (``….zarr``, or a prefix holding ``zarr.json``/``.zgroup``/``.zarray``)."""
    if url.rstrip("/").lower().endswith(".zarr"):
        return True
    fs, path = filesystem(url)
    path = path.rstrip("/")
    COUNTERS.add(requests=1)
    return bool(with_retries(lambda: any(fs.exists(f"{path}/{n}") for n in ("zarr.json", ".zgroup", ".zarray")),
                             url))


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
