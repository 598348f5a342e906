"""Distributed runs equal single-process runs; partitions for workers; OOM batch halving."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from distributed import Client, LocalCluster

import tiler
from tiler.config import Settings
from tiler.distributed import cluster, worker
from tiler.distributed import tasks as distributed
from tiler.engine import job as engine_job
from tiler.plan.partition import Partition
from tiler.runners.base import FunctionRunner
from tiler.sources import open_source

from .conftest import make_image, write_tiff

SETTINGS = {"tile": 64, "overlap": 16, "chunk": 64, "block_width": 128}


def mix(x: np.ndarray) -> np.ndarray:
    """(N, 3, h, w) -> (N, 2, h, w): a non-trivial per-pixel function of the channels."""
    return np.stack([x.mean(axis=1), x[:, 0] * 2.0 - x[:, 2] + 0.5], axis=1)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiff(tmp_path_factory.mktemp("dist") / "img.tif", make_image((333, 290, 3)))


def read(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][:])


@pytest.mark.parametrize("output", ["logits", "labels"])
def test_two_workers_equal_one_process(tmp_path, client, tiff, output):
    runner = FunctionRunner(mix, normalise=False)
    single = tiler.run(tiff, runner, out=tmp_path / "one.zarr", output=output, **SETTINGS)
    multi = tiler.run(tiff, runner, out=tmp_path / "two.zarr", output=output, client=client, **SETTINGS)
    a, b = read(single.path), read(multi.path)
    if output == "labels":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    attrs = dict(zarr.open_group(str(multi.path), mode="r").attrs)["tiler"]
    assert attrs["complete"] is True
    assert np.asarray(zarr.open_group(str(multi.path), mode="r")["progress"][:]).all()
    assert multi.tiles >= single.tiles  # block borders repeat a little work, never less


@pytest.mark.slow
def test_worker_processes_with_model_file_equal_one_process(tmp_path, tiff, model_file):
    """Real worker processes, the model given as a path (loaded once per worker process)."""
    single = tiler.run(tiff, model_file, out=tmp_path / "one.zarr", device="cpu", **SETTINGS)
    client = cluster.connect(workers=2)
    try:
        multi = tiler.run(tiff, model_file, out=tmp_path / "two.zarr", device="cpu", client=client,
                          **SETTINGS)
        loads = client.run(lambda: len(worker._RUNNERS))
    finally:
        cluster.close_client(client)
    np.testing.assert_allclose(read(single.path), read(multi.path), rtol=0, atol=1e-6)
    assert len(loads) == 2 and all(n <= 1 for n in loads.values())  # once per worker, not per task


def test_predict_dask_is_lazy_and_equal(tiff):
    runner = FunctionRunner(mix, normalise=False)
    image = make_image((333, 290, 3))
    expected = tiler.predict(image, runner, tile=64, overlap=16)
    array = da.from_array(image, chunks=(100, 100, 3))
    lazy = distributed.predict_dask(array, runner, tile=64, overlap=16, chunk=64, block=128)
    assert isinstance(lazy, da.Array) and lazy.shape == (2, 333, 290)
    assert lazy.chunks[1] == (128, 128, 77) and lazy.chunks[2] == (128, 128, 34)
    # the graph slices the input per block: no task holds the whole image
    sizes = [v.nbytes for v in dict(lazy.__dask_graph__()).values() if isinstance(v, np.ndarray)]
    assert all(s < image.nbytes for s in sizes)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=0, atol=1e-6)
    from_file = distributed.predict_dask(tiff, runner, tile=64, overlap=16, chunk=64, block=128)
    np.testing.assert_allclose(
        from_file[:, 100:200, 50:250].compute(),
        tiler.predict(str(tiff), runner, tile=64, overlap=16)[:, 100:200, 50:250], rtol=0, atol=1e-6,
    )


@pytest.mark.parametrize("layout", ["uneven chunks", "2-D", "channels in chunks of one"])
def test_predict_dask_reads_a_dask_arrays_chunks_as_they_are(layout, monkeypatch):
    """Each task gets its window as a grid of the array's chunks (never assembled into one array)
    and reads them band by band: the result is predict's on the NumPy array, bit for bit."""
    runner = FunctionRunner(mix if layout != "2-D" else (lambda x: x * 3 - 1), normalise=False)
    image = make_image((333, 290, 3))
    if layout == "2-D":
        image = np.ascontiguousarray(image[..., 0])
    chunks = {"uneven chunks": ((50, 150, 133), (7, 200, 83), (3,)), "2-D": (64, 100),
              "channels in chunks of one": (96, 128, 1)}[layout]
    seen: list[str] = []

    class Spy(worker.WindowSource):
        def __init__(self, data, *args):
            seen.append(type(data).__name__)
            super().__init__(data, *args)

    monkeypatch.setattr(distributed, "WindowSource", Spy)
    lazy = distributed.predict_dask(da.from_array(image, chunks=chunks), runner, tile=64, overlap=16,
                                    chunk=64, block=128)
    got = lazy.compute(scheduler="sync")
    np.testing.assert_array_equal(got, tiler.predict(image, runner, tile=64, overlap=16))
    assert seen and set(seen) == {"list"}


def test_predict_dask_on_a_cluster(client):
    image = make_image((200, 150, 3))
    runner = FunctionRunner(mix, normalise=False)
    lazy = distributed.predict_dask(image, runner, tile=64, overlap=16, chunk=64, block=64, output="labels")
    expected = tiler.predict(image, runner, tile=64, overlap=16).argmax(axis=0)
    np.testing.assert_array_equal(client.compute(lazy).result(), expected)


def _job(shape: tuple[int, int], **settings) -> engine_job.Job:
    flat = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (*shape, 3), (0, 0, 0))
    runner = FunctionRunner(lambda x: x[:, :1], normalise=False)
    return engine_job.Job.create(open_source(flat), runner, Settings(**settings))


def test_repeated_fraction_counts_border_tiles():
    job = _job((8192, 8192))
    assert engine_job.repeated_fraction(job) == 0.0  # one block
    two = Partition.create((8192, 8192), chunk=1024, block_height=4096)
    # 11 lattice rows (1024 / 256, weighted parts 768 apart); the cut at row 4096 meets only row 5
    # (weighted 3840..4608): 1 row of 11 repeated
    assert job.plan.rows.count == 11
    assert engine_job.repeated_fraction(job, two) == pytest.approx(1 / 11)


@pytest.mark.parametrize(("shape", "workers"), [((32768, 32768), 2), ((32768, 32768), 8),
                                                ((100_000, 80_000), 4), ((100_000, 80_000), 16)])
def test_grid_for_workers_within_budget(shape, workers):
    job = _job(shape)
    part = engine_job.grid_for_workers(job, workers)
    rows, cols = part.grid
    assert rows * cols >= workers
    assert engine_job.repeated_fraction(job, part) <= 0.05
    assert part.block_width == job.partition.block_width  # stripes (the resume record) unchanged
    assert part.stripes == job.partition.stripes


def test_grid_for_workers_small_image_gives_every_worker_work():
    job = _job((8192, 8192))
    part = engine_job.grid_for_workers(job, 4)
    assert part.grid == (4, 1)


def test_source_window_covers_what_the_loader_reads():
    job = _job((500, 300), tile=64, overlap=16, chunk=64, block_height=128, block_width=128)
    for block in job.partition.blocks():
        y0, y1, x0, x1 = worker.source_window(job.plan, block)
        assert 0 <= y0 < y1 <= 500 and 0 <= x0 < x1 <= 300
        assert (y1 - y0) <= block.shape[0] + 2 * 64 and (x1 - x0) <= block.shape[1] + 2 * 64


class _OOMRunner(FunctionRunner):
    """Fails like a GPU that fits at most ``limit`` tiles per call."""

    out_of_memory_errors = (torch.cuda.OutOfMemoryError,)

    def __init__(self, limit: int) -> None:
        super().__init__(mix, normalise=False)
        self.limit, self.calls, self.released = limit, [], 0

    def run(self, tiles: np.ndarray) -> np.ndarray:
        self.calls.append(len(tiles))
        if len(tiles) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return super().run(tiles)

    def release_memory(self) -> None:
        self.released += 1


def test_out_of_memory_halves_the_batch_and_warns_once():
    image = make_image((300, 260, 3))
    expected = tiler.predict(image, FunctionRunner(mix, normalise=False), tile=64, overlap=16, batch_size=8)
    runner = _OOMRunner(limit=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tiler.predict(image, runner, tile=64, overlap=16, batch_size=8)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    oom = [w for w in caught if "out of device memory" in str(w.message)]
    assert len(oom) == 1 and "4 tiles at a time" in str(oom[0].message)
    assert runner.calls[:4] == [1, 8, 4, 2]  # the probe, then 8 -> 4 -> 2
    assert max(runner.calls[4:]) <= 2  # and it stays at 2
    assert runner.released == 2


def test_out_of_memory_with_one_tile_is_an_error():
    with pytest.raises(tiler.ModelError, match="single tile"):
        tiler.predict(make_image((100, 100, 3)), _OOMRunner(limit=0), tile=64, overlap=16)


def test_runner_fingerprints():
    from tiler.runners.torch import TorchRunner

    a = torch.nn.Conv2d(3, 2, 1)
    spec = tiler.models.spec.ModelSpec(in_channels=3, out_channels=2)
    r1, r2 = TorchRunner(a, spec, device="cpu"), TorchRunner(a, spec, device="cpu")
    assert r1.fingerprint() == r2.fingerprint()
    b = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        b.weight.copy_(a.weight)
        b.bias.copy_(a.bias)
        b.bias[0] += 1e-3
    assert TorchRunner(b, spec, device="cpu").fingerprint() != r1.fingerprint()
    assert FunctionRunner(mix).fingerprint() is None  # a function cannot be digested: resume needs "force"


def test_worker_source_cache_is_bounded(tmp_path):
    refs = [worker.SourceRef.of(write_tiff(tmp_path / f"{i}.tif", make_image((64, 64, 3))))
            for i in range(6)]
    first = refs[5].open()
    assert refs[5].open() is first  # opened once per process
    for ref in refs:
        ref.open()
    assert len(worker._SOURCES) <= worker.CACHE_SIZE["sources"]


def test_run_with_dask_array_input_on_a_cluster(tmp_path, client):
    image = make_image((300, 200, 3))
    runner = FunctionRunner(mix, normalise=False)
    single = tiler.run(image, runner, out=tmp_path / "one.zarr", **SETTINGS)
    lazy = da.from_array(image, chunks=(64, 64, 3))
    multi = tiler.run(lazy, runner, out=tmp_path / "two.zarr", client=client, **SETTINGS)
    np.testing.assert_allclose(read(single.path), read(multi.path), rtol=0, atol=1e-6)


def test_resume_on_a_cluster_recomputes_only_the_rest(tmp_path, client, tiff):
    """An output begun in one process is finished by 2 workers (another block height)."""
    runner = FunctionRunner(mix, normalise=False)
    full = read(tiler.run(tiff, runner, out=tmp_path / "full.zarr", **SETTINGS).path)
    out = tmp_path / "part.zarr"
    tiler.run(tiff, runner, out=out, **SETTINGS)
    group = zarr.open_group(str(out))
    group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
    group["progress"][2:, 1] = 0  # stripes of block column 1 from chunk row 2 on: lost
    group["0"][:, 128:, 128:256] = 0
    with pytest.raises(tiler.OutputError, match="cannot check that the model"):  # a function: unverifiable
        tiler.run(tiff, runner, out=out, resume=True, client=client, **SETTINGS)
    result = tiler.run(tiff, runner, out=out, resume="force", client=client, **SETTINGS)
    np.testing.assert_allclose(read(out), full, rtol=0, atol=1e-6)
    assert 0 < result.tiles < tiler.run(tiff, runner, out=tmp_path / "again.zarr", **SETTINGS).tiles
