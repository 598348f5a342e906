"""The README's console blocks run as written.

Every ``$ …`` line of every ```` ```console ```` block is either run — in order, each block in its
own fresh folder, through :func:`tiler.cli.main.main` in this process (the ``tiler`` entry point
without a new interpreter per line) — or skipped by a rule below that names why (installs, the test
suite, GPU-only and cluster lines, minute-long benchmarks and training). The images a line names are
generated small just before the first line that needs them, unless an earlier line wrote them; a
file a line needs that neither an earlier line nor :data:`INPUTS` provides fails the test, so an
example that depends on something the reader does not have (or lines out of order) is caught.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from tests._wsi_files import slide_image, write_geotiff, write_svs
from tests.conftest import smooth_image

README = Path(__file__).resolve().parents[1] / "README.md"

#: (pattern on the command line, why it is not run). The first match wins.
SKIPS: tuple[tuple[str, str], ...] = (
    (r"^make\b", "installs / runs the whole suite"),
    (r"^(python3 -m venv|/tmp/floor/|pip )", "installs packages"),
    (r"^bash benchmarks/setup_competitors\.sh", "installs the competitors into their own venvs"),
    (r"^python benchmarks/", "a benchmark (minutes): tests/test_benchmarks.py checks it prepares its inputs"),
    (r"^python -m tools\.train\b", "retrains the default model (minutes)"),
    (r"--provider (cuda|tensorrt)|--device cuda|--precision fp16", "GPU only"),
    (r"--scheduler |^(CUDA_VISIBLE_DEVICES=\S+ )?dask ", "needs an external dask cluster"),
    (r"--workers ", "starts a local dask cluster (30 s here): tests/test_distributed.py runs one"),
    (r"(s3|gs|https)://", "an object store or web server: tests/test_object_store.py runs these on a local S3"),
)

SCAN_SHAPE = (256, 320)


def _scan(path: Path) -> None:
    tifffile.imwrite(path, slide_image(SCAN_SHAPE, seed=1), tile=(128, 128), compression="jpeg",
                     photometric="rgb")


def _slide(path: Path) -> None:
    write_svs(path, slide_image((512, 512), seed=2), levels=2)


def _scene(path: Path) -> None:
    write_geotiff(path, smooth_image((200, 240, 3), seed=3))


def _slides(path: Path) -> None:
    path.mkdir()
    for k in range(2):
        tifffile.imwrite(path / f"s{k}.tif", slide_image((160, 200), seed=4 + k), photometric="rgb")


def _truth(path: Path) -> None:
    """Class indices 0..2 the size of scan.tif (what the labels output of it is compared with)."""
    truth = np.zeros(SCAN_SHAPE, np.uint8)
    truth[64:, :] = 1
    truth[128:192, 100:200] = 2
    tifffile.imwrite(path, truth)


def _mask(path: Path) -> None:
    """A quarter-resolution ROI mask for scan.tif: its left half."""
    from PIL import Image

    mask = np.zeros((SCAN_SHAPE[0] // 4, SCAN_SHAPE[1] // 4), np.uint8)
    mask[:, : mask.shape[1] // 2] = 255
    Image.fromarray(mask).save(path)


def _pytorch_unet(path: Path) -> None:
    """A small checkpoint in the Pytorch-UNet layout (inc/down*/up*/outc)."""
    from tests.test_checkpoints import make

    torch.save(make("pytorch-unet", True, 4).state_dict(), path)


#: What the README expects a reader to have: name -> maker(path).
INPUTS: dict[str, Callable[[Path], None]] = {
    "scan.tif": _scan, "slide.svs": _slide, "big.svs": _slide, "scene.tif": _scene,
    "slides": _slides, "truth.tif": _truth, "mask.png": _mask, "unet.pth": _pytorch_unet,
}


def console_blocks(text: str) -> list[list[tuple[int, str]]]:
    """Each console block's commands as (README line number, command), continuations joined,
    output lines (those without ``$``) left out."""
    blocks: list[list[tuple[int, str]]] = []
    inside = False
    pending = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            inside = line.strip() == "```console"
            if inside:
                blocks.append([])
            continue
        if not inside:
            continue
        if pending:
            pending += " " + line.strip()
        elif line.startswith("$ "):
            start, pending = number, line[2:].strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if pending:
            blocks[-1].append((start, pending))
            pending = ""
    return [b for b in blocks if b]


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPS:
        if re.search(pattern, command):
            return reason
    return None


def split(command: str) -> tuple[list[str], str | None]:
    """``tiler ARGS … [# comment] [> FILE]`` -> (ARGS, FILE or None)."""
    words = shlex.split(command, comments=True)
    redirect = None
    if len(words) >= 2 and words[-2] == ">":
        redirect, words = words[-1], words[:-2]
    assert words[0] == "tiler", command
    return words[1:], redirect


def run_line(argv: list[str], redirect: str | None) -> tuple[int, str, str]:
    from tiler.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    if redirect is not None:
        Path(redirect).write_text(out.getvalue())
    return rc, out.getvalue(), err.getvalue()


def _blocks() -> list[list[tuple[int, str]]]:
    return console_blocks(README.read_text(encoding="utf-8"))


def test_the_parser_finds_the_cli_block():
    commands = [c for block in _blocks() for _, c in block]
    assert "tiler run scan.tif" in [c.split("#")[0].strip() for c in commands]
    assert any(c.startswith("/tmp/floor/bin/pip install numpy") and "psutil" in c for c in commands), \
        "a continued line is joined"
    assert not any(c.startswith("486 passed") for c in commands), "output lines are not commands"


def test_every_line_is_runnable_or_skipped_by_name():
    for block in _blocks():
        for number, command in block:
            if skip_reason(command) is None:
                assert command.startswith("tiler "), f"README.md:{number}: {command!r} is neither a " \
                    "tiler command nor skipped by a named rule in tests/test_readme.py"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_blocks())))
def test_console_block_runs_in_sequence(index, tmp_path, monkeypatch, one_torch_thread):
    block = _blocks()[index]
    monkeypatch.chdir(tmp_path)
    ran = 0
    for number, command in block:
        if skip_reason(command) is not None:
            continue
        argv, redirect = split(command)
        for word in argv:
            name = word.rstrip("/")
            if name in INPUTS and not Path(name).exists():
                INPUTS[name](Path(name))
        rc, out, err = run_line(argv, redirect)
        assert rc == 0, f"README.md:{number}: `{command}` exited {rc}:\n{err}{out}"
        ran += 1
    if ran == 0:
        pytest.skip("every line of this block is skipped by name")
