"""Pieces: the 4-connected polygons of each id in a band, from GDAL's polygonize.

A band of dense ids (``1..n``, 0: none) is polygonised with :func:`rasterio.features.shapes` in
pixel coordinates (x = column, y = row, on pixel edges: pixel ``(r, c)`` is the square
``[c, c + 1] x [r, r + 1]``). Its GeoJSON rings are flattened into plain arrays (:class:`Rings`)
and turned into shapely polygons in one vectorised call (:func:`polygons`).

:class:`PieceMaker` does this in a worker process, bands queued ahead of the labelling that feeds
it: GDAL's polygonize and rasterio's GeoJSON hold the GIL, so threads would not run them beside the
labelling, and a process does (on two cores, labelling band k + 1 and writing the instances run
beside the polygons of band k). The worker is this file run as a script (:func:`_serve_stdio`; it
imports NumPy and rasterio only, not the tiler package), not a multiprocessing child, which would
run the user's main module again.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import shapely

#: Bytes of bands (their ids) waiting for a worker before :meth:`PieceMaker.submit` waits (one band
#: always may): 4 bands of an 8192-wide image, 1 of a 32768-wide one.
QUEUE_BYTES = 64 << 20


@dataclass(frozen=True)
class Rings:
    """The pieces of one band as plain arrays (what the worker sends back).

    Attributes
    ----------
    ids : (m,) int64 local id of each piece. ring_piece : (r,) int64 piece of each ring, its shell
        first, then its holes. lengths : (r,) int64 vertices of each ring (closed: first = last).
    xy : (sum(lengths), 2) float64 vertices, ring after ring.
    """

    ids: np.ndarray
    ring_piece: np.ndarray
    lengths: np.ndarray
    xy: np.ndarray


def band_values(local: np.ndarray, n: int) -> np.ndarray:
    """The ids GDAL polygonises: dense ids ``local`` in ``0..n`` as uint16 when they fit (its
    fastest integer type), else as they are."""
    return local.astype(np.uint16, copy=False) if n < 2**16 else local


def band_rings(values: np.ndarray, y0: int) -> Rings:
    """The rings of every 4-connected piece of every id in ``values`` ((h, W) ids, 0: none), whose
    first row is image row ``y0``."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    ids: list[float] = []
    ring_piece: list[int] = []
    lengths: list[int] = []
    xy: list[np.ndarray] = []  # a piece's vertices as soon as it comes (GeoJSON tuples are ~10x larger)
    for geometry, value in shapes(values, mask=values > 0, connectivity=4,
                                  transform=Affine(1.0, 0.0, 0.0, 0.0, 1.0, float(y0))):
        coords = geometry["coordinates"]
        ring_piece.extend([len(ids)] * len(coords))
        ids.append(value)
        sizes = [len(ring) for ring in coords]
        lengths.extend(sizes)
        xy.append(np.fromiter(chain.from_iterable(chain.from_iterable(coords)), np.float64, 2 * sum(sizes)))
    return Rings(np.asarray(ids, np.int64), np.asarray(ring_piece, np.int64), np.asarray(lengths, np.int64),
                 (np.concatenate(xy) if xy else np.zeros(0)).reshape(-1, 2))


def polygons(rings: Rings) -> np.ndarray:
    """(m,) shapely Polygons of :class:`Rings`, holes kept."""
    if not len(rings.ids):
        return np.empty(0, object)
    made = shapely.linearrings(rings.xy, indices=np.repeat(np.arange(len(rings.lengths)), rings.lengths))
    return shapely.polygons(made, indices=rings.ring_piece)


def band_pieces(local: np.ndarray, n: int, y0: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, polygons)``: (m,) local ids and (m,) polygons of every 4-connected piece of every
    object in a band of dense ids ``local`` ((h, W) int32 in ``0..n``, 0: none) whose first row is
    image row ``y0`` (an id has several pieces when its pixels touch only at corners)."""
    rings = band_rings(band_values(local, n), y0)
    return rings.ids, polygons(rings)


class PieceMaker:
    """:func:`band_pieces` of bands submitted in order, in ``workers`` worker processes (> 0).

    :meth:`submit` queues a band (waiting while :data:`QUEUE_BYTES` of ids wait for a worker) and
    returns its number; :meth:`take` gives its pieces, in submission order. Each worker takes the
    oldest queued band when it has answered the last; a :meth:`take` that would wait polygonises
    the newest queued band here meanwhile (at the end of an image the caller has nothing else to
    do). A worker that fails or ends leaves its bands to be polygonised here: the pieces are the
    same either way. ``workers=0``: here, at :meth:`submit`.
    """

    def __init__(self, workers: int, *, queue_bytes: int = QUEUE_BYTES) -> None:
        self._queue_bytes = queue_bytes
        self._bands: dict[int, tuple[np.ndarray, int]] = {}  # submitted, not yet polygonised: values, y0
        self._done: dict[int, Rings | None] = {}  # None: a worker could not polygonise it
        self._queue: deque[int] = deque()  # submitted, not yet given to a worker
        self._next = 0
        self._stopping = False
        self._lock = threading.Condition()
        self._procs: list[subprocess.Popen[bytes]] = []
        if workers > 0:
            # -P: this file's folder is not put on the worker's import path
            self._procs = [subprocess.Popen([sys.executable, "-P", str(Path(__file__).resolve())],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                           for _ in range(workers)]
        self._alive = len(self._procs)
        self._threads = [threading.Thread(target=self._serve, args=(proc,), name=f"tiler-pieces-{i}", daemon=True)
                         for i, proc in enumerate(self._procs)]
        for thread in self._threads:
            thread.start()

    def submit(self, local: np.ndarray, n: int, y0: int) -> int:
        """Queue the band of dense ids ``local`` ((h, W) in ``0..n``, not changed afterwards) whose
        first row is ``y0``."""
        values = band_values(local, n)
        seq, self._next = self._next, self._next + 1
        with self._lock:
            while self._alive and (queued := self._queued()) and queued + values.nbytes > self._queue_bytes:
                self._lock.wait()
            self._bands[seq] = (values, y0)
            if self._alive:
                self._queue.append(seq)
                self._lock.notify_all()
                return seq
        self._finish(seq, band_rings(values, y0))
        return seq

    def ready(self, seq: int) -> bool:
        """Whether :meth:`take` of band ``seq`` would not wait for a worker."""
        with self._lock:
            return seq in self._done or not self._alive

    def take(self, seq: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, polygons)`` of band ``seq`` (see :func:`band_pieces`), polygonising queued bands
        here while a worker has it."""
        while True:
            with self._lock:
                if seq in self._done or not self._alive:
                    break
                if not self._queue:
                    self._lock.wait()
                    continue
                other = self._queue.pop()  # the newest: the workers go on from the oldest
                values, y0 = self._bands[other]
            self._finish(other, band_rings(values, y0))
        with self._lock:
            rings = self._done.pop(seq, None)
            band = self._bands.pop(seq, None)
            if seq in self._queue:
                self._queue.remove(seq)
            self._lock.notify_all()
        if rings is None:  # a worker failed on it, or none is left
            assert band is not None
            rings = band_rings(*band)
        return rings.ids, polygons(rings)

    def close(self) -> None:
        """Stop the workers: at the end of their input when every band was taken, else at once."""
        procs, self._procs = self._procs, []
        with self._lock:
            self._stopping = True
            abandon = bool(self._bands)
            self._lock.notify_all()
        for proc in procs:
            try:
                proc.wait(timeout=30 if not abandon else 0.01)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            self._alive = 0
            self._lock.notify_all()

    def _queued(self) -> int:
        """Bytes of the bands waiting for a worker (those it failed on wait for :meth:`take`)."""
        return sum(v.nbytes for seq, (v, _) in self._bands.items() if seq not in self._done)

    def _finish(self, seq: int, rings: Rings | None) -> None:
        with self._lock:
            self._done[seq] = rings
            if rings is not None:  # polygonised: its ids no longer count as queued
                del self._bands[seq]
            self._lock.notify_all()

    def _serve(self, proc: subprocess.Popen[bytes]) -> None:
        """One worker's thread: send it the oldest queued band, store its answer, until stopped."""
        assert proc.stdin is not None and proc.stdout is not None
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._stopping:
                        self._lock.wait()
                    if not self._queue:
                        return  # stopping, nothing left: the worker ends at the end of its input
                    seq = self._queue.popleft()
                    values, y0 = self._bands[seq]
                try:
                    pickle.dump((seq, values, y0), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.flush()
                    got, answer = pickle.load(proc.stdout)
                except (EOFError, OSError, ValueError, pickle.UnpicklingError):  # the worker is gone
                    self._finish(seq, None)
                    return
                self._finish(got, None if answer is None else Rings(*answer))
        finally:
            with self._lock:
                self._alive -= 1
                self._lock.notify_all()
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    stream.close()


def _serve_stdio() -> None:
    """The worker's loop: ``(seq, values, y0)`` pickles in on standard input, each answered on
    standard output with ``(seq, rings)``: the fields of the band's :class:`Rings` as a tuple (a
    class of this script's ``__main__`` would not unpickle in the parent), or None when that failed
    (the parent then polygonises the band itself). Ends at the end of its input."""
    import warnings

    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what a library prints goes to stderr
    warnings.simplefilter("ignore")  # rasterio's NotGeoreferencedWarning, every band
    while True:
        try:
            seq, values, y0 = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        try:
            r = band_rings(values, y0)
            answer: tuple[np.ndarray, ...] | None = (r.ids, r.ring_piece, r.lengths, r.xy)
        except Exception:  # the parent redoes the band and reports its own error
            answer = None
        pickle.dump((seq, answer), out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


if __name__ == "__main__":
    _serve_stdio()
