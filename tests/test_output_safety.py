"""Outputs never destroy inputs or other data, resumes never mix inputs, completion is durable."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import OutputError
from tiler.runners.base import FunctionRunner

from .conftest import make_image, write_tiff

FAST = ["--tile", "64", "--overlap", "16", "--chunk", "64", "--device", "cpu", "--no-pyramid"]
SETTINGS = {"tile": 64, "overlap": 16, "chunk": 64, "pyramid": False}


def _zarr_input(path: Path, shape=(200, 230, 3)) -> np.ndarray:
    data = make_image(shape, seed=2)
    zarr.open_group(str(path), mode="w").create_array("0", data=data, chunks=(64, 64, 3))
    return data


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def test_a_zarr_input_is_never_its_own_output(tmp_path, capsys, model_file, monkeypatch) -> None:
    """The issue's reproduction: `tiler run scan.zarr [--overwrite]` deleted the input."""
    monkeypatch.chdir(tmp_path)
    data = _zarr_input(tmp_path / "scan.zarr")
    assert main(["run", "scan.zarr", "-m", str(model_file), *FAST]) == 0
    assert main(["run", "scan.zarr", "-m", str(model_file), *FAST, "--overwrite"]) == 0
    assert "wrote scan.pred.zarr" in capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_group("scan.zarr", mode="r")["0"][:], data)  # intact
    assert zarr.open_group("scan.pred.zarr", mode="r").attrs["tiler"]["complete"] is True
    for out in ("scan.zarr", "./scan.zarr/", str(tmp_path / "scan.zarr")):
        assert main(["run", "scan.zarr", "-m", str(model_file), "-o", out, *FAST, "--overwrite"]) == 1
        assert "is the input itself" in _one_line_error(capsys)
    np.testing.assert_array_equal(zarr.open_group("scan.zarr", mode="r")["0"][:], data)


def test_the_output_may_not_lie_inside_or_contain_the_input(tmp_path, model_file, capsys) -> None:
    data = _zarr_input(tmp_path / "scan.zarr")
    with pytest.raises(OutputError, match="the output is inside the input"):
        tiler.run(tmp_path / "scan.zarr", model_file, out=tmp_path / "scan.zarr" / "pred", **SETTINGS)
    # an (earlier) output folder that holds the input: --overwrite would delete it
    out = tmp_path / "o.zarr"
    tiler.run(tmp_path / "scan.zarr", model_file, out=out, **SETTINGS)
    image = write_tiff(out / "inside.tif", make_image((64, 64, 3)))
    with pytest.raises(OutputError, match="the output contains the input"):
        tiler.run(image, model_file, out=out, overwrite=True, **SETTINGS)
    assert image.exists()
    # an in-memory zarr array opened on a store is an input too
    with pytest.raises(OutputError, match="the output is the input"):
        tiler.run(zarr.open_array(str(tmp_path / "scan.zarr" / "0")), model_file,
                  out=tmp_path / "scan.zarr" / "0", overwrite=True, **SETTINGS)
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "scan.zarr", mode="r")["0"][:], data)


def test_a_manifest_output_that_is_its_input_fails_that_item_only(tmp_path, capsys, model_file) -> None:
    a = write_tiff(tmp_path / "a.tif", make_image((64, 80, 3)))
    _zarr_input(tmp_path / "b.zarr")
    manifest = tmp_path / "m.csv"
    manifest.write_text("input,output\na.tif,a.zarr\nb.zarr,b.zarr\n")
    assert main(["run", "--manifest", str(manifest), "-m", str(model_file), *FAST, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "b.zarr: is the input itself" in err
    assert zarr.open_group(tmp_path / "a.zarr", mode="r").attrs["tiler"]["complete"] is True
    assert "tiler" not in zarr.open_group(tmp_path / "b.zarr", mode="r").attrs  # the input, untouched
    assert a.exists()


def test_overwrite_refuses_what_tiler_did_not_write(tmp_path, capsys, model_file) -> None:
    image = write_tiff(tmp_path / "a.tif", make_image((64, 80, 3)))
    theirs = tmp_path / "theirs.zarr"
    data = _zarr_input(theirs)
    assert main(["run", str(image), "-m", str(model_file), "-o", str(theirs), *FAST, "--overwrite"]) == 1
    assert _one_line_error(capsys) == (
        f"error: {theirs}: is a zarr group that tiler did not write (no 'tiler' run record); --overwrite "
        "replaces only tiler's own outputs: choose another output path")
    np.testing.assert_array_equal(zarr.open_group(theirs, mode="r")["0"][:], data)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"\xff\xd8\xff")
    assert main(["run", str(image), "-m", str(model_file), "-o", str(folder), *FAST, "--overwrite"]) == 1
    assert "a folder that is not a tiler output" in _one_line_error(capsys)
    assert (folder / "keep.jpg").exists()


def test_resume_refuses_a_changed_array_or_zarr_input(tmp_path, model_file) -> None:
    def interrupted(image, out, **kw):
        tiler.run(image, model_file, out=out, **SETTINGS, **kw)
        group = zarr.open_group(str(out))
        group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
        group["progress"][1:] = 0

    array = make_image((200, 150, 3), seed=1)
    out = tmp_path / "a.zarr"
    interrupted(array, out)
    changed = array.copy()
    changed[150, 100, 0] ^= 1  # one pixel, in a part still to be done
    with pytest.raises(OutputError, match="cannot resume: input differs .digest: 'crc32:"):
        tiler.run(changed, model_file, out=out, resume=True, **SETTINGS)
    assert tiler.run(array.copy(), model_file, out=out, resume=True, **SETTINGS).tiles > 0  # same values

    store = tmp_path / "scan.zarr"
    _zarr_input(store)
    out = tmp_path / "z.zarr"
    interrupted(store, out)
    arr = zarr.open_array(str(store / "0"), mode="r+")
    arr[190:, :10] = 255 - arr[190:, :10]  # one chunk rewritten
    with pytest.raises(OutputError, match="cannot resume: input differs .digest: 'tree:"):
        tiler.run(store, model_file, out=out, resume=True, **SETTINGS)
    # a dask array: its name (derived from the data) is the digest
    da = pytest.importorskip("dask.array")
    out = tmp_path / "d.zarr"
    interrupted(da.from_array(array, chunks=64), out)
    with pytest.raises(OutputError, match="input differs"):
        tiler.run(da.from_array(changed, chunks=64), model_file, out=out, resume=True, **SETTINGS)
    tiler.run(da.from_array(array, chunks=64), model_file, out=out, resume=True, **SETTINGS)


def test_models_and_inputs_that_cannot_be_checked_need_resume_force(tmp_path) -> None:
    class Custom(tiler.runners.base.Runner):  # a Runner subclass without a weight digest
        spec = tiler.models.spec.ModelSpec(name="custom", scale=1.0)

        def run(self, tiles):
            return tiles[:, :1] * 2

    class ArrayLike:  # slicing, shape and dtype, but nothing tiler can digest
        def __init__(self, a):
            self.a, self.shape, self.dtype = a, a.shape, a.dtype

        def __getitem__(self, key):
            return self.a[key]

    image = np.random.default_rng(0).random((96, 96, 1), np.float32)
    both = "the model (Custom has no weight digest) or the input"
    for model, source, unknown in ((Custom(), image, "the model (Custom"),
                                   (FunctionRunner(np.negative, normalise=False), image, "the model"),
                                   (Custom(), ArrayLike(image), both)):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.zarr"
        tiler.run(source, model, out=out, **SETTINGS)
        group = zarr.open_group(str(out))
        group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
        with pytest.raises(OutputError, match=re.escape(f"cannot check that {unknown}") + ".*pass resume='force'"):
            tiler.run(source, model, out=out, resume=True, **SETTINGS)
        tiler.run(source, model, out=out, resume="force", **SETTINGS)
        assert zarr.open_group(str(out), mode="r").attrs["tiler"]["complete"] is True


def test_format_versions(tmp_path, model_file) -> None:
    from tiler.results.result import open_result

    image = make_image((64, 64, 3))
    out = tmp_path / "o.zarr"
    tiler.run(image, model_file, out=out, **SETTINGS)
    group = zarr.open_group(str(out))
    record = dict(group.attrs)["tiler"]
    assert record["format"] == 2
    old = {k: v for k, v in record.items() if k != "format"} | {"version": "0.1.0", "complete": False}
    group.attrs["tiler"] = old  # an output of tiler 0.1 (format 1), interrupted
    with pytest.raises(OutputError, match=r"written by tiler 0\.1\.0 in output format 1; tiler .* can resume "
                                          r"format 2 only; start again with --overwrite"):
        tiler.run(image, model_file, out=out, resume=True, **SETTINGS)
    group.attrs["tiler"] = old | {"complete": True}
    assert open_result(out).shape == (64, 64)  # format 1 outputs stay readable
    group.attrs["tiler"] = record | {"format": 99, "version": "9.0"}
    with pytest.raises(OutputError, match=r"written by tiler 9\.0 in output format 99; .* can read format 1, 2"):
        open_result(out)
    assert main(["export-result", str(out), "--format", "png"]) == 1


def test_complete_is_recorded_only_after_every_file_is_flushed(tmp_path, monkeypatch, model_file) -> None:
    """fsync order: every chunk, then the record saying complete (and with --durable, each stripe's
    chunks before the stripe is recorded as done)."""
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    import tiler.store.sink as sink

    real_set = sink.ZarrSink.set_complete
    monkeypatch.setattr(os, "fsync", fsync)
    image = make_image((200, 150, 3))
    out = tmp_path / "o.zarr"
    tiler.run(image, model_file, out=out, **SETTINGS)
    chunks = {str(p) for p in (out / "0").rglob("*") if p.is_file()}
    flushed = [e.split(" ", 1)[1] for e in events]
    assert chunks <= set(flushed)  # every chunk file flushed
    assert flushed[-2:] == [str(out / "zarr.json"), str(out)]  # the complete record, then its folder
    assert zarr.open_group(str(out), mode="r").attrs["tiler"]["complete"] is True

    events.clear()
    real_mark = sink.ZarrSink.mark_done
    monkeypatch.setattr(sink.ZarrSink, "mark_done", lambda self, r, c: (events.append(f"mark {r}"),
                                                                         real_mark(self, r, c))[1])
    monkeypatch.setattr(sink.ZarrSink, "set_complete", real_set)
    tiler.run(image, model_file, out=out, overwrite=True, durable=True, **SETTINGS)
    for row in range(4):  # 200 rows / 64-pixel chunks
        mark = events.index(f"mark {row}")
        folder = str(out / "0" / "c" / "0" / str(row))
        assert any(e.startswith(f"fsync {folder}/") for e in events[mark:mark + 20]), events[mark:mark + 5]
        # ... and the folder that names the new chunk row folder (else a power loss can drop it)
        assert f"fsync {out / '0' / 'c' / '0'}" in events[mark:mark + 20]


def test_a_failed_model_export_keeps_the_earlier_file(tmp_path, small_unet_checkpoint, monkeypatch) -> None:
    import exporters
    from tiler.errors import ModelError

    out = tmp_path / "m.onnx"
    exporters.export(small_unet_checkpoint, out, format="onnx", log=None)
    before = out.read_bytes()

    def fails(*args, **kwargs):
        raise ModelError("exported and PyTorch outputs differ by 3 (tolerance 1e-4)")

    monkeypatch.setattr("exporters.onnx.verify", fails)
    with pytest.raises(ModelError, match=f"{out}: exported and PyTorch outputs differ"):
        exporters.export(small_unet_checkpoint, out, format="onnx", log=None)
    assert out.read_bytes() == before  # the earlier export is still there, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "unet.pt"]  # no partial left


def test_no_background_flush_or_heartbeat_thread_outlives_a_run(tmp_path, model_file) -> None:
    import threading

    image = make_image((200, 150, 3))
    tiler.run(image, model_file, out=tmp_path / "a.zarr", **SETTINGS)
    with pytest.raises(OutputError):  # a failed run (an existing output) too
        tiler.run(image, model_file, out=tmp_path / "a.zarr", **SETTINGS)
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n in ("tiler-flush", "tiler-heartbeat")], names


# ------------------------------------------------------------------ review findings, each a regression
def test_an_earlier_output_read_through_dask_or_a_source_is_never_overwritten(tmp_path, model_file) -> None:
    da = pytest.importorskip("dask.array")
    from tiler.sources import open_source

    out = tmp_path / "chain.zarr"
    tiler.run(make_image((96, 96, 3)), model_file, out=out, **SETTINGS)
    before = zarr.open_group(out, mode="r")["0"][:]
    logits = da.from_zarr(str(out), component="0").transpose(1, 2, 0)
    first = FunctionRunner(lambda t: t[:, :1], normalise=False)
    with pytest.raises(OutputError, match="the output contains the input .*chain.zarr/0"):
        tiler.run(logits, first, out=out, overwrite=True, **SETTINGS)
    with pytest.raises(OutputError, match="the output (is|contains) the input"):
        tiler.run(open_source(out), first, out=out, overwrite=True, **SETTINGS)
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["0"][:], before)


def test_resume_sees_new_data_behind_a_dask_array_and_a_new_roi(tmp_path, model_file) -> None:
    da = pytest.importorskip("dask.array")
    store = tmp_path / "scan.zarr"
    _zarr_input(store)
    out = tmp_path / "d.zarr"

    def interrupt():
        group = zarr.open_group(str(out))
        group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
        group["progress"][1:] = 0

    tiler.run(da.from_zarr(str(store), component="0"), model_file, out=out, **SETTINGS)
    interrupt()
    zarr.open_array(str(store / "0"), mode="r+")[:] = 250
    with pytest.raises(OutputError, match="input differs"):
        tiler.run(da.from_zarr(str(store), component="0"), model_file, out=out, resume=True, **SETTINGS)

    image = make_image((128, 128, 3))
    left, right = np.zeros((128, 128), np.uint8), np.zeros((128, 128), np.uint8)
    left[:, :64], right[:, 64:] = 1, 1  # the same area: only the content tells them apart
    out = tmp_path / "roi.zarr"
    tiler.run(image, model_file, out=out, roi=left, **SETTINGS)
    interrupt()
    with pytest.raises(OutputError, match="input differs"):
        tiler.run(image, model_file, out=out, roi=right, resume=True, **SETTINGS)


def test_a_symlinked_output_is_locked_and_replaced_as_the_real_one(tmp_path, model_file) -> None:
    from tiler.store.ownership import OutputLock

    image = make_image((96, 96, 3))
    real, link = tmp_path / "real.zarr", tmp_path / "link.zarr"
    tiler.run(image, model_file, out=real, **SETTINGS)
    link.symlink_to(real)
    holder = OutputLock(real, "a-live-run")
    holder.acquire()
    try:
        with pytest.raises(OutputError, match="another tiler run is writing this output"):
            tiler.run(image, model_file, out=link, overwrite=True, **SETTINGS)
    finally:
        holder.release()
    tiler.run(image, model_file, out=link, overwrite=True, **SETTINGS)  # not "rmtree on a symlink"
    assert link.is_symlink() and zarr.open_group(real, mode="r").attrs["tiler"]["complete"] is True


def test_the_default_output_of_an_array_inside_a_store_is_beside_the_store(tmp_path, model_file) -> None:
    from tiler.store.paths import default_output_path

    _zarr_input(tmp_path / "scan.zarr")
    assert default_output_path(tmp_path / "scan.zarr" / "0") == tmp_path / "scan.0.pred.zarr"
    with pytest.raises(OutputError, match="the output is inside the input"):
        tiler.run(tmp_path / "scan.zarr" / "0", model_file, out=tmp_path / "scan.zarr" / "pred.zarr", **SETTINGS)


def test_holders_are_judged_by_their_process_on_this_host_and_by_the_lease_elsewhere() -> None:
    import socket
    import subprocess
    import sys
    import time

    from tiler.store.ownership import Owner, _boot_id, _proc_start

    paused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = time.time() - 10_000
        here = Owner("r", socket.gethostname(), paused.pid, _proc_start(paused.pid), _boot_id(), stale)
        assert not here.is_dead()  # alive (a paused run), however old its heartbeat
        paused.kill()
        paused.wait()
        assert here.is_dead()  # gone: at once
        assert Owner("r", "elsewhere", 1, None, "", time.time()).is_dead() is False
        assert Owner("r", "elsewhere", 1, None, "", stale).is_dead() is True
    finally:
        paused.kill()


def test_the_lock_works_without_hard_links(tmp_path, model_file, monkeypatch) -> None:
    import errno

    real_link = os.link

    def no_links(src, dst):  # for the owner record only (zarr's own exclusive writes link too)
        if str(dst).endswith(".owner.json"):
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "o.zarr"
    tiler.run(make_image((64, 64, 3)), model_file, out=out, **SETTINGS)
    assert zarr.open_group(out, mode="r").attrs["tiler"]["complete"] is True
    from tiler.store.ownership import OutputLock

    with OutputLock(out, "a"), pytest.raises(OutputError, match="another tiler run"):
        OutputLock(out, "b").acquire()


def test_a_run_killed_while_creating_its_output_leaves_a_group_it_can_replace(tmp_path, model_file,
                                                                            monkeypatch) -> None:
    real = zarr.Group.create_array
    monkeypatch.setattr(zarr.Group, "create_array", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "o.zarr"
    with pytest.raises(KeyboardInterrupt):
        tiler.run(make_image((64, 64, 3)), model_file, out=out, **SETTINGS)
    monkeypatch.setattr(zarr.Group, "create_array", real)
    with pytest.raises(OutputError, match="is not a complete tiler output .*pass --overwrite"):
        tiler.run(make_image((64, 64, 3)), model_file, out=out, resume=True, **SETTINGS)
    tiler.run(make_image((64, 64, 3)), model_file, out=out, overwrite=True, **SETTINGS)
