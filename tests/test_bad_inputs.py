"""A corpus of broken inputs, impossible settings and faults, each made here by the test.

Every case must end with one line ``error: ...`` naming the file and the problem, a non-zero exit
code, no traceback, and no output marked complete.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import tiler
from tiler.cli.main import main

from .conftest import make_image, write_tiff

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--tile", "64", "--overlap", "16", "--chunk", "64", "--device", "cpu"]


def _patch_tag(path: Path, name: str, value: int) -> None:
    """Overwrite the value of an integer tag of the first page in place."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[name]
        offset, fmt = tag.valueoffset, {3: "H", 4: "I", 16: "Q"}[int(tag.dtype)]
        order = tif.byteorder
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(order + fmt, value))


def _tiff(d: Path, name: str = "img.tif", shape=(256, 200, 3), **kw) -> Path:
    return write_tiff(d / name, make_image(shape), **kw)


def truncated(d: Path) -> tuple[Path, str]:
    path = _tiff(d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated"


def zero_bytes(d: Path) -> tuple[Path, str]:
    path = d / "empty.tif"
    path.write_bytes(b"")
    return path, "empty"


def wrong_magic(d: Path) -> tuple[Path, str]:
    path = d / "notes.tif"
    path.write_text("these are not pixels\n" * 10)
    return path, "not an image"


def corrupt_tile(d: Path) -> tuple[Path, str]:
    """A JPEG tile in the middle of a tiled TIFF overwritten: fails midway through the run."""
    path = _tiff(d, shape=(512, 256, 3))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        k = len(page.dataoffsets) * 3 // 4
        offset, count = page.dataoffsets[k], page.databytecounts[k]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * count)
    return path, "cannot decode the image data at rows"


def wrong_channels(d: Path) -> tuple[Path, str]:
    return _tiff(d, shape=(128, 128)), "the image has 1 channel(s) but the model"


def absurd_dimensions(d: Path) -> tuple[Path, str]:
    path = _tiff(d)
    _patch_tag(path, "ImageWidth", 2**31 - 1)
    _patch_tag(path, "ImageLength", 2**31 - 1)
    return path, "corrupt header: it claims 2147483647 x 2147483647 pixels"


def tiny_file_huge_claim(d: Path) -> tuple[Path, str]:
    path = d / "tiny.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), photometric="rgb")  # stripped, uncompressed
    _patch_tag(path, "ImageLength", 1_000_000)
    _patch_tag(path, "ImageWidth", 1_000_000)
    return path, "corrupt header: it claims 1000000 x 1000000 pixels, which needs 125000 strips"


CORPUS = [truncated, zero_bytes, wrong_magic, corrupt_tile, wrong_channels, absurd_dimensions,
          tiny_file_huge_claim]


def _check(capsys, code: int, path: Path, expect: str, out: Path | None) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert str(path) in lines[0] or path.name in lines[0], lines[0]
    assert expect in lines[0], lines[0]
    if out is not None and out.exists():
        assert dict(zarr.open_group(str(out), mode="r").attrs)["tiler"]["complete"] is False
    return lines[0]


@pytest.mark.parametrize("make", CORPUS, ids=lambda f: f.__name__)
def test_broken_input_gives_one_line_error(make, tmp_path, capsys, model_file):
    path, expect = make(tmp_path)
    out = tmp_path / "out.zarr"
    code = main(["run", str(path), "--model", str(model_file), "-o", str(out), *SMALL])
    _check(capsys, code, path, expect, out)


def test_missing_file(tmp_path, capsys, model_file):
    path = tmp_path / "nowhere.tif"
    code = main(["run", str(path), "--model", str(model_file), *SMALL])
    _check(capsys, code, path, "no such file", None)


@pytest.mark.parametrize(
    ("args", "expect"),
    [(["--tile", "64", "--overlap", "64"], "overlap 64 must be >= 0 and smaller than the tile 64"),
     (["--tile", "64", "--overlap", "100"], "smaller than the tile"),
     (["--tile", "72", "--overlap", "8"], "tile 72 is not a multiple of 16")],
)
def test_impossible_settings(args, expect, tmp_path, capsys, multiple_model_file, small_rgb_tiff):
    code = main(["run", str(small_rgb_tiff), "--model", str(multiple_model_file), "-o", str(tmp_path / "o.zarr"),
                 "--device", "cpu", *args])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and expect in err and "\n" not in err
    assert not (tmp_path / "o.zarr").exists()


def test_output_exists(tmp_path, capsys, model_file, small_rgb_tiff):
    out = tmp_path / "o.zarr"
    assert main(["run", str(small_rgb_tiff), "--model", str(model_file), "-o", str(out), *SMALL]) == 0
    capsys.readouterr()
    code = main(["run", str(small_rgb_tiff), "--model", str(model_file), "-o", str(out), *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == f"error: {out}: already exists; pass --overwrite to replace it"


def test_output_not_writable(tmp_path, capsys, model_file, small_rgb_tiff):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "o.zarr"
    code = main(["run", str(small_rgb_tiff), "--model", str(model_file), "-o", str(out), *SMALL])
    line = _check(capsys, code, out, "cannot write the output", None)
    assert "Not a directory" in line or "File exists" in line


def test_full_disk(tmp_path, capsys, model_file, small_rgb_tiff, monkeypatch):
    """The store fails with ENOSPC at the last chunk row (as a full disk does)."""
    setitem = zarr.Array.__setitem__

    def full_disk(self, key, value):
        rows = key[-2]  # (..., rows, columns); chunk rows are written in parts, side by side
        if self.path.endswith("0") and rows.start >= 256:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", full_disk)
    out = tmp_path / "o.zarr"
    # one tile per batch: the stitchers of the two column parts stay within a few tiles of each
    # other, so chunk row 0 is whole long before the last one is written
    code = main(["run", str(small_rgb_tiff), "--model", str(model_file), "-o", str(out), *SMALL,
                 "--batch-size", "1"])
    _check(capsys, code, out, "cannot write the output (the disk is full)", out)
    done = np.asarray(zarr.open_array(str(out / "progress"), mode="r")[:])
    assert 1 <= done.sum() < done.size  # stripes written before the disk filled are kept for --resume


def test_nan_model_output(tmp_path, capsys, nan_model_file, small_rgb_tiff):
    out = tmp_path / "o.zarr"
    code = main(["run", str(small_rgb_tiff), "--model", str(nan_model_file), "-o", str(out), *SMALL])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("error: ") and "NaN or infinite" in err
    assert "tile at row -8, column " in err  # the lattice starts overlap/2 before the image
    assert str(small_rgb_tiff) in err


def test_infinite_from_python_names_the_tile():
    from tiler.runners.base import FunctionRunner

    image = np.zeros((200, 100, 1), np.float32)
    image[150:, :] = 5000  # only tiles reaching row 150 and below see it
    runner = FunctionRunner(lambda x: np.where(x > 1000, np.inf, x), normalise=False)
    # origins -8, 40, 88, 136, ...: the first whose weighted part (margin 8) reaches row 150 starts at 136
    with pytest.raises(tiler.TilerError, match=r"NaN or infinite values for the tile at row 136, column"):
        tiler.predict(image, runner, tile=64, overlap=16)


def test_the_tile_named_is_the_one_that_returned_nan():
    """Only tile (3, 3) (origin 144, 144) returns NaN; tile (2, 2) covers the same first bad pixel
    and comes first in lattice order, but is innocent."""
    from tiler.runners.base import FunctionRunner

    image = np.zeros((300, 300, 1), np.float32)
    image[144, 144] = 7.0

    def model(x: np.ndarray) -> np.ndarray:
        y = x.copy()
        y[x[:, 0, 0, 0] == 7.0] = np.nan
        return y

    with pytest.raises(tiler.TilerError, match=r"the tile at row 144, column 144 \(lattice position 3, 3\)"):
        tiler.predict(image, FunctionRunner(model, normalise=False), tile=64, overlap=16, window="gaussian",
                      context=0)  # the lattice at 0, so that a tile starts at (144, 144)


@pytest.mark.parametrize("make", [zero_bytes, corrupt_tile], ids=lambda f: f.__name__)
def test_broken_input_via_subprocess(make, tmp_path, model_file):
    path, expect = make(tmp_path)
    out = tmp_path / "out.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tiler.cli.main", "run", str(path), "--model", str(model_file), "-o", str(out),
         *SMALL], env=env, capture_output=True, text=True, timeout=120,
    )
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0] and expect in lines[0]
    assert "Traceback" not in proc.stderr
    if out.exists():
        assert dict(zarr.open_group(str(out), mode="r").attrs)["tiler"]["complete"] is False
