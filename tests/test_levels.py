"""Pyramid levels, pixel sizes and ``--level`` / ``--mpp`` on generated OME-TIFF, SVS and TIFF files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import InputError, SettingsError
from tiler.runners.base import FunctionRunner
from tiler.sources import ArraySource, ResampledSource, open_at, open_source
from tiler.sources._resample import axis_taps

from ._wsi_files import (
    slide_image,
    write_ome_pyramid,
    write_resolution_tiff,
    write_svs,
)

IDENTITY = FunctionRunner(lambda x: x, normalise=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("levels")
    img = slide_image((384, 512), seed=3)
    ome = write_ome_pyramid(d / "slide.ome.tif", img, levels=3, mpp=0.5)
    svs = write_svs(d / "slide.svs", img, levels=3, mpp=0.499)
    write_resolution_tiff(d / "cm.tif", img, mpp=0.25)
    write_resolution_tiff(d / "inch.tif", img, mpp=0.25, unit="INCH")
    tifffile.imwrite(d / "dpi72.tif", img, resolution=(72, 72), resolutionunit="INCH", metadata=None)
    tifffile.imwrite(d / "plain.tif", img, tile=(64, 64), metadata=None)
    with tifffile.TiffWriter(d / "nm.ome.tif", ome=True) as tif:
        tif.write(img, metadata={"axes": "YXS", "PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm",
                                 "PhysicalSizeY": 0.3, "PhysicalSizeYUnit": "µm"})
    return {"dir": d, "img": img, "ome": ome, "svs": svs}


def test_ome_tiff_levels_and_pixel_size(files) -> None:
    d, ome = files["dir"], files["ome"]
    src = open_source(d / "slide.ome.tif")
    info = src.info
    assert info.format == "ome-tiff" and info.levels == ((384, 512), (192, 256), (96, 128))
    assert info.mpp == (0.5, 0.5) and info.base_mpp == (0.5, 0.5)
    assert [info.level_mpp(k) for k in range(3)] == [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]
    for k in range(3):
        lvl = open_source(d / "slide.ome.tif", level=k)
        assert lvl.info.level == k and lvl.info.mpp == (0.5 * 2**k, 0.5 * 2**k)
        assert lvl.info.downsample == (2.0**k, 2.0**k)
        np.testing.assert_array_equal(lvl.read(0, lvl.shape[0], 0, lvl.shape[1]), ome[k])
        lvl.close()
    src.close()


def test_svs_like_levels_and_mpp_from_description(files) -> None:
    d = files["dir"]
    with tifffile.TiffFile(d / "slide.svs") as tif:
        assert tif.is_svs and tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    src = open_source(d / "slide.svs")
    info = src.info
    assert info.format == "svs" and info.compression == "jpeg"
    assert info.levels == ((384, 512), (96, 128), (24, 32))  # the thumbnail is not a level
    assert info.mpp == (0.499, 0.499)
    assert info.level_mpp(1) == pytest.approx((1.996, 1.996))
    src.close()
    lvl = open_source(d / "slide.svs", level=2)
    assert lvl.shape == (24, 32, 3) and lvl.info.mpp == pytest.approx((7.984, 7.984))
    # JPEG is lossy: the stored level is close to the block mean it was made from.
    assert np.abs(lvl.read(0, 24, 0, 32).astype(int) - files["svs"][2]).mean() < 4
    lvl.close()


@pytest.mark.parametrize(
    ("name", "mpp"),
    [("cm.tif", (0.25, 0.25)), ("inch.tif", (0.25, 0.25)), ("dpi72.tif", None), ("plain.tif", None),
     ("nm.ome.tif", (0.3, 0.25))],
)
def test_pixel_size_from_resolution_tags_and_ome_units(files, name, mpp) -> None:
    src = open_source(files["dir"] / name)
    if mpp is None:
        assert src.info.mpp is None
    else:
        assert src.info.mpp == pytest.approx(mpp)
    src.close()


def _reference_weights(n_out: int, size: int, f: float) -> np.ndarray:
    """Dense (n_out, size) area weights from the definition: overlap of [n f, (n+1) f) with pixels."""
    w = np.zeros((n_out, size))
    for n in range(n_out):
        lo, hi = n * f, (n + 1) * f
        for x in range(size):
            w[n, x] = max(0.0, min(x + 1, hi) - max(x, lo))
    return w / w.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("factor", [2.0, 2.5, 3.7, (1.5, 2.25)])
def test_area_resampling_matches_a_dense_reference(factor) -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (61, 47, 2)).astype(np.float32)
    src = ResampledSource(ArraySource(img), factor)
    fy, fx = src.factor
    h, w, _ = src.shape
    assert (h, w) == (round(61 / fy), round(47 / fx))
    wy, wx = _reference_weights(h, 61, fy), _reference_weights(w, 47, fx)
    expected = np.einsum("ay,yxc,bx->abc", wy, img.astype(np.float64), wx)
    np.testing.assert_allclose(src.read(0, h, 0, w), expected, atol=1e-5)


def test_whole_factor_is_the_block_mean() -> None:
    img = np.arange(8 * 12, dtype=np.float32).reshape(8, 12, 1)
    out = ResampledSource(ArraySource(img), 4).read(0, 2, 0, 3)
    np.testing.assert_array_equal(out, img.reshape(2, 4, 3, 4, 1).mean(axis=(1, 3)))


def test_upsampling_is_linear_between_pixel_centres() -> None:
    idx, w = axis_taps(0, 8, 4, 0.5)
    # Output centre n sits at source (n + 0.5) / 2 - 0.5: n = 1 at 0.25, n = 2 at 0.75.
    assert idx[1].tolist() == [0, 1] and w[1].tolist() == [0.75, 0.25] and w[2].tolist() == [0.25, 0.75]
    assert idx[0].tolist() == [0, 0] and idx[-1].tolist() == [3, 3]  # clamped at the edges
    np.testing.assert_allclose(w.sum(axis=1), 1)


@pytest.mark.parametrize("factor", [2.0, 2.6, 0.7])
def test_resampled_regions_agree_with_the_whole(factor) -> None:
    """The same output pixel has the same value whichever region is read (global grid)."""
    img = slide_image((150, 170), seed=1)
    src = ResampledSource(ArraySource(img), factor)
    h, w, _ = src.shape
    whole = src.read(0, h, 0, w)
    assert whole.dtype == np.uint8
    rng = np.random.default_rng(1)
    for _ in range(12):
        y0, x0 = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
        y1, x1 = int(rng.integers(y0 + 1, h + 1)), int(rng.integers(x0 + 1, w + 1))
        np.testing.assert_array_equal(src.read(y0, y1, x0, x1), whole[y0:y1, x0:x1])
    halves = np.concatenate([src.read(0, h // 2, 0, w), src.read(h // 2, h, 0, w)])
    np.testing.assert_array_equal(halves, whole)


def test_mpp_picks_the_nearest_finer_level_and_resamples(files) -> None:
    d = files["dir"]
    src = open_at(d / "slide.ome.tif", mpp=1.0)  # level 1 exactly: no resampling
    assert not isinstance(src, ResampledSource) and src.info.level == 1 and src.info.mpp == (1.0, 1.0)
    src.close()
    src = open_at(d / "slide.ome.tif", mpp=1.5)  # level 1 (1.0 µm) resampled by 1.5
    assert isinstance(src, ResampledSource) and src.info.level == 1
    assert src.factor == (1.5, 1.5) and src.shape == (128, 171, 3) and src.info.mpp == (1.5, 1.5)
    assert src.info.downsample == (3.0, 3.0)
    src.close()
    src = open_at(d / "slide.svs", mpp=2.0)  # level 1 is 1.996 µm: within 1 %, used as it is
    assert src.info.level == 1 and src.info.mpp == pytest.approx((1.996, 1.996))
    src.close()
    src = open_at(d / "slide.svs", mpp=4.0)
    assert src.info.level == 1 and src.info.mpp == (4.0, 4.0) and src.shape[:2] == (48, 64)
    src.close()
    with pytest.warns(UserWarning, match="upsampling"):
        src = open_at(d / "slide.ome.tif", mpp=0.25)
    assert src.shape[:2] == (768, 1024) and src.info.mpp == (0.25, 0.25)
    src.close()


def test_mpp_without_a_pixel_size_and_bad_levels_are_clean_errors(files) -> None:
    d = files["dir"]
    with pytest.raises(InputError, match="states no pixel size"):
        open_at(d / "plain.tif", mpp=1.0)
    with pytest.raises(InputError, match="states no pixel size"):
        open_at(np.zeros((10, 10, 3), np.uint8), mpp=1.0)
    with pytest.raises(InputError, match=r"level 7 does not exist; the file has 3 pyramid level\(s\), 0..2"):
        open_at(d / "slide.ome.tif", level=7)
    with pytest.raises(InputError, match="single resolution level"):
        open_at(np.zeros((10, 10, 3), np.uint8), level=1)
    with pytest.raises(SettingsError, match="give one of them"):
        open_at(d / "slide.ome.tif", level=1, mpp=1.0)


def test_run_at_mpp_writes_that_pixel_size(files, tmp_path: Path) -> None:
    d = files["dir"]
    out = tmp_path / "mpp.zarr"
    res = tiler.run(d / "slide.ome.tif", IDENTITY, out=out, mpp=1.5, tile=64, overlap=16, chunk=64)
    group = zarr.open_group(out, mode="r")
    assert res.shape == (3, 128, 171) and group["0"].shape == (3, 128, 171)
    scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 1.5, 1.5]
    record = group.attrs["tiler"]["input"]
    assert record["mpp"] == [1.5, 1.5] and record["level"] == 1 and record["downsample"] == [3.0, 3.0]
    # An identity model reproduces the resampled image exactly.
    src = open_at(d / "slide.ome.tif", mpp=1.5)
    expected = src.read(0, 128, 0, 171).transpose(2, 0, 1).astype(np.float32)
    src.close()
    np.testing.assert_allclose(group["0"][:], expected, atol=1e-4)


def test_cli_level_and_mpp(files, tmp_path: Path, capsys, small_unet_checkpoint) -> None:
    d = files["dir"]
    out = tmp_path / "l2.zarr"
    assert main(["run", str(d / "slide.ome.tif"), "--level", "2", "-m", str(small_unet_checkpoint),
                 "--tile", "64", "--overlap", "16", "-o", str(out), "--device", "cpu"]) == 0
    assert "3 x 96 x 128" in capsys.readouterr().out
    scale = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 2.0]
    model = ["-m", str(small_unet_checkpoint), "--device", "cpu"]
    assert main(["run", str(d / "slide.ome.tif"), "--level", "7", "-o", str(tmp_path / "x.zarr"), *model]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "level 7 does not exist" in err and err.count("\n") == 1
    assert main(["run", str(d / "plain.tif"), "--mpp", "1", "-o", str(tmp_path / "x.zarr"), *model]) == 1
    err = capsys.readouterr().err
    assert "states no pixel size" in err and err.count("\n") == 1
    assert not (tmp_path / "x.zarr").exists()


def test_info_lists_levels_with_pixel_sizes(files, capsys) -> None:
    assert main(["info", str(files["dir"] / "slide.svs")]) == 0
    out = capsys.readouterr().out
    assert "format       svs" in out and "pixel size   0.499 x 0.499 µm" in out
    assert "level 1      96 x 128 (downsample 4, 1.996 µm)" in out
    assert main(["info", str(files["dir"] / "plain.tif")]) == 0
    assert "not stated" in capsys.readouterr().out


def test_mpp_and_tissue_on_dask_workers_equal_one_process(files, tmp_path: Path) -> None:
    """Workers open the same level and resampling and skip the same tiles as one process."""
    from distributed import Client, LocalCluster

    from .test_masks import BLUR

    path = files["dir"] / "slide.ome.tif"
    kw = {"tile": 32, "overlap": 8, "chunk": 32, "mpp": 0.8, "tissue": "auto", "pyramid": False}
    one = tiler.run(path, BLUR, out=tmp_path / "one.zarr", **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            many = tiler.run(path, BLUR, out=tmp_path / "many.zarr", client=client, **kw)
    a = zarr.open_group(tmp_path / "one.zarr", mode="r")
    b = zarr.open_group(tmp_path / "many.zarr", mode="r")
    assert a["0"].shape == b["0"].shape == (3, 240, 320) and one.skipped > 0 and many.skipped > 0
    np.testing.assert_array_equal(a["0"][:], b["0"][:])
    assert a.attrs["tiler"]["fingerprint"] == b.attrs["tiler"]["fingerprint"]
