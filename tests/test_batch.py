"""Archives: directories, globs and manifests; one bad input is reported, the rest complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from tiler.cli import batch
from tiler.cli.main import main
from tiler.errors import InputError

from .conftest import make_image, write_tiff

SMALL = ["--tile", "64", "--overlap", "16", "--chunk", "64", "--device", "cpu"]


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    d = tmp_path / "slides"
    d.mkdir()
    for i in range(3):
        write_tiff(d / f"slide{i}.tif", make_image((150 + 20 * i, 130, 3), seed=i))
    data = (d / "slide0.tif").read_bytes()
    (d / "broken.tif").write_bytes(data[: len(data) // 3])  # truncated
    (d / "notes.txt").write_text("not an input")  # ignored: not an image suffix
    return d


def _complete(path: Path) -> bool:
    return bool(dict(zarr.open_group(str(path), mode="r").attrs)["tiler"]["complete"])


def test_directory_with_one_corrupt_file(archive, tmp_path, capsys, model_file):
    out_dir, report = tmp_path / "preds", tmp_path / "report.json"
    out_dir.mkdir()
    code = main(["run", str(archive), "--model", str(model_file), "--out-dir", str(out_dir),
                 "--report", str(report), *SMALL])
    captured = capsys.readouterr()
    assert code == 1
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "broken.tif" in errors[0] and "truncated" in errors[0]
    assert "3 of 4 inputs done, 1 failed: broken.tif" in captured.out
    data = json.loads(report.read_text())
    assert (data["ok"], data["failed"]) == (3, 1)
    rows = {Path(r["input"]).name: r for r in data["inputs"]}
    assert set(rows) == {"broken.tif", "slide0.tif", "slide1.tif", "slide2.tif"}
    assert rows["broken.tif"]["status"] == "failed" and "truncated" in rows["broken.tif"]["error"]
    assert rows["broken.tif"]["tiles"] == 0
    for i in range(3):
        row = rows[f"slide{i}.tif"]
        assert row["status"] == "ok" and row["error"] is None and row["tiles"] > 0 and row["seconds"] > 0
        assert row["output"] == str(out_dir / f"slide{i}.zarr")
        assert _complete(out_dir / f"slide{i}.zarr")
        assert zarr.open_group(str(out_dir / f"slide{i}.zarr"))["0"].shape == (2, 150 + 20 * i, 130)
    assert not (out_dir / "broken.zarr").exists() or not _complete(out_dir / "broken.zarr")


def test_glob_and_manifest_csv_with_outputs(archive, tmp_path, model_file):
    manifest = tmp_path / "list.csv"
    manifest.write_text("input,output\nslides/slide1.tif,custom/one.zarr\nslides/slide2.tif,\n")
    report = tmp_path / "r.json"
    code = main(["run", str(archive / "slide0.*"), "--manifest", str(manifest), "--model", str(model_file),
                 "--report", str(report), *SMALL])
    assert code == 0
    outputs = [r["output"] for r in json.loads(report.read_text())["inputs"]]
    assert outputs == [str(archive / "slide0.zarr"), str(tmp_path / "custom/one.zarr"),
                       str(archive / "slide2.zarr")]
    assert all(_complete(Path(o)) for o in outputs)


def test_plain_manifest_and_collect(archive, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# slides\n{archive / 'slide2.tif'}\nslides/slide0.tif\n\n")
    items = batch.collect([str(archive / "slide0.tif")], str(manifest))
    assert [Path(i.input).name for i in items] == ["slide0.tif", "slide2.tif"]  # duplicate dropped
    missing = batch.collect([str(tmp_path / "nothing*.tif")])
    assert missing[0].status == "failed" and "no files match" in missing[0].error


def test_same_output_twice_is_a_failure_not_an_overwrite(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    items = [batch.Item(str(a / "x.tif")), batch.Item(str(b / "x.tif"))]
    batch.assign_outputs(items, tmp_path / "out")
    assert items[0].status == "pending" and items[1].status == "failed"
    assert "also the output of" in items[1].error


def test_out_with_several_inputs_is_refused(archive, capsys, model_file):
    code = main(["run", str(archive / "slide0.tif"), str(archive / "slide1.tif"), "-o", "x.zarr",
                 "--model", str(model_file)])
    assert code == 1 and "use --out-dir" in capsys.readouterr().err


def test_archive_on_an_existing_scheduler_equals_single_process(archive, tmp_path, model_file):
    from distributed import LocalCluster

    one, two = tmp_path / "one", tmp_path / "two"
    files = [str(archive / f"slide{i}.tif") for i in range(2)]
    assert main(["run", *files, "--model", str(model_file), "--out-dir", str(one), *SMALL]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert main(["run", *files, "--model", str(model_file), "--out-dir", str(two),
                     "--scheduler", cluster.scheduler_address, *SMALL]) == 0
    for i in range(2):
        a = zarr.open_group(str(one / f"slide{i}.zarr"))["0"][:]
        b = zarr.open_group(str(two / f"slide{i}.zarr"))["0"][:]
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_unwritable_report_fails_before_any_work(archive, tmp_path, capsys, model_file):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["run", str(archive / "slide0.tif"), "--model", str(model_file), "--report",
                 str(blocker / "r.json"), *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and "cannot write the report" in err
    assert not (archive / "slide0.zarr").exists()


# --- archive bookkeeping: duplicate outputs, manifest line numbers -----------------------------------

def test_a_third_input_on_the_same_output_names_the_one_that_owns_it(tmp_path) -> None:
    dirs = [tmp_path / d for d in "abc"]
    for d in dirs:
        d.mkdir()
    items = [batch.Item(str(d / "x.tif")) for d in dirs]
    batch.assign_outputs(items, tmp_path / "out")
    assert [i.status for i in items] == ["pending", "failed", "failed"]
    assert items[2].error.endswith(f"also the output of {items[0].input}; use a manifest with an output "
                                   "column, or separate runs")


def test_a_manifest_error_names_the_line_of_the_file(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("# slides of March\n\ninput,output\na.tif,a.zarr\n# b is pending\n,b.zarr\n")
    with pytest.raises(InputError, match="line 6 has no input"):
        batch.read_manifest(manifest)
