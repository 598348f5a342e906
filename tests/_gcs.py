"""A Google Cloud Storage JSON API server on 127.0.0.1 for tests: ``gcp-storage-emulator``
(pure Python, in memory), with GCS's generation preconditions added.

Clients find it through the standard variable ``STORAGE_EMULATOR_HOST``, as a user's run would
find any GCS-compatible endpoint; :func:`gcs_environment` sets it.

Two things of the emulator are mended by :func:`start_gcs`, where it differs from GCS:

- it ignores ``ifGenerationMatch``: its upload and delete handlers are wrapped with what GCS
  documents for it (https://cloud.google.com/storage/docs/request-preconditions): the request runs
  only if the object's current generation equals the value, ``0`` meaning "no live object", and
  otherwise fails with HTTP 412 ``conditionNotMet``. The check and the write run under one lock, so
  of two requests racing on one generation exactly one succeeds, as on GCS;
- it parses multipart uploads with the ``email`` package, which drops a last ``\r`` of the data
  before gcsfs's ``\n--boundary`` (1 chunk in ~50 corrupted): they are split byte-exactly instead.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

_LOCK = threading.Lock()


def _current_generation(storage: Any, bucket: str, name: str) -> str:
    from gcp_storage_emulator.exceptions import NotFound

    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return "0"


def _with_preconditions(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapped(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        wanted = request.query.get("ifGenerationMatch")
        if not wanted:
            return handler(request, response, storage, *args, **kwargs)
        params = request.params
        name = params.get("object_id") or (request.query.get("name") or [None])[0]
        if name is None and isinstance(request.data, dict):
            name = request.data.get("meta", {}).get("name")
        with _LOCK:
            if _current_generation(storage, params["bucket_name"], name) != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                return None
            return handler(request, response, storage, *args, **kwargs)

    wrapped.preconditions = True  # type: ignore[attr-defined]
    return wrapped


def _add_preconditions() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in (objects.insert, objects.delete) and not getattr(handler, "preconditions", False):
                handlers[method] = _with_preconditions(handler)


def _exact_multipart(original: Callable[..., Any]) -> Callable[..., Any]:
    """The emulator's request-body reader, with ``multipart/related`` uploads split byte-exactly."""
    import json

    from gcp_storage_emulator import server

    def read(request_handler: Any, query: Any) -> Any:
        ctype = request_handler.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/related"):
            return original(request_handler, query)
        raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        first = b"--" + ctype.split("boundary=", 1)[1].strip().strip('"').encode()
        eol = b"\r\n" if raw.startswith(first + b"\r\n") else b"\n"
        body = raw[len(first + eol):raw.rindex(eol + first + b"--")]
        meta_part, data_part = body.split(eol + first + eol, 1)
        head, content = data_part.split(eol + eol, 1)
        data_type = next((line.split(b":", 1)[1].strip().decode() for line in head.split(eol)
                          if line.lower().startswith(b"content-type:")), "application/octet-stream")
        return {"meta": json.loads(meta_part.split(eol + eol, 1)[1]), "content": content,
                "content-type": data_type}

    read.exact = True  # type: ignore[attr-defined]
    return read


def start_gcs(bucket: str = "tiler-test") -> tuple[Any, str]:
    """Start the emulator on a free port of 127.0.0.1 with ``bucket`` made:
    ``(server, "http://127.0.0.1:PORT")``."""
    from gcp_storage_emulator import server as emulator
    from gcp_storage_emulator.server import create_server

    _add_preconditions()
    if not getattr(emulator._read_data, "exact", False):
        emulator._read_data = _exact_multipart(emulator._read_data)
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    # a client that closed its connection before reading the answer: not an error of the test (the
    # standard library's server would print a traceback to stderr for each one)
    server.start()
    for _ in range(100):  # the HTTP server is made in the emulator's thread
        if server._api._httpd is not None:
            break
        time.sleep(0.05)
    server._api._httpd.handle_error = lambda *args: None
    # it serves one request at a time: a deeper accept queue than socketserver's 5, so a burst of
    # concurrent requests (zarr writes chunks concurrently) waits instead of having SYNs dropped
    server._api._httpd.socket.listen(128)
    return server, f"http://127.0.0.1:{port}"


def gcs_environment(endpoint: str) -> dict[str, str]:
    """The variable a user sets for a GCS-compatible endpoint (anonymous credentials there)."""
    return {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def reset_clients() -> None:
    """Forget cached GCS file systems (their endpoint was resolved when created)."""
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
