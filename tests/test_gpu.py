"""The GPU path (marked ``gpu``: run where torch sees CUDA, skipped elsewhere; see tests/conftest.py).

Pinned host copies, autocast precisions, the real CUDA out-of-memory error and the engine's batch
halving on it, and blending on the device against the host stitcher. tests/test_devices.py holds
the CPU-vs-GPU agreement of predict/run and ONNX Runtime's CUDA provider.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiler
from tiler.models.spec import ModelSpec
from tiler.runners.torch import TorchRunner

pytestmark = pytest.mark.gpu


class Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _runner(**kw) -> TorchRunner:
    return TorchRunner(Conv(), ModelSpec(name="conv", scale=1 / 255), device="cuda", **kw)


def test_raw_tiles_travel_through_pinned_memory_and_are_normalised_on_the_gpu(monkeypatch) -> None:
    runner = _runner()
    assert runner.normalises_on_device and runner.normalisation(np.dtype(np.uint8)) is None
    pinned = []
    real = torch.Tensor.pin_memory

    def spy(self, *a, **k):
        out = real(self, *a, **k)
        pinned.append((self.dtype, out.is_pinned()))
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    tiles = np.random.default_rng(0).integers(0, 256, (4, 3, 64, 64)).astype(np.uint8)
    out = runner(tiles)
    assert pinned == [(torch.uint8, True)]  # the uint8 batch, not a float32 copy
    expected = TorchRunner(Conv(), ModelSpec(name="conv", scale=1 / 255), device="cpu")(tiles)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_autocast_runs_the_model_in_the_asked_precision(precision, dtype) -> None:
    seen = []
    runner = _runner(precision=precision)
    runner.module.conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = runner(np.zeros((2, 3, 32, 32), np.uint8))
    assert seen == [dtype] and out.dtype == np.float32


def test_a_real_cuda_oom_halves_the_batch_and_the_output_is_unchanged() -> None:
    """An oversized batch raises torch.cuda.OutOfMemoryError (the runner's declared OOM type); the
    engine halves the batch until it fits, warns once, and the values equal a small-batch run."""
    free, _ = torch.cuda.mem_get_info()

    class Hungry(torch.nn.Module):
        """Allocates ~free/3 bytes per tile: a batch of 8 cannot fit, one of 2 can."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            per_tile = int(free // 3) // 4
            scratch = torch.empty((x.shape[0], per_tile), device=x.device)
            scratch.zero_()
            return x[:, :2] + scratch[:, :1, None, None] * 0

    assert torch.cuda.OutOfMemoryError in TorchRunner(Hungry(), ModelSpec(name="h"), device="cuda").out_of_memory_errors
    img = np.random.default_rng(1).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    kw = dict(tile=64, overlap=16, device="cuda")
    with pytest.warns(UserWarning, match="out of device memory"):
        big = tiler.predict(img, TorchRunner(Hungry(), ModelSpec(name="h"), device="cuda"), batch_size=8, **kw)
    small = tiler.predict(img, TorchRunner(Hungry(), ModelSpec(name="h"), device="cuda"), batch_size=1, **kw)
    np.testing.assert_array_equal(big, small)


def test_blending_on_the_gpu_equals_blending_on_the_host() -> None:
    img = np.random.default_rng(2).integers(0, 256, (700, 900, 3)).astype(np.uint8)
    kw = dict(tile=256, overlap=64, batch_size=6, chunk=128)
    host = tiler.predict(img, _runner(), **kw)
    dev = tiler.predict(img, _runner(blend_on_device=True), **kw)
    np.testing.assert_allclose(dev, host, rtol=0, atol=1e-5)
