"""Resume: SIGKILL at random points and resume each time; Ctrl-C; refusals."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiler
from tiler.cli.main import main

from .conftest import make_image, save_model, write_tiff

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--tile", "64", "--overlap", "16", "--chunk", "32", "--batch-size", "2", "--device", "cpu"]
SETTINGS = {"tile": 64, "overlap": 16, "chunk": 32, "batch_size": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("resume")
    model = save_model(d / "slow.pt", layers=3, width=16)
    # wide enough that a run lasts seconds (about 0.1 s a stripe): signals land mid-run; 40 stripes,
    # so that a poll stalled for a second (a loaded CI host) still leaves room for a second kill
    image = write_tiff(d / "img.tif", make_image((1280, 1536, 3), seed=3), compression=None)
    ref = d / "reference.zarr"
    tiler.run(image, model, out=ref, **SETTINGS)
    return {"dir": d, "model": model, "image": image, "reference": ref}


def _cli(case: dict[str, Path], out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tiler.cli.main", "run", str(case["image"]), "--model", str(case["model"]),
           "-o", str(out), *ARGS, *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Ctrl-C as a terminal delivers it: a shell starts background jobs (`make test &`, CI runners)
    # with SIGINT ignored, which a child inherits, and Python then installs no KeyboardInterrupt
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _done(out: Path) -> np.ndarray | None:
    try:
        return np.asarray(zarr.open_array(str(out / "progress"), mode="r")[:]).astype(bool)
    except Exception:  # the group is still being created (or a chunk file is being replaced)
        return None


def _wait_for(proc: subprocess.Popen, out: Path, stripes: int, timeout: float = 60) -> int:
    """Poll the progress record until ``stripes`` are done (or the run ends); return the count."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        done = _done(out)
        if done is not None and done.sum() >= stripes:
            return int(done.sum())
        time.sleep(0.01)
    return -1


def _output(out: Path) -> tuple[np.ndarray, dict]:
    group = zarr.open_group(str(out), mode="r")
    return np.asarray(group["0"][:]), dict(group.attrs)["tiler"]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(case, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    out = tmp_path / "killed.zarr"
    total = 40  # 1280 rows / 32-pixel chunks, one block column
    killed = 0
    for attempt in range(3):
        before = _done(out)
        have = 0 if before is None else int(before.sum())
        if have >= total - 6:
            break
        # kill well before the end: the run goes on between reading the record and the signal
        target = rng.randint(have + 1, min(have + 4, total - 6))
        proc = _cli(case, out, *(["--resume"] if attempt else []))
        reached = _wait_for(proc, out, target)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert reached >= 0, f"seed {seed}: run ended before stripe {target}: {err}"
        if proc.returncode != -signal.SIGKILL:
            break  # finished before the signal landed (a very slow poll): resume below is a no-op
        killed += 1
        meta = _output(out)[1]
        assert meta["complete"] is False
        # without --resume the incomplete output is refused with the way to continue
        assert main(["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), *ARGS]) == 1
    assert killed >= 2, (f"seed {seed}: {killed} kills; {have} stripes were done before the last attempt, "
                         f"which exited {proc.returncode}: {err[-300:]}")
    base = ["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), *ARGS]
    assert main([*base, "--resume"]) == 0
    data, meta = _output(out)
    expected, _ = _output(case["reference"])
    assert meta["complete"] is True
    # float32 within 1e-6: batches are composed differently after a resume (and thread counts differ)
    np.testing.assert_allclose(data, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(case, tmp_path):
    out = tmp_path / "interrupted.zarr"
    proc = _cli(case, out)
    assert _wait_for(proc, out, 3) >= 3
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert lines == [f"error: interrupted; {out} can be continued with --resume"]
    data, meta = _output(out)
    assert meta["complete"] is False
    done = _done(out)
    assert done is not None and 3 <= done.sum() < done.size
    assert main(["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), "--resume",
                 *ARGS]) == 0
    np.testing.assert_allclose(_output(out)[0], _output(case["reference"])[0], rtol=0, atol=1e-6)


def test_resume_refuses_other_settings_input_or_model(case, tmp_path, capsys, model_file):
    case = {**case, "model": model_file}  # the fast model: nothing here needs a slow run
    out = tmp_path / "partial.zarr"
    result = tiler.run(case["image"], case["model"], out=out, **SETTINGS)
    meta = dict(zarr.open_group(str(out)).attrs)["tiler"]
    zarr.open_group(str(out)).attrs["tiler"] = {**meta, "complete": False}
    zarr.open_array(str(out / "progress"))[5:] = 0
    base = ["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), "--resume", *ARGS]
    assert main([*base[:-len(ARGS)], *ARGS[:2], "--overlap", "32", *ARGS[4:]]) == 1
    err = capsys.readouterr().err
    assert "cannot resume: settings differ (" in err and "overlap: 16 recorded, 32 now" in err
    other = save_model(tmp_path / "other.pt", layers=2)
    assert main([*base[:3], str(other), *base[4:]]) == 1
    assert "cannot resume: the model differs" in capsys.readouterr().err
    copy = tmp_path / "copy.tif"
    write_tiff(copy, make_image((640, 192, 3), seed=4), compression=None)
    assert main(["run", str(copy), *base[2:]]) == 1
    err = capsys.readouterr().err
    assert "cannot resume: input differs (" in err and "path: " in err
    assert main(base) == 0  # same everything: resumes
    assert dict(zarr.open_group(str(out)).attrs)["tiler"]["complete"] is True
    assert result.tiles > 0


def test_resume_without_chunk_continues_with_the_recorded_chunk(case, tmp_path, capsys, model_file):
    # The default chunk depends on the stored values (512 for float32 logits since it changed from
    # 1024): an output written with another chunk resumes with its own unless --chunk says otherwise.
    case = {**case, "model": model_file}
    out, ref = tmp_path / "logits.zarr", tmp_path / "ref.zarr"
    tiler.run(case["image"], case["model"], out=ref, output="logits", **SETTINGS)
    tiler.run(case["image"], case["model"], out=out, output="logits", **SETTINGS)
    group = zarr.open_group(str(out))
    group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
    zarr.open_array(str(out / "progress"))[5:] = 0
    group["0"][..., 5 * 32 :, :] = 0  # what the resumed run has to write again
    no_chunk = [a for i, a in enumerate(ARGS) if "--chunk" not in ARGS[max(i - 1, 0) : i + 1]]
    base = ["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), "--kind", "logits",
            "--resume", *no_chunk]
    assert main([*base, "--chunk", "64"]) == 1  # an explicit other chunk is still another output
    assert "settings differ (chunk: 32 recorded, 64 now)" in capsys.readouterr().err
    assert main(base) == 0, capsys.readouterr().err
    data, meta = _output(out)
    assert meta["complete"] is True and meta["settings"]["chunk"] == 32
    assert zarr.open_array(str(out / "0"), mode="r").chunks[-2:] == (32, 32)
    np.testing.assert_array_equal(data, _output(ref)[0])


def test_incomplete_output_without_flags_says_how_to_continue(case, tmp_path, capsys, model_file):
    case = {**case, "model": model_file}
    out = tmp_path / "o.zarr"
    tiler.run(case["image"], case["model"], out=out, **SETTINGS)
    group = zarr.open_group(str(out))
    group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
    assert main(["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), *ARGS]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out}: an incomplete output exists; pass --resume to continue it or " \
                  "--overwrite to start again"


def _owner_appears(proc: subprocess.Popen, out: Path, timeout: float = 60) -> dict:
    """Wait for the run's owner record and its first stripe; return the record."""
    assert _wait_for(proc, out, 1, timeout) >= 1, proc.communicate(timeout=30)[1]
    return json.loads(out.with_name(out.name + ".owner.json").read_text())


@pytest.mark.slow
def test_a_second_run_on_a_live_output_is_refused_and_a_killed_one_does_not_block_resume(
    case, tmp_path, capsys
):
    out = tmp_path / "shared.zarr"
    proc = _cli(case, out)
    try:
        owner = _owner_appears(proc, out)
        assert owner["pid"] == proc.pid
        proc.send_signal(signal.SIGSTOP)  # paused mid-run: alive, holding the output, for as long as needed
        base = ["run", str(case["image"]), "--model", str(case["model"]), "-o", str(out), *ARGS]
        for flag in ("--overwrite", "--resume", None):
            assert main([*base, *([flag] if flag else [])]) == 1
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"error: {out}: another tiler run is writing this output: run ")
            assert f"pid {proc.pid} on " in err and err.count("\n") == 0
        assert proc.poll() is None and _output(out)[1]["complete"] is False  # still running, untouched
    finally:
        proc.send_signal(signal.SIGKILL)  # (a stopped process takes SIGKILL too)
        proc.communicate(timeout=30)
    # the killed run's record is still there, but its pid is gone: an immediate resume takes over
    assert out.with_name(out.name + ".owner.json").exists()
    before = _output(out)[1]["run_id"]
    assert main([*base, "--resume"]) == 0
    data, meta = _output(out)
    assert meta["complete"] is True and meta["run_id"] != before  # every resume is a new run
    assert not out.with_name(out.name + ".owner.json").exists()  # released
    np.testing.assert_allclose(data, _output(case["reference"])[0], rtol=0, atol=1e-6)


def test_a_holder_on_another_host_blocks_until_its_lease_expires_or_break_lock(case, tmp_path, capsys, model_file):
    from tiler.store.ownership import Owner, RecordFile

    out = tmp_path / "remote.zarr"
    small = write_tiff(tmp_path / "s.tif", make_image((256, 192, 3), seed=5), compression=None)
    base = ["run", str(small), "--model", str(model_file), "-o", str(out), *ARGS]
    record = RecordFile(out)
    alive = Owner("r" * 32, "another-host", 1, None, "", time.time())
    assert record.create(alive.to_bytes())
    assert main(base) == 1
    assert "another tiler run is writing this output: run rrrrrrrr (pid 1 on another-host" in capsys.readouterr().err
    record.replace(Owner("r" * 32, "another-host", 1, None, "", time.time() - 10_000).to_bytes())
    assert main(base) == 0  # heartbeat older than the lease: the holder is gone
    assert main([*base, "--overwrite"]) == 0
    assert record.create(alive.to_bytes())
    assert main([*base, "--overwrite"]) == 1
    capsys.readouterr()
    assert main([*base, "--overwrite", "--break-lock"]) == 0
    assert not record.path.exists()


def test_tasks_of_an_earlier_attempt_stop_once_the_output_is_resumed(case, tmp_path, model_file):
    """A task made for one run (its run id) must not write after a resume started a new run."""
    from tiler.errors import OutputError
    from tiler.store.ownership import OutputLock
    from tiler.store.sink import ZarrSink

    out = tmp_path / "o.zarr"
    small = write_tiff(tmp_path / "s.tif", make_image((256, 192, 3), seed=5), compression=None)
    tiler.run(small, model_file, out=out, **SETTINGS)
    group = zarr.open_group(str(out))
    group.attrs["tiler"] = {**dict(group.attrs)["tiler"], "complete": False}
    group["progress"][5:] = 0  # the rest is still to do
    first = dict(group.attrs)["tiler"]["run_id"]
    driver = OutputLock(out, first)
    driver.acquire()
    stale = ZarrSink.open(out, run_id=first)
    stale.mark_done(0, 0)  # its own run: allowed
    driver.release()  # the attempt is given up (a driver that crashed)
    resumed = {}

    def spy(done, total):  # called while the resumed run works: the stale task tries to write now
        if "error" not in resumed:
            try:
                stale.mark_done(1, 0)
            except OutputError as exc:
                resumed["error"] = str(exc)

    try:
        tiler.run(small, model_file, out=out, resume=True, progress=spy, **SETTINGS)
    finally:
        stale.close()  # its background flush thread, else it outlives the test
    assert "replaced by another run" in resumed["error"]
    assert dict(zarr.open_group(str(out)).attrs)["tiler"]["run_id"] != first


def test_resume_of_a_complete_output_says_so_and_changes_nothing(case, tmp_path, capsys, model_file):
    out = tmp_path / "done.zarr"
    small = write_tiff(tmp_path / "s.tif", make_image((256, 192, 3), seed=5), compression=None)
    base = ["run", str(small), "--model", str(model_file), "-o", str(out), *ARGS]
    assert main(base) == 0
    capsys.readouterr()
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main([*base, "--resume"]) == 0
    said = capsys.readouterr().out.strip()
    assert said == f"{out}: already complete (same input, model and settings); nothing to do"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files  # untouched
    other = save_model(tmp_path / "other.pt", layers=2)  # still checked: another model is refused
    assert main(["run", str(small), "--model", str(other), "-o", str(out), *ARGS, "--resume"]) == 1
