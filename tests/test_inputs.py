"""Inputs are read as what they are, or refused saying why and how to choose.

Every file here is generated with tifffile/numpy/zarr/imagecodecs: multi-page TIFFs, Z stacks and
multi-series OME-TIFFs, an SVS with label and macro images, palette, MinIsWhite and CMYK pages,
RGBA PNG, OME-Zarr groups (and tiler's own output as input), BigTIFF, 16-bit RGB.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import InputError, SettingsError
from tiler.runners.base import FunctionRunner
from tiler.sources import ReadOptions, open_at

from .conftest import make_image, write_tiff

RNG = np.random.default_rng(7)


def _pages(path: Path, pages: list[np.ndarray], **kwargs) -> Path:
    """A plain multi-page TIFF (no shaped/OME metadata), one page per array."""
    with tifffile.TiffWriter(path, **kwargs) as tif:
        for page in pages:
            tif.write(page, photometric="rgb" if page.ndim == 3 else "minisblack", metadata=None)
    return path


def _read(source) -> np.ndarray:
    h, w, _ = source.shape
    return source.read(0, h, 0, w)


# --- axes: only S (or OME C) becomes channels ----------------------------------------------------


def test_three_page_tiff_is_refused_not_read_as_rgb(tmp_path: Path) -> None:
    pages = [make_image((48, 40), seed=k) for k in range(3)]
    path = _pages(tmp_path / "pages.tif", pages)
    with pytest.raises(InputError) as err:
        open_at(path)
    message = str(err.value)
    assert str(path) in message and "3 pages" in message and "--plane i=K (K in 0..2)" in message
    assert "\n" not in message
    # choosing a page reads that page, with one channel
    source = open_at(path, plane="i=1")
    assert source.shape == (48, 40, 1)
    np.testing.assert_array_equal(_read(source)[..., 0], pages[1])


def test_z_stack_ome_tiff_is_refused_and_a_plane_can_be_chosen(tmp_path: Path) -> None:
    stack = RNG.integers(0, 255, (5, 40, 56), dtype=np.uint8)
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, stack, metadata={"axes": "ZYX"})
    with pytest.raises(InputError, match=r"Z=5 x Y=40 x X=56: 5 z planes.*--plane z=K \(K in 0\.\.4\)"):
        open_at(path)
    source = open_at(path, plane="z=3")
    assert source.shape == (40, 56, 1)
    np.testing.assert_array_equal(_read(source)[..., 0], stack[3])
    with pytest.raises(SettingsError, match=r"--plane z=5: Z has 5 plane\(s\), 0\.\.4"):
        open_at(path, plane="z=5")
    with pytest.raises(SettingsError, match="has no T axis"):
        open_at(path, plane={"t": 0})


def test_ome_channel_axis_becomes_channels(tmp_path: Path) -> None:
    data = RNG.integers(0, 4000, (4, 32, 48), dtype=np.uint16)
    path = tmp_path / "bands.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "CYX"})
    source = open_at(path)
    assert source.shape == (32, 48, 4)
    np.testing.assert_array_equal(_read(source), np.moveaxis(data, 0, -1))


# --- multi-series files ------------------------------------------------------------------------


def _two_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    small = make_image((40, 48, 3), seed=1) // 4  # darker than the scan: a preview shows which was read
    big = make_image((96, 80, 3), seed=2)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(small, photometric="rgb", metadata={"axes": "YXS", "Name": "overview"})
        tif.write(big, photometric="rgb", tile=(32, 32), metadata={"axes": "YXS", "Name": "scan"})
    return small, big


def test_two_series_ome_tiff_default_is_the_largest_and_series_chooses(tmp_path: Path) -> None:
    path = tmp_path / "two.ome.tif"
    small, big = _two_series(path)
    source = open_at(path)
    assert source.shape == (96, 80, 3) and source.info.series == 1
    assert "series 1 'scan'" in source.info.series_name and "largest of 2" in source.info.series_name
    np.testing.assert_array_equal(_read(source), big)
    first = open_at(path, series=0)
    assert first.shape == (40, 48, 3)
    np.testing.assert_array_equal(_read(first), small)
    with pytest.raises(InputError, match=r"series 2 does not exist; the file has 2"):
        open_at(path, series=2)


def test_tiler_info_lists_the_series(tmp_path: Path, capsys) -> None:
    path = tmp_path / "two.ome.tif"
    _two_series(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 in the file; reading series 1 'scan'" in out
    assert "series 0 'overview': 40 x 48" in out and "series 1 'scan': 96 x 80" in out
    assert main(["info", str(path), "--series", "0"]) == 0
    assert "shape        40 x 48 x 3" in capsys.readouterr().out


def test_info_on_a_stack_lists_series_then_explains(tmp_path: Path, capsys) -> None:
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, RNG.integers(0, 255, (3, 16, 16), dtype=np.uint8), metadata={"axes": "ZYX"})
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "axes ZYX = 3 x 16 x 16" in err and "--plane z=K" in err
    assert main(["info", str(path), "--plane", "z=2"]) == 0
    out = capsys.readouterr().out
    assert "reading      series 0 'Image0', z=2" in out and "shape        16 x 16 x 1" in out


def _svs_with_label(path: Path) -> dict[str, np.ndarray]:
    """An Aperio-like SVS: baseline (JPEG YCbCr tiles), thumbnail, a level, label and macro images.

    The macro is made *larger* than the baseline, so "the largest image" alone would pick it."""
    base = make_image((128, 128, 3), seed=3)
    label = np.full((40, 60, 3), 200, np.uint8)
    macro = np.full((300, 300, 3), 50, np.uint8)
    desc = "Aperio Image Library v12.0.15 \r\n128x128 [0,0 128x128] (64x64) JPEG/RGB Q=95|MPP = 0.5"
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, tile=(64, 64), photometric="rgb", compression="jpeg", description=desc, metadata=None)
        tif.write(base[::8, ::8], photometric="rgb", description="Aperio Image Library\r\nthumb", metadata=None)
        tif.write(base[::2, ::2], tile=(64, 64), photometric="rgb", compression="jpeg",
                  description="Aperio Image Library\r\nlevel", metadata=None)
        tif.write(label, photometric="rgb", subfiletype=1, description="Aperio Image Library\r\nlabel",
                  metadata=None)
        tif.write(macro, photometric="rgb", subfiletype=9, description="Aperio Image Library\r\nmacro",
                  metadata=None)
    return {"base": base, "label": label, "macro": macro}


def test_svs_label_and_macro_are_never_read(tmp_path: Path, model_file: Path, capsys) -> None:
    path = tmp_path / "slide.svs"
    images = _svs_with_label(path)
    with tifffile.TiffFile(path) as tif:
        names = [s.name for s in tif.series]
        assert tif.is_svs and tif.pages[0].photometric == tifffile.PHOTOMETRIC.YCBCR
    assert names == ["Baseline", "Thumbnail", "Label", "Macro"]
    source = open_at(path)
    assert source.info.series == 0 and source.info.format == "svs"
    assert source.shape == (128, 128, 3) and source.info.levels == ((128, 128), (64, 64))
    # YCbCr JPEG tiles decode to RGB (close to the written pixels, not YCbCr values)
    assert np.abs(_read(source).astype(int) - images["base"]).mean() < 10  # JPEG loss only
    for k in (2, 3):
        with pytest.raises(InputError, match=r"series \d \('(Label|Macro)'\) is a label/macro image of the slide"):
            open_at(path, series=k)
    assert any("never read" in line and "'Label'" in line for line in source.info.series_list)
    # a run with a preview: the preview's input thumbnail comes from the baseline, not the macro
    out = tmp_path / "slide.zarr"
    assert main(["run", str(path), "-m", str(model_file), "--tile", "64", "--overlap", "16", "-o", str(out),
                 "--device", "cpu", "--preview", "--no-pyramid"]) == 0
    summary = capsys.readouterr().out
    assert "read series 0 'Baseline' (the largest of 4" in summary
    rec = zarr.open_group(out, mode="r").attrs["tiler"]["input"]
    assert "series" not in rec and rec["shape"] == [128, 128, 3]  # series 0: recorded as before
    from tiler.results.preview import _input_thumbnail
    from tiler.results.result import open_result

    thumb = _input_thumbnail(open_result(out), (64, 64))
    assert thumb is not None and abs(float(thumb.mean()) - float(images["base"].mean())) < 10


def test_bigtiff_whose_first_page_is_a_thumbnail_reads_the_full_image(tmp_path: Path) -> None:
    full = make_image((160, 144, 3), seed=4)
    path = _pages(tmp_path / "big.tif", [full[::4, ::4].copy(), full], bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and len(tif.series) == 2
    source = open_at(path)
    assert source.shape == (160, 144, 3) and source.info.series == 1
    np.testing.assert_array_equal(_read(source), full)
    assert open_at(path, series=0).shape == (40, 36, 3)


# --- photometric -------------------------------------------------------------------------------


def test_palette_tiff_is_expanded_through_its_colour_map(tmp_path: Path) -> None:
    index = RNG.integers(0, 4, (32, 40), dtype=np.uint8)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 0], [10, 20, 250]], np.uint16)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = colours.T * 257  # TIFF colour maps are 16-bit
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, index, photometric="palette", colormap=cmap, tile=(16, 16))
    source = open_at(path)
    assert source.shape == (32, 40, 3) and source.dtype == np.uint8
    np.testing.assert_array_equal(_read(source), colours[index].astype(np.uint8))
    np.testing.assert_array_equal(source.read(5, 9, 17, 30), colours[index[5:9, 17:30]].astype(np.uint8))


def test_miniswhite_is_inverted(tmp_path: Path) -> None:
    raw = RNG.integers(0, 255, (24, 30), dtype=np.uint8)
    path = tmp_path / "white.tif"
    tifffile.imwrite(path, raw, photometric="miniswhite")
    np.testing.assert_array_equal(_read(open_at(path))[..., 0], 255 - raw)
    raw16 = RNG.integers(0, 65535, (24, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "white16.tif", raw16, photometric="miniswhite")
    np.testing.assert_array_equal(_read(open_at(tmp_path / "white16.tif"))[..., 0], 65535 - raw16)
    # 1-bit (bilevel) pages: 0/255 uint8, stored 1 = black under MinIsWhite
    bits = RNG.random((16, 24)) > 0.5
    tifffile.imwrite(tmp_path / "fax.tif", bits, photometric="miniswhite")
    np.testing.assert_array_equal(_read(open_at(tmp_path / "fax.tif"))[..., 0], np.where(bits, 0, 255))


def test_cmyk_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.tif"
    tifffile.imwrite(path, RNG.integers(0, 255, (16, 16, 4), dtype=np.uint8), photometric="separated")
    with pytest.raises(InputError, match=r"cmyk.tif: the image is CMYK \(photometric SEPARATED\)"):
        open_at(path)


# --- channels ------------------------------------------------------------------------------------


def test_rgba_png_drops_alpha_for_a_three_channel_model(tmp_path: Path, model_file: Path) -> None:
    rgb = make_image((64, 48, 3), seed=5)
    alpha = np.full((64, 48, 1), 255, np.uint8)
    path = tmp_path / "rgba.png"
    path.write_bytes(imagecodecs.png_encode(np.concatenate([rgb, alpha], axis=2)))
    assert open_at(path).shape == (64, 48, 4) and open_at(path).info.alpha
    with pytest.warns(UserWarning, match=r"rgba.png: dropping the alpha channel \(the model takes 3"):
        got = tiler.predict(path, model_file, tile=32, overlap=8, device="cpu")
    np.testing.assert_allclose(got, tiler.predict(rgb, model_file, tile=32, overlap=8, device="cpu"), atol=1e-6)
    # a 4-band image that is not RGBA keeps the existing channel error
    with pytest.raises(tiler.errors.ModelError, match="has 4 channel"):
        tiler.predict(np.concatenate([rgb, alpha], axis=2), model_file, tile=32, overlap=8, device="cpu")


def test_channels_select_and_reorder(tmp_path: Path, model_file: Path) -> None:
    bands = RNG.integers(0, 255, (40, 32, 5), dtype=np.uint8)
    path = tmp_path / "bands.tif"
    tifffile.imwrite(path, bands, photometric="minisblack", planarconfig="contig", metadata=None)
    source = open_at(path, channels="4,2,0")
    assert source.shape == (40, 32, 3)
    np.testing.assert_array_equal(_read(source), bands[..., [4, 2, 0]])
    with pytest.raises(SettingsError, match=r"--channels 0,5: the image has 5 channel\(s\), numbered 0..4"):
        open_at(path, channels=[0, 5])
    with pytest.raises(SettingsError, match="expected channel numbers"):
        open_at(path, channels="red")
    out = tmp_path / "bands.zarr"
    assert main(["run", str(path), "-m", str(model_file), "--channels", "4,2,0", "--tile", "32", "--overlap",
                 "8", "-o", str(out), "--device", "cpu", "--no-pyramid"]) == 0
    expected = tiler.predict(bands[..., [4, 2, 0]], model_file, tile=32, overlap=8, device="cpu")
    np.testing.assert_allclose(zarr.open_group(out, mode="r")["0"][:], expected, atol=1e-5)
    assert zarr.open_group(out, mode="r").attrs["tiler"]["input"]["channels"] == [4, 2, 0]


def test_a_run_records_the_series_and_its_preview_uses_it(tmp_path: Path, model_file: Path) -> None:
    path = tmp_path / "two.ome.tif"
    small, big = _two_series(path)
    from tiler.results.preview import _input_thumbnail
    from tiler.results.result import open_result

    for series, pixels in ((None, big), (0, small)):
        out = tmp_path / f"s{series}.zarr"
        result = tiler.run(path, model_file, out=out, series=series, tile=32, overlap=8, device="cpu",
                           pyramid=False)
        rec = zarr.open_group(out, mode="r").attrs["tiler"]["input"]
        assert rec.get("series") == (1 if series is None else None) and rec["shape"] == list(pixels.shape)
        assert ("read series 1 'scan'" in result.summary()) == (series is None)
        thumb = _input_thumbnail(open_result(out), pixels.shape[:2])
        np.testing.assert_allclose(thumb.astype(float).mean(), pixels.mean(), atol=3)


def test_worker_source_ref_reopens_the_same_series_plane_and_channels(tmp_path: Path) -> None:
    from tiler.distributed.worker import SourceRef

    path = tmp_path / "two.ome.tif"
    small, _ = _two_series(path)
    client_side = open_at(path, series=0, channels="2,1")
    ref = SourceRef.of(path, read=client_side.info.read)
    assert ref.read == ReadOptions(series=0, channels=(2, 1))
    worker_side = ref.open()
    np.testing.assert_array_equal(_read(worker_side), small[..., [2, 1]])
    # the old keywords still work
    assert SourceRef.of(path, level=0).level == 0


# --- OME-Zarr inputs -----------------------------------------------------------------------------


def test_ome_zarr_channel_first_with_multiscales(tmp_path: Path) -> None:
    img = make_image((64, 96, 3), seed=6)
    path = tmp_path / "image.ome.zarr"
    group = zarr.open_group(path, mode="w")
    levels = [np.moveaxis(img, -1, 0), np.moveaxis(img[::2, ::2], -1, 0)]
    for k, data in enumerate(levels):
        group.create_array(str(k), data=data, chunks=(3, 32, 32))
    space = {"type": "space", "unit": "micrometer"}
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}],
        "datasets": [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.25 * 2**k, 0.25 * 2**k]}]} for k in range(2)],
    }]}
    source = open_at(path)
    assert source.shape == (64, 96, 3) and source.info.format == "ome-zarr"
    np.testing.assert_array_equal(_read(source), img)
    np.testing.assert_array_equal(source.read(10, 20, 40, 77), img[10:20, 40:77])
    assert source.info.levels == ((64, 96), (32, 48)) and source.info.mpp == (0.25, 0.25)
    low = open_at(path, level=1)
    np.testing.assert_array_equal(_read(low), img[::2, ::2])
    assert open_at(path, mpp=0.5).info.level == 1


def test_ome_zarr_with_time_and_z_needs_a_plane(tmp_path: Path) -> None:
    data = RNG.integers(0, 255, (2, 1, 3, 16, 20), dtype=np.uint8)  # t, c, z, y, x
    path = tmp_path / "tczyx.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", data=data)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}], "datasets": [{"path": "0"}]}]
    with pytest.raises(InputError, match=r"2 time points, 3 z planes.*--plane t=K \(K in 0\.\.1\) and z=K"):
        open_at(path)
    np.testing.assert_array_equal(_read(open_at(path, plane="t=1,z=2"))[..., 0], data[1, 0, 2])


def test_tilers_own_output_group_is_read_as_input(tmp_path: Path, plus_one) -> None:
    img = make_image((80, 72, 3), seed=8)
    src = write_tiff(tmp_path / "in.tif", img, compression=None)
    out = tmp_path / "in.zarr"
    runner = FunctionRunner(lambda x: x[:, :2] * 0 + 1.5, normalise=False)
    tiler.run(src, runner, out=out, tile=32, overlap=8, pyramid=True)
    arr = zarr.open_group(out, mode="r")["0"]
    assert arr.shape == (2, 80, 72)
    source = open_at(out)
    assert source.shape == (80, 72, 2) and source.dtype == np.float32
    np.testing.assert_array_equal(_read(source), np.moveaxis(arr[:], 0, -1))
    assert len(source.info.levels) >= 1 and source.info.levels[0] == (80, 72)


def test_bare_zarr_array_is_still_height_width_channels(tmp_path: Path) -> None:
    img = make_image((30, 20, 3))
    path = tmp_path / "bare.zarr"
    zarr.create_array(path, data=img)
    np.testing.assert_array_equal(_read(open_at(path)), img)


# --- 16-bit and float inputs ---------------------------------------------------------------------


def test_16_bit_rgb_through_tiler_run_warns_without_a_declared_scale(tmp_path: Path, model_file: Path) -> None:
    img8 = make_image((64, 64, 3), seed=9)
    img16 = img8.astype(np.uint16) * 257
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, img16, photometric="rgb", tile=(32, 32), compression="zlib")
    base = ["run", str(path), "-m", str(model_file), "--tile", "32", "--overlap", "8", "--device", "cpu",
            "--no-pyramid"]
    with pytest.warns(UserWarning, match=r"rgb16.tif: uint16 pixels, and the model .* declares no input scale: "
                                         r"scaling by 1/65535"):
        assert main([*base, "-o", str(tmp_path / "a.zarr")]) == 0
    got = zarr.open_group(tmp_path / "a.zarr", mode="r")["0"][:]
    expected = tiler.predict(img8, model_file, tile=32, overlap=8, device="cpu")
    np.testing.assert_allclose(got, expected, atol=1e-4)  # v * 257 / 65535 == v / 255
    # a declared scale is used as it is, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main([*base, "--scale", str(1 / 65535), "-o", str(tmp_path / "b.zarr")]) == 0
    np.testing.assert_allclose(zarr.open_group(tmp_path / "b.zarr", mode="r")["0"][:], expected, atol=1e-4)


def test_palette_roi_mask_uses_its_indices_not_its_colours(tmp_path: Path) -> None:
    from tiler.masks.roi import load_roi

    index = np.zeros((20, 30), np.uint8)
    index[5:15, 10:25] = 1
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, 0] = 65535  # background drawn white: its colour is nonzero, its class is 0
    cmap[0, 1] = 65535
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, index, photometric="palette", colormap=cmap)
    assert _read(open_at(path))[0, 0].tolist() == [255, 255, 255]  # an input is shown in colour
    np.testing.assert_array_equal(load_roi(path, (20, 30)).array, index > 0)


def test_read_options_and_alpha_drop_travel_to_dask_workers(tmp_path: Path, model_file: Path) -> None:
    from distributed import Client, LocalCluster

    path = tmp_path / "two.ome.tif"
    _two_series(path)
    rgba = tmp_path / "rgba.png"
    rgb = make_image((72, 64, 3), seed=11)
    rgba.write_bytes(imagecodecs.png_encode(np.concatenate([rgb, np.full((72, 64, 1), 255, np.uint8)], 2)))
    settings = {"tile": 32, "overlap": 8, "device": "cpu", "pyramid": False, "chunk": 32}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for image, options in ((path, {"series": 0, "channels": "2,1,0"}), (rgba, {})):
                one = tiler.run(image, model_file, out=tmp_path / f"one-{image.name}.zarr", **options, **settings)
                many = tiler.run(image, model_file, out=tmp_path / f"many-{image.name}.zarr", client=client,
                                 **options, **settings)
                a = zarr.open_group(one.path, mode="r")["0"][:]
                np.testing.assert_allclose(zarr.open_group(many.path, mode="r")["0"][:], a, atol=1e-5)
    assert a.shape == (2, 72, 64)


def test_palette_truth_and_roi_are_read_as_class_indices(tmp_path: Path) -> None:
    from tiler.masks.roi import RoiMask
    from tiler.results.evaluate import evaluate

    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 4:20] = 1
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, 0] = 65535  # class 0 drawn white
    cmap[1, 1] = 65535  # class 1 drawn green
    path = tmp_path / "truth.tif"
    tifffile.imwrite(path, truth, photometric="palette", colormap=cmap)
    with RoiMask(path, (32, 32)) as roi:
        np.testing.assert_array_equal(roi.region(0, 32, 0, 32), truth > 0)
    out = tmp_path / "pred.zarr"
    tiler.run(np.repeat(truth[..., None], 3, 2).astype(np.float32), FunctionRunner(
        lambda x: np.concatenate([1 - x[:, :1], x[:, :1]], 1), normalise=False), out=out, tile=32, overlap=8,
        output="labels", pyramid=False)
    assert evaluate(out, path).accuracy == 1.0


def test_bioformats2raw_zarr_series_and_label_images(tmp_path: Path) -> None:
    path = tmp_path / "slide.zarr"
    root = zarr.open_group(path, mode="w")
    root.attrs["bioformats2raw.layout"] = 3
    label = np.full((3, 20, 30), 220, np.uint8)
    scan = np.moveaxis(make_image((64, 48, 3), seed=12), -1, 0)
    for k, data in enumerate((label, scan)):
        image = root.create_group(str(k))
        image.create_array("0", data=data)
        image.attrs["ome"] = {"version": "0.5", "multiscales": [{
            "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                     {"name": "x", "type": "space"}], "datasets": [{"path": "0"}]}]}
    (path / "OME").mkdir()
    (path / "OME" / "METADATA.ome.xml").write_text(
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0" Name="label image">'
        '<Pixels/></Image><Image ID="Image:1" Name="scan"><Pixels/></Image></OME>')
    source = open_at(path)
    assert source.info.series == 1 and source.shape == (64, 48, 3)
    np.testing.assert_array_equal(_read(source), np.moveaxis(scan, 0, -1))
    with pytest.raises(InputError, match=r"series 0 \('label image'\) is a label/macro image of the slide"):
        open_at(path, series=0)


def test_dask_array_channels_on_a_cluster(tmp_path: Path) -> None:
    import dask.array as da
    from distributed import Client, LocalCluster

    bands = RNG.integers(0, 255, (64, 48, 4), dtype=np.uint8)
    runner = FunctionRunner(lambda x: x[:, :2] * 2.0, normalise=False)
    settings = {"tile": 32, "overlap": 8, "pyramid": False, "chunk": 32, "channels": "3,1"}
    one = tiler.run(bands, runner, out=tmp_path / "one.zarr", **settings)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            many = tiler.run(da.from_array(bands, chunks=(32, 32, 4)), runner, out=tmp_path / "many.zarr",
                             client=client, **settings)
    a = zarr.open_group(one.path, mode="r")["0"][:]
    np.testing.assert_allclose(a, np.moveaxis(bands[..., [3, 1]], -1, 0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(zarr.open_group(many.path, mode="r")["0"][:], a, rtol=1e-6)


def test_ome_image_named_label_is_never_the_default(tmp_path: Path) -> None:
    scan = make_image((64, 64, 3), seed=13)
    path = tmp_path / "converted.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:  # as bioformats writes a converted slide
        tif.write(scan, photometric="rgb", metadata={"axes": "YXS", "Name": "scan"})
        tif.write(np.full((128, 128, 3), 9, np.uint8), photometric="rgb",
                  metadata={"axes": "YXS", "Name": "macro image"})
    source = open_at(path)
    assert source.info.series == 0
    np.testing.assert_array_equal(_read(source), scan)
    with pytest.raises(InputError, match=r"series 1 \('macro image'\) is a label/macro image"):
        open_at(path, series=1)
