"""Exports: ONNX and TorchScript, verified, with metadata; ``tiler export``; and the acceptance
test: ``tiler.run`` with the ONNX export gives the PyTorch model's logits."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import zarr

import tiler
from exporters import export
from exporters.onnx import export_onnx
from exporters.verify import FP32_TOLERANCE, random_batches, verify
from tiler.cli.main import main as cli
from tiler.errors import ModelError, SettingsError
from tiler.models.spec import ModelSpec
from tiler.models.unet import UNet
from tiler.runners.factory import load_runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics, so that outputs are not near zero everywhere."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture
def checkpoint(tmp_path):
    net = trained_like(UNet(3, 2, base_channels=8))
    path = tmp_path / "unet.pt"
    meta = {"mean": [0.6, 0.5, 0.7], "std": [0.2, 0.25, 0.2], "class_names": ["background", "tissue"]}
    torch.save({"state_dict": net.state_dict(), "config": net.config(), "tiler": meta}, path)
    return path


def test_onnx_export_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "unet.onnx"
    result = export(checkpoint, out, format="onnx")
    assert result.max_abs_diff <= FP32_TOLERANCE and len(result.shapes) == 2
    assert "max |exported - pytorch|" in capsys.readouterr().out
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["tiler"])
    assert meta["class_names"] == ["background", "tissue"] and meta["multiple"] == 16
    assert meta["mean"] == [0.6, 0.5, 0.7] and meta["name"] == "unet.onnx"
    spec = load_runner(out, provider="cpu").spec
    assert spec == ModelSpec.from_dict(meta)


def test_opset_and_fixed_size(checkpoint, tmp_path):
    out = tmp_path / "fixed.onnx"
    result = export(checkpoint, out, opset=18, size=64, log=None)
    assert result.shapes == ((2, 3, 64, 64),)
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]


def test_fp16_export(checkpoint, tmp_path):
    out = tmp_path / "half.onnx"
    result = export(checkpoint, out, fp16=True, log=None)
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert result.tolerance >= 1e-2 and result.max_abs_diff <= result.tolerance
    runner = load_runner(out, provider="cpu")
    assert runner(np.zeros((1, 3, 32, 32), np.uint8)).dtype == np.float32


def test_torchscript_export(checkpoint, tmp_path):
    out = tmp_path / "unet.ts"
    result = export(checkpoint, out, format="torchscript", log=None)
    assert result.max_abs_diff <= FP32_TOLERANCE
    runner = load_runner(out, device="cpu")
    assert runner.spec.class_names == ("background", "tissue") and runner.spec.multiple == 16
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 48, 80)).astype(np.uint8)
    np.testing.assert_allclose(runner(x), load_runner(checkpoint, device="cpu")(x), atol=1e-6)
    with pytest.raises(SettingsError, match="ONNX exports only"):
        export(checkpoint, tmp_path / "x.ts", format="torchscript", fp16=True)


def test_verify_fails_above_the_tolerance():
    net = UNet(1, 1, base_channels=4).eval()
    batches = random_batches(1, 16)
    assert batches[0].shape == (2, 1, 64, 64) and batches[1].shape == (3, 1, 96, 128)

    def off(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy() + 2e-4

    with pytest.raises(ModelError, match="above the tolerance 0.0001"):
        verify(off, net, batches, log=None)
    assert verify(off, net, batches, tolerance=1e-3, log=None).max_abs_diff == pytest.approx(2e-4, rel=0.05)
    with pytest.raises(ModelError, match="verification failed"):
        verify(lambda x: off(x) * np.nan, net, batches, tolerance=1.0, log=None)


def test_failed_verification_removes_the_file(checkpoint, tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match="bad.onnx: export verification failed"):
        export(checkpoint, out, tolerance=-1.0, log=None)
    assert not out.exists()


def test_model_that_needs_a_fixed_size(tmp_path):
    class Crop(torch.nn.Module):
        """Gives a 64 x 64 output whatever the input: only 64 x 64 inputs keep the contract."""

        def forward(self, x):
            return x[:, :, :64, :64] * 2.0

    spec = ModelSpec(name="crop", in_channels=1, out_channels=1)
    with pytest.raises(ModelError, match="input's size.*--fixed-size"):
        export_onnx(Crop(), spec, tmp_path / "crop.onnx", log=None)
    assert not (tmp_path / "crop.onnx").exists()
    assert export_onnx(Crop(), spec, tmp_path / "crop.onnx", size=64, log=None).max_abs_diff == 0


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_export(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli(["export", str(checkpoint), "--out", str(out), "--opset", "17"]) == 0
    assert "wrote" in capsys.readouterr().out and out.exists()
    assert cli(["export", str(checkpoint), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli(["export", str(checkpoint), "--out", str(out), "--overwrite", "--fp16"]) == 0
    assert cli(["export", str(checkpoint), "--out", str(tmp_path / "m.bin")]) == 1
    assert "--format" in capsys.readouterr().err
    assert cli(["export", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path / "m.bin")]) == 0
    assert cli(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "n.onnx")]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_export_of_the_default_model(checkpoint, tmp_path, monkeypatch, capsys):
    import tiler.models.files as load

    monkeypatch.setattr(load, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    assert cli(["export", "--out", str(tmp_path / "d.onnx")]) == 1
    assert "default weights are missing" in capsys.readouterr().err
    monkeypatch.setattr(load, "DEFAULT_WEIGHTS", checkpoint)
    assert cli(["export", "--out", str(tmp_path / "d.onnx")]) == 0
    assert load_runner(tmp_path / "d.onnx", provider="cpu").spec.class_names == ("background", "tissue")


# --- acceptance: tiler.run with the ONNX export == with the PyTorch model --------------------------


def test_run_with_onnx_export_matches_pytorch(checkpoint, tmp_path):
    onnx_path = tmp_path / "unet.onnx"
    export(checkpoint, onnx_path, log=None)
    image = np.random.default_rng(3).integers(0, 256, (150, 210, 3)).astype(np.uint8)
    settings = {"tile": 64, "overlap": 16, "chunk": 64, "batch_size": 4, "device": "cpu"}
    a = tiler.run(image, checkpoint, out=tmp_path / "torch.zarr", **settings)
    b = tiler.run(image, onnx_path, out=tmp_path / "onnx.zarr", provider="cpu", **settings)
    assert b.shape == a.shape == (2, 150, 210)
    logits_torch = zarr.open_group(str(a.path), mode="r")["0"][...]
    logits_onnx = zarr.open_group(str(b.path), mode="r")["0"][...]
    assert logits_onnx.dtype == np.float32 and np.abs(logits_torch).max() > 0.1
    np.testing.assert_allclose(logits_onnx, logits_torch, rtol=0, atol=1e-4)
    attrs = zarr.open_group(str(b.path), mode="r").attrs["tiler"]
    assert attrs["complete"] and "ONNX Runtime" in attrs["model"]["runner"]


def test_cli_run_with_onnx_model(checkpoint, tmp_path):
    import tifffile

    onnx_path = tmp_path / "unet.onnx"
    export(checkpoint, onnx_path, log=None)
    image = np.random.default_rng(4).integers(0, 256, (100, 90, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(32, 32), photometric="rgb")
    args = ["run", str(tmp_path / "img.tif"), "--tile", "64", "--overlap", "16", "--device", "cpu"]
    assert cli([*args, "--model", str(onnx_path), "--provider", "cpu", "-o", str(tmp_path / "o.zarr")]) == 0
    assert cli([*args, "--model", str(checkpoint), "-o", str(tmp_path / "t.zarr")]) == 0
    got = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["0"][...]
    ref = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")["0"][...]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_export_of_a_module_from_python(tmp_path):
    class Doubler(torch.nn.Module):  # no in_channels attribute: the spec says it
        def forward(self, x):
            return torch.cat([x * 2.0, x.mean(1, keepdim=True)], dim=1)

    with pytest.raises(SettingsError, match="input channels are unknown"):
        export(Doubler(), tmp_path / "d.onnx", log=None)
    spec = ModelSpec(name="doubler", in_channels=3, out_channels=4, activation="none", scale=1.0)
    export(Doubler(), tmp_path / "d.onnx", spec=spec, log=None)
    runner = load_runner(tmp_path / "d.onnx", provider="cpu")
    assert runner.spec == ModelSpec.from_dict({**spec.to_dict(), "name": "d.onnx"})
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(runner(x)[:, :3], 2 * x, rtol=1e-6)


@pytest.mark.parametrize("bilinear", [True, False])
def test_the_torchscript_tiler_writes_exports_to_onnx_with_parity(tmp_path, bilinear):
    """A TorchScript UNet (the form `tiler export --format torchscript` writes) through ONNX export:
    the shape branch ``if dy or dx`` used to make an If node with an int64 condition."""
    net = trained_like(UNet(3, 2, base_channels=8, bilinear=bilinear))
    ckpt = tmp_path / "unet.pt"
    torch.save({"state_dict": net.state_dict(), "config": net.config()}, ckpt)
    scripted = tmp_path / "unet.ts"
    export(ckpt, scripted, format="torchscript", log=None)
    onnx_file = tmp_path / "unet.onnx"
    result = export(scripted, onnx_file, format="onnx", log=None)
    assert result.max_abs_diff <= FP32_TOLERANCE
    x = np.random.default_rng(1).integers(0, 256, (2, 3, 48, 80)).astype(np.uint8)  # odd-sized levels
    want = load_runner(ckpt, device="cpu")(x)
    np.testing.assert_allclose(load_runner(onnx_file, provider="cpu")(x), want, atol=1e-4)
    np.testing.assert_allclose(load_runner(scripted, device="cpu")(x), want, atol=1e-5)
