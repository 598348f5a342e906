"""tiler/distributed/tasks.py on a cluster: a dask-array input is not materialised all at once."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

import tiler
from tiler.runners.base import FunctionRunner


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def test_block_windows_of_a_dask_image_are_computed_a_few_at_a_time(tmp_path, client, monkeypatch) -> None:
    image = np.random.default_rng(0).random((128, 1024, 1)).astype(np.float32)
    computed: list[int] = []
    compute = client.compute

    def spy(*args, **kwargs):
        computed.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(client, "compute", spy)
    seen_at_first_result: list[int] = []

    def progress(done: int, total: int) -> None:
        if not seen_at_first_result:
            seen_at_first_result.append(len(computed))

    runner = FunctionRunner(lambda x: x * 2.0, normalise=False)
    res = tiler.run(da.from_array(image, chunks=(64, 64, 1)), runner, out=tmp_path / "o.zarr", client=client,
                    tile=32, overlap=8, chunk=32, block_width=64, pyramid=False,
                    progress=progress)
    blocks = len(computed)
    assert blocks >= 16  # one window per block
    # a whole image's worth of windows in cluster memory before the first block finished: no
    assert seen_at_first_result[0] <= 4 < blocks
    out = np.asarray(zarr.open_group(str(res.path), mode="r")["0"][:])
    np.testing.assert_allclose(out[0], image[..., 0] * 2.0, rtol=1e-6)


def test_close_client_closes_the_local_cluster_even_when_the_client_fails_to_close() -> None:
    from tiler.distributed.cluster import close_client

    closed: list[str] = []

    class Cluster:
        def close(self) -> None:
            closed.append("cluster")

    class FailingClient:
        _tiler_cluster = Cluster()

        def close(self) -> None:
            raise OSError("scheduler gone")

    with pytest.raises(OSError):
        close_client(FailingClient())
    assert closed == ["cluster"]
