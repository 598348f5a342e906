"""Recycled NumPy buffers: fresh memory costs the kernel a page zeroing per page."""

from __future__ import annotations

import threading

import numpy as np


class BufferPool:
    """A few batch buffers handed back after use, so each batch does not fault in fresh pages.

    Large NumPy arrays come straight from ``mmap``: a new (N, C, t, t) buffer per batch costs a
    page fault (and the kernel zeroing the page) for every 4 KiB, more than copying the tiles in.
    Thread-safe; keeps at most ``size`` buffers.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        with self._lock:
            for k, buf in enumerate(self._free):
                if buf.shape == shape and buf.dtype == dtype:
                    return self._free.pop(k)
        return np.empty(shape, dtype)

    def give(self, buf: np.ndarray) -> None:
        """Return ``buf`` (nothing may use it afterwards); a view of a whole buffer (e.g. transposed)
        returns that buffer."""
        base = buf.base
        if isinstance(base, np.ndarray) and base.size == buf.size:
            buf = base
        with self._lock:
            if len(self._free) < self.size and buf.flags.owndata and buf.flags.c_contiguous:
                self._free.append(buf)
