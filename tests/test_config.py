"""tiler/config.py: one set of value-determining keywords for predict, run, predict_dask and run_batch;
unknown keywords named with the valid ones; overlap as a fraction of the tile (MONAI's convention)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch import nn

import tiler
from tiler.cli import batch
from tiler.cli.main import main
from tiler.config import READ_KEYWORDS, VALUE_KEYWORDS, Settings
from tiler.errors import SettingsError

from .conftest import smooth_image


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Tanh()).eval()


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, smooth_image((150, 170, 3), seed=3))
    return path


def _every_keyword() -> dict[str, object]:
    roi = np.zeros((150, 170), np.uint8)
    roi[:80, :90] = 1
    values = {
        # Settings fields (overlap as a fraction: 0.25 x 64 = 16 pixels)
        "tile": 64, "overlap": 0.25, "margin": 2, "window": "cosine", "sigma_scale": 0.2, "batch_size": 3,
        "output": "probs", "dtype": "float32", "fill": 0.5, "chunk": 64, "block_height": 64,
        "block_width": 128, "prefetch": 1, "stitch_threads": 1, "context": 4, "exact": False, "tta": "flip",
        # reading, masks, model
        "level": 0, "mpp": None, "series": None, "plane": None, "channels": (2, 1, 0), "reader": "tifffile",
        "tissue": "none", "roi": roi,
        "device": "cpu", "precision": "fp32", "provider": "auto", "trust_model": False, "compile": False,
        "overrides": {"scale": 1 / 255},
    }
    return values


def test_the_four_entry_points_accept_every_value_keyword_and_agree(image_path, tmp_path):
    values = _every_keyword()
    assert set(values) == VALUE_KEYWORDS  # a new keyword must be exercised here, for all four
    model = _model()
    expected = tiler.predict(image_path, model, **values)
    assert expected.shape == (2, 150, 170) and (expected[:, 140:, 160:] == 0.5).all()  # roi: fill
    lazy = tiler.predict_dask(image_path, model, block=64, **values)
    np.testing.assert_array_equal(lazy.compute(), expected)
    result = tiler.run(image_path, model, out=tmp_path / "run.zarr", pyramid=False, **values)
    np.testing.assert_array_equal(zarr.open_group(result.path, mode="r")["0"][...], expected)
    items = [batch.Item(str(image_path), str(tmp_path / "batch.zarr"))]
    batch.run_batch(items, model=model, pyramid=False, log=lambda line: None, debug=True, **values)
    assert items[0].status == "ok"
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "batch.zarr", mode="r")["0"][...], expected)


@pytest.mark.parametrize("entry", ["predict", "run", "predict_dask", "run_batch"])
def test_unknown_keyword_names_the_valid_ones(entry, tmp_path, plus_one):
    image = np.zeros((40, 40, 3), np.float32)
    call = {
        "predict": lambda **kw: tiler.predict(image, plus_one, **kw),
        "run": lambda **kw: tiler.run(image, plus_one, out=tmp_path / "o.zarr", **kw),
        "predict_dask": lambda **kw: tiler.predict_dask(image, plus_one, **kw),
        "run_batch": lambda **kw: batch.run_batch([batch.Item("x.tif", str(tmp_path / "o.zarr"))],
                                                  model=plus_one, report=tmp_path / "r.json", **kw),
    }[entry]
    with pytest.raises(SettingsError) as info:
        call(tile=32, overlapp=8)
    message = str(info.value)
    assert "\n" not in message and "'overlapp'" in message and "did you mean 'overlap'?" in message
    assert all(name in message for name in VALUE_KEYWORDS)
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "r.json").exists()  # refused first


def test_run_batch_says_where_outputs_come_from(tmp_path, plus_one):
    with pytest.raises(SettingsError, match=r"output from its Item .*assign_outputs"):
        batch.run_batch([batch.Item("x.tif")], model=plus_one, out=tmp_path / "o.zarr")


def test_read_options_are_a_named_group():
    """series, plane, channels (how the input is read) slot in next to level and mpp."""
    assert {"level", "mpp"} <= set(READ_KEYWORDS) <= VALUE_KEYWORDS


def test_overlap_fraction_is_a_fraction_of_the_tile_recorded_in_pixels(tmp_path, plus_one):
    image = smooth_image((90, 110, 3), dtype="float32")
    assert Settings(tile=64, overlap=0.25).overlap == 16
    np.testing.assert_array_equal(tiler.predict(image, plus_one, tile=64, overlap=0.25),
                                  tiler.predict(image, plus_one, tile=64, overlap=16))
    result = tiler.run(image, plus_one, out=tmp_path / "f.zarr", tile=64, overlap=0.25)
    recorded = zarr.open_group(result.path, mode="r").attrs["tiler"]["settings"]
    assert recorded["overlap"] == 16 and isinstance(recorded["overlap"], int)


@pytest.mark.parametrize("overlap", [1.5, "16", True])
def test_an_overlap_that_is_neither_pixels_nor_a_fraction_says_how(overlap, plus_one):
    with pytest.raises(SettingsError, match=r"whole pixels \(e\.g\. 128\) or a fraction of the tile"):
        tiler.predict(np.zeros((40, 40, 3), np.float32), plus_one, tile=32, overlap=overlap)


def test_cli_overlap_fraction(image_path, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    code = main(["run", str(image_path), "-o", str(out), "--tile", "64", "--overlap", "0.25",
                 "--device", "cpu", "--no-pyramid"])
    assert code == 0, capsys.readouterr().err
    settings = json.loads((out / "zarr.json").read_text())["attributes"]["tiler"]["settings"]
    assert settings["overlap"] == 16
    with pytest.raises(SystemExit):
        main(["run", str(image_path), "--overlap", "1.5"])
    assert "fraction of the tile" in capsys.readouterr().err


def test_predict_dask_on_an_array_reads_the_chosen_channels(plus_one):
    image = np.random.default_rng(1).random((90, 70, 4), np.float32)
    expected = tiler.predict(image, plus_one, tile=32, overlap=8, channels=(3, 0))
    lazy = tiler.predict_dask(image, plus_one, tile=32, overlap=8, block=64, chunk=32, channels=(3, 0))
    np.testing.assert_array_equal(lazy.compute(), expected)
    np.testing.assert_allclose(expected, np.moveaxis(image[..., [3, 0]], -1, 0) + 1, rtol=1e-6)


def test_settings_record_only_what_determines_the_values():
    """Run options (batch size, prefetch, stitch threads, block height) change speed, never values:
    they are not recorded, so a resume may change them."""
    from tiler.config import ModelOptions

    base, other = Settings(), Settings(batch_size=3, prefetch=1, stitch_threads=1, block_height=2048)
    assert base.record() == other.record()
    assert Settings(tile=256).record() != base.record()
    options = ModelOptions(device="cpu", compile=True)
    assert options.runner_keywords(batch_size=4)["compile"] == 4 and options.runner_keywords()["compile"] is True
    assert ModelOptions().runner_keywords(batch_size=4)["compile"] is False
    assert set(options.keywords()) == {"device", "precision", "provider", "trust_model", "compile", "overrides"}


@pytest.mark.parametrize(("keywords", "chunk"), [
    ({"output": "logits"}, 512), ({"output": "probs"}, 1024), ({"output": "labels"}, 1024),
    ({"output": "probs", "dtype": "float32"}, 512), ({"output": "logits", "chunk": 256}, 256),
])
def test_the_default_chunk_holds_about_one_mib_per_channel(tmp_path, keywords, chunk):
    """float32 outputs default to 512² chunks, uint8 ones to 1024²; an explicit chunk is kept. The
    written zarr array has that chunk, and the run record says so (a resume compares it)."""
    assert Settings(**keywords).chunk == chunk
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, smooth_image((1100, 600, 3), seed=4))
    out = tmp_path / "out.zarr"
    tiler.run(image, _model(), out=out, tile=128, overlap=16, pyramid=False, device="cpu", **keywords)
    group = zarr.open_group(out, mode="r")
    assert group["0"].chunks[-2:] == (chunk, chunk)
    assert json.dumps(group.attrs.asdict()).count(f'"chunk": {chunk}') >= 1
