"""Output kinds and their conversion (tiler/engine/outputs.py), activation "none" included."""

from __future__ import annotations

import numpy as np
import pytest

import tiler
from tiler.engine.outputs import OutputSpec
from tiler.errors import OutputError
from tiler.models.spec import ModelSpec
from tiler.runners.base import FunctionRunner
from tiler.store.sink import ZarrSink


def test_one_channel_probabilities_are_labelled_at_one_half() -> None:
    # activation "none": the model returns probabilities, so labels are p > 0.5, not p > 0
    spec = OutputSpec(kind="labels", channels=1, activation="none")
    p = np.array([[[0.1, 0.4, 0.6, 0.9]]], np.float32)
    assert spec.convert(p).tolist() == [[0, 0, 1, 1]]

def test_probabilities_slightly_out_of_range_do_not_wrap_in_uint8() -> None:
    spec = OutputSpec(kind="probs", channels=1, activation="none")
    p = np.array([[[-0.02, 0.0, 1.0, 1.02]]], np.float32)
    assert spec.convert(p).tolist() == [[[0, 0, 255, 255]]]

def test_overwrite_refuses_a_directory_that_is_not_a_zarr_group(tmp_path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a tiler output"):
        ZarrSink.create(folder, shape=(8, 8), dtype=np.dtype("uint8"), chunk=16, stripes=(1, 1),
                        attributes={}, overwrite=True)
    assert (folder / "precious.txt").read_text() == "keep me"

def test_overwrite_refuses_a_file(tmp_path) -> None:
    image = tmp_path / "scan.tif"
    image.write_bytes(b"II*\x00")
    with pytest.raises(OutputError, match="not a tiler output"):
        ZarrSink.create(image, shape=(8, 8), dtype=np.dtype("uint8"), chunk=16, stripes=(1, 1),
                        attributes={}, overwrite=True)
    assert image.read_bytes() == b"II*\x00"

def test_overwrite_replaces_an_earlier_output_but_not_another_programs_group(tmp_path) -> None:
    out = tmp_path / "out.zarr"
    for k in range(2):
        ZarrSink.create(out, shape=(8, 8), dtype=np.dtype("uint8"), chunk=16, stripes=(1, 1),
                        attributes={"tiler": {"k": k}}, overwrite=True)
    assert ZarrSink.open(out).attributes == {"tiler": {"k": 1}}
    theirs = tmp_path / "theirs.zarr"
    ZarrSink.create(theirs, shape=(8, 8), dtype=np.dtype("uint8"), chunk=16, stripes=(1, 1),
                    attributes={"a": 1})
    with pytest.raises(OutputError, match="a zarr group that tiler did not write"):
        ZarrSink.create(theirs, shape=(8, 8), dtype=np.dtype("uint8"), chunk=16, stripes=(1, 1),
                        attributes={"tiler": {}}, overwrite=True)
    assert ZarrSink.open(theirs).attributes == {"a": 1}

def test_eval_labels_of_stored_probabilities_at_one_half() -> None:
    from tiler.results.result import to_labels

    p = np.array([[[0.1, 0.4, 0.6, 0.9]]], np.float32)
    assert to_labels(p, "logits", "none").tolist() == [[0, 0, 1, 1]]
    assert to_labels(p, "logits").tolist() == [[1, 1, 1, 1]]  # real logits: above 0

def test_labels_of_a_probability_model_end_to_end(tmp_path) -> None:
    # a model that outputs probabilities (activation "none"): 0.3 everywhere is background
    spec = ModelSpec(name="p", scale=1.0, activation="none")
    runner = FunctionRunner(lambda x: np.full((len(x), 1, *x.shape[2:]), 0.3, np.float32), spec)
    res = tiler.run(np.zeros((40, 50, 1), np.float32), runner, out=tmp_path / "l.zarr", tile=32,
                    overlap=8, output="labels", chunk=16, pyramid=False)
    import zarr

    assert not np.asarray(zarr.open_group(str(res.path))["0"][:]).any()


def test_a_function_model_of_the_wrong_output_size_is_a_model_error() -> None:
    from tiler.errors import ModelError

    halves = FunctionRunner(lambda x: x[:, :, ::2, ::2], normalise=False)
    with pytest.raises(ModelError, match=r"returned shape \(1, 1, 32, 32\) for input \(1, 1, 64, 64\)"):
        tiler.predict(np.zeros((100, 100, 1), np.float32), halves, tile=64, overlap=16)


@pytest.mark.parametrize("std", [(0.0,), (-1.0,), (float("nan"),)])
def test_a_std_that_is_not_positive_is_refused_when_the_spec_is_read(std) -> None:
    from tiler.errors import ModelError

    with pytest.raises(ModelError, match="std that is not positive"):
        ModelSpec.from_dict({"mean": [0.5], "std": list(std)})
