"""Shared fixtures: generated images and TIFFs, tiny models (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from tiler.models.unet import UNet
from tiler.runners.base import FunctionRunner


def smooth_image(shape: tuple[int, ...], seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    """A deterministic image with structure at several scales (not white noise)."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((h, w, c), np.float32)
    for k in range(c):
        f = rng.uniform(0.01, 0.08, size=4)
        out[..., k] = (
            np.sin(yy * f[0] + k) * np.cos(xx * f[1]) + 0.5 * np.sin((xx + yy) * f[2]) + rng.normal(0, 0.1, (h, w))
        )
    out = (out - out.min()) / (out.max() - out.min())
    if dtype == "uint8":
        out = np.rint(out * 255).astype(np.uint8)
    elif dtype == "uint16":
        out = np.rint(out * 65535).astype(np.uint16)
    else:
        out = out.astype(dtype)
    return out if len(shape) == 3 else out[..., 0]


@pytest.fixture
def plus_one() -> FunctionRunner:
    """A model that returns its (raw, un-normalised) input plus one."""
    return FunctionRunner(lambda x: x + 1, normalise=False)


@pytest.fixture
def rgb_tiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 600 x 900 RGB JPEG-tiled TIFF (tiles 128) and its decoded pixels."""
    image = smooth_image((600, 900, 3), seed=1)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, image, tile=(128, 128), compression="jpeg", photometric="rgb")
    return path, tifffile.imread(path)


@pytest.fixture
def small_unet_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of a small random UNet (3 -> 3 classes, base 4) in the built-in layout."""
    torch.manual_seed(0)
    net = UNet(3, 3, base_channels=4).eval()
    path = tmp_path / "unet.pt"
    torch.save({"state_dict": net.state_dict(), "config": net.config()}, path)
    return path

def make_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth uint8 image (JPEG-friendly) with some texture."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 60 * np.sin(x / 37.0) * np.cos(y / 23.0)
    channels = shape[2] if len(shape) == 3 else 1
    out = np.stack([base + 20 * c + rng.normal(0, 8, (h, w)) for c in range(channels)], axis=-1)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out if len(shape) == 3 else out[..., 0]


def write_tiff(path: Path, image: np.ndarray, *, tile: int = 64, compression: str | None = "jpeg") -> Path:
    """A tiled TIFF of ``image`` (JPEG by default)."""
    photometric = "rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack"
    tifffile.imwrite(path, image, tile=(tile, tile), compression=compression, photometric=photometric)
    return path


class _Head(torch.nn.Module):
    """(N, 3, h, w) -> (N, 2, h, w): a fixed 3x3 convolution (local, cheap, deterministic)."""

    def __init__(self, layers: int = 1, nan: bool = False, width: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        sizes = [3] + [width] * (layers - 1) + [2]
        self.convs = torch.nn.ModuleList(
            [torch.nn.Conv2d(a, b, 3, padding=1) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.nan = nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        if self.nan:
            x = x * float("nan")
        return x


def save_model(
    path: Path, *, layers: int = 1, nan: bool = False, multiple: int = 1, width: int = 2
) -> Path:
    """A TorchScript model file with tiler metadata (3 input channels, 2 outputs)."""
    module = torch.jit.script(_Head(layers, nan, width).eval())
    meta = {"name": path.name, "in_channels": 3, "out_channels": 2, "multiple": multiple}
    torch.jit.save(module, str(path), _extra_files={"tiler.json": json.dumps(meta)})
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "head.pt")


@pytest.fixture(scope="session")
def nan_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "nan.pt", nan=True)


@pytest.fixture(scope="session")
def multiple_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "mult16.pt", multiple=16)


@pytest.fixture(scope="session")
def small_rgb_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiff(tmp_path_factory.mktemp("images") / "rgb.tif", make_image((300, 260, 3)))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine: one thread avoids spin-wait contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run wherever CUDA is present and are skipped (with the reason) elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
