"""``tiler run`` and ``tiler info`` end to end on a generated JPEG-tiled TIFF, then open the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import tiler
from tiler.cli.main import main


def test_run_writes_a_complete_zarr_group(rgb_tiff, small_unet_checkpoint: Path, tmp_path: Path, capsys) -> None:
    path, pixels = rgb_tiff
    out = tmp_path / "out.zarr"
    rc = main(["run", str(path), "--model", str(small_unet_checkpoint), "--tile", "128", "--overlap", "32",
               "--kind", "probs", "--chunk", "256", "-o", str(out), "--device", "cpu"])
    assert rc == 0
    summary = capsys.readouterr().out
    assert f"wrote {out}" in summary and "3 x 600 x 900 uint8" in summary
    group = zarr.open_group(out, mode="r")
    arr = group["0"]
    assert arr.shape == (3, 600, 900) and arr.dtype == np.uint8 and arr.chunks == (3, 256, 256)
    meta = group.attrs["tiler"]
    assert meta["complete"] is True
    assert meta["settings"]["tile"] == 128 and meta["settings"]["overlap"] == 32
    assert meta["input"]["path"] == str(path.resolve())
    assert meta["version"] == tiler.__version__
    assert group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    # The stored probabilities are those of the in-memory prediction on the decoded pixels.
    logits = tiler.predict(pixels, small_unet_checkpoint, tile=128, overlap=32, device="cpu")
    e = np.exp(logits - logits.max(0))
    expected = np.rint(e / e.sum(0) * 255)
    assert np.abs(arr[:].astype(int) - expected).max() <= 1
    # The probabilities of each pixel sum to one (within uint8 rounding).
    assert np.abs(arr[:].astype(int).sum(0) - 255).max() <= 2


class _Brightness(torch.nn.Module):
    """(N, 3, h, w) in [0, 1] -> logits (mean, 1 - mean): class 0 on bright pixels, 1 on dark ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 5, stride=1, padding=2)
        return torch.cat([m, 1 - m], 1)


def test_labels_are_uint8_height_by_width(rgb_tiff, tmp_path: Path) -> None:
    path, _ = rgb_tiff
    model_file = tmp_path / "brightness.pt"
    torch.jit.save(torch.jit.script(_Brightness()), str(model_file), _extra_files={
        "tiler.json": json.dumps({"name": "brightness", "in_channels": 3, "out_channels": 2})})
    out = tmp_path / "labels.zarr"
    assert main(["run", str(path), "-m", str(model_file), "--tile", "128", "--overlap", "32",
                 "--kind", "labels", "-o", str(out), "--device", "cpu"]) == 0
    arr = zarr.open_group(out, mode="r")["0"]
    assert arr.shape == (600, 900) and arr.dtype == np.uint8
    # the labels are the argmax of the blended logits of the same run (not just "some value <= 2")
    path, pixels = rgb_tiff
    logits = tiler.predict(pixels, model_file, tile=128, overlap=32, device="cpu")
    expected = logits.argmax(0)
    margin = np.sort(logits, axis=0)[-1] - np.sort(logits, axis=0)[-2]
    decided = margin > 1e-5  # pixels whose two best classes are not within float rounding
    assert decided.mean() > 0.99 and 0.05 < expected.mean() < 0.95  # both classes occur
    np.testing.assert_array_equal(arr[:][decided], expected[decided])


def test_existing_output_is_never_overwritten_without_flag(rgb_tiff, small_unet_checkpoint, tmp_path, capsys) -> None:
    path, _ = rgb_tiff
    out = tmp_path / "o.zarr"
    args = ["run", str(path), "-m", str(small_unet_checkpoint), "--tile", "128", "--overlap", "32", "-o",
            str(out), "--device", "cpu"]
    assert main(args) == 0
    before = zarr.open_group(out, mode="r")["0"][:]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and err.count("\n") == 1
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["0"][:], before)  # refused: untouched
    # --overwrite replaces it: run with other settings, so a kept old output would show
    assert main([*args, "--overwrite", "--kind", "labels"]) == 0
    after = zarr.open_group(out, mode="r")
    assert after["0"].shape == (600, 900) and after.attrs["tiler"]["settings"]["output"] == "labels"
    np.testing.assert_array_equal(after["0"][:], before.argmax(0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{missing}"], "no such file"),
        (["run", "{text}"], "not an image"),
        (["run", "{tif}", "--tile", "128", "--overlap", "128"], "overlap 128 must be"),
        (["run", "{tif}", "--tile", "100"], "not a multiple of 16"),
        (["info", "{empty}"], "file is empty"),
    ],
)
def test_bad_input_is_one_line_error(rgb_tiff, small_unet_checkpoint, tmp_path, capsys, args, message) -> None:
    path, _ = rgb_tiff
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.tif").write_bytes(b"")
    names = {"missing": tmp_path / "nope.tif", "text": tmp_path / "notes.txt", "tif": path,
             "empty": tmp_path / "empty.tif"}
    argv = [a.format(**names) for a in args]
    if argv[0] == "run":
        argv += ["-m", str(small_unet_checkpoint), "-o", str(tmp_path / "x.zarr"), "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.zarr").exists()


def test_info_describes_the_file(rgb_tiff, capsys) -> None:
    path, _ = rgb_tiff
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "600 x 900 x 3" in out and "tiles of 128 x 128" in out and "jpeg" in out


def test_console_script_help_has_examples() -> None:
    res = subprocess.run([sys.executable, "-m", "tiler.cli.main", "run", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "$ tiler run scan.tif" in res.stdout


@pytest.mark.slow
def test_metadata_flags_override_the_model(rgb_tiff, small_unet_checkpoint: Path, tmp_path: Path) -> None:
    """``--mean/--std/--class-names`` replace the model's recorded normalisation and names."""
    path, _ = rgb_tiff
    common = ["-m", str(small_unet_checkpoint), "--tile", "128", "--overlap", "32", "--device", "cpu",
              "--no-pyramid"]
    assert main(["run", str(path), *common, "-o", str(tmp_path / "a.zarr")]) == 0
    assert main(["run", str(path), *common, "-o", str(tmp_path / "b.zarr"), "--mean", "0.5,0.5,0.5",
                 "--std", "0.25,0.25,0.25", "--class-names", "bg,tissue,nuclei"]) == 0
    a, b = (zarr.open_group(tmp_path / n, mode="r") for n in ("a.zarr", "b.zarr"))
    spec = b.attrs["tiler"]["model"]["spec"]
    assert spec["mean"] == [0.5, 0.5, 0.5] and spec["class_names"] == ["bg", "tissue", "nuclei"]
    assert np.abs(a["0"][:] - b["0"][:]).max() > 1e-3  # the normalisation really changed


def test_output_kind_flag_is_kind_and_the_old_spelling_still_works_with_a_warning(rgb_tiff, tmp_path: Path) -> None:
    """``--out`` is the path, ``--kind`` what is stored; ``--output`` (its old name) warns for one release."""
    path, _ = rgb_tiff
    args = ["run", str(path), "--tile", "128", "--overlap", "32", "--device", "cpu", "--no-pyramid"]
    assert main([*args, "--kind", "labels", "-o", str(tmp_path / "new.zarr")]) == 0
    with pytest.warns(FutureWarning, match="^--output is now --kind; --output will be removed in the next release$"):
        assert main([*args, "--output", "labels", "-o", str(tmp_path / "old.zarr")]) == 0
    new, old = (zarr.open_group(tmp_path / f"{n}.zarr", mode="r") for n in ("new", "old"))
    assert old.attrs["tiler"]["settings"]["output"] == "labels"
    np.testing.assert_array_equal(new["0"][...], old["0"][...])


def test_the_console_script_exits_with_its_code_output_flushed_and_exit_handlers_run(
    rgb_tiff, small_unet_checkpoint: Path, tmp_path: Path
) -> None:
    """``entry`` ends the process without Python's teardown: the summary still reaches a pipe (block
    buffered), ``atexit`` handlers still run, the exit code is main's, and the output is complete."""
    path, _ = rgb_tiff
    marker, out = tmp_path / "atexit-ran", tmp_path / "out.zarr"
    script = (
        "import atexit, sys\n"
        "from tiler.cli.main import entry\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "sys.exit(entry())\n"
    )
    common = ["--model", str(small_unet_checkpoint), "--tile", "128", "--overlap", "32", "--device", "cpu",
              "--no-pyramid"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered
    res = subprocess.run([sys.executable, "-c", script, "run", str(path), *common, "-o", str(out)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout and marker.exists()
    assert zarr.open_group(out, mode="r").attrs["tiler"]["complete"] is True
    marker.unlink()
    res = subprocess.run([sys.executable, "-c", script, "run", str(path), *common, "-o", str(out)],
                         capture_output=True, text=True, env=env)  # exists, no --overwrite: refused
    assert res.returncode == 1 and "error:" in res.stderr and marker.exists()


def test_leaving_early_waits_while_a_non_daemon_thread_runs_and_under_a_profiler(monkeypatch) -> None:
    """With a non-daemon thread alive, or under a profiler, ``leave`` skips nothing (normal shutdown
    joins the thread; cProfile writes its file); otherwise it runs the exit handlers and calls
    ``os._exit`` with the code."""
    import threading

    from tiler.cli import main as cli_main

    calls: list[object] = []
    monkeypatch.setattr(cli_main.os, "_exit", lambda code: calls.append(code))
    monkeypatch.setattr(cli_main.atexit, "_run_exitfuncs", lambda: calls.append("atexit"))
    profiler: list[object | None] = [None]
    monkeypatch.setattr(cli_main.sys, "getprofile", lambda: profiler[0])
    monkeypatch.setattr(cli_main.sys, "gettrace", lambda: None)  # (pytest-cov or a debugger may trace)
    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=False)
    worker.start()
    try:
        cli_main.leave(3)
        assert calls == []
    finally:
        release.set()
        worker.join()
    profiler[0] = object()  # python -m cProfile
    cli_main.leave(3)
    assert calls == []
    profiler[0] = None
    cli_main.leave(3)
    assert calls == ["atexit", 3]
