"""OME-Zarr metadata viewers read (tiler/store/ome.py): a labels output carries an OME-Zarr label image
(``labels/prediction``, class colours and names) beside its level 0 at the root; probabilities carry
``omero`` channel names. Checked with ome-zarr-models' validation and napari-ome-zarr's reader."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

import tiler
from tiler.models.colours import OKABE_ITO

ome_zarr_models = pytest.importorskip("ome_zarr_models")
from ome_zarr_models.v05.image import Image  # noqa: E402
from ome_zarr_models.v05.image_label import ImageLabel  # noqa: E402
from ome_zarr_models.v05.labels import Labels  # noqa: E402

NAMES = ["glass", "tissue"]


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (150, 170, 3), dtype=np.uint8)


def _napari_layers(path):
    napari_ome_zarr = pytest.importorskip("napari_ome_zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = napari_ome_zarr.napari_get_reader(str(path))
        assert reader is not None, f"napari-ome-zarr does not read {path}"
        return reader(str(path))


@pytest.mark.parametrize("colours", [None, ("#000000", "#ff00aa")])
def test_labels_output_carries_an_ome_zarr_label_image_with_colours_and_names(tmp_path, model_file, colours,
                                                                              one_torch_thread):
    out = tmp_path / "labels.zarr"
    overrides = {"class_names": tuple(NAMES)} | ({"class_colours": colours} if colours else {})
    tiler.run(_image(), model_file, out=out, output="labels", tile=64, overlap=16, device="cpu",
              chunk=64, pyramid_levels=3, overrides=overrides)
    root = zarr.open_group(str(out), mode="r")
    assert root["0"].shape == (150, 170)  # level 0 stays at the root
    Image.from_zarr(root)  # validates, the labels group included
    Labels.from_zarr(root["labels"])
    label = ImageLabel.from_zarr(root["labels/prediction"])
    meta = label.attributes.ome.image_label
    want = [(0, 0, 0), (255, 0, 170)] if colours else [(0, 0, 0), tuple(int(v) for v in OKABE_ITO[0])]
    assert [tuple(c.rgba) for c in meta.colors] == [(*want[0], 0), (*want[1], 255)]  # background clear
    assert [(p.label_value, p.model_extra["class"] if p.model_extra else None) for p in meta.properties] \
        == [(0, "glass"), (1, "tissue")]
    for level in ("0", "1", "2"):
        np.testing.assert_array_equal(root[f"labels/prediction/{level}"][...], root[level][...])
    chunk = next(p for p in (out / "0" / "c").rglob("*") if p.is_file())
    assert chunk.is_file() and chunk.stat().st_nlink == 2, "the label image's chunks are hard links"
    layers = _napari_layers(out)
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "labels"], kinds
    data, kwargs, _ = layers[1]
    assert kwargs["properties"]["class"] == NAMES
    np.testing.assert_allclose(kwargs["colormap"][1][:3], np.array(want[1]) / 255, atol=1e-6)
    assert data[0].shape == (150, 170)
    # tiler's own readers still see one output; resuming it does nothing, --overwrite replaces it whole
    from tiler.results.evaluate import evaluate

    assert evaluate(out, np.asarray(root["0"])).accuracy == 1.0
    again = tiler.run(_image(), model_file, out=out, output="labels", tile=64, overlap=16, device="cpu",
                      chunk=64, pyramid_levels=3, overrides=overrides, resume=True)
    assert again.already_complete
    tiler.run(_image(), model_file, out=out, output="labels", tile=64, overlap=16, device="cpu",
              chunk=64, pyramid_levels=2, overrides=overrides, overwrite=True)
    root = zarr.open_group(str(out), mode="r")
    assert sorted(root["labels/prediction"].array_keys()) == ["0", "1"]
    ImageLabel.from_zarr(root["labels/prediction"])


def test_probability_output_carries_omero_channel_names_and_colours(tmp_path, model_file, one_torch_thread):
    out = tmp_path / "probs.zarr"
    tiler.run(_image(), model_file, out=out, output="probs", tile=64, overlap=16, device="cpu",
              overrides={"class_names": tuple(NAMES)}, pyramid_levels=2)
    root = zarr.open_group(str(out), mode="r")
    image = Image.from_zarr(root)
    omero = root.attrs["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == NAMES
    assert omero["channels"][1]["color"] == "E69F00"
    assert omero["channels"][0]["window"] == {"min": 0.0, "max": 255.0, "start": 0.0, "end": 255.0}
    assert image.attributes.ome.multiscales[0].datasets[0].path == "0"
    assert "labels" not in root
    layers = _napari_layers(out)
    assert [kind for _, _, kind in layers] == ["image"]
    assert layers[0][1]["name"] == [f"prediction: {n}" for n in NAMES]
