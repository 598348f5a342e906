"""The model's pixel size (``ModelSpec.mpp``): carried by checkpoints, TorchScript and ONNX metadata and
``--model-mpp``, and read at by default (``tiler.engine.resolution``), with a note or a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import tiler
from tiler.cli.main import _one_line_warning, main
from tiler.errors import ModelError, Note, PixelSizeWarning
from tiler.models.spec import ModelSpec
from tiler.runners.factory import load_runner

from ._wsi_files import slide_image, write_ome_pyramid
from .conftest import _Head, smooth_image, write_tiff


def _torchscript(path: Path, mpp: float | None) -> Path:
    module = torch.jit.script(_Head().eval())
    meta = {"name": "head", "in_channels": 3, "out_channels": 2} | ({"mpp": mpp} if mpp else {})
    torch.jit.save(module, str(path), _extra_files={"tiler.json": json.dumps(meta)})
    return path


def _onnx(path: Path, mpp: float) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 1, 1], [0.5, -0.25, 0.1, 0.2, 0.3, -0.4])
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node], "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, "h", "w"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"tiler": json.dumps({"name": "onnx-head", "in_channels": 3, "out_channels": 2,
                                                        "mpp": mpp})})
    onnx.save(model, path)
    return path


@pytest.fixture
def pyramid_file(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """An OME-TIFF pyramid at 0.5, 1 and 2 µm/px."""
    path = tmp_path / "slide.ome.tif"
    return path, write_ome_pyramid(path, slide_image((256, 320), seed=1), levels=3, mpp=0.5)


def test_spec_records_mpp_only_when_stated_and_refuses_nonsense():
    assert "mpp" not in ModelSpec().to_dict()  # records written before mpp existed compare equal
    spec = ModelSpec(mpp=0.5)
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec and spec.to_dict()["mpp"] == 0.5
    for bad in (0, -1.0, "half", float("inf")):
        with pytest.raises(ModelError, match="pixel size"):
            ModelSpec(mpp=bad)


def test_mpp_travels_in_checkpoints_torchscript_and_onnx(tmp_path, small_unet_checkpoint):
    checkpoint = torch.load(small_unet_checkpoint, weights_only=True)
    checkpoint["tiler"] = {"mpp": 0.25}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    assert load_runner(tmp_path / "ckpt.pt", device="cpu").spec.mpp == 0.25
    assert load_runner(_torchscript(tmp_path / "ts.pt", 0.5), device="cpu").spec.mpp == 0.5
    assert load_runner(_onnx(tmp_path / "m.onnx", 2.0), device="cpu", provider="cpu").spec.mpp == 2.0
    assert load_runner(tmp_path / "ts.pt", device="cpu", overrides={"mpp": 1.0}).spec.mpp == 1.0  # --model-mpp


def test_a_model_with_a_pixel_size_is_run_at_it_by_default(tmp_path, pyramid_file):
    path, _ = pyramid_file
    model = _torchscript(tmp_path / "at1.pt", 1.0)
    with pytest.warns(Note, match=r"reading at the model's pixel size, 1 µm/px \(the file's is 0.5 µm/px\)"):
        auto = tiler.run(path, model, out=tmp_path / "auto.zarr", device="cpu", tile=64, overlap=16, pyramid=False)
    explicit = tiler.run(path, model, out=tmp_path / "explicit.zarr", device="cpu", mpp=1.0, tile=64, overlap=16,
                         pyramid=False)
    a, b = zarr.open_group(auto.path, mode="r"), zarr.open_group(explicit.path, mode="r")
    assert a["0"].shape == (2, 128, 160)  # level 1 (1 µm/px), not level 0
    np.testing.assert_array_equal(a["0"][...], b["0"][...])
    assert a.attrs["tiler"]["input"]["mpp"] == [1.0, 1.0] and a.attrs["tiler"]["model"]["spec"]["mpp"] == 1.0
    assert a.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == 1.0


def test_the_users_level_or_mpp_wins_and_a_matching_file_says_nothing(tmp_path, pyramid_file):
    path, pyramid = pyramid_file
    model = _torchscript(tmp_path / "at1.pt", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Note)
        at0 = tiler.predict(path, model, device="cpu", level=0, tile=64, overlap=16)
        at2 = tiler.predict(path, model, device="cpu", mpp=2.0, tile=64, overlap=16)
        same = tiler.predict(path, _torchscript(tmp_path / "at05.pt", 0.5), device="cpu", tile=64, overlap=16)
    assert at0.shape == (2, 256, 320) and at2.shape == (2, 64, 80) and same.shape == (2, 256, 320)


def test_model_mpp_between_levels_resamples_from_the_finer_one(tmp_path, pyramid_file):
    path, pyramid = pyramid_file
    with pytest.warns(Note):
        out = tiler.predict(path, _torchscript(tmp_path / "m.pt", 0.75), device="cpu", tile=64, overlap=16)
    assert out.shape == (2, round(256 / 1.5), round(320 / 1.5))
    np.testing.assert_array_equal(out, tiler.predict(path, _torchscript(tmp_path / "m.pt", None), device="cpu",
                                                     mpp=0.75, tile=64, overlap=16))


def test_a_file_without_pixel_size_warns_once_and_runs_as_stored(tmp_path):
    path = write_tiff(tmp_path / "plain.tif", smooth_image((96, 128, 3)), compression=None)
    with pytest.warns(PixelSizeWarning) as record:
        out = tiler.predict(path, _torchscript(tmp_path / "m.pt", 0.5), device="cpu", tile=64, overlap=16)
    ours = [w for w in record if issubclass(w.category, PixelSizeWarning)]
    assert out.shape == (2, 96, 128) and len(ours) == 1
    message = str(ours[0].message)
    assert "\n" not in message and "states no pixel size" in message and "0.5 µm/px" in message
    model = load_runner(tmp_path / "m.pt", device="cpu")
    with warnings.catch_warnings():  # an array is the caller's own pixels: never resampled, no warning
        warnings.simplefilter("error", PixelSizeWarning)
        warnings.simplefilter("error", Note)
        tiler.predict(smooth_image((96, 128, 3)), model, tile=64, overlap=16)


def test_cli_model_mpp_reads_the_matching_level_and_says_so_in_one_line(tmp_path, pyramid_file):
    path, _ = pyramid_file
    model = _torchscript(tmp_path / "plain.pt", None)
    out = tmp_path / "o.zarr"
    with pytest.warns(Note) as record:
        assert main(["run", str(path), "--model", str(model), "--model-mpp", "2", "--device", "cpu", "--tile", "64",
                     "--overlap", "16", "--no-pyramid", "-o", str(out)]) == 0
    notes = [w for w in record if issubclass(w.category, Note)]
    assert len(notes) == 1 and "reading at the model's pixel size, 2 µm/px" in str(notes[0].message)
    assert zarr.open_group(out, mode="r")["0"].shape == (2, 64, 80)
    assert _one_line_warning(notes[0].message, Note, "", 0) == f"note: {notes[0].message}\n"  # how the CLI prints it
    assert _one_line_warning("x", PixelSizeWarning, "", 0) == "warning: x\n"


def test_model_mpp_has_help_with_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model-mpp X" in text and "e.g. --model-mpp 0.5" in text and "--reader" in text


@pytest.mark.slow  # the export verifies the TorchScript against PyTorch (about 8 s)
def test_export_model_mpp_writes_the_pixel_size_into_the_exported_file(tmp_path, small_unet_checkpoint):
    out = tmp_path / "unet.torchscript.pt"
    assert main(["export", str(small_unet_checkpoint), "--format", "torchscript", "--out", str(out),
                 "--model-mpp", "0.5"]) == 0
    assert load_runner(out, device="cpu").spec.mpp == 0.5
