"""A real S3 HTTP server on 127.0.0.1 for tests and benchmarks: moto's ``ThreadedMotoServer``,
optionally behind :class:`Proxy`, a TCP relay that adds a delay per request or drops connections.

Clients find it through the standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...),
exactly as a user's run would find a real endpoint; :func:`s3_environment` sets them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def start_moto() -> tuple[Any, str]:
    """Start moto's S3 server on a free port of 127.0.0.1: ``(server, "http://127.0.0.1:PORT")``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def s3_environment(endpoint: str) -> dict[str, str]:
    """The variables a user would set for an S3-compatible endpoint (moto accepts any keys)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def reset_clients() -> None:
    """Forget cached S3 file systems (their endpoint and credentials were resolved when created)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def make_bucket(name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)


class Proxy:
    """A TCP relay from a free port of 127.0.0.1 to ``upstream`` (``http://host:port``).

    ``delay``: seconds slept before relaying each request (the first bytes a client sends after
    the server last answered on that connection): a fixed round-trip latency per request, which
    concurrent requests overlap and sequential ones add up. ``broken = True`` closes every
    connection and refuses new ones (a dropped network) until set back to False.
    """

    def __init__(self, upstream: str, *, delay: float = 0.0) -> None:
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.broken = False
        self.requests = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.broken:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            state = {"answered": True}
            threading.Thread(target=self._pump, args=(client, server, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict[str, bool], request: bool) -> None:
        try:
            while not self.broken:
                data = src.recv(1 << 16)
                if not data or self.broken:
                    break
                if request and state["answered"]:
                    state["answered"] = False
                    with self._lock:
                        self.requests += 1
                    if self.delay:
                        time.sleep(self.delay)
                elif not request:
                    state["answered"] = True
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open.difference_update((src, dst))

    def break_now(self) -> None:
        """Drop every open connection and refuse new ones."""
        self.broken = True
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.break_now()
        self._sock.close()
        self._thread.join()


@contextlib.contextmanager
def environment(values: dict[str, str], reset: Callable[[], None] = reset_clients) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block (and forget cached clients both ways:
    ``reset``, S3's by default)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    reset()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset()


def serve_http(folder: str) -> tuple[Any, str]:
    """A read-only HTTP server of ``folder`` on a free port of 127.0.0.1 that answers ``Range``
    requests (206), as web servers and CDNs do: ``(server, "http://127.0.0.1:PORT")``."""
    import functools
    import http.server
    import re

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def send_head(self) -> Any:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            path = self.translate_path(self.path)
            if not match or not os.path.isfile(path):
                return super().send_head()
            size = os.path.getsize(path)
            start = int(match.group(1))
            end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
            with open(path, "rb") as f:
                f.seek(start)
                body = f.read(max(0, end - start + 1))
            self.send_response(206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            import io

            return io.BytesIO(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def check_lock_takeover(where: Any) -> None:
    """On an empty owner record at ``where`` (a :class:`~tiler.store.location.RemoteLocation`): a
    live holder's lock refuses a second run and is released on leaving; a dead holder's record (a
    pid that does not exist) is removed conditionally and taken over."""
    import pytest

    from tiler.errors import OutputError
    from tiler.store.ownership import OutputLock, Owner

    record = where.owner_record()
    with OutputLock(where, "run-a"):
        with pytest.raises(OutputError, match="another tiler run is writing this output: run run-a"):
            OutputLock(where, "run-b").acquire()
    assert record.read() is None  # released
    dead = Owner.me("run-dead")
    dead = Owner(dead.run_id, dead.host, 2**22 + 12345, None, dead.boot_id, dead.heartbeat)  # no such pid
    assert record.create(dead.to_bytes())
    lock = OutputLock(where, "run-c")
    lock.acquire()  # the dead holder's record is removed (conditionally) and replaced
    try:
        holder = Owner.from_bytes(record.read() or b"")
        assert holder is not None and holder.run_id == "run-c"
    finally:
        lock.release()
    assert record.read() is None
