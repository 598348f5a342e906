"""Thread pools sized to this process's share of the host (tiler.cores)."""

from __future__ import annotations

import os

import pytest

from tiler.cores import CORES_VARIABLE, available_cores, pool_threads
from tiler.distributed import cluster
from tiler.engine.pipeline import default_stitch_threads


def test_a_worker_share_bounds_every_pool(monkeypatch) -> None:
    monkeypatch.setenv(CORES_VARIABLE, "1")
    assert available_cores() == 1 and pool_threads() == 1 and default_stitch_threads() == 1
    monkeypatch.setenv(CORES_VARIABLE, "3")
    assert pool_threads() == 3 and pool_threads(2) == 2
    monkeypatch.setenv(CORES_VARIABLE, "not a number")  # ignored: the CPUs this process may use
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("workers, share", [(1, 16), (2, 8), (4, 4), (32, 1)])
def test_local_cluster_workers_get_their_share_of_the_host(monkeypatch, workers, share) -> None:
    monkeypatch.setattr(cluster, "available_cores", lambda: 16)
    monkeypatch.setattr(cluster, "_gpu_ids", lambda: [])
    spec = cluster.local_cluster_spec(workers, gpus=False)
    envs = [w["options"]["env"] for w in spec.values()]
    assert len(envs) == workers
    assert all(env[CORES_VARIABLE] == str(share) and env["OMP_NUM_THREADS"] == str(share) for env in envs)


def test_gpu_workers_split_the_host_cores_too(monkeypatch) -> None:
    monkeypatch.setattr(cluster, "available_cores", lambda: 16)
    monkeypatch.setattr(cluster, "_gpu_ids", lambda: ["0", "1"])
    envs = [w["options"]["env"] for w in cluster.local_cluster_spec(2).values()]
    assert [(e["CUDA_VISIBLE_DEVICES"], e[CORES_VARIABLE]) for e in envs] == [("0", "8"), ("1", "8")]
