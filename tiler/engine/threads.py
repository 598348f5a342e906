"""Two small pipeline stages on threads, with bounded queues and error propagation.

:class:`Prefetcher` runs an iterator ahead of its consumer; :class:`Worker` consumes items in the
background. Both hold at most ``maxsize`` items (back-pressure), re-raise a stage's exception in the
thread that uses the stage, and stop promptly when the other side fails.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[T]):
    """Iterate ``iterable`` in a background thread, at most ``maxsize`` items ahead.

    Use as a context manager so that leaving early stops the producer.
    """

    def __init__(self, iterable: Iterable[T], maxsize: int = 2, name: str = "prefetch") -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iterable,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, iterable: Iterable[T]) -> None:
        try:
            for item in iterable:
                if not self._put(item):
                    return
        except BaseException as exc:
            self._put(_Failure(exc))
            return
        self._put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Worker(Generic[T]):
    """Apply ``fn`` to each item :meth:`put` on it, in a background thread, in order."""

    def __init__(self, fn: Callable[[T], None], maxsize: int = 2, name: str = "worker") -> None:
        self._fn = fn
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name=name, daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain after a failure
            try:
                self._fn(item)
            except BaseException as exc:
                self._error = exc

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the worker, if any (after :meth:`abandon`: its own, if any)."""
        return None if isinstance(self._error, _Abandoned) else self._error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Queue ``item``; blocks while the queue is full; raises the worker's error, if any."""
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every queued item is done; raise the worker's error, if any."""
        self._queue.put(_END)
        self._thread.join()
        self._raise()

    def abandon(self) -> None:
        """Stop after the item in hand, dropping the rest (after a failure elsewhere)."""
        self._error = self._error or _Abandoned()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_END)
        self._thread.join()


class _Abandoned(Exception):
    pass
