"""Truncated TIFFs whose directories sit after their data (libtiff/PIL, GDAL overviews, libvips) say
"file is truncated"; ``tiler info`` names pyramid levels whose data is cut off."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiler.cli.main import main
from tiler.errors import InputError
from tiler.sources import open_source
from tiler.sources.tiff.directories import directory_past_end, truncation


def _cut(path: Path, size: int, out: Path) -> Path:
    out.write_bytes(path.read_bytes()[:size])
    return out


@pytest.fixture(scope="module")
def libtiff_file(tmp_path_factory) -> Path:
    """PIL through libtiff (deflate): the image data first, the one directory at the end."""
    from PIL import Image

    path = tmp_path_factory.mktemp("tiff") / "pil.tif"
    image = np.random.default_rng(0).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    Image.fromarray(image).save(path, compression="tiff_adobe_deflate")
    return path


@pytest.fixture(scope="module")
def gdal_pyramid(tmp_path_factory) -> Path:
    """A GTiff whose overviews GDAL added afterwards: their directories and data follow level 0's."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.enums import Resampling

    path = tmp_path_factory.mktemp("tiff") / "gdal.tif"
    image = np.random.default_rng(1).integers(0, 256, (3, 512, 512), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning: a plain image on purpose
        with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8",
                           tiled=True, blockxsize=128, blockysize=128, compress="deflate") as ds:
            ds.write(image)
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews([2, 4], Resampling.average)
    return path


def _page_offsets(path: Path) -> list[int]:
    with tifffile.TiffFile(path) as tif:
        return [page.offset for page in tif.pages]


def test_libtiff_file_cut_short_is_truncated_not_unreadable(libtiff_file, tmp_path, capsys):
    (directory,) = _page_offsets(libtiff_file)
    assert directory > libtiff_file.stat().st_size // 2, "the directory is at the end"
    assert truncation(libtiff_file) is None
    cut = _cut(libtiff_file, directory - 1000, tmp_path / "cut.tif")
    with pytest.raises(InputError, match=rf"cut\.tif: file is truncated \({directory - 1000} bytes; an image "
                                         rf"directory at byte {directory} runs past the end\)"):
        open_source(cut)
    assert main(["info", str(cut)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {cut}: {truncation(cut)}"], "one line, no tifffile log"


def test_gdal_pyramid_cut_inside_a_level_directory_is_truncated(gdal_pyramid, tmp_path):
    offsets = _page_offsets(gdal_pyramid)
    assert len(offsets) == 3 and offsets[1] > offsets[0]
    cut = _cut(gdal_pyramid, offsets[1] + 20, tmp_path / "cut.tif")  # level 1's directory cut in two
    with pytest.raises(InputError, match=rf"file is truncated .*directory at byte {offsets[1]} runs past"):
        open_source(cut)


def test_info_names_levels_whose_data_is_cut_off(gdal_pyramid, tmp_path, capsys):
    assert main(["info", str(gdal_pyramid)]) == 0
    assert "unreadable" not in capsys.readouterr().out
    size = gdal_pyramid.stat().st_size
    with tifffile.TiffFile(gdal_pyramid) as tif:
        ends = [max(o + c for o, c in zip(p.dataoffsets, p.databytecounts)) for p in tif.pages]
    assert ends[0] < max(_page_offsets(gdal_pyramid)) < ends[2] <= size
    cut = _cut(gdal_pyramid, ends[2] - 10, tmp_path / "cut.tif")  # the last level's data cut short
    assert main(["info", str(cut)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if "unreadable" in line]
    assert lines == [f"unreadable   level 2: file is truncated ({ends[2] - 10} bytes, but its data "
                     f"reaches byte {ends[2]})"]
    src = open_source(cut)  # level 0 itself is whole and still reads
    try:
        assert src.read(0, 512, 0, 512).shape == (512, 512, 3)
    finally:
        src.close()


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_directory_chain_in_both_byte_orders_and_bigtiff(tmp_path, byteorder, bigtiff):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as tif:
        for k in range(2):
            tif.write(np.full((64, 64), k, np.uint8), metadata=None)
    second = _page_offsets(path)[1]
    with open(path, "rb") as f:
        assert directory_past_end(f, path.stat().st_size) is None
    for size in (second, second + 4):
        cut = _cut(path, size, tmp_path / "cut.tif")
        with open(cut, "rb") as f:
            assert directory_past_end(f, size) == (second, size)
    with open(tmp_path / "not.tif", "wb") as f:
        f.write(b"PK\x03\x04" + bytes(20))
    assert truncation(tmp_path / "not.tif") is None
