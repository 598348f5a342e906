"""The synthetic slide generator and ``python -m tools.demo`` (small slides, so it stays fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tiler.sources import open_source
from tools.demo import main, make_slide
from tools.synthetic import SyntheticSlide
from tools.train import label_rule

SHAPE = (1024, 1536)


@pytest.mark.parametrize("svs", [False, True])
def test_make_slide_structure(tmp_path: Path, svs: bool) -> None:
    path = make_slide(tmp_path / "s.tif", SHAPE, tile=256, levels=3, mpp=0.25, svs=svs, seed=3)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_svs is svs and tif.is_ome is (not svs)
        series = tif.series[0]
        assert [lvl.shape for lvl in series.levels] == [(1024, 1536, 3), (512, 768, 3), (256, 384, 3)]
        for lvl in series.levels:
            page = lvl.keyframe
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
            assert page.compression == tifffile.COMPRESSION.JPEG and page.dtype == np.uint8
        if svs:
            assert "MPP = 0.25" in tif.pages[0].description
            assert not tif.pages[1].is_tiled  # the thumbnail, as Aperio files have it
        else:
            assert tif.pages[0].subifds is not None and len(tif.pages[0].subifds) == 2
            assert 'PhysicalSizeX="0.25"' in tif.ome_metadata
    source = open_source(path)
    assert source.info.mpp == pytest.approx((0.25, 0.25))
    assert source.info.format == ("svs" if svs else "ome-tiff")
    assert source.info.levels == ((1024, 1536), (512, 768), (256, 384))
    level2 = open_source(path, level=2).read(0, 256, 0, 384)
    assert level2.shape == (256, 384, 3) and level2.std() > 5  # real content, not blank


@pytest.mark.parametrize("compression", ["zlib", None])
def test_lossless_slide_holds_the_rendered_pixels(tmp_path: Path, compression: str | None) -> None:
    path = make_slide(tmp_path / "s.tif", (600, 700), tile=256, levels=2, compression=compression, seed=5)
    slide = SyntheticSlide((600, 700), seed=5)
    with tifffile.TiffFile(path) as tif:
        level0, level1 = (lvl.asarray() for lvl in tif.series[0].levels)
    # Tiles are rendered one by one; an edge tile (rows 512:600, columns 256:512) and level 1.
    np.testing.assert_array_equal(level0[512:600, 256:512], slide.rgb(512, 600, 256, 512))
    np.testing.assert_array_equal(level1[256:300, 256:350], slide.rgb(256, 300, 256, 350, level=1))


def test_slide_is_deterministic_and_seed_dependent() -> None:
    a, b, c = (SyntheticSlide((2048, 2048), seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.rgb(512, 1024, 512, 1024), b.rgb(512, 1024, 512, 1024))
    assert not np.array_equal(a.tissue(0, 2048, 0, 2048), c.tissue(0, 2048, 0, 2048))


@pytest.mark.parametrize("background", [0.3, 0.6])
def test_background_fraction_and_glass(background: float) -> None:
    slide = SyntheticSlide((4096, 4096), background=background, seed=4)
    tissue = slide.tissue(0, 1024, 0, 1024, level=2)  # the whole slide at 1/4
    assert abs((1 - tissue.mean()) - background) < 0.05
    rgb = slide.rgb(0, 1024, 0, 1024, level=2)
    glass = rgb[~tissue]
    assert glass.mean() > 235 and glass.std() < 4  # near-white, slightly noisy
    assert rgb[tissue].mean() < 200  # stained


def test_levels_are_consistent_with_level_zero() -> None:
    slide = SyntheticSlide((2048, 2048), seed=6)
    t0 = slide.tissue(0, 2048, 0, 2048).reshape(1024, 2, 1024, 2).mean(axis=(1, 3))
    t1 = slide.tissue(0, 1024, 0, 1024, level=1)
    assert ((t0 > 0.5) == t1).mean() > 0.99
    rgb0 = slide.rgb(0, 1024, 0, 1024).astype(np.float32).reshape(512, 2, 512, 2, 3).mean(axis=(1, 3))
    rgb1 = slide.rgb(0, 512, 0, 512, level=1).astype(np.float32)
    assert np.abs(rgb0 - rgb1).mean() < 6  # the same picture, rendered at half size


def test_label_rule_on_known_colours() -> None:
    glass = np.full((64, 64, 3), (242, 240, 244), np.uint8)
    assert (label_rule(glass) == 0).all()
    img = glass.copy()
    img[8:56, 8:56] = (200, 160, 120)  # pale DAB-brown tissue
    yy, xx = np.mgrid[:64, :64]
    img[(yy - 32) ** 2 + (xx - 32) ** 2 < 36] = (90, 100, 170)  # a hematoxylin-blue nucleus, r = 6
    labels = label_rule(img)
    assert labels[32, 32] == 2 and labels[12, 12] == 1 and labels[2, 2] == 0
    assert 80 < (labels == 2).sum() < 140


@pytest.mark.slow
def test_demo_main_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--out-dir", str(tmp_path), "--size", "640", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"made {tmp_path / 'slide.tif'}" in out and "wrote" in out
    group = zarr.open_group(tmp_path / "slide.zarr", mode="r")
    assert group.attrs["tiler"]["complete"] is True
    assert group["0"].shape == (3, 640, 640) and group["0"].dtype == np.uint8
    with tifffile.TiffFile(tmp_path / "slide.tif") as tif:
        assert len(tif.series[0].levels) == 3
    # A second run reuses the slide and replaces the output.
    assert main(["--out-dir", str(tmp_path), "--size", "640", "--device", "cpu"]) == 0
    assert "using the existing" in capsys.readouterr().out


def test_runtime_does_not_import_scikit_image() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tiler, tiler.cli.main, tiler.models.files, tiler.sources; "
        "assert 'skimage' not in sys.modules, 'skimage imported at run time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
