"""Test-time augmentation: the transforms, the average, on the device and in NumPy, tiled vs whole."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import tiler
from tiler.cli.main import main as cli_main
from tiler.models.spec import ModelSpec
from tiler.models.unet import UNet
from tiler.runners import tta
from tiler.runners.base import FunctionRunner
from tiler.runners.torch import TorchRunner

from .test_exact import mirrored_pass, slide_like, unet_runner


def test_modes_are_distinct_dihedral_transforms_undone_by_merge() -> None:
    x = np.random.default_rng(0).random((3, 2, 5, 5)).astype(np.float32)
    for mode in tta.TTA_MODES:
        big = tta.augment(x, mode)
        k = tta.count(mode)
        assert big.shape == (k * 3, 2, 5, 5)
        views = {big[i * 3 : (i + 1) * 3].tobytes() for i in range(k)}
        assert len(views) == k  # no transform repeated
        np.testing.assert_allclose(tta.merge(big, mode, 3), x, rtol=1e-6)
    assert [tta.count(m) for m in tta.TTA_MODES] == [1, 2, 4, 8]


def test_averages_logits_of_each_transform_undone() -> None:
    """A model that weighs pixels by a ramp across the tile: flip TTA averages the ramp with its
    mirror image, d4 with all eight of its orientations."""
    t = 16
    ramp = np.arange(t, dtype=np.float32)[None, None, None, :] * np.ones((1, 1, t, 1), np.float32)
    model = FunctionRunner(lambda x: x * ramp, ModelSpec(name="ramp", scale=1.0))
    x = np.random.default_rng(1).random((2, 1, t, t)).astype(np.float32)
    np.testing.assert_allclose(model(x, tta="flip"), x * (ramp + ramp[..., ::-1]) / 2, atol=1e-6)
    r = ramp[0, 0]
    orientations = [np.rot90(f, k) for f in (r, r[:, ::-1]) for k in range(4)]
    np.testing.assert_allclose(model(x, tta="d4"), x * np.mean(orientations, axis=0), atol=1e-5)


@pytest.mark.parametrize("mode", ["flip", "flips", "d4"])
def test_on_the_device_equals_the_numpy_path(mode: str) -> None:
    """TorchRunner augments on its device, in one batch; the generic runner augments the NumPy batch:
    the same values."""
    torch.manual_seed(0)
    net = UNet(3, 2, base_channels=4, align_corners=False).eval()
    spec = ModelSpec(name="u", in_channels=3, scale=1 / 255, multiple=16)
    device = TorchRunner(net, spec, device="cpu")

    def numpy_model(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    generic = FunctionRunner(numpy_model, spec)
    x = np.random.default_rng(2).integers(0, 256, (3, 3, 32, 32)).astype(np.uint8)
    calls = []
    generic.fn = lambda a: calls.append(len(a)) or numpy_model(a)
    np.testing.assert_allclose(device(x, tta=mode), generic(x, tta=mode), rtol=0, atol=1e-5)
    assert calls == [3 * tta.count(mode)]  # one model call for every transform of the batch


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["flip"])
def test_tta_tiled_equals_tta_whole_image_under_exact(mode: str) -> None:
    runner = unet_runner(align_corners=False)
    image = slide_like((200, 200), seed=4)  # square: quarter turns of the padded image keep its shape
    out = tiler.predict(image, runner, tile=352, exact=True, tta=mode, batch_size=4, device="cpu")
    c = math.ceil(runner.spec.context / 16) * 16
    whole = mirrored_pass(runner, image, c, 16, tta=mode)
    assert np.abs(out - whole).max() <= 1e-3
    plain = mirrored_pass(runner, image, c, 16)
    assert np.abs(whole - plain).max() > 1e-2  # TTA really changed the values


def test_recorded_in_the_output_and_given_on_the_command_line(tmp_path: Path) -> None:
    image = (np.random.default_rng(3).random((64, 80, 3)) * 255).astype(np.uint8)
    path = tmp_path / "scan.png"
    import imageio.v3 as iio

    iio.imwrite(path, image)
    out = tmp_path / "scan.zarr"
    assert cli_main(["run", str(path), "--tta", "flips", "--tile", "64", "--overlap", "32", "--device", "cpu",
                     "--no-pyramid", "-o", str(out)]) == 0
    attrs = zarr.open_group(out, mode="r").attrs["tiler"]
    assert attrs["settings"]["tta"] == "flips"
    with pytest.raises(SystemExit):
        cli_main(["run", str(path), "--tta", "rot"])
    with pytest.raises(tiler.SettingsError, match="unknown test-time augmentation 'rot'"):
        tiler.predict(image, None, tta="rot", device="cpu")
