"""The OpenSlide reader (``tiler.sources.openslide``): the same pixels as tifffile on the same files,
levels and pixel size, bounds and background, the automatic choice and the missing extra."""

from __future__ import annotations

import shutil
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import InputError
from tiler.sources import open_source
from tiler.sources.openslide import OpenSlideSource

from ._source_conformance import Case, SourceConformance
from ._wsi_files import downsample, slide_image, write_philips, write_svs


def write_generic_pyramid(path: Path, img: np.ndarray, *, levels: int = 3, factor: int = 2,
                          tile: int = 64) -> list[np.ndarray]:
    """A generic tiled TIFF pyramid: level 0, then reduced-resolution pages (NewSubfileType 1)."""
    pyramid = [img] + [downsample(img, factor**k) for k in range(1, levels)]
    with tifffile.TiffWriter(path) as tif:
        for k, level in enumerate(pyramid):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="zlib",
                      subfiletype=1 if k else 0, metadata=None)
    return pyramid


def _truncate(src: Path, fraction: float = 0.6):
    def write(dst: Path) -> Path:
        dst.write_bytes(src.read_bytes()[: int(src.stat().st_size * fraction)])
        return dst
    return write


class TestGenericTiff(SourceConformance):
    @pytest.fixture
    def case(self, tmp_path: Path) -> Case:
        path = tmp_path / "generic.tif"
        pyramid = write_generic_pyramid(path, slide_image((256, 320), seed=1))
        return Case(path, "openslide", pyramid, None, truncate=_truncate(path))


class TestSvs(SourceConformance):
    """An Aperio SVS (JPEG tiles) read by OpenSlide equals tifffile's decoding of the same tiles."""

    @pytest.fixture
    def case(self, tmp_path: Path) -> Case:
        path = tmp_path / "slide.svs"
        write_svs(path, slide_image((384, 512), seed=2), levels=3, mpp=0.499)
        with tifffile.TiffFile(path) as tif:  # the reference: tifffile's own decoding, level by level
            pyramid = [level.asarray() for level in tif.series[0].levels]
        return Case(path, "openslide", pyramid, 0.499, truncate=_truncate(path))


class TestPhilips(SourceConformance):
    """A Philips TIFF (DPUfsImport XML, levels padded to whole tiles): OpenSlide's levels and pixel
    spacing, pixels equal to tifffile's decoding."""

    @pytest.fixture
    def case(self, tmp_path: Path) -> Case:
        path = tmp_path / "slide.tiff"
        write_philips(path, slide_image((250, 300), seed=3), levels=3, mpp=0.25)
        with tifffile.TiffFile(path) as tif:
            pyramid = [level.asarray() for level in tif.series[0].levels]
        return Case(path, "openslide", pyramid, 0.25, truncate=_truncate(path))


def test_philips_through_tifffile_has_its_pixel_size_and_the_same_pixels(tmp_path):
    path = tmp_path / "slide.tiff"
    truth = write_philips(path, slide_image((250, 300), seed=3), levels=3, mpp=0.25)
    for level in range(3):
        a, b = open_source(path, level=level), open_source(path, level=level, reader="openslide")
        assert a.info.reader == "tifffile" and a.info.format == "philips" and b.info.format == "philips"
        assert a.info.mpp == b.info.mpp == (0.25 * 2**level,) * 2
        np.testing.assert_array_equal(a.read(0, a.shape[0], 0, a.shape[1]), b.read(0, b.shape[0], 0, b.shape[1]))
        h, w = truth[level].shape[:2]
        assert np.abs(a.read(0, h, 0, w).astype(float) - truth[level]).mean() < 3  # JPEG of the true pixels


def test_a_vendor_tiff_tifffile_cannot_read_falls_back_to_openslide_and_a_plain_one_does_not(tmp_path, monkeypatch):
    philips, plain = tmp_path / "p.tiff", tmp_path / "g.tif"
    write_philips(philips, slide_image((128, 128), seed=1), levels=2)
    write_generic_pyramid(plain, slide_image((128, 128), seed=1), levels=2)

    def fails(path, **kw):
        raise InputError(f"{path}: not a readable TIFF (simulated)")

    monkeypatch.setattr("tiler.sources._open._open_tifffile", fails)
    source = open_source(philips)
    assert source.info.reader == "openslide" and source.info.format == "philips"
    with pytest.raises(InputError, match="simulated"):  # tifffile's own error: OpenSlide is not a fallback here
        open_source(plain)


@pytest.mark.parametrize("kind", ["generic", "svs"])
def test_openslide_and_tifffile_give_the_same_pixels_at_every_level(tmp_path, kind):
    path = tmp_path / ("s.tif" if kind == "generic" else "s.svs")
    img = slide_image((300, 448), seed=4)
    if kind == "generic":
        write_generic_pyramid(path, img, levels=3)
    else:
        write_svs(path, img, levels=2)
    for level in range(len(open_source(path).info.levels)):
        a, b = open_source(path, level=level, reader="openslide"), open_source(path, level=level, reader="tifffile")
        assert a.shape == b.shape and a.info.levels == b.info.levels
        assert a.info.mpp == b.info.mpp and a.info.downsample == b.info.downsample
        h, w, _ = a.shape
        for y0, y1, x0, x1 in [(0, h, 0, w), (5, h // 2, 9, w - 3), (h // 2, h, 0, w // 3)]:
            np.testing.assert_array_equal(a.read(y0, y1, x0, x1), b.read(y0, y1, x0, x1))
        a.close()
        b.close()


def test_fractional_downsample_reads_the_same_pixel_the_same_way_wherever_a_read_starts(tmp_path):
    """A level of 161 columns under 643 (downsample 3.98...): OpenSlide resamples by the fraction,
    so reads are made in fixed cells and a pixel never depends on where the read began."""
    path = tmp_path / "odd.tif"
    img, low = slide_image((517, 643), seed=5), slide_image((130, 161), seed=6)
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, tile=(64, 64), photometric="rgb", compression="zlib")
        tif.write(low, tile=(64, 64), photometric="rgb", compression="zlib", subfiletype=1)
    source = open_source(path, level=1, reader="openslide")
    assert source.shape == (130, 161, 3)
    whole = source.read(0, 130, 0, 161)
    for y0, y1, x0, x1 in [(7, 50, 13, 99), (65, 130, 100, 161), (1, 2, 1, 2)]:
        np.testing.assert_array_equal(source.read(y0, y1, x0, x1), whole[y0:y1, x0:x1])
    np.testing.assert_array_equal(whole[:64, :64], low[:64, :64])  # the first cell starts at 0: exact
    assert np.abs(whole.astype(int) - low).mean() < 4  # elsewhere within OpenSlide's sub-pixel shift


class _BoundedSlide:
    """A real OpenSlide slide with the bounds and background properties MRXS/SCN files state, and
    a transparent (never scanned) rectangle of level-0 pixels."""

    def __init__(self, name: str, *, bounds: tuple[int, int, int, int], hole: tuple[int, int, int, int]):
        self._slide = openslide.OpenSlide(name)
        bx, by, bw, bh = bounds
        self.properties = dict(self._slide.properties) | {
            "openslide.bounds-x": str(bx), "openslide.bounds-y": str(by), "openslide.bounds-width": str(bw),
            "openslide.bounds-height": str(bh), "openslide.background-color": "20A040"}
        self.level_count, self.level_dimensions = self._slide.level_count, self._slide.level_dimensions
        self.level_downsamples, self.associated_images = self._slide.level_downsamples, {}
        self.hole = hole

    def read_region(self, location, level, size):
        from PIL import Image

        rgba = np.array(self._slide.read_region(location, level, size))
        ds = self.level_downsamples[level]
        y0, y1, x0, x1 = self.hole
        ys = (location[1] + np.arange(size[1]) * ds)[:, None]
        xs = (location[0] + np.arange(size[0]) * ds)[None, :]
        inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        rgba[inside] = 0  # premultiplied transparent, as OpenSlide returns unscanned areas
        return Image.fromarray(rgba, "RGBA")

    def close(self):
        self._slide.close()


def test_bounds_are_the_image_and_transparent_pixels_get_the_background_colour(tmp_path, monkeypatch):
    path = tmp_path / "g.tif"
    pyramid = write_generic_pyramid(path, slide_image((256, 320), seed=7), levels=2)
    fake = types.SimpleNamespace(**{k: getattr(openslide, k) for k in dir(openslide) if not k.startswith("__")})
    fake.OpenSlide = lambda name: _BoundedSlide(name, bounds=(64, 32, 200, 160), hole=(40, 60, 100, 140))
    monkeypatch.setattr("tiler.sources.openslide.import_openslide", lambda name: fake)
    base = OpenSlideSource(path)
    assert base.shape == (160, 200, 3) and base.bounds == (32, 192, 64, 264)
    expected = pyramid[0][32:192, 64:264].copy()
    expected[40 - 32 : 60 - 32, 100 - 64 : 140 - 64] = (0x20, 0xA0, 0x40)
    np.testing.assert_array_equal(base.read(0, 160, 0, 200), expected)
    assert base.info.extra["bounds"] == {"x": 64, "y": 32, "width": 200, "height": 160}
    half = OpenSlideSource(path, level=1)  # level 1 covers level-0 pixels 32..192 x 64..264: 16..96 x 32..132
    assert half.shape == (80, 100, 3)
    np.testing.assert_array_equal(half.read(0, 4, 0, 100), pyramid[1][16:20, 32:132])  # above the hole
    assert (half.read(5, 14, 20, 38) == (0x20, 0xA0, 0x40)).all()  # the hole at level 1: 20..30 x 50..70


def test_vendor_suffixes_are_opened_by_openslide_and_tiff_by_tifffile(tmp_path):
    path = tmp_path / "scan.tif"
    write_generic_pyramid(path, slide_image((128, 192), seed=8), levels=2)
    ndpi = tmp_path / "scan.ndpi"  # named as the format tifffile is not used for
    shutil.copy(path, ndpi)
    assert open_source(path).info.reader == "tifffile"
    source = open_source(ndpi)
    assert source.info.reader == "openslide" and source.info.format == "generic-tiff"
    np.testing.assert_array_equal(source.read(0, 128, 0, 192), open_source(path).read(0, 128, 0, 192))
    assert open_source(path, reader="openslide").info.reader == "openslide"  # --reader wins


def test_a_missing_openslide_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    ndpi = tmp_path / "scan.ndpi"
    write_generic_pyramid(ndpi, slide_image((64, 64)), levels=1)
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    with pytest.raises(InputError) as info:
        open_source(ndpi)
    message = str(info.value)
    assert "\n" not in message and str(ndpi) in message and "pip install 'tiler-engine[openslide]'" in message


def test_an_unknown_reader_is_refused_with_the_choices(tmp_path):
    path = tmp_path / "a.tif"
    write_generic_pyramid(path, slide_image((64, 64)), levels=1)
    with pytest.raises(tiler.errors.SettingsError, match="unknown reader; choose one of auto, tifffile, openslide"):
        open_source(path, reader="pillow")


def test_run_through_openslide_equals_run_through_tifffile_and_records_the_reader(tmp_path, plus_one):
    path = tmp_path / "slide.svs"
    write_svs(path, slide_image((200, 260), seed=9), levels=2)
    a = tiler.run(path, plus_one, out=tmp_path / "a.zarr", reader="openslide", tile=64, overlap=16, pyramid=False)
    b = tiler.run(path, plus_one, out=tmp_path / "b.zarr", tile=64, overlap=16, pyramid=False)
    ga, gb = zarr.open_group(a.path, mode="r"), zarr.open_group(b.path, mode="r")
    np.testing.assert_array_equal(ga["0"][...], gb["0"][...])
    assert ga.attrs["tiler"]["input"]["reader"] == "openslide" and "reader" not in gb.attrs["tiler"]["input"]


def test_tiler_info_names_the_reader(tmp_path, capsys):
    path = tmp_path / "slide.svs"
    write_svs(path, slide_image((128, 160), seed=3), levels=2)
    assert main(["info", str(path), "--reader", "openslide"]) == 0
    out = capsys.readouterr().out
    assert "reader       openslide" in out and "format       aperio" in out and "0.499" in out
    assert "associated   thumbnail (OpenSlide's other images: never read)" in out
    assert main(["info", str(path)]) == 0
    assert "reader       tifffile" in capsys.readouterr().out


def test_an_openslide_input_gets_its_tissue_mask_and_preview_from_openslide(tmp_path, plus_one):
    tif = tmp_path / "scan.tif"
    img = slide_image((256, 320), seed=11, background=0.6)
    write_generic_pyramid(tif, img, levels=3)
    ndpi = tmp_path / "scan.ndpi"
    shutil.copy(tif, ndpi)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "cannot read the input for the preview"
        a = tiler.run(ndpi, plus_one, out=tmp_path / "a.zarr", tile=64, overlap=16, tissue="auto", preview=True,
                      pyramid=False)
    b = tiler.run(tif, plus_one, out=tmp_path / "b.zarr", tile=64, overlap=16, tissue="auto", pyramid=False)
    assert a.skipped == b.skipped > 0 and a.preview is not None and a.preview.exists()
    np.testing.assert_array_equal(zarr.open_group(a.path, mode="r")["0"][...],
                                  zarr.open_group(b.path, mode="r")["0"][...])


def test_resume_with_another_reader_is_refused_naming_it(tmp_path, plus_one):
    path = tmp_path / "slide.svs"
    write_svs(path, slide_image((128, 160), seed=12), levels=2)
    tiler.run(path, plus_one, out=tmp_path / "o.zarr", reader="openslide", tile=64, overlap=16, pyramid=False)
    with pytest.raises(tiler.errors.OutputError, match=r"input differs \(reader: 'openslide' recorded, None now"):
        tiler.run(path, plus_one, out=tmp_path / "o.zarr", resume=True, tile=64, overlap=16, pyramid=False)
    done = tiler.run(path, plus_one, out=tmp_path / "o.zarr", reader="openslide", resume="force", tile=64, overlap=16,
                     pyramid=False)
    assert done.already_complete


def test_cli_run_with_reader_openslide(tmp_path):
    path = tmp_path / "slide.svs"
    write_svs(path, slide_image((128, 160), seed=13), levels=2)
    out = tmp_path / "o.zarr"
    assert main(["run", str(path), "--reader", "openslide", "--tile", "64", "--overlap", "16", "--device", "cpu",
                 "--no-pyramid", "-o", str(out)]) == 0
    assert zarr.open_group(out, mode="r").attrs["tiler"]["input"]["reader"] == "openslide"


def test_a_tall_read_split_into_bands_across_threads_equals_one_read(tmp_path):
    path = tmp_path / "tall.tif"
    img = slide_image((1100, 200), seed=14)
    write_generic_pyramid(path, img, levels=1)
    source = open_source(path, reader="openslide")
    np.testing.assert_array_equal(source.read(0, 1100, 0, 200), img)  # 5 bands of 256 rows
    np.testing.assert_array_equal(source.read(3, 1097, 5, 190), img[3:1097, 5:190])


def test_dask_tasks_reopen_an_openslide_input_the_same_way(tmp_path, plus_one):
    path = tmp_path / "slide.svs"
    write_svs(path, slide_image((200, 240), seed=15), levels=2)
    expected = tiler.predict(path, plus_one, reader="openslide", level=1, tile=32, overlap=8)
    lazy = tiler.predict_dask(path, plus_one, reader="openslide", level=1, tile=32, overlap=8, block=32, chunk=32)
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), expected)
