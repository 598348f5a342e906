"""The OME-Zarr pyramid: exact downsampling, streaming structure, and metadata a reader accepts."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import zarr

import tiler
from tiler.runners.base import FunctionRunner
from tiler.store.pyramid import build_pyramid, downsample_mean, downsample_mode, pyramid_shapes


def reference_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the pixels that exist in each 2 x 2 block, by loops (uint8: half up)."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], math.ceil(h / 2), math.ceil(w / 2)), np.float64)
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            block = x[..., 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].astype(np.float64)
            out[..., i, j] = block.mean(axis=(-2, -1))
    if x.dtype == np.uint8:
        return np.floor(out + 0.5).astype(np.uint8)
    return out


def reference_mode(x: np.ndarray) -> np.ndarray:
    """Most common label of the pixels that exist in each block; ties to the first in reading order."""
    h, w = x.shape
    out = np.zeros((math.ceil(h / 2), math.ceil(w / 2)), x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = list(x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].ravel())
            counts = Counter(block)
            top = max(counts.values())
            out[i, j] = next(v for v in block if counts[v] == top)
    return out


@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (1, 5), (5, 1), (1, 1)])
def test_mean_matches_reference(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    x8 = rng.integers(0, 256, (3, *shape)).astype(np.uint8)
    np.testing.assert_array_equal(downsample_mean(x8), reference_mean(x8))
    full = np.full((2, *shape), 255, np.uint8)  # the largest sums (4 x 255 + 2) do not overflow
    np.testing.assert_array_equal(downsample_mean(full), reference_mean(full))
    xf = rng.random((2, *shape)).astype(np.float32)
    np.testing.assert_allclose(downsample_mean(xf), reference_mean(xf), rtol=1e-6)
    assert downsample_mean(xf).dtype == np.float32


@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (1, 5), (3, 1)])
def test_mode_matches_reference(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(2).integers(0, 3, shape).astype(np.uint8)
    np.testing.assert_array_equal(downsample_mode(x), reference_mode(x))


def test_mode_tie_break_and_no_new_labels() -> None:
    x = np.array([[4, 7, 1, 2], [7, 4, 3, 5]], np.uint8)
    # 4,7 twice each -> first in reading order (4); all different -> top-left (1).
    np.testing.assert_array_equal(downsample_mode(x), [[4, 1]])


def test_shapes() -> None:
    assert pyramid_shapes(32768, 32768)[-1] == (1024, 1024)
    assert len(pyramid_shapes(32768, 32768)) == 6
    assert pyramid_shapes(1000, 5000) == [(1000, 5000)]
    assert pyramid_shapes(3, 3, levels=5) == [(3, 3), (2, 2), (1, 1)]


def _group(tmp_path, data: np.ndarray, chunk: int, mpp: float | None = None) -> zarr.Group:
    g = zarr.open_group(str(tmp_path / "out.zarr"), mode="w", zarr_format=3)
    dims = ("c", "y", "x") if data.ndim == 3 else ("y", "x")
    chunks = (*data.shape[:-2], chunk, chunk)
    g.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype, dimension_names=dims, fill_value=0)
    g["0"][...] = data
    space = {"type": "space", "unit": "micrometer"} if mpp else {"type": "space"}
    axes = [{"name": "c", "type": "channel"}] * (data.ndim == 3) + [{"name": "y", **space},
                                                                    {"name": "x", **space}]
    scale = [1.0] * (data.ndim - 2) + [mpp or 1.0] * 2
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": "p", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]}
    return g


def test_levels_equal_repeated_reference(tmp_path) -> None:
    data = np.random.default_rng(3).integers(0, 256, (2, 101, 77)).astype(np.uint8)
    g = _group(tmp_path, data, chunk=16)
    shapes = build_pyramid(g, method="mean", levels=4)
    assert shapes == [(2, 101, 77), (2, 51, 39), (2, 26, 20), (2, 13, 10)]
    expect = data
    for k in range(1, 4):
        expect = reference_mean(expect)
        np.testing.assert_array_equal(g[str(k)][...], expect)
        assert g[str(k)].metadata.dimension_names == ("c", "y", "x")


def test_labels_pyramid(tmp_path) -> None:
    data = np.random.default_rng(4).integers(0, 4, (45, 70)).astype(np.uint8)
    g = _group(tmp_path, data, chunk=8)
    build_pyramid(g, method="mode", levels=3)
    np.testing.assert_array_equal(g["1"][...], reference_mode(data))
    np.testing.assert_array_equal(g["2"][...], reference_mode(reference_mode(data)))
    assert g.attrs["ome"]["multiscales"][0]["type"] == "mode"


def test_streams_chunk_by_chunk(tmp_path, monkeypatch) -> None:
    """Every read of level k covers at most the 2 x 2 chunks under one output chunk."""
    data = np.random.default_rng(5).random((1, 130, 150)).astype(np.float32)
    g = _group(tmp_path, data, chunk=16)
    reads: list[tuple[int, int]] = []

    class Spy:
        def __init__(self, arr):
            self.arr, self.shape, self.chunks, self.ndim = arr, arr.shape, arr.chunks, arr.ndim

        def __getitem__(self, key):
            out = self.arr[key]
            reads.append(out.shape[-2:])
            return out

    import tiler.store.pyramid as pyramid

    real = pyramid._downsample_level
    monkeypatch.setattr(pyramid, "_downsample_level", lambda s, d, m, w: real(Spy(s), d, m, w))
    build_pyramid(g, method="mean", levels=3)
    assert reads and max(h for h, _ in reads) <= 32 and max(w for _, w in reads) <= 32
    # Every pixel of levels 0 and 1 was read exactly once.
    assert sum(h * w for h, w in reads) == 130 * 150 + 65 * 75


def test_rebuild_replaces_levels_and_validates_with_ome_zarr(tmp_path) -> None:
    from ome_zarr.axes import Axes
    from ome_zarr.format import FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    data = np.random.default_rng(6).integers(0, 256, (3, 64, 96)).astype(np.uint8)
    g = _group(tmp_path, data, chunk=16, mpp=0.5)
    build_pyramid(g, method="mean", levels=4)
    build_pyramid(g, method="mean", levels=3)  # a rebuild with fewer levels drops level 3
    assert sorted(k for k in g.array_keys()) == ["0", "1", "2"]

    nodes = list(Reader(parse_url(str(tmp_path / "out.zarr")))())
    image = nodes[0]
    assert any(isinstance(s, Multiscales) for s in image.specs)
    assert [d.shape for d in image.data] == [(3, 64, 96), (3, 32, 48), (3, 16, 24)]
    np.testing.assert_array_equal(np.asarray(image.data[1]), reference_mean(data))
    # ome-zarr 0.18 reads 0.5 metadata from attributes["ome"] but validates axes and transforms
    # only when asked: do it with the 0.5 rules.
    ms = g.attrs["ome"]["multiscales"][0]
    fmt = FormatV05()
    Axes(ms["axes"], fmt=fmt).validate()
    transforms = [d["coordinateTransformations"] for d in ms["datasets"]]
    fmt.validate_coordinate_transformations(3, 3, transforms)
    assert transforms[2][0]["scale"] == [1.0, 2.0, 2.0] and transforms[2][1]["translation"] == [0, 0.75, 0.75]
    assert {a["name"]: a.get("unit") for a in ms["axes"]}["x"] == "micrometer"


def test_run_builds_pyramid_before_complete(tmp_path, monkeypatch) -> None:
    img = np.random.default_rng(7).integers(0, 256, (300, 200, 3)).astype(np.uint8)
    runner = FunctionRunner(lambda x: x[:, :1] * 4 - 2)
    seen = {}
    from tiler.store.sink import ZarrSink

    real = ZarrSink.set_complete

    def spy(self):
        g = zarr.open_group(str(self.path), mode="r")
        seen["levels_before"] = sorted(k for k in g.array_keys() if k.isdigit())
        seen["datasets_before"] = len(g.attrs["ome"]["multiscales"][0]["datasets"])
        seen["complete_before"] = g.attrs["tiler"]["complete"]
        return real(self)

    monkeypatch.setattr(ZarrSink, "set_complete", spy)
    out = tmp_path / "r.zarr"
    tiler.run(img, runner, out=out, tile=64, overlap=16, chunk=64, output="labels", pyramid_levels=3)
    g = zarr.open_group(str(out), mode="r")
    assert seen == {"levels_before": ["0", "1", "2"], "datasets_before": 3, "complete_before": False}
    assert g.attrs["tiler"]["complete"] is True
    assert [g[k].shape for k in ("0", "1", "2")] == [(300, 200), (150, 100), (75, 50)]
    np.testing.assert_array_equal(g["1"][...], reference_mode(g["0"][...]))
    tiler.run(img, runner, out=tmp_path / "n.zarr", tile=64, overlap=16, chunk=64, pyramid=False)
    assert sorted(zarr.open_group(str(tmp_path / "n.zarr")).array_keys()) == ["0", "progress"]


@pytest.mark.parametrize("kind", ["probs", "logits", "labels"])
def test_the_pyramid_built_while_writing_equals_the_one_built_after(tmp_path, monkeypatch, kind) -> None:
    """A fresh run reduces level-0 rows as they are written (never reading them back): the same bits
    as build_pyramid over the finished level 0 — odd sizes, several chunk rows and columns, stitch
    column parts, five levels down to a few pixels."""
    import tiler.api

    img = np.random.default_rng(3).integers(0, 256, (331, 457, 3)).astype(np.uint8)
    runner = FunctionRunner(lambda x: np.concatenate([x[:, :1], 1 - x[:, 1:2], x[:, 2:] * 3], 1))
    built_after = []
    real = tiler.api.build_pyramid
    monkeypatch.setattr(tiler.api, "build_pyramid", lambda g, **kw: built_after.append(kw) or real(g, **kw))
    out = tmp_path / "stream.zarr"
    kw = dict(tile=64, overlap=16, chunk=32, output=kind, pyramid_levels=5, stitch_threads=2)
    tiler.run(img, runner, out=out, **kw)
    assert built_after == []  # built while writing
    g = zarr.open_group(str(out), mode="r")
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    base = g["0"]
    ref.create_array("0", data=base[...], chunks=base.chunks)
    ref.attrs["ome"] = {}
    build_pyramid(ref, method="mode" if kind == "labels" else "mean", levels=5)
    for k in range(1, 5):
        assert g[str(k)].shape == ref[str(k)].shape and g[str(k)].chunks == ref[str(k)].chunks
        np.testing.assert_array_equal(g[str(k)][...], ref[str(k)][...])
    assert g.attrs["ome"]["multiscales"][0]["datasets"] == ref.attrs["ome"]["multiscales"][0]["datasets"]
    assert g.attrs["tiler"]["complete"] is True


def test_interrupted_pyramid_is_finished_by_resume(tmp_path, monkeypatch) -> None:
    img = np.random.default_rng(8).integers(0, 256, (200, 260)).astype(np.uint8)
    runner = FunctionRunner(lambda x: np.concatenate([x, 1 - x], 1))
    from tiler.store.pyramid import StreamingPyramid

    def crash(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(StreamingPyramid, "finish", crash)
    out = tmp_path / "r.zarr"
    kw = dict(tile=64, overlap=16, chunk=64, output="probs")
    with pytest.raises(KeyboardInterrupt):
        tiler.run(img, runner, out=out, **kw)
    assert zarr.open_group(str(out), mode="r").attrs["tiler"]["complete"] is False
    monkeypatch.undo()
    result = tiler.run(img, runner, out=out, resume="force", pyramid_levels=2, **kw)
    g = zarr.open_group(str(out), mode="r")
    assert result.tiles == 0 and g.attrs["tiler"]["complete"] is True
    np.testing.assert_array_equal(g["1"][...], reference_mean(g["0"][...]))
