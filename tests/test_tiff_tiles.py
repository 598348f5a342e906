"""The thread-pool TIFF reader returns exactly what tifffile decodes, or steps aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiler.errors import InputError
from tiler.sources import open_source

from .conftest import smooth_image

REGIONS = [(0, 1, 0, 1), (0, 97, 0, 131), (13, 80, 5, 121), (64, 65, 64, 128), (90, 97, 120, 131)]


@pytest.mark.parametrize(
    ("shape", "dtype", "kwargs"),
    [
        ((97, 131, 3), "uint8", {"tile": (32, 32), "compression": "jpeg", "photometric": "rgb"}),
        ((97, 131, 3), "uint8", {"tile": (32, 64), "compression": "zlib", "photometric": "rgb"}),
        ((97, 131), "uint16", {"tile": (16, 16), "compression": "lzw"}),
        ((97, 131, 5), "float32", {"tile": (32, 32), "compression": "zstd", "photometric": "minisblack",
                                    "planarconfig": "contig"}),
        ((97, 131, 3), "uint8", {"rowsperstrip": 10, "compression": "zlib", "photometric": "rgb"}),
        ((97, 131), "uint8", {"rowsperstrip": 7}),  # uncompressed strips, last one short
    ],
)
def test_fast_reader_matches_tifffile(tmp_path: Path, shape, dtype, kwargs) -> None:
    image = smooth_image(shape, dtype=dtype)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, image, **kwargs)
    expected = tifffile.imread(path)
    expected = expected[..., None] if expected.ndim == 2 else expected
    source = open_source(path)
    assert source._tiles is not None  # the fast path is in use
    for y0, y1, x0, x1 in REGIONS:
        np.testing.assert_array_equal(source.read(y0, y1, x0, x1), expected[y0:y1, x0:x1])


def test_planar_samples_use_the_zarr_view(tmp_path: Path) -> None:
    image = smooth_image((50, 60, 3))
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, image.transpose(2, 0, 1), tile=(16, 16), photometric="rgb", planarconfig="separate")
    source = open_source(path)
    assert source._tiles is None
    np.testing.assert_array_equal(source.read(3, 40, 7, 55), image[3:40, 7:55])


def test_a_corrupt_tile_is_a_one_line_input_error(tmp_path: Path) -> None:
    image = smooth_image((64, 64, 3))
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, image, tile=(32, 32), compression="jpeg", photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[3], tif.pages[0].databytecounts[3]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    path.write_bytes(bytes(data))
    source = open_source(path)
    np.testing.assert_array_equal(source.read(0, 32, 0, 64).shape, (32, 64, 3))  # good tiles still read
    with pytest.raises(InputError, match=r"bad.tif: cannot decode the image data at rows 32:64"):
        source.read(32, 64, 0, 64)


def test_the_decoding_pool_works_in_a_forked_child(tmp_path: Path) -> None:
    import multiprocessing

    image = smooth_image((64, 96, 3))
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib", photometric="rgb")
    open_source(path).read(0, 64, 0, 96)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_read_all, (str(path),)).get(timeout=60)
    np.testing.assert_array_equal(got, image)


def _read_all(path: str) -> np.ndarray:
    return open_source(path).read(0, 64, 0, 96)
