"""URLs and their fsspec file systems, with the standard configuration of each cloud."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from zarr.storage import WrapperStore

from ...errors import InputError, TilerError
from ._retry import COUNTERS, with_retries, with_retries_async

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_EXTRAS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "http": "aiohttp",
           "https": "aiohttp"}


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


def _gcs_emulator(protocol: str) -> bool:
    """A ``gs://`` URL while ``STORAGE_EMULATOR_HOST`` points at a GCS emulator."""
    return protocol in ("gs", "gcs") and bool(os.environ.get("STORAGE_EMULATOR_HOST"))


def _storage_options(protocol: str, asynchronous: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"asynchronous": asynchronous} if asynchronous else {}
    if protocol in ("s3", "gs", "gcs"):
        # other processes write these objects (a resumed run, dask workers): never trust a listing cache
        options["use_listings_cache"] = False
    if _gcs_emulator(protocol) and "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ:
        # as google-cloud-storage's own client does: an emulator takes anonymous requests (else
        # every new client would first wait for the Compute Engine metadata server)
        options["token"] = "anon"
    if protocol == "s3":
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
    if _gcs_emulator(protocol) and "gcsfs" not in sys.modules:
        # gcsfs's default (experimental zonal/hierarchical) class first asks GCS's gRPC control API
        # for the bucket's layout, which an emulator lacks: each call would wait 60 s for it
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
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
