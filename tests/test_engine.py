"""End-to-end properties of the engine: exactness, seamlessness, independence of the partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn
from torch.nn import functional as F

import tiler
from tiler.models.spec import ModelSpec
from tiler.plan import windows
from tiler.runners.torch import TorchRunner

from .conftest import smooth_image


@pytest.mark.parametrize("window", windows.list_windows())
@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "margin"),
    [
        ((97, 131, 3), 32, 8, 0),  # odd sizes, several tiles
        ((97, 131, 1), 32, 12, 6),  # one channel, margin
        ((20, 9, 3), 64, 16, 0),  # image smaller than one tile
        ((5, 300), 48, 16, 8),  # (H, W) input, thin
    ],
)
def test_plus_one_model_gives_input_plus_one_exactly(plus_one, shape, tile, overlap, margin, window) -> None:
    image = smooth_image(shape, dtype="float32")
    out = tiler.predict(image, plus_one, tile=tile, overlap=overlap, margin=margin, window=window)
    expected = (image[..., None] if image.ndim == 2 else image).transpose(2, 0, 1) + 1
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


class LocalConvNet(nn.Module):
    """Three 3x3 convolutions with zero padding: receptive-field radius 3, no pooling."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
            nn.Conv2d(8, 2, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize("window", windows.list_windows())
def test_tiled_equals_whole_image_for_a_local_model(window: str) -> None:
    """With margin >= receptive-field radius, tiling is invisible (to float32 rounding)."""
    net = LocalConvNet().eval()
    runner = TorchRunner(net, ModelSpec(in_channels=3), device="cpu")
    image = smooth_image((150, 211, 3), seed=3)
    out = tiler.predict(image, runner, tile=48, overlap=16, margin=4, window=window, batch_size=5)
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.inference_mode():
        whole = net(F.pad(x, (8, 8, 8, 8), mode="reflect"))[0, :, 8:-8, 8:-8].numpy()
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5)


def test_without_margin_tiling_differs_from_whole_image() -> None:
    """Control for the test above: without a margin the seams are visible, so it can fail."""
    net = LocalConvNet().eval()
    runner = TorchRunner(net, ModelSpec(in_channels=3), device="cpu")
    image = smooth_image((150, 211, 3), seed=3)
    out = tiler.predict(image, runner, tile=48, overlap=16, margin=0, window="constant")
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.inference_mode():
        whole = net(F.pad(x, (8, 8, 8, 8), mode="reflect"))[0, :, 8:-8, 8:-8].numpy()
    assert np.abs(out - whole).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("output", ["logits", "probs", "labels"])
def test_result_is_independent_of_the_partition(tmp_path: Path, small_unet_checkpoint: Path, output: str) -> None:
    """Blocks of any size give the same outputs: floats within 1e-6, integers identical.

    (Exact bit equality would need the model to be independent of batch composition, which
    oneDNN convolutions are not to the last bit.)"""
    image = smooth_image((200, 270, 3), seed=5)
    common = dict(tile=64, overlap=16, chunk=32, batch_size=3, output=output, device="cpu")
    ref = tiler.run(image, small_unet_checkpoint, out=tmp_path / "a.zarr", block_width=None, **common)
    alt = tiler.run(image, small_unet_checkpoint, out=tmp_path / "b.zarr", block_width=64,
                    block_height=96, **common)
    a = zarr.open_group(ref.path, mode="r")["0"][:]
    b = zarr.open_group(alt.path, mode="r")["0"][:]
    assert alt.tiles > ref.tiles  # the second partition really had block borders
    if output == "logits":
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(a, b)


def test_streamed_output_matches_in_memory_prediction(tmp_path: Path, small_unet_checkpoint: Path) -> None:
    image = smooth_image((200, 260, 3), seed=6)
    logits = tiler.predict(image, small_unet_checkpoint, tile=64, overlap=16, device="cpu")
    res = tiler.run(image, small_unet_checkpoint, out=tmp_path / "o.zarr", tile=64, overlap=16,
                    chunk=64, output="probs", device="cpu")
    stored = zarr.open_group(res.path, mode="r")["0"][:]
    e = np.exp(logits - logits.max(0))
    probs = e / e.sum(0)
    assert stored.dtype == np.uint8
    assert np.abs(stored.astype(int) - np.rint(probs * 255)).max() <= 1
