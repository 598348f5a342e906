"""``tiler calibrate``: seam error against whole-image inference, cost, the choice, the settings file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

import tiler
from tiler.calibrate import calibrate, choose_crops, default_grid
from tiler.cli.main import main as cli_main
from tiler.config import Settings
from tiler.models.spec import ModelSpec
from tiler.runners.base import FunctionRunner
from tiler.sources import ArraySource

from .conftest import smooth_image
from .test_exact import box_filter, mirrored_pass


def box_model(radius: int = 6) -> FunctionRunner:
    return FunctionRunner(box_filter(radius), ModelSpec(name="box", scale=1.0, context=radius))


def test_measures_against_the_whole_image_and_chooses_the_cheapest_within_tolerance() -> None:
    image = smooth_image((200, 230, 1), seed=2, dtype="float32")
    model = box_model(6)
    grid = [Settings(tile=64, overlap=8, window="gaussian"), Settings(tile=64, overlap=32, window="constant",
            margin=16), Settings(tile=64, exact=True)]
    result = calibrate(image, model, tolerance=1e-4, grid=grid, crops=2, crop_size=160, device="cpu")
    by_label = {m.label: m for m in result.measurements}
    assert list(by_label) == ["tile 64, overlap 8, gaussian", "tile 64, overlap 32, constant, margin 16",
                              "tile 64, exact (crop 6)"]
    gaussian, crop16, exact = result.measurements
    assert gaussian.max_abs > 1e-3  # a seam 4 px from the tile edge sees the zero padding
    assert crop16.max_abs <= 1e-5 and exact.max_abs <= 1e-5  # crops of >= the radius are exact
    assert gaussian.cost == pytest.approx((64 / 56) ** 2) and exact.cost == pytest.approx((64 / 52) ** 2)
    assert result.best is exact  # cheaper than cropping 16 px, and within the tolerance
    assert result.best.settings["exact"] is True and result.best.settings["tile"] == 64
    # the measurement is the real difference: recompute one crop by hand
    y0, y1, x0, x1 = result.crops[0]
    crop = image[y0:y1, x0:x1]
    tiled = tiler.predict(crop, model, tile=64, overlap=8, window="gaussian")
    whole = mirrored_pass(model, crop, 6, 1)
    assert np.abs(tiled - whole).max() <= gaussian.max_abs + 1e-6


def test_crops_are_taken_where_the_image_varies() -> None:
    image = np.full((400, 400, 3), 240, np.uint8)  # glass
    image[200:, 200:] = smooth_image((200, 200, 3), seed=1)  # tissue in one corner
    boxes = choose_crops(ArraySource(image), 100, 3)
    assert len(boxes) == 3 and all(y0 >= 200 and x0 >= 200 for y0, _, x0, _ in boxes)


def test_default_grid_has_three_overlaps_per_window_and_exact() -> None:
    grid = default_grid((512,), ("gaussian", "constant"))
    assert [(s.overlap, s.window, s.margin) for s in grid[:2]] == [(64, "gaussian", 0), (64, "constant", 32)]
    assert len(grid) == 7 and grid[-1].exact


@pytest.mark.slow
def test_command_writes_the_choice_that_run_settings_reads(tmp_path: Path, small_unet_checkpoint: Path) -> None:
    image = smooth_image((240, 260, 3), seed=4)
    path = tmp_path / "scan.png"
    Image.fromarray(image).save(path)
    calib, plot = tmp_path / "calib.json", tmp_path / "calib.png"
    args = ["calibrate", str(path), "--model", str(small_unet_checkpoint), "--tiles", "64", "--windows",
            "gaussian,constant", "--crops", "1", "--crop-size", "192", "--tolerance", "10", "--device", "cpu",
            "--json", str(calib), "--plot", str(plot)]
    assert cli_main(args) == 0
    data = json.loads(calib.read_text())
    assert len(data["measurements"]) == 6 and data["skipped"]  # exact at tile 64 is too small for a UNet
    chosen = data["measurements"][data["chosen"]]
    assert chosen["settings"] == data["settings"]
    assert chosen["cost"] == min(m["cost"] for m in data["measurements"] if m["max_abs"] <= 10)
    with Image.open(plot) as png:
        assert png.size == (720, 480)
    assert cli_main(args) == 1  # the files exist: refused without --overwrite
    out = tmp_path / "scan.zarr"
    assert cli_main(["run", str(path), "--model", str(small_unet_checkpoint), "--settings", str(calib),
                     "--device", "cpu", "--no-pyramid", "-o", str(out)]) == 0
    recorded = zarr.open_group(out, mode="r").attrs["tiler"]["settings"]
    assert {k: recorded[k] for k in ("tile", "overlap", "margin", "window")} == {
        k: data["settings"][k] for k in ("tile", "overlap", "margin", "window")}


def test_run_takes_a_settings_file_and_keywords_win(tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"tile": 32, "overlap": 16, "window": "cosine"}))
    image = np.zeros((50, 40, 1), np.float32)
    model = FunctionRunner(lambda x: x + 1, ModelSpec(name="plus", scale=1.0))
    result = tiler.run(image, model, out=tmp_path / "a.zarr", settings=settings, overlap=8, pyramid=False)
    recorded = zarr.open_group(result.path, mode="r").attrs["tiler"]["settings"]
    assert (recorded["tile"], recorded["overlap"], recorded["window"]) == (32, 8, "cosine")
    settings.write_text(json.dumps({"tile": 32, "overlapp": 16}))
    with pytest.raises(tiler.SettingsError, match="s.json: unknown setting.*overlapp"):
        tiler.run(image, model, out=tmp_path / "b.zarr", settings=settings)
    settings.write_text(json.dumps({"tiler_calibration": 1, "settings": None}))
    with pytest.raises(tiler.SettingsError, match="no setting within its tolerance"):
        tiler.run(image, model, out=tmp_path / "b.zarr", settings=settings)
