"""`tiler export` (tiler/cli/export.py): the flags that set the model's metadata ("flags override")."""

from __future__ import annotations

import numpy as np
import torch

from tiler.cli.main import main as cli
from tiler.runners.factory import load_runner


def test_export_of_a_torchscript_without_metadata_takes_its_spec_from_flags(tmp_path, capsys) -> None:
    ts, onnx = tmp_path / "net.ts", tmp_path / "net.onnx"
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1))).save(str(ts))
    assert cli(["export", str(ts), "--out", str(onnx)]) == 1
    assert "--in-channels" in capsys.readouterr().err
    code = cli(["export", str(ts), "--out", str(onnx), "--in-channels", "3", "--mean", "0.5,0.5,0.5",
                "--std", "0.25,0.25,0.25", "--activation", "sigmoid", "--class-names", "bg, fg"])
    assert code == 0, capsys.readouterr().err
    spec = load_runner(str(onnx), device="cpu").spec
    assert (spec.in_channels, spec.mean, spec.std) == (3, (0.5,) * 3, (0.25,) * 3)
    assert (spec.activation, spec.class_names) == ("sigmoid", ("bg", "fg"))
    # the recorded normalisation is applied: the ONNX runner equals the module on normalised input
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32)).astype(np.uint8)
    module = torch.jit.load(str(ts))
    with torch.no_grad():
        want = module(torch.from_numpy((x / 255.0 - 0.5) / 0.25).float()).numpy()
    np.testing.assert_allclose(load_runner(str(onnx), device="cpu")(x), want, atol=1e-4)


def test_a_fixed_size_onnx_model_names_the_tile_it_takes(tmp_path) -> None:
    import pytest

    import tiler
    from tiler.errors import ModelError

    ts, onnx = tmp_path / "net.ts", tmp_path / "net.onnx"
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1))).save(str(ts))
    assert cli(["export", str(ts), "--out", str(onnx), "--in-channels", "1", "--fixed-size", "32"]) == 0
    image = np.zeros((40, 40, 1), np.uint8)
    with pytest.raises(ModelError, match="takes 32 x 32 tiles only.*use --tile 32") as info:
        tiler.predict(image, str(onnx), tile=64, overlap=16, device="cpu")
    assert "\n" not in str(info.value)
    assert tiler.predict(image, str(onnx), tile=32, overlap=8, device="cpu").shape == (2, 40, 40)


def test_onnx_runtime_errors_keep_their_substance_on_one_line() -> None:
    from tiler.runners.onnx import _one_line

    exc = RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\n"
                       " index: 2 Got: 64 Expected: 32\n Please fix either the inputs or the model.")
    assert _one_line(exc) == ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions "
                              "index: 2 Got: 64 Expected: 32 Please fix either the inputs or the model.")
    assert _one_line(RuntimeError("")) == "RuntimeError"
