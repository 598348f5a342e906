"""Checkpoints load with ``torch.load(weights_only=True)``: pickled code never runs unless trusted."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tiler.cli.main import main as cli
from tiler.errors import ModelError
from tiler.models.files import read_checkpoint
from tiler.models.unet import UNet
from tiler.runners.factory import load_runner


class MakesMarker:
    """Unpickling this creates a directory: a stand-in for any code a pickle can run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def net():
    return UNet(3, 2, base_channels=4).eval()


@pytest.fixture
def evil(tmp_path, net):
    """A usable checkpoint that also carries code; returns (path, marker)."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": net.state_dict(), "extra": MakesMarker(str(marker))}, path)
    assert not marker.exists()
    return path, marker


def test_code_carrying_pickle_is_refused(evil):
    path, marker = evil
    with pytest.raises(ModelError, match=r"refusing to load.*arbitrary code.*posix\.mkdir.*--trust-model"):
        load_runner(path, device="cpu")
    assert not marker.exists()


def test_the_cli_refuses_and_trusts(evil, tmp_path, capsys):
    import tifffile

    path, marker = evil
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((40, 40, 3), np.uint8))
    args = ["run", str(image), "--model", str(path), "--tile", "32", "--overlap", "0", "--device", "cpu"]
    rc = cli([*args, "--out", str(tmp_path / "a.zarr")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "--trust-model" in err
    assert not marker.exists() and not (tmp_path / "a.zarr").exists()
    rc = cli(["export", str(path), "--out", str(tmp_path / "x.onnx")])
    assert rc == 1 and "--trust-model" in capsys.readouterr().err and not marker.exists()
    assert cli([*args, "--out", str(tmp_path / "b.zarr"), "--trust-model"]) == 0
    assert marker.is_dir()


def test_trusted_it_loads_and_its_code_runs(evil, net):
    path, marker = evil
    runner = load_runner(path, device="cpu", trust_model=True)
    assert marker.is_dir()  # proof that trusting runs the pickle's code
    x = np.random.default_rng(0).random((1, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(runner(x), net(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_whole_pickled_module_needs_trust(tmp_path, net):
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    with pytest.raises(ModelError, match="it imports tiler.models.unet.UNet"):
        load_runner(path, device="cpu")
    runner = load_runner(path, device="cpu", trust_model=True)
    assert runner.spec.in_channels == 3 and runner(np.zeros((1, 3, 32, 32), np.uint8)).shape == (1, 2, 32, 32)


def test_plain_state_dict_needs_no_trust(tmp_path, net):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": net.state_dict(), "epoch": 7, "tiler": {"class_names": ["a", "b"]}}, path)
    assert load_runner(path, device="cpu").spec.class_names == ("a", "b")


def test_torchscript_and_onnx_need_no_trust(tmp_path, net):
    from exporters import export

    ts, ox = tmp_path / "net.ts.pt", tmp_path / "net.onnx"
    ckpt = tmp_path / "net.pt"
    torch.save(net.state_dict(), ckpt)
    export(ckpt, ts, format="torchscript", log=None)
    export(ckpt, ox, format="onnx", log=None)
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)
    ref = load_runner(ckpt, device="cpu")(x)
    np.testing.assert_allclose(load_runner(ts, device="cpu")(x), ref, atol=1e-6)
    np.testing.assert_allclose(load_runner(ox, device="cpu")(x), ref, atol=1e-5)


@pytest.mark.parametrize("content", [b"", b"garbage" * 40, b"PK\x03\x04 truncated zip"])
def test_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=r"bad\.pt: cannot read the checkpoint"):
        read_checkpoint(path)
