"""Blending: Σw from the per-block table equals Σw accumulated tile by tile, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tiler.engine.stitch import Stitcher
from tiler.plan import windows
from tiler.plan.lattice import TilePlan
from tiler.plan.partition import Block


def _stitch(plan: TilePlan, block: Block, window: np.ndarray, chunk: int, complete: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    stitcher = Stitcher(plan, block, window, 2, chunk, complete=complete)
    rows, cols = plan.tiles_touching(block)
    out = np.zeros((2, block.y1 - block.y0, block.x1 - block.x0), np.float32)
    for i in rows:
        index = np.array([(i, j) for j in cols])
        stitcher.add(rng.normal(size=(len(index), 2, plan.tile, plan.tile)).astype(np.float32), index)
        for row in stitcher.finished(i):
            assert row.covered is None
            out[:, row.y0 - block.y0 : row.y1 - block.y0] = row.logits
    return out


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "margin", "window", "box", "chunk"),
    [
        ((300, 260), 64, 16, 0, "gaussian", (0, 300, 0, 260), 32),
        ((300, 260), 64, 24, 4, "linear", (64, 256, 96, 224), 32),
        ((200, 130), 48, 30, 6, "cosine", (0, 200, 0, 130), 50),
        ((20, 30), 64, 16, 0, "gaussian", (0, 20, 0, 30), 16),  # smaller than one tile
        ((257, 129), 32, 0, 0, "constant", (0, 257, 0, 129), 64),  # no overlap
    ],
)
@pytest.mark.parametrize("half_overlap_context", [False, True])
def test_weight_table_gives_the_bits_of_accumulated_weights(shape, tile, overlap, margin, window, box, chunk,
                                                            half_overlap_context):
    context = max(margin, overlap // 2) if half_overlap_context else None  # the lattice before the image
    plan = TilePlan.create(shape, tile=tile, overlap=overlap, margin=margin, context=context)
    w = windows.window_2d(window, tile, margin=margin)
    block = Block(0, 0, *box)
    np.testing.assert_array_equal(_stitch(plan, block, w, chunk, True), _stitch(plan, block, w, chunk, False))


def test_weight_table_is_small() -> None:
    """One table row per offset pattern (about a stride's worth plus borders), not per image row."""
    plan = TilePlan.create((5000, 100), tile=64, overlap=16)
    from tiler.engine.stitch import WeightSums

    sums = WeightSums(plan, Block(0, 0, 0, 5000, 0, 100), windows.window_2d("gaussian", 64))
    assert len(sums.table) <= plan.stride + 2 * plan.tile
    assert sums.index.shape == (5000,)


@pytest.mark.parametrize("complete", [True, False])
def test_bands_of_a_chunk_row_give_its_bits_and_hold_about_a_tile_of_rows(complete) -> None:
    """Stitching in bands of 128 rows (what the pipeline does for converted outputs) gives the same
    bits as whole chunk rows, and holds float32 sums for about a tile's height of rows, not for two
    or three chunk rows."""
    from tiler.engine.stitch import accumulation_rows

    plan = TilePlan.create((2100, 700), tile=256, overlap=32)
    w = windows.window_2d("gaussian", 256)
    block = Block(0, 0, 0, 2100, 0, 700)
    band = accumulation_rows(1024)
    assert band == 128
    rng = np.random.default_rng(1)
    tiles = {(i, j): rng.normal(size=(2, 256, 256)).astype(np.float32)
             for i in plan.tiles_touching(block)[0] for j in plan.tiles_touching(block)[1]}
    outs, held = {}, {}
    for rows in (1024, band):
        stitcher = Stitcher(plan, block, w, 2, rows, complete=complete)
        out, most = np.full((2, 2100, 700), np.nan, np.float32), 0
        for i in plan.tiles_touching(block)[0]:
            for j in plan.tiles_touching(block)[1]:  # one tile per batch: the most held at once
                stitcher.add(tiles[i, j][None], np.array([(i, j)]))
                most = max(most, stitcher.held_rows)
            for row in stitcher.finished(i):
                assert row.y1 - row.y0 <= rows
                out[:, row.y0 : row.y1] = row.logits
        outs[rows], held[rows] = out, most
    assert not np.isnan(outs[band]).any()
    np.testing.assert_array_equal(outs[band], outs[1024])
    assert held[band] <= plan.tile + 2 * band < held[1024]


def test_the_pipeline_releases_a_tile_rows_bands_before_adding_the_next_rows_tiles(monkeypatch) -> None:
    """With batches that straddle tile rows (9 tiles per batch, 6 per tile row), the float32 sums
    held while stitching probabilities stay within a tile's height plus two bands: a batch's tiles
    of the row it completes are added, that row's bands released, then the next row's tiles added.
    Adding a whole batch first held the completed row's bands and the next row's together."""
    import tiler
    from tiler.engine.stitch import accumulation_rows

    most = [0]
    add = Stitcher.add

    def spy(self, outputs, index):
        add(self, outputs, index)
        most[0] = max(most[0], self.held_rows)

    monkeypatch.setattr(Stitcher, "add", spy)
    image = np.random.default_rng(2).random((1500, 1100, 3), dtype=np.float32)
    from tiler.runners.base import FunctionRunner

    model = FunctionRunner(lambda x: x[:, :2], normalise=False)
    probs = tiler.predict(image, model, output="probs", tile=256, overlap=64, batch_size=9,
                          window="gaussian", chunk=1024, stitch_threads=1)
    assert probs.shape == (2, 1500, 1100)
    band = accumulation_rows(1024)
    assert 256 <= most[0] <= 256 + 2 * band
