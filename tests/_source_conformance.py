"""One conformance suite for every file reader (zarr's ``StoreTests`` pattern).

A subclass provides the ``case`` fixture: a :class:`Case` with the file, the reader's name, the
pyramid it should show (NumPy arrays, full resolution first) and the pixel size, and a way to
break the file. Every reader then has to pass the same checks: shape, dtype, levels, pixel size,
region reads equal to the reference at several places and levels, a missing level refused, and a
truncated or corrupt file refused in one line naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tiler.errors import InputError
from tiler.sources import open_source


@dataclass
class Case:
    path: Path
    reader: str
    pyramid: list[np.ndarray]  #: (H_k, W_k, 3) uint8 per level, full resolution first
    mpp: float | None
    #: writes a broken copy of the file at the given path and returns it (None: not applicable)
    truncate: Callable[[Path], Path] | None = None
    tolerance: int = 0  #: largest allowed |difference| to the reference (lossy codecs)


def _regions(h: int, w: int) -> list[tuple[int, int, int, int]]:
    return [(0, h, 0, w), (1, min(h, 17), 2, min(w, 33)), (h // 3, h - 1, w // 4, w // 2 + 1),
            (h - 5, h, w - 7, w)]


def _read_all(source) -> None:
    h, w, _ = source.shape
    for y in range(0, h, 64):
        source.read(y, min(h, y + 64), 0, w)


class SourceConformance:
    """Checks every reader passes; subclasses define the ``case`` fixture."""

    @pytest.fixture
    def case(self) -> Case:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_shape_dtype_levels_and_pixel_size(self, case: Case) -> None:
        source = open_source(case.path, reader=case.reader)
        try:
            h, w = case.pyramid[0].shape[:2]
            assert source.shape == (h, w, 3) and source.dtype == np.uint8
            assert source.info.levels == tuple(level.shape[:2] for level in case.pyramid)
            assert source.info.reader == case.reader
            if case.mpp is None:
                assert source.info.mpp is None
            else:
                assert source.info.mpp == pytest.approx((case.mpp, case.mpp), rel=1e-6)
        finally:
            source.close()

    @pytest.mark.parametrize("level", [0, 1])
    def test_region_reads_equal_the_reference(self, case: Case, level: int) -> None:
        reference = case.pyramid[level]
        source = open_source(case.path, level=level, reader=case.reader)
        try:
            assert source.shape[:2] == reference.shape[:2] and source.info.level == level
            if case.mpp is not None:
                factor = case.pyramid[0].shape[1] / reference.shape[1]
                assert source.info.mpp == pytest.approx((case.mpp * factor,) * 2, rel=1e-3)
            for y0, y1, x0, x1 in _regions(*reference.shape[:2]):
                region = source.read(y0, y1, x0, x1)
                assert region.shape == (y1 - y0, x1 - x0, 3) and region.dtype == np.uint8
                diff = np.abs(region.astype(int) - reference[y0:y1, x0:x1]).max()
                assert diff <= case.tolerance, (level, (y0, y1, x0, x1), diff)
        finally:
            source.close()

    def test_a_missing_level_is_refused_naming_the_count(self, case: Case) -> None:
        n = len(case.pyramid)
        with pytest.raises(InputError, match=rf"level {n} does not exist.*{n} pyramid level") as info:
            open_source(case.path, level=n, reader=case.reader)
        assert "\n" not in str(info.value) and str(case.path) in str(info.value)

    def test_a_truncated_file_is_one_line_naming_it(self, case: Case, tmp_path: Path) -> None:
        if case.truncate is None:
            pytest.skip("no truncation for this format")
        broken = case.truncate(tmp_path / f"broken{case.path.suffix}")
        with pytest.raises(InputError) as info:
            source = open_source(broken, reader=case.reader)
            try:
                _read_all(source)  # lazily opened formats fail at the first missing tile
            finally:
                source.close()
        message = str(info.value)
        assert "\n" not in message and str(broken) in message

    def test_garbage_with_the_right_name_is_one_line(self, case: Case, tmp_path: Path) -> None:
        bad = tmp_path / ("garbage" + case.path.suffix if case.path.is_file() else "garbage")
        if case.path.is_dir():
            bad.mkdir()
            (bad / "level0.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
        else:
            bad.write_bytes(b"II*\0" + bytes(range(256)) * 8)
        with pytest.raises(InputError) as info:
            open_source(bad, reader=case.reader)
        assert "\n" not in str(info.value) and str(bad) in str(info.value)
