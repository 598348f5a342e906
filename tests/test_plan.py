"""The lattice: coverage, full-size tiles, positive weights, multiples, partition arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiler.errors import SettingsError
from tiler.plan import windows
from tiler.plan.lattice import TilePlan, reflect_index
from tiler.plan.partition import Partition


@st.composite
def plans(draw: st.DrawFn) -> TilePlan:
    multiple = draw(st.sampled_from([1, 2, 8, 16]))
    tile = multiple * draw(st.integers(1, 64 // multiple + 2))
    overlap = draw(st.integers(0, tile - 1))
    margin = draw(st.integers(0, overlap // 2))
    stride = tile - overlap
    if stride % multiple:
        overlap = tile - (stride // multiple) * multiple
        if overlap >= tile:
            overlap = tile - multiple
        margin = min(margin, overlap // 2)
    h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    context = draw(st.one_of(st.none(), st.integers(margin, max(margin, overlap // 2))))
    return TilePlan.create((h, w), tile=tile, overlap=overlap, margin=margin, multiple=multiple, context=context)


@settings(max_examples=300, deadline=None)
@given(plans(), st.sampled_from(windows.list_windows()))
def test_weight_sum_positive_everywhere(plan: TilePlan, window: str) -> None:
    """Every pixel has a positive weight sum, for every window (1-D suffices: windows separable)."""
    for axis in (plan.rows, plan.cols):
        w = windows.profile(window, plan.tile, margin=plan.margin)
        total = np.zeros(axis.size + 2 * plan.tile)
        for o in axis.origins():
            total[o + plan.tile : o + 2 * plan.tile] += w  # shifted by tile: origins may be negative
        inside = total[plan.tile : plan.tile + axis.size]
        assert (inside > 0).all()


@settings(max_examples=300, deadline=None)
@given(plans())
def test_tiles_full_size_on_lattice(plan: TilePlan) -> None:
    for axis in (plan.rows, plan.cols):
        origins = axis.origins()
        assert len(origins) == axis.count >= 1
        assert (np.diff(origins) == plan.stride).all()
        assert plan.stride % plan.multiple == 0 and plan.tile % plan.multiple == 0
        # Tile 0 starts `context` before the image (mirrored context at the top/left); the last
        # tile ends at least `context` past the end (bottom/right); one fewer tile would not.
        context = plan.margin if plan.context is None else plan.context
        assert origins[0] == -context
        assert origins[-1] + plan.tile - context >= axis.size
        if axis.count > 1:
            assert origins[-2] + plan.tile - context < axis.size


@settings(max_examples=200, deadline=None)
@given(plans(), st.data())
def test_touching_is_exact(plan: TilePlan, data: st.DataObject) -> None:
    axis = plan.rows
    lo = data.draw(st.integers(0, axis.size - 1))
    hi = data.draw(st.integers(lo + 1, axis.size))
    o, m, t = axis.origins(), plan.margin, plan.tile
    expected = [i for i in range(axis.count) if o[i] + m < hi and o[i] + t - m > lo]
    assert list(axis.touching(lo, hi)) == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.sampled_from([16, 64, 1024]),
       st.integers(1, 6), st.integers(1, 6))
def test_partition_tiles_output_exactly_once(h: int, w: int, chunk: int, bh: int, bw: int) -> None:
    part = Partition.create((h, w), chunk=chunk, block_height=bh * chunk, block_width=bw * chunk)
    count = np.zeros((h, w), np.uint8) if h * w <= 4_000_000 else None
    rows = set()
    for b in part.blocks():
        assert b.y0 % chunk == 0 and b.x0 % chunk == 0
        assert b.y1 == h or b.y1 % chunk == 0
        rows.update((j, b.col) for j in part.chunk_rows(b))
        if count is not None:
            count[b.y0 : b.y1, b.x0 : b.x1] += 1
    if count is not None:
        assert (count == 1).all()
    assert len(rows) == part.stripes[0] * part.stripes[1]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_reflect_matches_numpy_pad(n: int) -> None:
    a = np.arange(n)
    pad = (40, 33)
    expected = np.pad(a, pad, mode="reflect" if n > 1 else "edge")
    assert (reflect_index(np.arange(-pad[0], n + pad[1]), n) == expected).all()


def test_reflect_matches_torch_pad() -> None:
    import torch
    from torch.nn import functional as F

    a = torch.arange(10.0).view(1, 1, 10)
    expected = F.pad(a, (4, 6), mode="reflect")[0, 0].long().numpy()
    assert (reflect_index(np.arange(-4, 16), 10) == expected).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile": 512, "overlap": 512}, "smaller than the tile"),
        ({"tile": 500, "overlap": 64, "multiple": 16}, "not a multiple of 16"),
        ({"tile": 512, "overlap": 64, "margin": 40}, "margin 40"),
        ({"tile": 0, "overlap": 0}, "tile 0"),
    ],
)
def test_impossible_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        TilePlan.create((1000, 1000), **kwargs)


def test_context_must_lie_between_the_margin_and_half_the_overlap() -> None:
    with pytest.raises(SettingsError, match="context 80 must be between the margin 0 and overlap/2 \\(64\\)"):
        TilePlan.create((1000, 1000), tile=512, overlap=128, context=80)
    with pytest.raises(SettingsError, match="context 4 must be between the margin 8"):
        TilePlan.create((1000, 1000), tile=512, overlap=128, margin=8, context=4)


def test_overlap_is_raised_to_keep_origins_on_the_model_multiple() -> None:
    with pytest.warns(UserWarning, match="overlap 50 raised to 64"):
        plan = TilePlan.create((1000, 1000), tile=512, overlap=50, multiple=16)
    assert plan.stride == 448
