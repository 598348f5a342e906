"""``tiler export-result --format geojson|qupath|gpkg|geoparquet`` and ``tiler run --objects``:
files read back, resumes that write only what is missing, one file per input, one-line errors."""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import pytest
import torch
import zarr
from rasterio.features import rasterize

from tests.conftest import make_image, write_tiff
from tests.test_objects import blobs, make_output
from tiler.cli.export_result import VECTOR_FORMATS as CLI_FORMATS
from tiler.cli.main import main as cli
from tiler.objects import VECTOR_FORMATS
from tiler.objects.label import INSTANCES


def test_the_cli_offers_every_vector_format():
    assert CLI_FORMATS == VECTOR_FORMATS


def test_export_result_writes_qupath_geojson_and_a_table(tmp_path, capsys):
    image = blobs((50, 60), seed=1)
    out = make_output(tmp_path / "scan.zarr", image, mpp=(0.5, 0.5))
    rc = cli(["export-result", str(out), "--format", "qupath", "--classes", "stroma", "--min-area", "3",
              "--table", str(tmp_path / "scan.csv")])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    data = json.loads((tmp_path / "scan.qupath.geojson").read_text())
    names = {f["properties"]["classification"]["name"] for f in data["features"]}
    assert names == {"stroma"} and all(f["properties"]["objectType"] == "annotation" for f in data["features"])
    assert (tmp_path / "scan.csv").read_text().startswith("\"id\",\"class\",\"class_name\",\"area_px\",\"area_um2\"")


@pytest.mark.parametrize(("args", "message"), [
    (["--classes", "nuclei"], "no class 'nuclei'; the classes are background, tumour, stroma"),
    (["--classes", "7"], "no class '7'"),
    ([], "already exists; pass --overwrite"),
])
def test_export_result_errors_are_one_line(tmp_path, capsys, args, message):
    out = make_output(tmp_path / "scan.zarr", blobs((20, 20), seed=2))
    (tmp_path / "scan.objects.geojson").write_text("{}")
    rc = cli(["export-result", str(out), "--format", "geojson", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: ") and message in err and "\n" not in err
    assert (tmp_path / "scan.objects.geojson").read_text() == "{}"  # never replaced


def test_export_result_refuses_an_incomplete_output_unless_partial(tmp_path, capsys):
    out = make_output(tmp_path / "scan.zarr", blobs((20, 20), seed=3), complete=False)
    assert cli(["export-result", str(out), "--format", "gpkg"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert cli(["export-result", str(out), "--format", "gpkg", "--partial"]) == 0
    assert len(gpd.read_file(tmp_path / "scan.objects.gpkg")) > 0


def test_export_result_help_shows_vector_examples(capsys):
    with pytest.raises(SystemExit):
        cli(["export-result", "--help"])
    text = capsys.readouterr().out
    assert "--format qupath" in text and "--min-area" in text and "--connectivity" in text


class _Threshold(torch.nn.Module):
    """(N, 3, h, w) -> (N, 2, h, w) logits: class 1 where the first channel is above its middle."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, :1] - 0.5) * 20
        return torch.cat([-d, d], dim=1)


@pytest.fixture(scope="module")
def threshold_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "threshold.pt"
    meta = {"name": "threshold", "in_channels": 3, "out_channels": 2, "class_names": ["glass", "tissue"]}
    torch.jit.save(torch.jit.script(_Threshold()), str(path), _extra_files={"tiler.json": json.dumps(meta)})
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("objects-run")
    a = write_tiff(tmp / "a.tif", make_image((96, 80, 3), seed=1), compression=None)
    b = write_tiff(tmp / "b.tif", make_image((64, 96, 3), seed=2), compression=None)
    return tmp, a, b


def _run(*args: str) -> int:
    return cli(["run", *args, "--kind", "labels", "--tile", "64", "--overlap", "16", "--chunk", "32",
                "--device", "cpu", "--no-pyramid"])


@pytest.mark.slow
def test_run_objects_writes_resumes_and_makes_one_file_per_input(inputs, threshold_model, tmp_path, capsys):
    src, a, b = inputs
    for f in (a, b):
        shutil.copy(f, tmp_path / f.name)
    a, b = tmp_path / a.name, tmp_path / b.name
    assert _run(str(a), "--model", str(threshold_model), "--objects", "geojson") == 0
    labels = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["0"][...]
    df = gpd.read_file(tmp_path / "a.objects.geojson")
    back = rasterize(zip(df.geometry, df["class"]), out_shape=labels.shape, dtype="uint8")
    assert (back == labels).all() and 0 < (labels == 1).mean() < 1 and set(df["class_name"]) == {"tissue"}
    # a resume of the complete output writes nothing, objects included
    capsys.readouterr()
    mtime = (tmp_path / "a.objects.geojson").stat().st_mtime_ns
    assert _run(str(a), "--model", str(threshold_model), "--objects", "geojson", "--resume") == 0
    assert "objects already written" in capsys.readouterr().out
    assert (tmp_path / "a.objects.geojson").stat().st_mtime_ns == mtime
    # killed after the instances, before the file: the resume writes only the file
    (tmp_path / "a.objects.geojson").unlink()
    inst = (tmp_path / "a.zarr" / INSTANCES / "zarr.json").stat().st_mtime_ns
    assert _run(str(a), "--model", str(threshold_model), "--objects", "geojson", "--resume") == 0
    assert (tmp_path / "a.objects.geojson").exists()
    assert json.loads((tmp_path / "a.zarr" / INSTANCES / "zarr.json").read_text())["attributes"][
        "tiler_objects"]["complete"] is True
    assert (tmp_path / "a.zarr" / INSTANCES / "0" / "zarr.json").exists() and inst > 0
    # an archive: one file per input, named from each output
    assert _run(str(a), str(b), "--model", str(threshold_model), "--objects", str(tmp_path / "{name}.gpkg"),
                "--overwrite") == 0
    for name in ("a", "b"):
        assert gpd.read_file(tmp_path / f"{name}.gpkg").crs is None
    capsys.readouterr()
    assert _run(str(a), str(b), "--model", str(threshold_model), "--objects", str(tmp_path / "one.gpkg"),
                "--overwrite") == 1
    assert "one file for several inputs" in capsys.readouterr().err


def test_run_objects_needs_a_labels_or_probs_kind(tmp_path, capsys, model_file):
    rc = cli(["run", str(tmp_path / "a.tif"), "--model", str(threshold_model), "--objects", "geojson"])
    assert rc == 1 and "--objects needs --kind labels or --kind probs" in capsys.readouterr().err
    rc = cli(["run", str(tmp_path / "a.tif"), "--kind", "labels", "--objects", "x.kml"])
    assert rc == 1 and "cannot tell the vector format" in capsys.readouterr().err


def test_export_result_takes_the_vector_format_from_the_out_name(tmp_path, capsys):
    out = make_output(tmp_path / "scene.zarr", blobs((24, 20), seed=4))
    assert cli(["export-result", str(out), "--out", str(tmp_path / "fields.gpkg"), "--connectivity", "8"]) == 0
    df = gpd.read_file(tmp_path / "fields.gpkg")
    assert len(df) > 0 and set(df.geom_type) == {"MultiPolygon"}
    assert cli(["export-result", str(out), "--out", str(tmp_path / "scene.parquet")]) == 0
    four = gpd.read_parquet(tmp_path / "scene.parquet")  # 4-connected: at least as many objects
    assert len(four) >= len(df) and set(four.geom_type) == {"Polygon"}
    assert four.area.sum() == df.area.sum()
