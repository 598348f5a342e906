"""Tile loading: reflect padding done virtually, and each stored chunk row decoded once."""

from __future__ import annotations

import numpy as np
import pytest

from tiler.engine.load import TileLoader
from tiler.plan.lattice import TilePlan
from tiler.sources import ArraySource

from .conftest import smooth_image


class CountingSource(ArraySource):
    """An ArraySource with stored chunks that records every read."""

    def __init__(self, array: np.ndarray, chunks: tuple[int, int]) -> None:
        super().__init__(array)
        self.chunks = chunks
        self.reads: list[tuple[int, int, int, int]] = []

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        self.reads.append((y0, y1, x0, x1))
        return super().read(y0, y1, x0, x1)


@pytest.mark.parametrize(("shape", "tile", "overlap", "margin"), [((70, 90, 3), 32, 8, 4), ((10, 7, 1), 32, 0, 0)])
def test_tiles_equal_slices_of_the_reflect_padded_image(shape, tile, overlap, margin) -> None:
    image = smooth_image(shape)
    plan = TilePlan.create(shape[:2], tile=tile, overlap=overlap, margin=margin)
    pad = 3 * tile
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect") if min(shape[:2]) > 1 else None
    loader = TileLoader(ArraySource(image), plan, range(plan.rows.count), range(plan.cols.count), batch_size=4)
    seen = 0
    for batch in loader:
        assert batch.tiles.shape[1:] == (shape[2], tile, tile)
        for t, (i, j) in zip(batch.tiles, batch.index):
            y0, y1, x0, x1 = plan.tile_box(int(i), int(j))
            if padded is not None and y0 + pad >= 0 and x0 + pad >= 0:
                expected = padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad].transpose(2, 0, 1)
                np.testing.assert_array_equal(t, expected)
            seen += 1
    assert seen == plan.n_tiles


def test_each_stored_chunk_row_is_read_once() -> None:
    image = smooth_image((1000, 300, 3))
    source = CountingSource(image, chunks=(64, 300))
    plan = TilePlan.create((1000, 300), tile=128, overlap=48)
    loader = TileLoader(source, plan, range(plan.rows.count), range(plan.cols.count), batch_size=3)
    n = sum(len(b.index) for b in loader)
    assert n == plan.n_tiles
    rows = np.zeros(1000, int)
    for y0, y1, _, _ in source.reads:
        assert y0 % 64 == 0  # reads are aligned with the stored chunks
        rows[y0:y1] += 1
    assert (rows == 1).all()


@pytest.mark.parametrize("stored", [1, 7, 300])
def test_sources_stored_in_thin_strips_are_read_in_bands_and_copied_by_slices(stored, monkeypatch) -> None:
    """A strip TIFF of one row per strip (or a dask array in (1, W) chunks) is read in bands of
    >= 256 rows aligned to its strips, each row once, and tiles are copied by slices, never by the
    per-pixel gather meant for images smaller than a tile."""
    image = smooth_image((900, 300, 3))
    source = CountingSource(image, chunks=(stored, 300))
    plan = TilePlan.create((900, 300), tile=128, overlap=32)
    gathers = []
    loader = TileLoader(source, plan, range(plan.rows.count), range(plan.cols.count), batch_size=4)
    monkeypatch.setattr(loader.cache, "get", lambda lo, hi: gathers.append((lo, hi)))
    tiles = {tuple(ij): t.copy() for b in loader for t, ij in zip(b.tiles, b.index.tolist())}
    assert len(tiles) == plan.n_tiles and gathers == []
    rows = np.zeros(900, int)
    for y0, y1, _, _ in source.reads:
        assert y0 % stored == 0 and (y1 - y0 >= 256 or y1 == 900)
        rows[y0:y1] += 1
    assert (rows == 1).all()
    reference = TileLoader(ArraySource(image), plan, range(plan.rows.count), range(plan.cols.count), batch_size=4)
    for b in reference:
        for t, ij in zip(b.tiles, b.index.tolist()):
            np.testing.assert_array_equal(tiles[tuple(ij)], t)


def test_a_dask_task_window_is_one_band_read_as_views() -> None:
    """predict_dask's window source: one band, the whole window, and never a row outside it."""
    from tiler.distributed.worker import WindowSource

    image = smooth_image((600, 400, 3))
    plan = TilePlan.create((600, 400), tile=128, overlap=32)
    rows = [i for i in range(plan.rows.count) if 200 <= plan.rows.origin(i) < 400]
    lo = min(plan.rows.origin(i) for i in rows)
    hi = max(plan.rows.origin(i) for i in rows) + 128
    window = WindowSource(image[lo:hi], (lo, 0), image.shape, "window")
    loader = TileLoader(window, plan, rows, range(plan.cols.count), batch_size=4)
    got = {tuple(ij): t for b in loader for t, ij in zip(b.tiles, b.index.tolist())}
    assert list(loader.cache.bands) == [0] and loader.cache.rows_read == hi - lo
    reference = TileLoader(ArraySource(image), plan, rows, range(plan.cols.count), batch_size=4)
    for b in reference:
        for t, ij in zip(b.tiles, b.index.tolist()):
            np.testing.assert_array_equal(got[tuple(ij)], t)


def test_skipped_tiles_are_not_loaded_but_rows_are_reported_done() -> None:
    image = smooth_image((200, 200, 3))
    plan = TilePlan.create((200, 200), tile=64, overlap=16)
    loader = TileLoader(ArraySource(image), plan, range(plan.rows.count), range(plan.cols.count),
                        batch_size=5, skip=lambda i, j: i == 1 or j == 0)
    batches = list(loader)
    got = {tuple(ij) for b in batches for ij in b.index.tolist()}
    assert all(i != 1 and j != 0 for i, j in got)
    assert [r for b in batches for r in b.rows_done] == list(range(plan.rows.count))
    assert loader.tiles_skipped == plan.n_tiles - len(got)


@pytest.mark.parametrize("mean", [None, (0.5, 0.4, 0.3)])
def test_normalising_while_copying_equals_normalising_the_raw_batch(mean) -> None:
    """The loader's fused copy + convert + scale (+ mean/std) gives the runner's own normalise bit
    for bit, reflected borders and the tiny-image gather path included."""
    from tiler.models.spec import ModelSpec
    from tiler.runners.base import FunctionRunner

    spec = ModelSpec(mean=mean or (), std=() if mean is None else (0.2, 0.25, 0.3))
    runner = FunctionRunner(lambda x: x, spec)
    for shape in [(90, 70, 3), (5, 6, 3)]:
        image = (smooth_image(shape) * 255).astype(np.uint8)
        plan = TilePlan.create(shape[:2], tile=32, overlap=8)
        rows, cols = range(plan.rows.count), range(plan.cols.count)
        norm = runner.normalisation(image.dtype)
        assert norm is not None
        raw = list(TileLoader(ArraySource(image), plan, rows, cols, batch_size=3))
        fused = list(TileLoader(ArraySource(image), plan, rows, cols, batch_size=3, normalisation=norm))
        nhwc = list(TileLoader(ArraySource(image), plan, rows, cols, batch_size=3, normalisation=norm,
                               channels_last=True))
        assert len(raw) == len(fused) == len(nhwc)
        for r, f, c in zip(raw, fused, nhwc):
            assert f.tiles.dtype == np.float32
            np.testing.assert_array_equal(f.tiles, runner.normalise(r.tiles))
            # channels-last: the same values, in an (N, t, t, C) buffer seen as (N, C, t, t)
            np.testing.assert_array_equal(c.tiles, f.tiles)
            assert c.tiles.transpose(0, 2, 3, 1).flags.c_contiguous


def test_channels_last_batch_buffers_are_recycled() -> None:
    """A channels-last batch (a transposed view) handed back returns its whole buffer to the pool,
    and the next batch reuses it; a partial last batch (a slice) is not pooled."""
    from tiler.engine.buffers import BufferPool

    image = smooth_image((64, 64, 3))
    plan = TilePlan.create((64, 64), tile=32, overlap=8)
    pool = BufferPool(2)
    loader = TileLoader(ArraySource(image), plan, range(plan.rows.count), range(plan.cols.count), batch_size=2,
                        pool=pool, channels_last=True)
    buffers = []
    for batch in loader:
        buffers.append(batch.tiles.base)
        pool.give(batch.tiles)
    assert plan.n_tiles >= 4
    assert buffers[0] is buffers[1]  # the first batch's buffer came back and was taken again
    assert all(b.shape == (2, 32, 32, 3) for b in buffers[:2])


def test_a_dask_task_window_over_chunks_reads_the_same_pixels_band_by_band() -> None:
    """predict_dask hands a task the chunks of its window as they are: reads across chunk borders
    equal reads of the assembled window, reads inside one chunk are views, and tiles loaded
    through it equal tiles loaded from the whole image."""
    from tiler.distributed.worker import GRID_BAND, WindowSource

    image = smooth_image((600, 400, 3))
    lo, hi = 100, 550
    ys, xs = [lo, 180, 400, hi], [0, 150, 160, 400]  # uneven chunks, one only 10 wide
    grid = [[image[a:b, c:d] for c, d in zip(xs, xs[1:])] for a, b in zip(ys, ys[1:])]
    window = WindowSource(grid, (lo, 0), image.shape, "window")
    assert window.chunks == (GRID_BAND, 400) and window.rows == (lo, hi)
    rng = np.random.default_rng(0)
    for _ in range(50):
        y0, y1 = sorted(rng.choice(np.arange(lo, hi + 1), 2, replace=False).tolist())
        x0, x1 = sorted(rng.choice(np.arange(0, 401), 2, replace=False).tolist())
        np.testing.assert_array_equal(window.read(y0, y1, x0, x1), image[y0:y1, x0:x1])
    assert np.shares_memory(window.read(200, 300, 170, 390), image)  # inside one chunk
    with pytest.raises(IndexError):
        window.read(lo - 1, lo + 10, 0, 10)
    plan = TilePlan.create((600, 400), tile=128, overlap=32)
    rows = [i for i in range(plan.rows.count) if 200 <= plan.rows.origin(i) < 400]
    assert min(plan.rows.origin(i) for i in rows) >= lo
    assert max(plan.rows.origin(i) for i in rows) + 128 <= hi
    loader = TileLoader(window, plan, rows, range(plan.cols.count), batch_size=4)
    got = {tuple(ij): t for b in loader for t, ij in zip(b.tiles, b.index.tolist())}
    reference = TileLoader(ArraySource(image), plan, rows, range(plan.cols.count), batch_size=4)
    n = 0
    for b in reference:
        for t, ij in zip(b.tiles, b.index.tolist()):
            np.testing.assert_array_equal(got[tuple(ij)], t)
            n += 1
    assert n == len(got) > 0
