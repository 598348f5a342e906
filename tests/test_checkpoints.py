"""Checkpoints of both UNet layouts load into the built-in UNet and give the same outputs.

The Pytorch-UNet layout is rebuilt here (module names ``inc``/``down*``/``up*``/``outc``, with
``double_conv``/``maxpool_conv``/``up``/``conv`` inside), including the older release with conv
biases before BatchNorm. Every model gets random BatchNorm statistics, so a tensor loaded into
the wrong layer changes the output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tiler.errors import ModelError
from tiler.models.checkpoints import detect_layout, to_builtin, unet_config, unwrap
from tiler.models.files import load_checkpoint
from tiler.models.unet import UNet
from tiler.runners.factory import load_runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the Pytorch-UNet layout ----------------------------------------------------------------


class PDoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, mid: int | None = None, bias: bool = False) -> None:
        super().__init__()
        mid = mid or cout
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1, bias=bias), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class PDown(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), PDoubleConv(cin, cout, bias=bias))

    def forward(self, x):
        return self.maxpool_conv(x)


class PUp(nn.Module):
    def __init__(self, cin: int, cout: int, bilinear: bool, bias: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = PDoubleConv(cin, cout, cin // 2, bias=bias)
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
            self.conv = PDoubleConv(cin, cout, bias=bias)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class POutConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class PytorchUNet(nn.Module):
    """The module tree of milesial/Pytorch-UNet, any base width; ``bias`` as in its older releases."""

    def __init__(self, n_channels: int, n_classes: int, bilinear: bool, base: int = 64, bias: bool = False):
        super().__init__()
        b, f = base, 2 if bilinear else 1
        self.inc = PDoubleConv(n_channels, b, bias=bias)
        self.down1, self.down2 = PDown(b, 2 * b, bias), PDown(2 * b, 4 * b, bias)
        self.down3, self.down4 = PDown(4 * b, 8 * b, bias), PDown(8 * b, 16 * b // f, bias)
        self.up1 = PUp(16 * b, 8 * b // f, bilinear, bias)
        self.up2 = PUp(8 * b, 4 * b // f, bilinear, bias)
        self.up3 = PUp(4 * b, 2 * b // f, bilinear, bias)
        self.up4 = PUp(2 * b, b, bilinear, bias)
        self.outc = POutConv(b, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.out_channels, generator=gen) * 0.1)
    return module.eval()


def outputs(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return module(x).numpy()


X = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))


def make(layout: str, bilinear: bool, base: int, bias: bool = False) -> nn.Module:
    if layout == "seed":
        return randomise(UNet(3, 2, base_channels=base, bilinear=bilinear))
    return randomise(PytorchUNet(3, 2, bilinear, base=base, bias=bias))


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["seed", "pytorch-unet"])
@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("base", [4, 6])
def test_round_trip(tmp_path, layout, bilinear, base):
    net = make(layout, bilinear, base)
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    module, spec = load_checkpoint(path)
    assert isinstance(module, UNet)
    # a plain state dict loads with the upsampling these layouts were trained with (align_corners=True)
    config = {"in_channels": 3, "num_classes": 2, "base_channels": base, "bilinear": bilinear,
              "align_corners": True}
    assert module.config() == config
    assert (spec.in_channels, spec.out_channels, spec.multiple) == (3, 2, 16)
    assert spec.context == (122 if bilinear else 107)  # the receptive field, from the architecture
    np.testing.assert_array_equal(outputs(module, X), outputs(net, X))


@pytest.mark.parametrize("bilinear", [True, False])
def test_older_pytorch_unet_with_conv_bias(tmp_path, bilinear):
    """Conv biases before BatchNorm are folded into its running mean (exact in eval mode)."""
    net = make("pytorch-unet", bilinear, 4, bias=True)
    path = tmp_path / "old.pth"
    torch.save(net.state_dict(), path)
    module, _ = load_checkpoint(path)
    np.testing.assert_allclose(outputs(module, X), outputs(net, X), atol=1e-5)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()} | {"loss.weight": torch.ones(2)}},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # torch.compile
        lambda sd: sd | {"mask_values": [0, 1], "epoch": 4},  # Pytorch-UNet's train.py
    ],
    ids=["model", "state_dict", "model_state_dict", "module", "lightning", "compiled", "mask_values"],
)
@pytest.mark.parametrize("layout", ["seed", "pytorch-unet"])
def test_wrapped_and_prefixed(tmp_path, wrap, layout):
    net = make(layout, True, 4)
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(net.state_dict()), path)
    runner = load_runner(path, device="cpu")
    x = (X.numpy() * 255).astype(np.uint8)
    np.testing.assert_allclose(runner(x), outputs(net, torch.from_numpy(x).float() / 255), atol=1e-6)


def test_metadata_and_config_in_the_wrapper(tmp_path):
    net = make("seed", False, 4)
    path = tmp_path / "meta.pt"
    meta = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "class_names": ["bg", "tissue"]}
    torch.save({"state_dict": net.state_dict(), "config": net.config(), "tiler": meta}, path)
    _, spec = load_checkpoint(path)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.class_names == ("bg", "tissue")


def test_detection():
    sd = PytorchUNet(1, 5, bilinear=False, base=8).state_dict()
    assert detect_layout(sd) == ("pytorch-unet", "")
    assert detect_layout({f"module.{k}": v for k, v in sd.items()}) == ("pytorch-unet", "module.")
    mapped, layout = to_builtin(sd)
    assert layout == "pytorch-unet"
    assert "in_conv.double_conv.0.weight" in mapped and "outc.conv.bias" not in mapped
    assert unet_config(mapped) == {"in_channels": 1, "num_classes": 5, "base_channels": 8, "bilinear": False}
    assert unwrap({"state_dict": sd, "config": {"bilinear": False}})[1] == {"bilinear": False}


# --- mismatches ----------------------------------------------------------------------------------


def save(tmp_path, state) -> object:
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    return path


def test_missing_key_is_named_in_the_checkpoints_own_words(tmp_path):
    sd = PytorchUNet(3, 2, bilinear=True, base=4).state_dict()
    del sd["outc.conv.bias"]
    match = r"pytorch-unet layout.*missing keys: outc\.conv\.bias; unexpected keys: none"
    with pytest.raises(ModelError, match=match):
        load_checkpoint(save(tmp_path, sd))


def test_unexpected_key_is_named(tmp_path):
    sd = UNet(3, 2, base_channels=4).state_dict() | {"up5.conv.weight": torch.zeros(1)}
    match = r"bad\.pt: .*missing keys: none; unexpected keys: up5\.conv\.weight"
    with pytest.raises(ModelError, match=match):
        load_checkpoint(save(tmp_path, sd))


def test_shape_mismatch_is_named(tmp_path):
    sd = UNet(3, 2, base_channels=4).state_dict()
    sd["down2.maxpool_conv.1.double_conv.0.weight"] = torch.zeros(16, 8, 5, 5)
    with pytest.raises(ModelError, match=r"other shapes.*down2\.maxpool_conv\.1\.double_conv\.0\.weight"):
        load_checkpoint(save(tmp_path, sd))


def test_not_a_unet(tmp_path):
    with pytest.raises(ModelError, match="not a UNet of a known layout.*encoder.weight"):
        load_checkpoint(save(tmp_path, {"encoder.weight": torch.zeros(2, 2)}))
    with pytest.raises(ModelError, match="holds a list"):
        load_checkpoint(save(tmp_path, [torch.zeros(1)]))
