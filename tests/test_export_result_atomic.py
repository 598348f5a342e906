"""Review fixes: export-result never leaves a half-written file at the target path."""

from __future__ import annotations

import numpy as np
import pytest

import tiler
from tiler.results import export as er
from tiler.runners.base import FunctionRunner


@pytest.fixture()
def result(tmp_path):
    runner = FunctionRunner(lambda x: x[:, :1] - 0.5, normalise=False)
    tiler.run(np.random.default_rng(0).random((300, 200, 1), np.float32), runner, out=tmp_path / "o.zarr",
              tile=64, overlap=16, chunk=64, pyramid_levels=2)
    return tmp_path / "o.zarr"


def test_a_failed_export_keeps_the_earlier_file_and_leaves_no_partial_one(result, monkeypatch) -> None:
    target = result.parent / "o.tif"
    target.write_bytes(b"earlier export")

    def failing(array, tile):
        yield np.zeros((tile, tile), array.dtype)
        raise RuntimeError("read error in the middle of the export")

    monkeypatch.setattr(er, "iter_tiles", failing)
    with pytest.raises(RuntimeError):
        er.export_result(result, target, tile=64, overwrite=True)
    assert target.read_bytes() == b"earlier export"
    assert sorted(p.name for p in result.parent.iterdir()) == ["o.tif", "o.zarr"]


def test_a_failed_export_leaves_no_file(result, monkeypatch) -> None:
    def failing(array, tile):
        raise RuntimeError("read error")
        yield

    monkeypatch.setattr(er, "iter_tiles", failing)
    with pytest.raises(RuntimeError):
        er.export_result(result, result.parent / "new.tif", tile=64)
    assert sorted(p.name for p in result.parent.iterdir()) == ["o.zarr"]
    monkeypatch.undo()
    assert er.export_result(result, result.parent / "new.tif", tile=64).is_file()  # and it still works
