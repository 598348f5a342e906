"""How many CPU cores this process may use: its share of the host, for sizing its thread pools.

A process alone on a machine uses the cores it may run on (its CPU affinity, which container limits
set too). A worker of tiler's local dask cluster gets ``TILER_CORES`` (the host's cores divided by
the workers on it, see :func:`tiler.distributed.cluster.local_cluster_spec`), so that the
workers' decode, stitch and pyramid threads together match the host instead of each worker
starting a pool sized for the whole machine. Set ``TILER_CORES`` yourself for workers of an
external cluster that share a host.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: Environment variable with this process's share of the host's cores.
CORES_VARIABLE = "TILER_CORES"


def available_cores() -> int:
    """This process's cores: ``TILER_CORES`` if set (>= 1), else the CPUs it may run on.

    >>> available_cores() >= 1
    True
    """
    value = os.environ.get(CORES_VARIABLE, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def pool_threads(limit: int = 4) -> int:
    """Threads for one of tiler's pools (decoding, stitching, pyramid): the cores, at most ``limit``."""
    return max(1, min(limit, available_cores()))


_POOLS: dict[str, tuple[int, ThreadPoolExecutor]] = {}  # name -> (owning process id, pool)
_POOLS_LOCK = threading.Lock()


def shared_pool(name: str, threads: int | None = None) -> ThreadPoolExecutor:
    """This process's thread pool ``name`` (threads ``tiler-<name>``), made on first use with
    ``threads`` workers (default :func:`pool_threads`) and shared by every caller asking for it.

    A forked child makes pools of its own (the parent's threads do not exist there).
    """
    with _POOLS_LOCK:
        held = _POOLS.get(name)
        if held is None or held[0] != os.getpid():
            held = _POOLS[name] = (os.getpid(), ThreadPoolExecutor(threads or pool_threads(),
                                                                   thread_name_prefix=f"tiler-{name}"))
        return held[1]
