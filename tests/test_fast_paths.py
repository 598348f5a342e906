"""The engine's fast paths give the same numbers as the plain computation they replace.

Covers: the loader's run-based tile copies (against NumPy reflect padding, including degenerate
images and bottom borders that reflect back up past earlier tile rows), the stitcher's shortcut for
complete chunk rows against its masked path and a NumPy reference, slab-wise output conversion,
the finite check, and the torch runner's padding of short batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiler
from tiler.config import Settings
from tiler.engine.job import Job
from tiler.engine.load import TileLoader, runs
from tiler.engine.outputs import OutputSpec
from tiler.engine.pipeline import run_block
from tiler.errors import ModelOutputError
from tiler.models.spec import ModelSpec
from tiler.models.unet import UNet
from tiler.plan.lattice import TilePlan, reflect_index
from tiler.runners.base import FunctionRunner
from tiler.runners.torch import TorchRunner
from tiler.sources import ArraySource
from tiler.store.sink import MemorySink

from .conftest import smooth_image
from .test_load import CountingSource


@pytest.mark.parametrize("size", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("start", [-50, -9, -1, 0, 5])
def test_runs_rebuild_the_reflected_index(size: int, start: int) -> None:
    index = reflect_index(np.arange(start, start + 64), size)
    rebuilt = np.empty_like(index)
    parts = runs(index)
    for d0, d1, s in parts:
        rebuilt[d0:d1] = np.arange(size)[s]
        assert s.step in (1, -1)
    np.testing.assert_array_equal(rebuilt, index)
    assert parts[0][0] == 0 and parts[-1][1] == len(index)


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "margin", "chunks"),
    [
        ((1, 1, 3), 16, 4, 0, None),  # a single pixel
        ((2, 5, 1), 16, 4, 2, None),  # thinner than the reflection
        ((1000, 130, 3), 512, 64, 0, (64, 130)),  # last tile row reflects far back up
        ((301, 173, 2), 64, 24, 8, (32, 32)),  # margins, bands of 32 rows
        ((90, 90, 3), 32, 0, 0, (90, 90)),  # one band holds the whole image
    ],
)
def test_tiles_equal_the_reflect_padded_image(shape, tile, overlap, margin, chunks) -> None:
    image = smooth_image(shape)
    source = CountingSource(image, chunks) if chunks else ArraySource(image)
    plan = TilePlan.create(shape[:2], tile=tile, overlap=overlap, margin=margin)
    loader = TileLoader(source, plan, range(plan.rows.count), range(plan.cols.count), batch_size=3)
    seen = 0
    for batch in loader:
        for t, (i, j) in zip(batch.tiles, batch.index):
            y0, y1, x0, x1 = plan.tile_box(int(i), int(j))
            ys = reflect_index(np.arange(y0, y1), shape[0])
            xs = reflect_index(np.arange(x0, x1), shape[1])
            np.testing.assert_array_equal(t, image[np.ix_(ys, xs)].transpose(2, 0, 1))
            seen += 1
    assert seen == plan.n_tiles
    if chunks:  # every stored chunk row decoded exactly once, on chunk boundaries
        rows = np.zeros(shape[0], int)
        for a, b, _, _ in source.reads:
            assert a % chunks[0] == 0
            rows[a:b] += 1
        assert (rows == 1).all()


def _blend_reference(image: np.ndarray, plan: TilePlan, window: np.ndarray, computed) -> tuple:
    """NumPy Σ w·(x+1) / Σ w over the computed tiles of the plan; (C, H, W) and coverage."""
    h, w, c = image.shape
    num, den = np.zeros((c, h, w), np.float64), np.zeros((h, w), np.float64)
    for i in range(plan.rows.count):
        for j in range(plan.cols.count):
            if not computed(i, j):
                continue
            y0, y1, x0, x1 = plan.tile_box(i, j)
            ys, xs = reflect_index(np.arange(y0, y1), h), reflect_index(np.arange(x0, x1), w)
            tile = image[np.ix_(ys, xs)].transpose(2, 0, 1).astype(np.float64) + 1
            a, b = max(y0, 0), min(y1, h)
            cc, d = max(x0, 0), min(x1, w)
            wt = window[a - y0 : b - y0, cc - x0 : d - x0]
            num[:, a:b, cc:d] += tile[:, a - y0 : b - y0, cc - x0 : d - x0] * wt
            den[a:b, cc:d] += wt
    covered = den > 0
    return np.where(covered, num / np.where(covered, den, 1), 0.0), covered


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("block", [None, 48])
def test_stitched_blocks_match_a_numpy_reference(plus_one, masked: bool, block: int | None) -> None:
    image = smooth_image((150, 170, 3), seed=2, dtype="float32")
    skip = (lambda i, j: (i + 2 * j) % 3 == 0) if masked else (lambda i, j: False)
    settings = Settings(tile=48, overlap=16, chunk=32, batch_size=4, block_width=block, block_height=block,
                        fill=-7.0)
    job = Job.create(ArraySource(image), plus_one, settings, skip=skip)
    out = np.full((3, 150, 170), np.nan, np.float32)
    sink = MemorySink(out, job.partition.stripes)
    for b in job.partition.blocks():
        run_block(job, b, sink)
    ref, covered = _blend_reference(image, job.plan, job.window, lambda i, j: not skip(i, j))
    assert covered.all() != masked
    np.testing.assert_allclose(out[:, covered], ref[:, covered], rtol=0, atol=2e-6)
    assert (out[:, ~covered] == -7.0).all()
    if not masked:  # the complete-row shortcut equals the plain predict
        np.testing.assert_array_equal(out, tiler.predict(image, plus_one, tile=48, overlap=16))


@pytest.mark.parametrize(("kind", "dtype", "channels"), [
    ("probs", None, 3), ("probs", "float32", 3), ("probs", None, 2), ("probs", "float32", 2), ("probs", None, 1),
    ("labels", None, 4), ("labels", None, 1),
])
@pytest.mark.parametrize("with_mask", [False, True])
def test_slab_conversion_equals_whole_conversion(kind, dtype, channels, with_mask) -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(channels, 70, 5000)) * 4).astype(np.float32)
    covered = rng.random((70, 5000)) > 0.2 if with_mask else None
    spec = OutputSpec(kind=kind, channels=channels, dtype=dtype, fill=3)
    before = logits.copy()
    got = spec.convert(logits, covered)
    np.testing.assert_array_equal(logits, before)  # input untouched
    # the plain formulas
    if kind == "probs":
        if channels == 1:
            p = 1.0 / (1.0 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max(axis=0, keepdims=True))
            p = e / e.sum(axis=0, keepdims=True)
        want = np.rint(p * 255.0).astype(np.uint8) if dtype is None else p
    else:
        want = (logits[0] > 0).astype(np.uint8) if channels == 1 else logits.argmax(0).astype(np.uint8)
    if covered is not None:
        want = want.copy()
        want[..., ~covered] = 3
    assert got.dtype == want.dtype and got.shape == want.shape
    if (kind, dtype, channels) == ("probs", None, 2):
        # two-class uint8: class 1 rounded, class 0 the rest of 255; within 1 of the exact value
        exact = np.exp(logits.astype(np.float64))
        exact = np.rint(255 * exact / exact.sum(axis=0))
        if covered is not None:
            exact[..., ~covered] = 3
        assert np.abs(got.astype(np.int64) - exact).max() <= 1
        assert (np.abs(got.astype(np.int64) - want) > 0).mean() < 1e-4  # and rarely differs from the formula
        sums = got.astype(np.int64).sum(axis=0)
        assert (sums[covered] == 255).all() if covered is not None else (sums == 255).all()
        return
    np.testing.assert_array_equal(got, want)


def test_two_class_uint8_probabilities_at_extreme_logits() -> None:
    """Logits far apart (exp overflows), equal, and huge of either sign give 0/255, 127/128 or the
    exact split (a tie: 127.5 rounds to 128 for class 1), with no warning and summing to 255."""
    logits = np.array([[[100.0, -100.0, 0.0, 3e38, -3e38]], [[-100.0, 100.0, 0.0, -3e38, 3e38]]], np.float32)
    got = OutputSpec(kind="probs", channels=2).convert(logits)
    assert got[0].tolist() == [[255, 0, 127, 255, 0]] and got[1].tolist() == [[0, 255, 128, 0, 255]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_still_caught(bad: float) -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        y = x[:, :1].copy()
        y[:, :, 5, 5] = bad
        return y

    with pytest.raises(ModelOutputError, match="NaN or infinite"):
        tiler.predict(np.zeros((40, 40), np.float32), FunctionRunner(broken, normalise=False), tile=32, overlap=8)


class _Affine(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([2 * x[:, :1] + 1, x[:, 1:2] - x[:, 2:3]], dim=1)


def test_padded_short_batches_give_the_same_outputs() -> None:
    image = smooth_image((130, 150, 3), seed=4)
    spec = ModelSpec(in_channels=3)
    plain = TorchRunner(_Affine(), spec, device="cpu")
    padded = TorchRunner(_Affine(), spec, device="cpu", pad_batches=4)
    calls: list[int] = []
    run = padded._run
    padded._run = lambda t: calls.append(len(t)) or run(t)  # type: ignore[method-assign]
    a = tiler.predict(image, plain, tile=64, overlap=16, batch_size=4)
    b = tiler.predict(image, padded, tile=64, overlap=16, batch_size=4)
    np.testing.assert_array_equal(a, b)
    assert set(calls) == {4} and len(calls) > 1  # every call (the probe too) had the full batch shape


def test_padded_batches_with_the_unet() -> None:
    torch.manual_seed(0)
    net = UNet(3, 2, base_channels=4).eval()
    spec = ModelSpec(in_channels=3, out_channels=2, multiple=16)
    tiles = smooth_image((64, 64 * 5, 3), seed=7).reshape(64, 5, 64, 3).transpose(1, 3, 0, 2).copy()
    full = TorchRunner(net, spec, device="cpu")(tiles)
    runner = TorchRunner(net, spec, device="cpu", pad_batches=True)
    runner(tiles)  # sets the batch size to 5
    short = runner(tiles[:2])
    assert short.shape == (2, 2, 64, 64)
    np.testing.assert_allclose(short, full[:2], rtol=0, atol=1e-5)
