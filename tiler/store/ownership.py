"""One writer per output: an owner record created exclusively inside the output, with a heartbeat.

No OS file lock is used: they do not exist on object stores and do not reach dask workers on other
hosts. Instead the run that writes an output keeps a small JSON record beside it (outside the
group, so zarr readers never meet a foreign file, and replacing the group leaves it alone)::

    out.zarr.owner.json   {"run_id", "host", "pid", "started", "boot_id", "heartbeat", "lease"}

- It is **created exclusively** (a hard link of a complete temporary file, or ``O_CREAT | O_EXCL``
  where the file system has no hard links; on an object store a conditional put
  ``If-None-Match: *``), so of two runs starting together exactly one gets it.
- The holder **renews the heartbeat** every ``lease / 4`` seconds from a background thread
  (an atomic replace), and releases (deletes) the record when it stops.
- Every writer **checks the record before every write and stripe it records**
  (:meth:`OutputLock.check`, :func:`check_owner`): a run whose record was taken over, and a dask
  task left over from an earlier attempt (another ``run_id``), stop before their next write.
- A holder is **dead** when it is on this host and its process is gone (pid not running, or a
  new process with that pid that started later) — recognised at once, so a SIGKILLed run does
  not block an immediate ``--resume``, while a paused one (Ctrl-Z) stays the holder — or, on
  another host, when its heartbeat is older than its lease. ``break_lock=True``
  (``--break-lock``) removes any record, for holders that are gone but cannot be recognised as
  such (a paused run, a host that is down within the lease).

The three store operations used (exclusive create, atomic replace, delete) are the ones an
object store offers as conditional writes: for an output on S3 the record is an object
(:class:`~tiler.store.location.ObjectRecord`: ``If-None-Match: *`` to create, ``If-Match`` to
renew and to delete), on GCS likewise with generation preconditions
(:class:`~tiler.store.location.GCSRecord`), with the same protocol.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import OutputError
from .location import GCSRecord, ObjectRecord, RemoteLocation

#: The record's name: the output's name with this suffix, in the same folder.
OWNER_SUFFIX = ".owner.json"
#: Seconds after its last heartbeat that a holder on another host counts as gone.
LEASE_SECONDS = 120.0


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces: count fields after its closing ")"
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    """Who writes an output: the run, its host and process, and when it was last alive."""

    run_id: str
    host: str
    pid: int
    started: int | None
    boot_id: str
    heartbeat: float
    lease: float = LEASE_SECONDS

    @classmethod
    def me(cls, run_id: str, lease: float = LEASE_SECONDS) -> Owner:
        pid = os.getpid()
        return cls(run_id, socket.gethostname(), pid, _proc_start(pid), _boot_id(), time.time(), lease)

    @classmethod
    def from_bytes(cls, data: bytes) -> Owner | None:
        """The record, or None for one that is unreadable (a writer killed mid-way: stale)."""
        try:
            d = json.loads(data)
            return cls(str(d["run_id"]), str(d["host"]), int(d["pid"]), d.get("started"),
                       str(d.get("boot_id", "")), float(d["heartbeat"]), float(d.get("lease", LEASE_SECONDS)))
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat)
        return f"run {self.run_id[:8]} (pid {self.pid} on {self.host}, alive {age:.0f} s ago)"

    def is_dead(self, now: float | None = None) -> bool:
        """True when this holder can be known to be gone (see the module docstring)."""
        now = time.time() if now is None else now
        if self.host != socket.gethostname() or (self.boot_id and self.boot_id != _boot_id()):
            return now - self.heartbeat > self.lease  # another machine (or a reboot): the lease tells
        # this machine: the process tells, even past the lease (a run paused with Ctrl-Z is alive)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's live process
            return False
        return self.started is not None and _proc_start(self.pid) not in (None, self.started)


class RecordFile:
    """The owner record of the output at ``root``: create exclusively, read, replace, remove."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root.with_name(root.name + OWNER_SUFFIX)

    def _temporary(self) -> Path:
        return self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")

    def create(self, data: bytes) -> bool:
        """Write ``data`` unless a record exists; True if this call created it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._temporary()
        tmp.write_bytes(data)
        try:
            os.link(tmp, self.path)  # atomic and exclusive: the record appears whole or not at all
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            return self._create_exclusive(data)  # no hard links here (FUSE, SMB, exFAT)
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self, data: bytes) -> bool:
        """``O_CREAT | O_EXCL`` and one small write: exclusive, though a reader may catch it empty
        (an unreadable record younger than a second is then taken as being written, not stale)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def age(self) -> float:
        """Seconds since the record was last written (inf if there is none)."""
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def replace(self, data: bytes) -> None:
        tmp = self._temporary()
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def remove_if(self, data: bytes) -> bool:
        """Remove the record if it still holds ``data``; True if removed (of several callers racing
        on one stale record, only one succeeds: the record is moved aside atomically first)."""
        aside = self._temporary()
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if aside.read_bytes() == data:
            aside.unlink()
            return True
        try:  # another run's newer record: put it back
            os.link(aside, self.path)
        except FileExistsError:
            pass
        aside.unlink()
        return False


def record_for(root: str | os.PathLike[str] | RemoteLocation) -> RecordFile | ObjectRecord | GCSRecord:
    """The owner record of the output at ``root``: a file beside a local output, an object
    (conditional writes) beside one on an object store."""
    if isinstance(root, RemoteLocation):
        return root.owner_record()
    return RecordFile(Path(root))


def read_owner(root: str | os.PathLike[str] | RemoteLocation) -> Owner | None:
    """The owner record of the output at ``root``, if there is one and it is readable."""
    data = record_for(root).read()
    return Owner.from_bytes(data) if data is not None else None


def check_owner(root: str | os.PathLike[str] | RemoteLocation, run_id: str) -> None:
    """Raise :class:`OutputError` unless ``run_id`` still owns the output at ``root``, alive.

    Called by every writer before it writes or records a stripe, including dask tasks on other
    hosts: a task of an earlier attempt, or of a run whose holder died, stops here.
    """
    owner = read_owner(root)
    if owner is None or owner.run_id != run_id:
        raise OutputError(f"{root}: the output was replaced by another run; this task stops")
    if owner.is_dead():
        raise OutputError(f"{root}: the run writing this output is gone (its lock is stale); this task stops")


class OutputLock:
    """The owner record of one run (see the module docstring). Use as a context manager.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "out.zarr"
    >>> with OutputLock(root, "run-a") as lock:
    ...     try:
    ...         OutputLock(root, "run-b").acquire()
    ...     except OutputError as exc:
    ...         print(str(exc).split(": ", 1)[1][:43])
    another tiler run is writing this output: r
    >>> read_owner(root) is None  # released on leaving the block
    True
    """

    def __init__(self, root: str | os.PathLike[str] | RemoteLocation, run_id: str, *,
                 lease: float = LEASE_SECONDS) -> None:
        self.root: Path | RemoteLocation = root if isinstance(root, RemoteLocation) else Path(root)
        self.run_id = run_id
        self.lease = lease
        self._record = record_for(self.root)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    def acquire(self, *, break_lock: bool = False) -> None:
        """Create the record, taking over from a dead holder; raise if a live one holds it."""
        try:
            self._acquire(break_lock)
        except OSError as exc:  # e.g. the output's folder is a file, or not writable
            reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise OutputError(f"{self.root}: cannot write the output ({reason})") from None

    def _acquire(self, break_lock: bool) -> None:
        for _ in range(5):  # a holder that ends meanwhile frees the record: try again
            mine = Owner.me(self.run_id, self.lease)
            if self._record.create(mine.to_bytes()):
                self._start_heartbeat()
                return
            data = self._record.read()
            if data is None:
                continue
            holder = Owner.from_bytes(data)
            if holder is not None and holder.run_id == self.run_id:
                raise OutputError(f"{self.root}: this run already holds the output")
            if holder is None and not break_lock and self._record.age() < 1.0:
                time.sleep(0.1)  # being written (see RecordFile._create_exclusive): read it again
                continue
            if holder is None or break_lock or holder.is_dead():
                self._record.remove_if(data)
                continue
            raise OutputError(
                f"{self.root}: another tiler run is writing this output: {holder.describe()}; "
                "wait for it, or pass --break-lock if it is gone"
            )
        raise OutputError(f"{self.root}: could not take the output's lock (other runs keep taking it)")

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="tiler-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            holder = Owner.from_bytes(self._record.read() or b"")
            if holder is None or holder.run_id != self.run_id:
                self._lost = holder.describe() if holder else "no record"
                return
            try:
                self._record.replace(Owner.me(self.run_id, self.lease).to_bytes())
            except (OSError, OutputError):
                pass  # a full disk, an unreachable store: the next beat tries again; the lease covers misses

    def check(self) -> None:
        """Raise :class:`OutputError` if the record is no longer this run's (taken over)."""
        holder = read_owner(self.root)
        if holder is None or holder.run_id != self.run_id:
            who = holder.describe() if holder else "its lock was removed"
            raise OutputError(f"{self.root}: another run took over this output ({who}); this run stops")

    def release(self) -> None:
        """Stop the heartbeat and delete the record if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            data = self._record.read()
            holder = Owner.from_bytes(data) if data is not None else None
            if data is not None and holder is not None and holder.run_id == self.run_id:
                self._record.remove_if(data)
        except OutputError:
            # an object store that cannot be reached (the run is failing for that reason): the
            # record stays, seen as gone at once on this host (its pid) and after the lease elsewhere
            pass

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
