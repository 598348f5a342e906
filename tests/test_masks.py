"""Tissue and ROI masks: detection, the tile lattice mapping, and exact results on foreground."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import InputError, SettingsError
from tiler.masks.roi import load_roi
from tiler.masks.skip import build_skip, tile_skip
from tiler.masks.tissue import auto_tissue, otsu_threshold, thumbnail, tissue_mask
from tiler.plan.lattice import TilePlan
from tiler.runners.base import FunctionRunner
from tiler.sources import ArraySource, open_at

from ._wsi_files import slide_image, write_ome_pyramid

ZERO_COST = FunctionRunner(lambda x: x[:, :1] * 0.5 - 60, normalise=False)


def _blur(x: np.ndarray) -> np.ndarray:
    """A cheap model with a receptive field: its output near tile borders depends on the tile."""
    from scipy import ndimage

    b = ndimage.uniform_filter(x.mean(axis=1), size=(1, 9, 9), mode="constant") / 50 - 3
    return np.stack([b, np.sin(x[:, 0] / 40) - b / 2, -b], axis=1)


BLUR = FunctionRunner(_blur, normalise=False)


def _truth(img: np.ndarray) -> np.ndarray:
    """Tissue pixels of a generated slide: the coloured ones (glass and dust are grey)."""
    return (img.max(axis=2).astype(int) - img.min(axis=2)) > 20


def _foreground(mask: np.ndarray, scale: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """The mask stretched to image pixels: pixel (y, x) lies in mask pixel (y // sy, x // sx)."""
    ys = np.minimum((np.arange(shape[0]) / scale[0]).astype(int), mask.shape[0] - 1)
    xs = np.minimum((np.arange(shape[1]) / scale[1]).astype(int), mask.shape[1] - 1)
    return mask[ys][:, xs]


def test_otsu_separates_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.02, 500), rng.normal(0.6, 0.05, 300)])
    assert 0.2 < otsu_threshold(values) < 0.45
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def test_thumbnail_is_the_block_mean_with_partial_edges() -> None:
    img = np.random.default_rng(0).integers(0, 255, (37, 50, 3)).astype(np.uint8)
    thumb = thumbnail(ArraySource(img), 8)
    assert thumb.shape == (5, 7, 3)
    for i in range(5):
        for j in range(7):
            block = img[i * 8 : (i + 1) * 8, j * 8 : (j + 1) * 8].astype(np.float64)
            np.testing.assert_allclose(thumb[i, j], block.mean(axis=(0, 1)), rtol=1e-6)


def test_tissue_mask_finds_tissue_fills_holes_drops_dust() -> None:
    img = slide_image((1024, 1024), seed=2)
    thumb = thumbnail(ArraySource(img), 8)
    truth = _truth(img).reshape(128, 8, 128, 8).mean(axis=(1, 3)) > 0.5
    mask = tissue_mask(thumb, dilate=0)
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95
    # a hole of 3 x 3 mask pixels inside tissue is filled; a dust speck on glass is dropped
    ty, tx = np.argwhere(truth[10:-10, 10:-10] & np.roll(truth, 6, (0, 1))[10:-10, 10:-10])[0] + 10
    holed = thumb.copy()
    holed[ty : ty + 3, tx : tx + 3] = 240
    gy, gx = np.argwhere(~truth[5:-5, 5:-5] & ~np.roll(truth, 3, (0, 1))[5:-5, 5:-5])[0] + 5
    holed[gy, gx] = (120, 30, 90)
    mask = tissue_mask(holed, dilate=0)
    assert mask[ty : ty + 3, tx : tx + 3].all() and not mask[gy, gx]
    # dilation keeps borders: the dilated mask contains the undilated one plus a rim
    assert (tissue_mask(thumb) >= tissue_mask(thumb, dilate=0)).all()
    # an empty slide finds nothing
    glass = np.full((64, 64, 3), 238, np.float32) + np.random.default_rng(0).normal(0, 2, (64, 64, 3))
    assert not tissue_mask(glass).any()


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "margin", "mask_shape"),
    [((300, 410), 64, 16, 0, (19, 26)), ((300, 410), 64, 32, 8, (7, 40)), ((97, 61), 32, 8, 4, (97, 61)),
     ((500, 500), 128, 64, 0, (3, 3))],
)
def test_tile_skip_matches_brute_force(shape, tile, overlap, margin, mask_shape) -> None:
    rng = np.random.default_rng(sum(shape) + tile)
    mask = rng.random(mask_shape) < 0.08
    plan = TilePlan.create(shape, tile=tile, overlap=overlap, margin=margin)
    scale = (shape[0] / mask_shape[0], shape[1] / mask_shape[1])
    fg = _foreground(mask, scale, shape)
    skip = tile_skip(plan, mask, scale)
    assert skip.shape == (plan.rows.count, plan.cols.count)
    for i in range(plan.rows.count):
        for j in range(plan.cols.count):
            y0, y1, x0, x1 = plan.tile_box(i, j)
            weighted = fg[max(0, y0 + margin) : max(0, y1 - margin), max(0, x0 + margin) : max(0, x1 - margin)]
            assert skip[i, j] == (not weighted.any()), (i, j)


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("masks") / "slide.ome.tif"
    img = slide_image((768, 1024), seed=5)
    write_ome_pyramid(path, img, levels=3, mpp=0.5, tile=128)
    return path, img


def test_auto_tissue_uses_a_low_level(slide) -> None:
    path, img = slide
    src = open_at(path)
    mask = auto_tissue(path, src)
    src.close()
    assert mask.kind == "tissue" and max(mask.array.shape) >= 256
    # 0.5 µm pixels: 8 µm wanted, but the mask keeps >= 256 pixels: downsample 4 = level 2 as it is
    assert mask.scale == (4.0, 4.0) and mask.array.shape == (192, 256)
    fg = _foreground(mask.array, mask.scale, img.shape[:2])
    assert fg[_truth(img)].mean() > 0.99  # tissue is inside the mask


@pytest.mark.parametrize("window", ["gaussian", "linear"])
def test_foreground_is_identical_to_a_full_run(slide, tmp_path: Path, window: str) -> None:
    """A foreground pixel's tiles are all computed, so its output is bit-identical."""
    path, img = slide
    kw = {"tile": 64, "overlap": 16, "chunk": 128, "device": "cpu", "window": window, "margin": 4}
    full = tiler.run(path, BLUR, out=tmp_path / "full.zarr", **kw)
    masked = tiler.run(path, BLUR, out=tmp_path / "t.zarr", tissue="auto", fill=-9.0, **kw)
    assert full.skipped == 0 and masked.skipped > 0 and masked.tiles + masked.skipped == full.tiles
    a = zarr.open_group(tmp_path / "full.zarr", mode="r")["0"][:]
    b = zarr.open_group(tmp_path / "t.zarr", mode="r")["0"][:]
    src = open_at(path)
    mask = auto_tissue(path, src)
    plan = TilePlan.create(img.shape[:2], tile=64, overlap=16, margin=4, context=8)  # the run's lattice
    skip, _ = build_skip(plan, path, src, tissue="auto")
    src.close()
    assert skip.sum() == masked.skipped
    fg = _foreground(mask.array, mask.scale, img.shape[:2])
    np.testing.assert_array_equal(b[:, fg], a[:, fg])
    # Pixels far from any computed tile hold the fill value.
    assert (b == -9.0).any() and not (a == -9.0).any()
    assert "skipped" in masked.summary()
    meta = zarr.open_group(tmp_path / "t.zarr", mode="r").attrs["tiler"]
    assert meta["input"]["mask"]["tissue"]["foreground"] > 0.3 and meta["settings"]["fill"] == -9.0


def test_labels_outside_tissue_are_background(slide, tmp_path: Path) -> None:
    path, _ = slide
    kw = {"tile": 64, "overlap": 16, "device": "cpu", "output": "labels"}
    full = tiler.predict(path, BLUR, tile=64, overlap=16, device="cpu")
    out = tiler.predict(path, BLUR, tile=64, overlap=16, device="cpu", tissue="auto", fill=-5.0)
    res = tiler.run(path, BLUR, out=tmp_path / "l.zarr", tissue="auto", **kw)
    labels = zarr.open_group(tmp_path / "l.zarr", mode="r")["0"][:]
    uncovered = out[0] == -5.0
    assert uncovered.any() and res.skipped > 0
    assert (labels[uncovered] == 0).all()
    # everywhere computed tiles reach, labels are the argmax of the masked run's logits
    np.testing.assert_array_equal(labels[~uncovered], out.argmax(0)[~uncovered])
    assert (labels[~uncovered] != 0).any() and (full.argmax(0) != 0).any()


def test_sixty_percent_background_computes_at_most_half_the_tiles(tmp_path: Path) -> None:
    img = slide_image((2048, 2048), background=0.6, seed=0)
    kw = {"tile": 64, "overlap": 16, "chunk": 512, "device": "cpu"}
    full = tiler.run(img, ZERO_COST, out=tmp_path / "f.zarr", **kw)
    masked = tiler.run(img, ZERO_COST, out=tmp_path / "m.zarr", tissue="auto", **kw)
    assert masked.tiles <= 0.5 * full.tiles, (masked.tiles, full.tiles)
    a = zarr.open_group(tmp_path / "f.zarr", mode="r")["0"]
    b = zarr.open_group(tmp_path / "m.zarr", mode="r")["0"]
    tissue = _truth(img)
    np.testing.assert_array_equal(b[0][tissue], a[0][tissue])


def test_roi_of_another_resolution(slide, tmp_path: Path) -> None:
    path, img = slide
    roi = np.zeros((96, 128), np.uint8)  # 1/8 of the slide
    roi[20:50, 30:90] = 255
    roi_path = tmp_path / "roi.png"
    roi_path.write_bytes(imagecodecs.png_encode(roi))
    mask = load_roi(roi_path, img.shape[:2])
    assert mask.scale == (8.0, 8.0) and mask.array.sum() == 30 * 60
    kw = {"tile": 64, "overlap": 16, "device": "cpu"}
    full = tiler.predict(path, ZERO_COST, **kw)
    out = tiler.predict(path, ZERO_COST, roi=roi_path, fill=7.0, **kw)
    inside = np.zeros(img.shape[:2], bool)
    inside[160:400, 240:720] = True
    np.testing.assert_array_equal(out[:, inside], full[:, inside])
    assert (out[:, :100] == 7.0).all()
    # tissue and roi together skip the union of what each skips
    src = open_at(path)
    plan = TilePlan.create(img.shape[:2], tile=64, overlap=16)
    both, masks = build_skip(plan, path, src, tissue="auto", roi=roi_path)
    only_roi, _ = build_skip(plan, path, src, roi=roi_path)
    src.close()
    assert [m.kind for m in masks] == ["tissue", "roi"] and (both >= only_roi).all()


def test_mask_errors(slide, tmp_path: Path, capsys, small_unet_checkpoint) -> None:
    path, _ = slide
    empty = tmp_path / "empty.png"
    empty.write_bytes(imagecodecs.png_encode(np.zeros((10, 10), np.uint8)))
    with pytest.raises(InputError, match="ROI mask is empty"):
        load_roi(empty, (100, 100))
    src = open_at(path)
    with pytest.raises(SettingsError, match="--tissue 'otsu' is not known"):
        build_skip(TilePlan.create((768, 1024), tile=64, overlap=16), path, src, tissue="otsu")
    src.close()
    with pytest.warns(UserWarning, match="aspect ratio"):
        load_roi(np.ones((10, 40), np.uint8), (100, 100))
    assert main(["run", str(path), "--roi", str(empty), "-o", str(tmp_path / "x.zarr"),
                 "-m", str(small_unet_checkpoint), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ROI mask is empty" in err and err.count("\n") == 1


def test_cli_tissue_reports_skipped_tiles(slide, tmp_path: Path, capsys, small_unet_checkpoint) -> None:
    path, _ = slide
    out = tmp_path / "cli.zarr"
    assert main(["run", str(path), "--tissue", "auto", "--mpp", "2", "-m", str(small_unet_checkpoint),
                 "--tile", "64", "--overlap", "16", "--kind", "labels", "-o", str(out),
                 "--device", "cpu"]) == 0
    summary = capsys.readouterr().out
    assert "192 x 256 uint8" in summary and "skipped" in summary


def test_fill_must_fit_the_stored_dtype(tmp_path: Path) -> None:
    img = slide_image((64, 64), seed=0)
    with pytest.raises(SettingsError, match="--fill -1 does not fit the uint8 labels"):
        tiler.run(img, ZERO_COST, out=tmp_path / "f.zarr", tile=32, overlap=8, output="labels", fill=-1)


def test_grey_images_take_the_side_away_from_the_border() -> None:
    """Fluorescence (bright on dark) and brightfield grey (dark on bright) both find the object."""
    yy, xx = np.mgrid[0:200, 0:200]
    blob = (yy - 90) ** 2 + (xx - 110) ** 2 < 50**2
    noise = np.random.default_rng(0).normal(0, 50, (200, 200))
    for fg, bg in [(3000, 200), (60, 230)]:
        img = np.clip(np.where(blob, fg, bg) + noise, 0, 65535).astype(np.uint16)[..., None]
        mask = tissue_mask(thumbnail(ArraySource(img), 4), dilate=0)
        truth = blob.reshape(50, 4, 50, 4).mean(axis=(1, 3)) > 0.5
        assert (mask & truth).sum() / (mask | truth).sum() > 0.9


def test_skip_table_pickles_and_matches_the_array() -> None:
    import pickle

    from tiler.masks.skip import skip_predicate

    skip = np.random.default_rng(0).random((13, 29)) < 0.5
    p = pickle.loads(pickle.dumps(skip_predicate(skip)))
    assert all(p(i, j) == skip[i, j] for i in range(13) for j in range(29))


def test_run_eval_and_stats_read_one_roi_mask_the_same_way() -> None:
    """One reader (tiler/masks/roi.py): a mask larger than the image, inside only in its second
    channel, is the same region for run's skip table, eval's regions and stats' counts."""
    from tiler.masks.roi import RoiMask
    from tiler.results.stats import channel_stats

    rng = np.random.default_rng(3)
    mask = np.zeros((80, 120, 3), np.uint8)  # twice the image's size
    mask[10:50, 20:100, 1] = rng.integers(1, 255, (40, 80))
    image = rng.random((40, 60, 3)).astype(np.float32)
    expected = mask[::2, ::2].any(axis=2)  # nearest: image pixel (y, x) <- mask pixel (2y, 2x)
    with RoiMask(mask, (40, 60)) as roi:
        np.testing.assert_array_equal(roi.region(0, 40, 0, 60), expected)
    low = load_roi(mask, (40, 60))  # run: the skip table's mask, at the mask's resolution
    np.testing.assert_array_equal(low.array, mask.any(axis=2))
    assert low.scale == (0.5, 0.5)
    assert channel_stats(image, roi=mask, block=16).count == expected.sum()
