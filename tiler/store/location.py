"""Where an output lives: a local path, or a URL on an object store (``s3://bucket/scan.zarr``).

:func:`as_location` turns what the user gave into a :class:`~pathlib.Path` (everything local is
handled as before) or a :class:`RemoteLocation`, which offers what the sink, the lock and the
output-safety rules need there:

- a zarr store for the group (zarr's ``FsspecStore`` over s3fs, wrapped in :class:`~tiler.sources.remote.RetryStore`:
  transient failures retried with backoff and counted, each request counted);
- ``exists``, ``attributes`` (a tiler output holds its run record under ``tiler``), ``describe``
  (what is there, for the refusals) and ``remove``;
- the owner record ``scan.zarr.owner.json`` beside the group, written with the store's
  conditional requests: created only if absent (of runs racing to create it exactly one succeeds),
  renewed only if unchanged since this run last saw it, and removed only if it still holds what was
  judged stale, so a record another run wrote meanwhile is never deleted. On S3
  (:class:`ObjectRecord`) these are ``If-None-Match: *``, ``If-Match`` on the ETag, and a
  conditional ``DELETE``; on Google Cloud Storage (:class:`GCSRecord`) ``ifGenerationMatch=0``,
  ``ifGenerationMatch`` on the object's generation, and a ``DELETE`` with the same precondition.

Object stores need no fsync: a PUT that returned is durable and S3 and GCS reads are strongly consistent,
so ``complete`` (one PUT of ``zarr.json``, after every chunk PUT returned) is never seen before
the data it vouches for.

May import: errors, sources (the URL helpers of :mod:`tiler.sources.remote`).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..sources.remote import COUNTERS, RetryStore, filesystem, is_url, scheme, with_retries

#: The owner record's suffix (as :data:`tiler.store.ownership.OWNER_SUFFIX`).
_OWNER_SUFFIX = ".owner.json"


def as_location(out: Any) -> Path | RemoteLocation:
    """A local :class:`Path`, or a :class:`RemoteLocation` for an ``s3://`` or ``gs://`` URL.

    Read-only schemes (``https://``) and object stores whose conditional writes tiler does not use
    (Azure) are refused in one line.
    """
    if isinstance(out, RemoteLocation):
        return out
    if not is_url(out):
        return Path(out)
    kind = scheme(out)
    if kind in ("http", "https"):
        raise OutputError(f"{out}: {kind}:// is read-only; write the output to a local path, s3:// or gs://")
    if kind not in ("s3", "gs", "gcs"):
        raise OutputError(f"{out}: outputs on {kind}:// are not supported (the one-writer record needs "
                          "conditional writes tiler uses on S3 and GCS only); write to s3://, gs:// or a local path")
    return RemoteLocation(out)


class RemoteLocation:
    """An output group at ``url`` on S3 or GCS (``s3://bucket/prefix/scan.zarr``, ``gs://...``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.path = filesystem(self.url)
        self.path = self.path.rstrip("/")
        self.name = self.path.rsplit("/", 1)[-1]
        self.bucket = self.path.split("/", 1)[0]

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemoteLocation({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteLocation) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def resolve(self) -> RemoteLocation:
        return self

    def check_bucket(self) -> None:
        """Raise a one-line :class:`OutputError` unless the bucket exists and can be listed."""
        try:
            with_retries(lambda: self.fs.ls(self.bucket, refresh=True), self.url, writing=True, error=OutputError)
        except OutputError as exc:
            if "does not exist" in str(exc) or "no such" in str(exc).lower():
                raise OutputError(f"{self.url}: the bucket {self.bucket!r} does not exist") from None
            raise
        COUNTERS.add(requests=1)

    def _get(self, key: str) -> bytes | None:
        """The object ``key`` below the group (None if missing)."""
        def call() -> bytes | None:
            try:
                return bytes(self.fs.cat_file(f"{self.path}/{key}"))
            except FileNotFoundError:
                return None

        COUNTERS.add(requests=1)
        return with_retries(call, self.url, writing=True, error=OutputError)

    def exists(self) -> bool:
        """Whether anything is stored at the group's prefix (or an object of that very name)."""
        def call() -> bool:
            self.fs.invalidate_cache(self.path)
            return bool(self.fs.exists(self.path))

        COUNTERS.add(requests=1)
        return with_retries(call, self.url, writing=True, error=OutputError)

    def attributes(self) -> dict[str, Any] | None:
        """The group's attributes, or None where there is no readable zarr v3 group."""
        data = self._get("zarr.json")
        try:
            meta = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return meta.get("attributes", {}) if isinstance(meta, dict) else None

    def describe(self) -> str:
        """What is at the location, for refusals: a foreign zarr group, an object, a prefix."""
        if self.attributes() is not None or self._get(".zgroup") is not None:
            return "a zarr group that tiler did not write (no 'tiler' run record)"
        if with_retries(lambda: self.fs.isfile(self.path), self.url, writing=True, error=OutputError):
            return "an object, not a tiler output"
        return "a prefix holding other objects, not a tiler output"

    def remove(self) -> None:
        """Delete every object below the group's prefix (only once :meth:`attributes` held tiler's run
        record)."""
        def call() -> None:
            # the keys below "prefix/" only: never a neighbour sharing the name's start
            # ("scan.zarr2/...", the owner record "scan.zarr.owner.json")
            keys = [k for k in self.fs.find(self.path + "/") if k.startswith(self.path + "/")]
            if keys:
                self.fs.rm(keys)
            self.fs.invalidate_cache(self.path)

        with_retries(call, self.url, writing=True, error=OutputError)

    def zarr_store(self, *, read_only: bool = False) -> RetryStore:
        """A zarr store over the group's prefix (asynchronous s3fs, retried and counted)."""
        from zarr.storage import FsspecStore

        fs, _ = filesystem(self.url, asynchronous=True)
        _close_at_exit(fs)
        return RetryStore(FsspecStore(fs, read_only=read_only, path=self.path), url=self.url, error=OutputError)

    def owner_record(self) -> ObjectRecord | GCSRecord:
        return GCSRecord(self) if scheme(self.url) in ("gs", "gcs") else ObjectRecord(self)


_OPEN: dict[int, Any] = {}


def _close_at_exit(fs: Any) -> None:
    """Close the HTTP session of an asynchronous s3fs (used on zarr's event loop) when the process
    ends: s3fs closes only the sessions of its synchronous instances (else "Unclosed client
    session" is printed at exit)."""
    if not _OPEN:
        import atexit

        atexit.register(_close_sessions)  # runs before zarr's own handler stops its loop
    _OPEN[id(fs)] = fs


def _close_sessions() -> None:
    from zarr.core.sync import sync

    for fs in list(_OPEN.values()):
        client = getattr(fs, "_s3", None) or getattr(fs, "_session", None)  # s3fs / gcsfs
        if client is not None:
            try:
                sync(client.close())
            except (RuntimeError, OSError, AttributeError):
                pass  # the loop is already gone: nothing left to close
    _OPEN.clear()


class _StoreRecord:
    """What the owner records on object stores share: where the record is, the version (S3 ETag,
    GCS generation) this process last wrote or read, and ``read``/``age`` over the store's
    ``_head``: ``(data, version, modified)`` or None."""

    def __init__(self, location: RemoteLocation) -> None:
        self.location = location
        self.url = location.url + _OWNER_SUFFIX
        self.bucket, self.key = (location.path + _OWNER_SUFFIX).split("/", 1)
        self._version: str | None = None

    def _head(self) -> tuple[bytes, str, float] | None:
        raise NotImplementedError

    def read(self) -> bytes | None:
        got = self._head()
        if got is None:
            return None
        self._version = got[1]
        return got[0]

    def age(self) -> float:
        got = self._head()
        return float("inf") if got is None else max(0.0, time.time() - got[2])


class ObjectRecord(_StoreRecord):
    """The owner record of a :class:`RemoteLocation` as an S3 object, written conditionally
    (the same operations as :class:`tiler.store.ownership.RecordFile`: create exclusively, read,
    replace, remove if unchanged, age); its version is the ETag."""

    def _call(self, method: str, **kwargs: Any) -> Any:
        COUNTERS.add(requests=1)
        return with_retries(lambda: self.location.fs.call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs),
                            self.url, writing=True, error=OutputError)

    def create(self, data: bytes) -> bool:
        """PUT with ``If-None-Match: *``: True if this call created the record."""
        try:
            out = self._call("put_object", Body=data, IfNoneMatch="*")
        except OutputError as exc:
            if "PreconditionFailed" in str(exc) or "At least one of the pre-conditions" in str(exc) or (
                    isinstance(exc.__context__, FileExistsError)):
                return False
            raise
        self._version = out.get("ETag")
        return True

    def _head(self) -> tuple[bytes, str, float] | None:
        """``(data, etag, modified)`` of the record in one GET, or None if there is none."""
        from fsspec.asyn import sync

        fs = self.location.fs

        async def get() -> tuple[bytes, str, float] | None:
            try:
                out = await fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            except FileNotFoundError:
                return None
            async with out["Body"] as stream:
                data = bytes(await stream.read())
            modified = out.get("LastModified")
            return data, str(out.get("ETag", "")), modified.timestamp() if modified is not None else time.time()

        COUNTERS.add(requests=1)
        return with_retries(lambda: sync(fs.loop, get), self.url, writing=True, error=OutputError)

    def replace(self, data: bytes) -> None:
        """PUT conditional on the ETag this process last saw (a heartbeat of its own record)."""
        extra = {"IfMatch": self._version} if self._version else {}
        out = self._call("put_object", Body=data, **extra)
        self._version = out.get("ETag")

    def remove_if(self, data: bytes) -> bool:
        """DELETE the record if it still holds ``data`` (conditional on its ETag): True if removed."""
        got = self._head()
        if got is None or got[0] != data:
            return False
        try:
            self._call("delete_object", IfMatch=got[1])
        except OutputError as exc:
            if "PreconditionFailed" in str(exc) or "pre-conditions" in str(exc):
                return False  # rewritten meanwhile by another run: not ours to delete
            raise
        return True


class GCSRecord(_StoreRecord):
    """The owner record of a :class:`RemoteLocation` on Google Cloud Storage, written with
    generation preconditions (the operations of :class:`ObjectRecord`): ``ifGenerationMatch=0``
    creates it only if absent, ``ifGenerationMatch=<generation>`` replaces or deletes it only if no
    other run wrote it since. A failed precondition is HTTP 412 (gcsfs: :class:`FileExistsError`)."""

    def _upload(self, data: bytes, generation: str) -> str | None:
        """A one-request upload conditional on ``generation`` (``"0"``: absent); the new generation,
        or None if the precondition failed."""
        from urllib.parse import quote

        fs = self.location.fs

        def call() -> str | None:
            try:
                out = fs.call("POST", f"{fs._location}/upload/storage/v1/b/{quote(self.bucket)}/o",
                              uploadType="media", name=self.key, ifGenerationMatch=generation, data=data,
                              headers={"Content-Type": "application/octet-stream"}, json_out=True)
            except FileExistsError:
                return None
            return str(out.get("generation", ""))

        COUNTERS.add(requests=1)
        return with_retries(call, self.url, writing=True, error=OutputError)

    def create(self, data: bytes) -> bool:
        """Upload with ``ifGenerationMatch=0``: True if this call created the record."""
        generation = self._upload(data, "0")
        if generation is None:
            return False
        self._version = generation
        return True

    def _head(self) -> tuple[bytes, str, float] | None:
        """``(data, generation, updated)`` of the record, or None if there is none (two requests:
        its metadata, then the bytes of exactly that generation)."""
        fs = self.location.fs

        def call() -> tuple[bytes, str, float] | None:
            try:
                meta = fs.call("GET", "b/{}/o/{}", self.bucket, self.key, json_out=True)
                generation = str(meta["generation"])
                _, data = fs.call("GET", "b/{}/o/{}", self.bucket, self.key, alt="media", generation=generation)
            except FileNotFoundError:
                return None
            updated = meta.get("updated")
            when = datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp() if updated else time.time()
            return bytes(data), generation, when

        COUNTERS.add(requests=2)
        return with_retries(call, self.url, writing=True, error=OutputError)

    def replace(self, data: bytes) -> None:
        """Upload conditional on the generation this process last saw (a heartbeat of its own record)."""
        if self._version is None:
            raise OutputError(f"{self.url}: the owner record was never read or written by this run")
        generation = self._upload(data, self._version)
        if generation is None:
            raise OutputError(f"{self.url}: the owner record was rewritten by another run")
        self._version = generation

    def remove_if(self, data: bytes) -> bool:
        """DELETE the record if it still holds ``data`` (conditional on its generation): True if removed."""
        got = self._head()
        if got is None or got[0] != data:
            return False
        fs = self.location.fs

        def call() -> bool:
            try:
                fs.call("DELETE", "b/{}/o/{}", self.bucket, self.key, ifGenerationMatch=got[1])
            except (FileExistsError, FileNotFoundError):
                return False  # rewritten or removed meanwhile by another run: not ours to delete
            return True

        COUNTERS.add(requests=1)
        return with_retries(call, self.url, writing=True, error=OutputError)


__all__ = ["GCSRecord", "ObjectRecord", "RemoteLocation", "as_location"]
