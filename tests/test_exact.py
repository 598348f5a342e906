"""Exact tiling (``exact=True``) and mirrored context at every border.

The reference is one model pass over the whole image mirrored by the crop C on every side (bottom
and right further, to a multiple of the model's size multiple) and cropped back.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import tiler
from tiler.engine.exact import exact_settings, probe_radius
from tiler.errors import ExactnessWarning, SettingsError
from tiler.models.checkpoints import load_into_unet, unwrap
from tiler.models.files import DEFAULT_WEIGHTS, spec_of_module
from tiler.models.spec import ModelSpec
from tiler.models.unet import UNet
from tiler.plan.lattice import reflect_index
from tiler.runners.base import FunctionRunner
from tiler.runners.torch import TorchRunner


def mirrored_pass(runner, image: np.ndarray, context: int, multiple: int, tta: str = "none") -> np.ndarray:
    """(C_out, H, W): ``runner`` once over ``image`` (H, W, C) mirrored by ``context`` on every side."""
    h, w = image.shape[:2]
    ph = math.ceil((h + 2 * context) / multiple) * multiple
    pw = math.ceil((w + 2 * context) / multiple) * multiple
    ys = reflect_index(np.arange(-context, ph - context), h)
    xs = reflect_index(np.arange(-context, pw - context), w)
    padded = image[np.ix_(ys, xs)].transpose(2, 0, 1)[None]
    return runner(padded, tta=tta)[0][:, context : context + h, context : context + w]


def slide_like(shape: tuple[int, int], seed: int) -> np.ndarray:
    """(H, W, 3) uint8: smooth blobs with texture, so a UNet's activations vary everywhere."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    base = ndi.gaussian_filter(rng.random((*shape, 3)), (6, 6, 0)) * 4
    noise = rng.random((*shape, 3)) * 0.3
    return (np.clip(base - base.min() + noise, 0, 1) * 255).astype(np.uint8)


def unet_runner(**kwargs) -> TorchRunner:
    """The built-in model's trained weights with the given upsampling (bilinear); with transposed
    convolutions random weights, the last layer scaled so that logits span several units."""
    if kwargs.get("bilinear", True):
        state, config, meta = unwrap(torch.load(DEFAULT_WEIGHTS, weights_only=True))
        net, _ = load_into_unet(state, {**config, **kwargs})
        spec = ModelSpec.from_dict({**meta, "context": net.context_radius()})
        return TorchRunner(net, spec, device="cpu")
    torch.manual_seed(0)
    net = UNet(3, 3, base_channels=8, **kwargs).eval()
    with torch.no_grad():
        net.out_conv.conv.weight *= 1000
    return TorchRunner(net, spec_of_module(net), device="cpu")


def borders(diff: np.ndarray, width: int) -> dict[str, float]:
    """max |diff| in strips ``width`` deep along each border of (C, H, W) ``diff``."""
    return {"top": float(diff[:, :width].max()), "bottom": float(diff[:, -width:].max()),
            "left": float(diff[:, :, :width].max()), "right": float(diff[:, :, -width:].max())}


@pytest.mark.slow
@pytest.mark.parametrize("upsampling", [{"align_corners": False}, {"bilinear": False}],
                         ids=["bilinear-align-false", "transposed"])
def test_exact_tiling_equals_one_mirrored_whole_image_pass(upsampling: dict) -> None:
    """Tiled == whole-image pass, max |Δ logit| <= 1e-3 everywhere, at each of the four borders;
    labels identical wherever the top two logits are further apart than 2|Δ|."""
    runner = unet_runner(**upsampling)
    image = slide_like((300, 437), seed=1)  # not multiples of anything, several tiles each way
    out = tiler.predict(image, runner, tile=384, exact=True, batch_size=4, device="cpu")
    c = math.ceil(runner.spec.context / 16) * 16
    whole = mirrored_pass(runner, image, c, 16)
    diff = np.abs(out - whole)
    assert whole.max() - whole.min() > 4  # logits of a real spread, so 1e-3 is a real bar
    assert diff.max() <= 1e-3
    assert max(borders(diff, 16).values()) <= 1e-3
    top2 = np.sort(whole, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > 2 * diff.max(axis=0)
    assert decided.mean() >= 0.9999
    assert (out.argmax(0)[decided] == whole.argmax(0)[decided]).all()


def test_exact_settings_crop_the_context_radius_rounded_to_the_multiple() -> None:
    s = exact_settings(tiler.config.Settings(tile=512, window="gaussian"), radius=122, multiple=16)
    assert (s.overlap, s.margin, s.border_context, s.window) == (256, 128, 128, "constant")
    assert (s.tile - s.overlap) % 16 == 0
    with pytest.raises(SettingsError, match="too small for exact tiling.*--tile 272"):
        exact_settings(tiler.config.Settings(tile=256), radius=122, multiple=16)
    with pytest.raises(SettingsError, match="not a multiple of 16"):
        exact_settings(tiler.config.Settings(tile=500), radius=10, multiple=16)


def test_the_unet_radius_from_its_architecture_bounds_what_a_change_reaches() -> None:
    """A change of one pixel changes no output further than the computed radius, and does reach
    close to it (the radius is not a gross overestimate)."""
    for kwargs in ({"align_corners": False}, {"bilinear": False}):
        runner = unet_runner(**kwargs)
        r = runner.spec.context
        size = 2 * r + 48
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (1, 3, size, size)).astype(np.uint8)
        y0 = size // 2
        changed = x.copy()
        changed[0, :, y0, y0] = 255 - changed[0, :, y0, y0]
        diff = np.abs(runner(changed) - runner(x)).max(axis=(0, 1))
        ys, xs = np.nonzero(diff > 0)
        reach = max(y0 - ys.min(), ys.max() - y0, y0 - xs.min(), xs.max() - y0)
        assert r - 32 <= reach <= r, (kwargs, reach, r)


@pytest.mark.slow
def test_a_model_that_is_not_shift_equivariant_reports_its_residual(tmp_path: Path) -> None:
    """The seeds' UNet (bilinear, align_corners=True): --exact warns with the measured residual and
    records it; the residual really is the order of the tiled-vs-whole difference."""
    runner = unet_runner(align_corners=True)
    assert runner.module.shift_equivariant is False
    image = slide_like((200, 260), seed=2)
    with pytest.warns(ExactnessWarning, match=r"not shift-equivariant \(its bilinear upsampling uses "
                      r"align_corners=True.*up to (\d|\.)+"):
        result = tiler.run(image, runner, out=tmp_path / "o.zarr", tile=384, exact=True, device="cpu",
                           pyramid=False)
    record = zarr.open_group(result.path, mode="r").attrs["tiler"]
    assert record["exact"]["exact"] is False and record["exact"]["residual"] > 1e-3
    assert record["settings"]["exact"] is True and record["settings"]["window"] == "constant"
    assert "max |tiled - whole|" in result.summary()
    out = zarr.open_group(result.path, mode="r")["0"][:]
    whole = mirrored_pass(runner, image, record["exact"]["context"], 16)
    assert np.abs(out - whole).max() > 1e-3  # not exact, as reported


def box_filter(radius: int):
    """A local NumPy model: the mean over a (2r+1)^2 window, zero padding at the tile edge."""

    def f(x: np.ndarray) -> np.ndarray:
        k, (h, w) = 2 * radius + 1, x.shape[2:]
        p = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        return sum(p[:, :, dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)) / k**2

    return f


def test_a_model_without_a_known_radius_is_probed_with_a_safety_factor() -> None:
    runner = FunctionRunner(box_filter(6), ModelSpec(name="box", scale=1.0))
    assert probe_radius(runner, 1, np.dtype(np.float32), tile=64) == 9  # 6 x 1.5
    image = np.random.default_rng(0).random((70, 95, 1)).astype(np.float32)
    out = tiler.predict(image, runner, tile=64, exact=True)
    whole = mirrored_pass(runner, image, 9, 1)
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5)


def test_a_model_that_sees_the_whole_tile_cannot_be_tiled_exactly() -> None:
    def global_mean(x: np.ndarray) -> np.ndarray:
        return x - x.mean(axis=(2, 3), keepdims=True)

    runner = FunctionRunner(global_mean, ModelSpec(name="global", scale=1.0))
    image = np.zeros((100, 100, 1), np.float32)
    with pytest.raises(SettingsError, match="'global'.*up to the tile's edge"):
        tiler.predict(image, runner, tile=64, exact=True)


def test_exact_and_the_lattice_origin_are_recorded_and_block_a_resume_with_other_settings(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((80, 90, 1)).astype(np.float32)
    model = FunctionRunner(box_filter(2), ModelSpec(name="box", scale=1.0))
    out = tmp_path / "o.zarr"
    common = {"tile": 32, "overlap": 16, "window": "gaussian", "pyramid": False}
    tiler.run(image, model, out=out, **common)
    record = zarr.open_group(out, mode="r").attrs["tiler"]["settings"]
    assert (record["context"], record["exact"], record["tta"]) == (8, False, "none")
    for other in ({"exact": True}, {"context": 4}, {"tta": "flip"}):
        with pytest.raises(tiler.OutputError, match="cannot resume: settings differ"):
            tiler.run(image, model, out=out, resume="force", **common, **other)


@pytest.mark.slow
def test_every_border_gets_mirrored_context_by_default() -> None:
    """Default lattice (context = overlap/2): the image's top and left borders are no longer worse
    than its bottom and right, nor than the seams; with the lattice at 0 (context 0, the old one)
    the top/left borders saw the network's zero padding."""
    runner = unet_runner(align_corners=False)
    image = slide_like((352, 352), seed=3)
    whole = mirrored_pass(runner, image, 128, 16)
    common = {"tile": 256, "overlap": 128, "window": "gaussian", "device": "cpu"}
    new = borders(np.abs(tiler.predict(image, runner, **common) - whole), 8)
    old = borders(np.abs(tiler.predict(image, runner, context=0, **common) - whole), 8)
    assert max(new["top"], new["left"]) < 0.5 * max(old["top"], old["left"])
    assert max(new.values()) < 0.5 * max(old.values())
