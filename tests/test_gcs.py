"""Inputs and outputs on Google Cloud Storage (``gs://``), against a GCS JSON API server on
127.0.0.1 (``gcp-storage-emulator``, with GCS's generation preconditions: :mod:`tests._gcs`).

Every client finds the server through ``STORAGE_EMULATOR_HOST``, as a user's run would.
"""

from __future__ import annotations

import importlib.util
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import OutputError
from tiler.sources import open_source
from tiler.sources.remote import COUNTERS
from tiler.store.location import GCSRecord, RemoteLocation

from ._gcs import gcs_environment, reset_clients, start_gcs
from ._s3 import check_lock_takeover, environment
from .conftest import make_image, write_tiff

pytest.importorskip("gcp_storage_emulator")
if importlib.util.find_spec("gcsfs") is None:  # not imported here: it reads its variables when imported
    pytest.skip("gcsfs is not installed", allow_module_level=True)

ARGS = ["--tile", "64", "--overlap", "16", "--chunk", "64", "--batch-size", "4", "--device", "cpu"]
BUCKET = "tiler-test"


@pytest.fixture(scope="module")
def gcs() -> Any:
    """The emulator's endpoint, with ``STORAGE_EMULATOR_HOST`` set for this module."""
    server, endpoint = start_gcs(BUCKET)
    with environment(gcs_environment(endpoint), reset=reset_clients):
        yield endpoint
    server.stop()


@pytest.fixture
def prefix(gcs: str) -> str:
    """A fresh prefix in the bucket, for one test."""
    return f"gs://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 384 x 448 JPEG-tiled RGB TIFF (tiles of 64)."""
    return write_tiff(tmp_path_factory.mktemp("gcs") / "scan.tif", make_image((384, 448, 3), seed=11))


def _fs() -> Any:
    import gcsfs

    return gcsfs.GCSFileSystem(use_listings_cache=False, token="anon")


def _keys(url: str) -> list[str]:
    return sorted(_fs().find(url.removeprefix("gs://")))


def test_the_emulator_enforces_generation_preconditions(gcs):
    """The fixture's preconditions themselves (what the owner record's safety rests on)."""
    fs = _fs()
    path = f"{BUCKET}/pre/object"
    fs.pipe(path, b"one", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe(path, b"two", mode="create")  # ifGenerationMatch=0 on a live object: 412
    assert fs.cat(path) == b"one"


def test_tiff_regions_from_gcs_equal_the_local_file_in_few_coalesced_requests(prefix, scan):
    url = f"{prefix}/scan.tif"
    _fs().put(str(scan), url.removeprefix("gs://"))
    remote, local = open_source(url), open_source(scan)
    assert remote.shape == local.shape and remote.dtype == local.dtype and remote.info.format == "tiff"
    for box in [(0, 384, 0, 448), (10, 70, 300, 448), (63, 65, 63, 65)]:
        before = COUNTERS.snapshot()
        np.testing.assert_array_equal(remote.read(*box), local.read(*box))
        assert COUNTERS.snapshot()[0] - before[0] == 1  # one coalesced range request per region
    remote.close()
    local.close()


@pytest.mark.slow
def test_a_gcs_to_gcs_run_equals_the_local_run_bit_for_bit(prefix, scan, model_file, tmp_path, capsys):
    url = f"{prefix}/in/scan.tif"
    _fs().put(str(scan), url.removeprefix("gs://"))
    local = tmp_path / "local.zarr"
    assert main(["run", str(scan), "--model", str(model_file), "-o", str(local), "--kind", "probs", *ARGS]) == 0
    out = f"{prefix}/out/scan.zarr"
    assert main(["run", url, "--model", str(model_file), "--out-dir", f"{prefix}/out", "--kind", "probs",
                 *ARGS]) == 0
    assert f"wrote {out}: 2 x 384 x 448 uint8" in capsys.readouterr().out
    remote = zarr.open_group(RemoteLocation(out).zarr_store(read_only=True), mode="r")
    reference = zarr.open_group(str(local), mode="r")
    assert sorted(remote.keys()) == sorted(reference.keys())
    for key in reference.keys():  # level 0, pyramid levels and the progress record
        np.testing.assert_array_equal(remote[key][:], reference[key][:])
    meta = dict(remote.attrs)["tiler"]
    assert meta["complete"] is True and meta["input"]["path"] == url
    assert f"{out.removeprefix('gs://')}.owner.json" not in _keys(f"{prefix}/out")  # released
    # again: refused without --overwrite; a complete output resumes as a no-op
    assert main(["run", url, "--model", str(model_file), "-o", out, "--kind", "probs", *ARGS]) == 1
    assert capsys.readouterr().err.strip() == f"error: {out}: already exists; pass --overwrite to replace it"
    assert main(["run", url, "--model", str(model_file), "-o", out, "--kind", "probs", "--resume", *ARGS]) == 0
    assert "already complete" in capsys.readouterr().out
    # --overwrite replaces tiler's own output there
    assert main(["run", url, "--model", str(model_file), "-o", out, "--kind", "labels", "--overwrite", *ARGS]) == 0
    replaced = zarr.open_group(RemoteLocation(out).zarr_store(read_only=True), mode="r")
    assert replaced["0"].shape == (384, 448) and dict(replaced.attrs)["tiler"]["settings"]["output"] == "labels"


def test_overwrite_refuses_what_tiler_did_not_write_on_gcs(prefix, scan, model_file, capsys):
    url = f"{prefix}/scan.tif"
    fs = _fs()
    fs.put(str(scan), url.removeprefix("gs://"))
    foreign = f"{prefix}/theirs.zarr"
    group = zarr.open_group(RemoteLocation(foreign).zarr_store(), mode="w")
    group.create_array("0", data=np.ones((8, 8), np.uint8))
    fs.pipe(f"{prefix.removeprefix('gs://')}/notes/readme.txt", b"keep me")
    before = _keys(prefix)
    for out, what in [(foreign, "a zarr group that tiler did not write"),
                      (f"{prefix}/notes", "a prefix holding other objects"),
                      (url, "is the input itself")]:
        assert main(["run", url, "--model", str(model_file), "-o", out, "--overwrite", *ARGS]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {out}: ") and what in err, err
    assert _keys(prefix) == before  # nothing deleted, nothing added


def test_the_owner_record_on_gcs_is_created_exclusively_and_taken_over_only_from_a_dead_run(prefix):
    where = RemoteLocation(f"{prefix}/shared.zarr")
    record = where.owner_record()
    assert isinstance(record, GCSRecord)
    assert record.create(b"first") is True
    assert record.create(b"second") is False  # ifGenerationMatch=0
    assert record.read() == b"first"
    assert record.remove_if(b"other") is False and record.read() == b"first"
    # a heartbeat of a record another run rewrote meanwhile fails instead of overwriting it
    other = RemoteLocation(where.url).owner_record()
    assert other.read() == b"first"
    record.replace(b"first, renewed")
    with pytest.raises(OutputError, match="rewritten by another run"):
        other.replace(b"stale writer")
    assert record.read() == b"first, renewed"
    assert record.remove_if(b"first, renewed") is True and record.read() is None
    check_lock_takeover(where)


def test_of_runs_racing_to_create_the_gcs_record_exactly_one_wins(prefix):
    where = RemoteLocation(f"{prefix}/race.zarr")
    wins: list[bool] = []
    start = threading.Barrier(6)

    def racer(i: int) -> None:
        record = RemoteLocation(where.url).owner_record()
        start.wait()
        wins.append(record.create(f"run {i}".encode()))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]


def test_a_gcs_input_runs_through_the_api_like_the_local_file(prefix, scan, model_file, tmp_path):
    url = f"{prefix}/api/scan.tif"
    _fs().put(str(scan), url.removeprefix("gs://"))
    settings: dict[str, Any] = {"tile": 64, "overlap": 16, "chunk": 64, "batch_size": 4, "device": "cpu",
                                "pyramid": False}
    a = tiler.run(url, model_file, out=tmp_path / "remote.zarr", **settings)
    b = tiler.run(scan, model_file, out=tmp_path / "local.zarr", **settings)
    np.testing.assert_array_equal(zarr.open_group(str(a.path), mode="r")["0"][:],
                                  zarr.open_group(str(b.path), mode="r")["0"][:])


def test_a_missing_object_or_bucket_on_gcs_is_a_one_line_error(prefix, scan, model_file, capsys):
    url = f"{prefix}/scan.tif"
    _fs().put(str(scan), url.removeprefix("gs://"))
    cases = [([f"{prefix}/nope.tif"], f"error: {prefix}/nope.tif: no such object or bucket"),
             (["gs://no-such-bucket-here/scan.tif"],
              "error: gs://no-such-bucket-here/scan.tif: no such object or bucket"),
             ([url, "-o", "gs://no-such-bucket-here/out.zarr"],
              "error: gs://no-such-bucket-here/out.zarr: the bucket 'no-such-bucket-here' does not exist")]
    for argv, expected in cases:
        assert main(["run", *argv, "--model", str(model_file), *ARGS]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(expected) and err.count("\n") == 0, err
