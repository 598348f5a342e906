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

May import: errors.
"""

from ._file import MAX_GAP, MAX_REQUEST, BlockFile, RemoteFile, coalesce
from ._fs import RetryStore, filesystem, is_url, is_zarr_url, object_version, scheme, zarr_store
from ._retry import (
    ATTEMPTS,
    BACKOFF,
    COUNTERS,
    Counters,
    is_transient,
    remote_error,
    remote_errors,
    transient_errors,
    with_retries,
    with_retries_async,
)

__all__ = [
    "ATTEMPTS", "BACKOFF", "COUNTERS", "MAX_GAP", "MAX_REQUEST", "BlockFile", "Counters", "RemoteFile", "RetryStore",
    "coalesce", "filesystem", "is_transient", "is_url", "is_zarr_url", "object_version", "remote_error",
    "remote_errors", "scheme", "transient_errors", "with_retries", "with_retries_async", "zarr_store",
]
