"""``tiler run --dry-run`` (tiler/cli/dry_run.py): per input the level and pixel size, the tile count a
real run then computes, the output size against the free space, an ETA; nothing written."""

from __future__ import annotations

import re
import shutil
from collections import namedtuple
from pathlib import Path

from tests._wsi_files import slide_image, write_svs
from tiler.cli.main import main


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_dry_run_says_what_a_run_will_do_and_writes_nothing(tmp_path, capsys, model_file, one_torch_thread):
    slide = tmp_path / "slide.svs"
    write_svs(slide, slide_image((640, 512), seed=3), levels=2, mpp=0.5)
    (tmp_path / "missing").mkdir()
    common = ["--model", str(model_file), "--device", "cpu", "--tile", "64", "--overlap", "16",
              "--mpp", "1.0", "--tissue", "auto", "--kind", "labels", "--batch-size", "4"]
    before = _listing(tmp_path)
    code = main(["run", str(slide), str(tmp_path / "missing" / "x.tif"), *common, "--dry-run",
                 "--out-dir", str(tmp_path / "preds")])
    out, err = capsys.readouterr()
    assert code == 1 and err.strip() == f"error: {tmp_path / 'missing' / 'x.tif'}: no such file or directory"
    assert _listing(tmp_path) == before, "nothing written"
    lines = out.splitlines()
    assert lines[0] == f"{slide} -> {tmp_path / 'preds' / 'slide.zarr'}"
    assert re.fullmatch(r"  read     level 0: 320 x 256 x 3 uint8, 1 µm/px \(downsample 2 from full resolution\).*",
                        lines[1]), lines[1]
    m = re.fullmatch(r"  tiles    (\d+) x (\d+) = (\d+) tile\(s\) of 64 \(overlap 16\), (\d+) skipped by the mask "
                     r"\((\d+) to compute\)", lines[2])
    assert m, lines[2]
    total, skipped, todo = int(m[3]), int(m[4]), int(m[5])
    assert total == int(m[1]) * int(m[2]) and skipped + todo == total and 0 < skipped < total
    assert re.fullmatch(r"  output   320 x 256 uint8 labels: at most 109\.2 KB uncompressed with the pyramid; .* "
                        r"free at .*: fits", lines[3]), lines[3]
    assert re.fullmatch(r"  model    PyTorch .* on cpu \(fp32\): \S+ s per tile \(probe of 4\); ETA about \d+ s of "
                        r"model time", lines[4]), lines[4]
    assert lines[-1] == "dry run: 1 of 2 inputs checked; nothing written"
    # the real run computes the tiles the dry run counted
    assert main(["run", str(slide), *common, "--out-dir", str(tmp_path / "preds")]) == 0
    summary = capsys.readouterr().out
    assert f"; {todo} tiles, {skipped} skipped in " in summary, summary


def test_dry_run_warns_when_the_output_does_not_fit_and_names_an_existing_output(tmp_path, capsys, model_file,
                                                                                   monkeypatch):
    import numpy as np
    import tifffile

    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.zeros((200, 300, 3), np.uint8), photometric="rgb")
    common = ["run", str(image), "--model", str(model_file), "--device", "cpu", "--tile", "64", "--overlap", "16",
              "--no-pyramid"]
    assert main(common) == 0
    before = _listing(tmp_path)
    capsys.readouterr()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    assert main([*common, "--dry-run", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "  output   2 x 200 x 300 float32 logits: at most 480.0 KB uncompressed; 1.0 KB free at " in out
    assert out.splitlines()[3].endswith(": DOES NOT FIT")
    assert f"  exists   {tmp_path / 'big.zarr'} (would be replaced)" in out
    assert _listing(tmp_path) == before
