"""The built-in default model: its checkpoint, its metadata and what it does on a generated slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import tiler
from tiler.models.files import DEFAULT_WEIGHTS
from tiler.models.spec import ModelSpec
from tiler.models.unet import UNet
from tiler.runners.factory import load_runner
from tools.demo import make_slide
from tools.synthetic import SyntheticSlide
from tools.train import CLASS_NAMES, label_rule


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)


def test_weights_file_is_small_and_loads_without_pickled_code(checkpoint: dict) -> None:
    assert DEFAULT_WEIGHTS.stat().st_size < 5_000_000
    assert set(checkpoint) >= {"state_dict", "config", "tiler"}
    net = UNet(**checkpoint["config"])
    net.load_state_dict(checkpoint["state_dict"])  # strict: every key, every shape
    assert checkpoint["config"] == {"in_channels": 3, "num_classes": 3, "base_channels": 8, "bilinear": True,
                                    "align_corners": False}  # shift-equivariant: it tiles exactly
    assert checkpoint["tiler"]["context"] == net.context_radius() == 122


def test_spec_round_trips_and_says_what_the_model_is(checkpoint: dict) -> None:
    spec = ModelSpec.from_dict(checkpoint["tiler"])
    assert spec.to_dict() == checkpoint["tiler"]
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.name == "tiler-tissue-unet" and spec.class_names == CLASS_NAMES
    assert (spec.in_channels, spec.out_channels, spec.multiple, spec.activation) == (3, 3, 16, "softmax")
    assert len(spec.mean) == len(spec.std) == 3 and all(0 < s < 1 for s in spec.std)
    runner = load_runner(None, device="cpu")
    assert runner.spec == spec


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small generated slide no training crop came from: (pixels, rule labels, predicted labels),
    plus the generator's truth of where tissue is."""
    shape = (768, 1024)
    path = make_slide(tmp_path_factory.mktemp("heldout") / "s.tif", shape, levels=1, seed=11)
    pred = tiler.predict(path, None, device="cpu").argmax(axis=0)
    rgb = tifffile.imread(path)
    truth = SyntheticSlide(shape, seed=11).tissue(0, shape[0], 0, shape[1])
    return label_rule(rgb), pred, truth


@pytest.mark.slow
def test_default_model_finds_glass_and_tissue(heldout) -> None:
    _, pred, truth = heldout
    assert 0.3 < truth.mean() < 0.6  # the slide has both
    assert (pred[~truth] == 0).mean() >= 0.98  # true glass predicted background
    assert (pred[truth] != 0).mean() >= 0.95  # true tissue predicted tissue or nuclei


def test_default_model_reproduces_the_rule(heldout) -> None:
    rule, pred, _ = heldout
    assert (pred == rule).mean() >= 0.93  # measured 0.982
    for c in (0, 1, 2):
        p, r = pred == c, rule == c
        dice = 2 * (p & r).sum() / (p.sum() + r.sum())
        assert dice >= 0.8, f"{CLASS_NAMES[c]}: Dice {dice:.3f}"


def test_default_model_through_the_cli(tmp_path: Path) -> None:
    from tiler.cli.main import main

    image = np.full((100, 120, 3), (242, 240, 244), np.uint8)  # bare glass, smaller than a tile
    tifffile.imwrite(tmp_path / "glass.tif", image, photometric="rgb")
    assert main(["run", str(tmp_path / "glass.tif"), "--kind", "labels", "--device", "cpu"]) == 0
    import zarr

    labels = zarr.open_group(tmp_path / "glass.zarr", mode="r")["0"][:]
    assert labels.shape == (100, 120) and (labels == 0).mean() > 0.99
