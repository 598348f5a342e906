"""Retries with backoff, one-line errors and request counters for object-store requests."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...errors import InputError, InputNotFoundError, TilerError

#: Attempts per request before a transient error is reported (1 + 4 retries).
ATTEMPTS = 5
#: Seconds before the first retry; doubled for each further one (with up to 50 % jitter).
BACKOFF = 0.2

T = TypeVar("T")


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
