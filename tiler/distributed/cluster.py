"""Dask clusters for ``tiler run --workers N`` (a local cluster) and ``--scheduler ADDRESS``."""

from __future__ import annotations

import os
import warnings
from typing import Any

from ..cores import CORES_VARIABLE, available_cores
from ..errors import DeviceWarning, SettingsError


def _gpu_ids() -> list[str]:
    """The GPUs this process may use (honouring an existing ``CUDA_VISIBLE_DEVICES``)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except (ImportError, RuntimeError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def local_cluster_spec(workers: int, *, gpus: bool = True) -> dict[str, dict[str, Any]]:
    """Worker specs for a local cluster: one worker per GPU pinned with ``CUDA_VISIBLE_DEVICES``
    (at most ``workers``; fewer GPUs than ``workers`` is said in one :class:`DeviceWarning`), else
    (or with ``gpus=False``, for ``--device cpu``) ``workers`` CPU workers splitting the cores
    between their torch thread pools. Each worker runs one block at a time (``nthreads=1``)."""
    import logging

    from distributed import Nanny
    from distributed.system import MEMORY_LIMIT

    if workers < 1:
        raise SettingsError(f"--workers {workers}: need at least one worker")
    ids = _gpu_ids() if gpus else []
    if ids:
        envs = [{"CUDA_VISIBLE_DEVICES": g} for g in ids[:workers]]
        if len(ids) < workers:
            warnings.warn(f"--workers {workers}: this machine has {len(ids)} GPU(s), so {len(ids)} "
                          f"worker(s) start, one per GPU (--device cpu for {workers} CPU workers)",
                          DeviceWarning, stacklevel=3)
    else:
        threads = str(max(1, available_cores() // workers))
        envs = [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}] * workers
    # tiler's own pools (decode, stitch, pyramid; tiler.cores) sized to each worker's share of the host
    share = str(max(1, available_cores() // len(envs)))
    envs = [{**env, CORES_VARIABLE: share} for env in envs]
    options = {"nthreads": 1, "memory_limit": MEMORY_LIMIT // len(envs), "dashboard": False,
               "silence_logs": logging.ERROR}
    return {f"tiler-{i}": {"cls": Nanny, "options": {**options, "env": env}} for i, env in enumerate(envs)}


def connect(*, workers: int | None = None, scheduler: str | None = None, device: str | None = None) -> Any:
    """A ``distributed.Client``: to the scheduler at ``scheduler``, or to a new local cluster of
    ``workers`` (closed together with the client; see :func:`local_cluster_spec`: one worker per
    GPU, CPU workers with ``device="cpu"``). Use as a context manager."""
    import logging

    from distributed import Client, Scheduler, SpecCluster

    from ..malloc import keep_freed_memory

    if scheduler:
        try:
            return Client(scheduler, timeout=10)
        except (OSError, TimeoutError) as exc:
            raise SettingsError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")] + ["distributed"]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # worker start/stop chatter and shutdown races
    cluster = SpecCluster(
        scheduler={"cls": Scheduler,
                   "options": {"dashboard": False, "dashboard_address": None, "host": "127.0.0.1"}},
        workers=local_cluster_spec(workers or 1, gpus=str(device) != "cpu"),
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    client._tiler_cluster = cluster  # closed with the client (see close_client)
    client.run(keep_freed_memory)  # our own worker processes: as the `tiler` command does
    return client


def close_client(client: Any) -> None:
    """Close ``client`` and the local cluster :func:`connect` started for it, if any."""
    cluster = getattr(client, "_tiler_cluster", None)
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()  # closes the workers, then the scheduler (also when client.close failed)
