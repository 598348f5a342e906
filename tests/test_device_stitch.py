"""Blending on the model's device (TorchStitcher), run on the CPU device: equal to the NumPy stitcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiler
from tiler.models.spec import ModelSpec
from tiler.runners.torch import TorchRunner


class Mix(torch.nn.Module):
    """A 1x1 convolution with fixed weights, plus a copy of the input's first channel (a view-free output)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FirstTwo(torch.nn.Module):
    """Outputs that are a view of the input batch: the tile buffer must outlive the blending."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2]


def runner(module: torch.nn.Module, on_device: bool) -> TorchRunner:
    return TorchRunner(module, ModelSpec(name="m", scale=1 / 255), device="cpu", blend_on_device=on_device)


@pytest.mark.parametrize("module", [Mix(), FirstTwo()], ids=["conv", "view"])
@pytest.mark.parametrize("window", ["gaussian", "constant"])
def test_blending_on_the_device_equals_the_numpy_stitcher(module, window) -> None:
    img = np.random.default_rng(1).integers(0, 256, (301, 427, 3)).astype(np.uint8)
    kw = dict(tile=96, overlap=32, window=window, batch_size=5, chunk=64)
    host = tiler.predict(img, runner(module, False), **kw)
    dev = tiler.predict(img, runner(module, True), **kw)
    assert dev.shape == host.shape
    np.testing.assert_allclose(dev, host, rtol=0, atol=1e-6)


def test_blending_on_the_device_with_skipped_tiles_and_a_zarr_output(tmp_path) -> None:
    """Tiles skipped by an ROI (Σw accumulated, uncovered pixels filled) and uint8 probs on disk."""
    img = np.random.default_rng(2).integers(0, 256, (260, 300, 3)).astype(np.uint8)
    roi = np.zeros((260, 300), np.uint8)
    roi[20:120, 30:150] = 1
    kw = dict(tile=64, overlap=16, chunk=64, output="probs", roi=roi, pyramid=False)
    tiler.run(img, runner(Mix(), False), out=tmp_path / "host.zarr", **kw)
    tiler.run(img, runner(Mix(), True), out=tmp_path / "dev.zarr", **kw)
    import zarr

    a = zarr.open_group(str(tmp_path / "host.zarr"), mode="r")["0"][...]
    b = zarr.open_group(str(tmp_path / "dev.zarr"), mode="r")["0"][...]
    assert (a != b).mean() < 1e-4  # uint8 rounding of values equal to 1e-6 may flip a rare pixel
    assert np.abs(a.astype(int) - b).max() <= 1
