"""Shared fixtures: generated images and tiny models (nothing is downloaded)."""

from __future__ import annotations

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
