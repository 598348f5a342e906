"""Inputs and outputs on S3, against a real S3 HTTP server on 127.0.0.1 (moto's ThreadedMotoServer).

Every client finds the server through the standard variables (``AWS_ENDPOINT_URL``, ...), as a
user's run would; :class:`tests._s3.Proxy` sits in between where a test drops the connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import tiler
from tiler.cli.batch import Item, run_batch
from tiler.cli.main import main
from tiler.errors import InputError, OutputError
from tiler.sources import open_source
from tiler.sources.remote import COUNTERS, coalesce
from tiler.store.location import RemoteLocation
from tiler.store.paths import default_output_path

from ._s3 import Proxy, check_lock_takeover, environment, make_bucket, s3_environment, start_moto
from .conftest import make_image, save_model, write_tiff

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--tile", "64", "--overlap", "16", "--chunk", "64", "--batch-size", "4", "--device", "cpu"]
SETTINGS = {"tile": 64, "overlap": 16, "chunk": 64, "batch_size": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def s3() -> Any:
    """The moto server's endpoint, with the standard AWS variables set for this module."""
    server, endpoint = start_moto()
    with environment(s3_environment(endpoint)):
        yield endpoint
    server.stop()


@pytest.fixture
def bucket(s3: str) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    make_bucket(name)
    return name


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 384 x 448 JPEG-tiled RGB TIFF (tiles of 64)."""
    return write_tiff(tmp_path_factory.mktemp("s3") / "scan.tif", make_image((384, 448, 3), seed=7))


def _put(local: Path, url: str) -> None:
    import s3fs

    s3fs.S3FileSystem().put(str(local), url.removeprefix("s3://"))


def _group(url: str) -> Any:
    return zarr.open_group(RemoteLocation(url).zarr_store(read_only=True), mode="r")


def _keys(url: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(use_listings_cache=False)
    return sorted(fs.find(url.removeprefix("s3://")))


def test_tiff_regions_from_s3_equal_the_local_file_in_few_coalesced_requests(s3, bucket, scan):
    url = f"s3://{bucket}/scan.tif"
    _put(scan, url)
    remote, local = open_source(url), open_source(scan)
    assert remote.shape == local.shape and remote.dtype == local.dtype and remote.info.format == "tiff"
    for box in [(0, 384, 0, 448), (10, 70, 300, 448), (63, 65, 63, 65), (200, 384, 0, 10)]:
        before = COUNTERS.snapshot()
        np.testing.assert_array_equal(remote.read(*box), local.read(*box))
        requests = COUNTERS.snapshot()[0] - before[0]
        assert requests == 1  # every stored tile of the region in one coalesced range request
    remote.close()
    local.close()


def test_coalesce_merges_near_ranges_and_splits_far_or_large_ones():
    groups = coalesce([0, 150, 1000, 50_000, 50_010], [100, 50, 10, 10, 5], max_gap=900, max_request=40_000)
    assert groups == [(0, 1010, [0, 1, 2]), (50_000, 50_015, [3, 4])]
    # a request never exceeds max_request; every range is covered exactly once
    groups = coalesce(list(range(0, 100_000, 1000)), [1000] * 100, max_gap=0, max_request=10_000)
    assert all(e - s <= 10_000 for s, e, _ in groups)
    assert sorted(i for *_, m in groups for i in m) == list(range(100))


@pytest.mark.slow
def test_an_s3_to_s3_run_equals_the_local_run_bit_for_bit(s3, bucket, scan, model_file, tmp_path, capsys):
    url = f"s3://{bucket}/in/scan.tif"
    _put(scan, url)
    local = tmp_path / "local.zarr"
    assert main(["run", str(scan), "--model", str(model_file), "-o", str(local), "--kind", "probs", *ARGS]) == 0
    report = tmp_path / "report.json"
    assert main(["run", url, "--model", str(model_file), "--out-dir", f"s3://{bucket}/out", "--kind", "probs",
                 "--report", str(report), *ARGS]) == 0
    out = f"s3://{bucket}/out/scan.zarr"
    assert f"wrote {out}: 2 x 384 x 448 uint8" in capsys.readouterr().out
    remote, reference = _group(out), zarr.open_group(str(local), mode="r")
    assert sorted(remote.keys()) == sorted(reference.keys())
    for key in reference.keys():  # level 0, pyramid levels and the progress record
        np.testing.assert_array_equal(remote[key][:], reference[key][:])
    meta = dict(remote.attrs)["tiler"]
    assert meta["complete"] is True and meta["input"]["path"] == url
    assert meta["input"]["digest"].startswith("object:")
    item = json.loads(report.read_text())["inputs"][0]
    assert item["status"] == "ok" and item["retries"] == 0 and item["requests"] > 0
    assert f"{bucket}/out/scan.zarr.owner.json" not in _keys(f"s3://{bucket}/out")  # released
    # the same input again: refused (no --overwrite), then a complete output resumes as a no-op
    assert main(["run", url, "--model", str(model_file), "-o", out, "--kind", "probs", *ARGS]) == 1
    assert capsys.readouterr().err.strip() == f"error: {out}: already exists; pass --overwrite to replace it"
    assert main(["run", url, "--model", str(model_file), "-o", out, "--kind", "probs", "--resume", *ARGS]) == 0
    assert "already complete" in capsys.readouterr().out
    # the results commands read an S3 output as they read a local one
    for source, tif in ((out, tmp_path / "remote.ome.tif"), (str(local), tmp_path / "local.ome.tif")):
        assert main(["export-result", source, "--format", "tiff", "--out", str(tif)]) == 0
    import tifffile

    exported = tifffile.imread(tmp_path / "remote.ome.tif")
    np.testing.assert_array_equal(exported, tifffile.imread(tmp_path / "local.ome.tif"))
    # --overwrite replaces tiler's own output on S3 (other settings: other arrays), nothing left over
    assert main(["run", url, "--model", str(model_file), "-o", out, "--kind", "labels", "--overwrite", *ARGS]) == 0
    replaced = _group(out)
    assert replaced["0"].shape == (384, 448) and dict(replaced.attrs)["tiler"]["settings"]["output"] == "labels"


def test_missing_object_missing_bucket_and_wrong_credentials_are_one_line_errors(
    s3, bucket, scan, model_file, tmp_path, capsys, monkeypatch
):
    url = f"s3://{bucket}/scan.tif"
    _put(scan, url)
    base = ["--model", str(model_file), *ARGS]
    cases = [
        (["run", f"s3://{bucket}/nope.tif", *base], f"error: s3://{bucket}/nope.tif: no such object or bucket"),
        (["run", "s3://no-such-bucket-here/scan.tif", *base],
         "error: s3://no-such-bucket-here/scan.tif: no such object or bucket (The specified bucket does not exist)"),
        (["run", url, "-o", "s3://no-such-bucket-here/out.zarr", *base],
         "error: s3://no-such-bucket-here/out.zarr: the bucket 'no-such-bucket-here' does not exist"),
        (["run", url, "-o", "https://example.invalid/out.zarr", *base],
         "error: https://example.invalid/out.zarr: https:// is read-only"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(expected) and err.count("\n") == 0, err
    # wrong credentials: the server now checks signatures against the keys it knows (none)
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with environment({"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1", "AWS_SECRET_ACCESS_KEY": "wrong"}):
        assert main(["run", url, *base]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {url}: access denied (") and err.count("\n") == 0, err
    assert "AWS_ACCESS_KEY_ID" in err
    monkeypatch.undo()
    assert _keys(f"s3://{bucket}") == [f"{bucket}/scan.tif"]  # nothing written anywhere


def test_overwrite_refuses_what_tiler_did_not_write_on_s3(s3, bucket, scan, model_file, capsys):
    url = f"s3://{bucket}/scan.tif"
    _put(scan, url)
    foreign = f"s3://{bucket}/theirs.zarr"
    group = zarr.open_group(RemoteLocation(foreign).zarr_store(), mode="w")
    group.create_array("0", data=np.ones((8, 8), np.uint8))
    import s3fs

    s3fs.S3FileSystem().pipe(f"{bucket}/notes/readme.txt", b"keep me")
    before = _keys(f"s3://{bucket}")
    for out, what in [(foreign, "a zarr group that tiler did not write"),
                      (f"s3://{bucket}/notes", "a prefix holding other objects"),
                      (url, None)]:
        assert main(["run", url, "--model", str(model_file), "-o", out, "--overwrite", *ARGS]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {out}: "), err
        assert (what or "is the input itself") in err
    assert _keys(f"s3://{bucket}") == before  # nothing deleted, nothing added
    np.testing.assert_array_equal(_group(foreign)["0"][:], 1)


def test_the_owner_record_on_s3_is_created_exclusively_and_taken_over_only_from_a_dead_run(s3, bucket):
    where = RemoteLocation(f"s3://{bucket}/shared.zarr")
    record = where.owner_record()
    assert record.create(b"first") is True
    assert record.create(b"second") is False  # If-None-Match: *
    assert record.read() == b"first"
    assert record.remove_if(b"other") is False and record.read() == b"first"
    assert record.remove_if(b"first") is True and record.read() is None
    check_lock_takeover(where)


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tiler.cli.main", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _progress(url: str) -> np.ndarray | None:
    try:
        return np.asarray(_group(url)["progress"][:]).astype(bool)
    except (KeyError, FileNotFoundError, OutputError, ValueError):
        return None


@pytest.mark.slow
def test_a_sigkilled_s3_run_resumes_to_the_same_output(s3, bucket, tmp_path):
    image = write_tiff(tmp_path / "wide.tif", make_image((640, 384, 3), seed=3), compression=None)
    model = save_model(tmp_path / "slow.pt", layers=3, width=8)
    url, out = f"s3://{bucket}/wide.tif", f"s3://{bucket}/wide.zarr"
    _put(image, url)
    settings = ["--tile", "64", "--overlap", "16", "--chunk", "64", "--batch-size", "2", "--device", "cpu",
                "--no-pyramid"]
    reference = tmp_path / "reference.zarr"
    assert main(["run", str(image), "--model", str(model), "-o", str(reference), *settings]) == 0
    proc = _cli("run", url, "--model", str(model), "-o", out, *settings)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            done = _progress(out)
            if done is not None and 2 <= done.sum():
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = _progress(out)
    assert done is not None and 2 <= done.sum() < done.size
    assert dict(_group(out).attrs)["tiler"]["complete"] is False
    assert f"{bucket}/wide.zarr.owner.json" in _keys(f"s3://{bucket}")  # the killed run's record stays
    assert main(["run", url, "--model", str(model), "-o", out, *settings]) == 1  # refused: incomplete
    assert main(["run", url, "--model", str(model), "-o", out, "--resume", *settings]) == 0  # dead pid: taken over
    group = _group(out)
    assert dict(group.attrs)["tiler"]["complete"] is True
    np.testing.assert_allclose(group["0"][:], zarr.open_group(str(reference), mode="r")["0"][:], rtol=0, atol=1e-6)


def _run_through(proxy: Proxy, endpoint: str, url: str, out: str, model: Path, report: Path,
                 on_tiles: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import tiler.sources.remote._retry

    monkeypatch.setattr(tiler.sources.remote._retry, "BACKOFF", 0.05)  # the same retries, sooner
    with environment({"AWS_ENDPOINT_URL": proxy.url}):
        items = [Item(url, out)]
        run_batch(items, model=str(model), report=report, progress=on_tiles, log=lambda _: None,
                  error=lambda _: None, **SETTINGS)
    return json.loads(report.read_text())["inputs"][0]


@pytest.mark.slow
def test_a_dropped_connection_is_retried_then_one_line_error_and_nothing_complete(
    s3, bucket, scan, model_file, tmp_path, monkeypatch
):
    url, out = f"s3://{bucket}/scan.tif", f"s3://{bucket}/dropped.zarr"
    _put(scan, url)
    proxy = Proxy(s3)
    try:
        def drop(done: int, total: int) -> None:
            if done >= 8 and not proxy.broken:
                proxy.break_now()  # the network goes away mid-run and does not come back

        item = _run_through(proxy, s3, url, out, model_file, tmp_path / "r1.json", drop, monkeypatch)
    finally:
        proxy.close()
    assert item["status"] == "failed" and item["error"].count("\n") == 0
    assert "did not answer" in item["error"] and "after 5 attempts" in item["error"], item["error"]
    assert item["retries"] >= 4  # retried with backoff before giving up
    assert dict(_group(out).attrs)["tiler"]["complete"] is False
    done = _progress(out)
    assert done is not None and not done.all()


@pytest.mark.slow
def test_a_short_outage_is_retried_and_the_run_completes_with_the_retries_reported(
    s3, bucket, scan, model_file, tmp_path, monkeypatch
):
    url, out = f"s3://{bucket}/scan.tif", f"s3://{bucket}/healed.zarr"
    _put(scan, url)
    reference = tiler.run(scan, model_file, out=tmp_path / "ref.zarr", **SETTINGS).path
    proxy = Proxy(s3)
    try:
        def blip(done: int, total: int) -> None:
            if done >= 8 and not proxy.broken and not getattr(blip, "fired", False):
                blip.fired = True  # type: ignore[attr-defined]
                proxy.break_now()
                threading.Timer(0.2, lambda: setattr(proxy, "broken", False)).start()

        item = _run_through(proxy, s3, url, out, model_file, tmp_path / "r2.json", blip, monkeypatch)
    finally:
        proxy.close()
    assert item["status"] == "ok", item["error"]
    assert item["retries"] >= 1
    group = _group(out)
    assert dict(group.attrs)["tiler"]["complete"] is True
    np.testing.assert_array_equal(group["0"][:], zarr.open_group(str(reference), mode="r")["0"][:])


def test_urls_as_inputs_and_outputs_keep_the_safety_rules(s3, bucket, scan, model_file):
    url = f"s3://{bucket}/a/scan.tif"
    _put(scan, url)
    with pytest.raises(OutputError, match="the output contains the input"):
        tiler.run(url, model_file, out=f"s3://{bucket}/a", **SETTINGS)
    with pytest.raises(OutputError, match="read-only web server; name the output"):
        default_output_path("https://example.invalid/scan.tif")
    assert default_output_path(url) == f"s3://{bucket}/a/scan.zarr"
    with pytest.raises(InputError, match="not an image tiler can read from a URL"):
        import s3fs

        s3fs.S3FileSystem().pipe(f"{bucket}/a/notes.tif", b"hello, not a TIFF")
        tiler.run(f"s3://{bucket}/a/notes.tif", model_file, out=f"s3://{bucket}/b.zarr", **SETTINGS)


@pytest.mark.slow
def test_dask_workers_read_and_write_s3_and_equal_one_process(s3, bucket, scan, model_file):
    from distributed import Client, LocalCluster

    url = f"s3://{bucket}/scan.tif"
    _put(scan, url)
    single = tiler.run(url, model_file, out=f"s3://{bucket}/one.zarr", **SETTINGS, block_width=128)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            tiler.run(url, model_file, out=f"s3://{bucket}/two.zarr", client=client, **SETTINGS, block_width=128)
    one, two = _group(f"s3://{bucket}/one.zarr"), _group(f"s3://{bucket}/two.zarr")
    assert dict(two.attrs)["tiler"]["complete"] is True and single.tiles > 0
    np.testing.assert_allclose(two["0"][:], one["0"][:], rtol=0, atol=1e-6)


def test_a_missing_cloud_extra_names_what_to_install(s3):
    import importlib.util

    if importlib.util.find_spec("adlfs") is not None:
        pytest.skip("adlfs is installed here")
    with pytest.raises(InputError, match=r"^az://container/scan.tif: reading az:// needs adlfs: pip install"):
        open_source("az://container/scan.tif")


@pytest.mark.slow
def test_a_zarr_store_on_s3_is_read_as_an_input_like_the_local_copy(s3, bucket, scan, model_file, tmp_path):
    array = make_image((200, 168, 3), seed=9)
    local = tmp_path / "plain.zarr"
    zarr.open_array(str(local), mode="w", shape=array.shape, chunks=(64, 64, 3), dtype="uint8")[:] = array
    import s3fs

    s3fs.S3FileSystem().put(str(local), f"{bucket}/plain.zarr", recursive=True)
    remote = open_source(f"s3://{bucket}/plain.zarr")
    np.testing.assert_array_equal(remote.read(10, 190, 5, 160), array[10:190, 5:160])
    # tiler's own output on S3 (an OME-Zarr group) as an input, and the digest that guards --resume
    url = f"s3://{bucket}/scan.tif"
    _put(scan, url)
    tiler.run(url, model_file, out=f"s3://{bucket}/first.zarr", output="probs", **SETTINGS)
    again = open_source(f"s3://{bucket}/first.zarr")
    assert again.info.format == "ome-zarr" and again.shape == (384, 448, 2)
    stored = _group(f"s3://{bucket}/first.zarr")["0"][:]
    np.testing.assert_array_equal(again.read(0, 384, 0, 448), np.moveaxis(stored, 0, -1))
    from tiler.store.identity import input_digest

    before = input_digest(f"s3://{bucket}/plain.zarr")
    s3fs.S3FileSystem().pipe(f"{bucket}/plain.zarr/c/0/0/0", b"rewritten")
    assert input_digest(f"s3://{bucket}/plain.zarr") != before  # a rewritten chunk: resume refuses


@pytest.mark.slow
def test_an_archive_on_s3_by_prefix_glob_and_manifest(s3, bucket, model_file, tmp_path, capsys):
    import s3fs

    fs = s3fs.S3FileSystem()
    for name, seed in (("a.tif", 1), ("b.tif", 2)):
        _put(write_tiff(tmp_path / name, make_image((96, 80, 3), seed=seed)), f"s3://{bucket}/slides/{name}")
    fs.pipe(f"{bucket}/slides/notes.txt", b"not an image")
    report = tmp_path / "report.json"
    assert main(["run", f"s3://{bucket}/slides/", "--model", str(model_file), "--out-dir", f"s3://{bucket}/preds",
                 "--report", str(report), *ARGS]) == 0
    items = json.loads(report.read_text())["inputs"]
    assert [(i["input"], i["output"], i["status"]) for i in items] == [
        (f"s3://{bucket}/slides/{n}.tif", f"s3://{bucket}/preds/{n}.zarr", "ok") for n in "ab"]
    for n in "ab":
        reference = tiler.run(tmp_path / f"{n}.tif", model_file, out=tmp_path / f"{n}.zarr", **SETTINGS).path
        np.testing.assert_array_equal(_group(f"s3://{bucket}/preds/{n}.zarr")["0"][:],
                                      zarr.open_group(str(reference), mode="r")["0"][:])
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"input,output\ns3://{bucket}/slides/b.tif,{tmp_path / 'b2.zarr'}\n")
    assert main(["run", f"s3://{bucket}/slides/a*.tif", "--manifest", str(manifest), "--model", str(model_file),
                 "--out-dir", str(tmp_path / "glob"), *ARGS]) == 0
    assert (tmp_path / "glob" / "a.zarr").is_dir() and (tmp_path / "b2.zarr").is_dir()
    assert main(["run", f"s3://{bucket}/slides/z*.tif", "--model", str(model_file), *ARGS]) == 1
    assert f"error: s3://{bucket}/slides/z*.tif: no objects match the pattern" in capsys.readouterr().err


def test_a_tiff_on_a_web_server_is_read_by_ranges_and_runs_like_the_local_file(scan, model_file, tmp_path):
    from ._s3 import serve_http

    server, root = serve_http(str(scan.parent))
    try:
        url = f"{root}/{scan.name}"
        before = COUNTERS.snapshot()
        remote = tiler.run(url, model_file, out=tmp_path / "web.zarr", **SETTINGS)
        assert remote.requests == COUNTERS.snapshot()[0] - before[0] > 0
        with pytest.raises(OutputError, match="read-only web server; name the output"):
            tiler.run(url, model_file, **SETTINGS)
        with pytest.raises(InputError, match=r"nope.tif: no such object"):
            open_source(f"{root}/nope.tif")
    finally:
        server.shutdown()
    local = tiler.run(scan, model_file, out=tmp_path / "local.zarr", **SETTINGS)
    np.testing.assert_array_equal(zarr.open_group(str(remote.path), mode="r")["0"][:],
                                  zarr.open_group(str(local.path), mode="r")["0"][:])
    assert dict(zarr.open_group(str(remote.path), mode="r").attrs)["tiler"]["input"]["path"] == url


def test_replacing_an_s3_output_deletes_its_prefix_only(s3, bucket):
    import s3fs

    fs = s3fs.S3FileSystem()
    keys = ["out.zarr/zarr.json", "out.zarr/0/c/0/0/0", "out.zarr2/keep", "out.zarr.owner.json", "out.zarrx"]
    for key in keys:
        fs.pipe(f"{bucket}/{key}", b"x")
    RemoteLocation(f"s3://{bucket}/out.zarr").remove()
    assert _keys(f"s3://{bucket}") == sorted(f"{bucket}/{k}" for k in keys[2:])


def test_band_after_band_reads_fetch_the_next_band_ahead_with_no_extra_request(s3, bucket, scan):
    url = f"s3://{bucket}/scan.tif"
    _put(scan, url)
    remote, local = open_source(url), open_source(scan)
    before = COUNTERS.snapshot()
    for y in range(0, 384, 64):  # how a block is read: whole tile rows, top to bottom
        np.testing.assert_array_equal(remote.read(y, y + 64, 0, 448), local.read(y, y + 64, 0, 448))
    assert COUNTERS.snapshot()[0] - before[0] == 6  # one per band: bands 3-6 were fetched ahead
    # a read elsewhere while a band is being fetched ahead: the right pixels all the same
    remote.read(0, 64, 0, 448), remote.read(64, 128, 0, 448)
    np.testing.assert_array_equal(remote.read(200, 260, 100, 300), local.read(200, 260, 100, 300))
    np.testing.assert_array_equal(remote.read(128, 192, 0, 448), local.read(128, 192, 0, 448))
    remote.close()
    local.close()
