"""GDAL rasters through rasterio (tiler.sources.raster): GeoTIFF, JPEG 2000, VRT; reader choice,
nodata (tiles skipped, --fill, recorded), bands (--channels, per-band normalisation)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio
import zarr

import tiler
from tiler.errors import InputError, SettingsError
from tiler.masks.skip import tile_skip
from tiler.models.spec import ModelSpec
from tiler.plan.lattice import TilePlan
from tiler.runners.base import FunctionRunner
from tiler.sources import open_at, open_source
from tiler.sources.raster import RasterioSource

from ._geo_files import CRS, TRANSFORM, bands, write_geotiff

REGIONS = [(0, 40, 0, 50), (13, 97, 29, 181), (150, 200, 200, 260), (63, 65, 127, 129)]


@pytest.fixture
def scene(tmp_path):
    data = bands((3, 200, 260))
    return write_geotiff(tmp_path / "scene.tif", data, overviews=(2, 4),
                         descriptions=("B04", "B03", "B02")), data


def test_geotiff_through_rasterio_equals_tifffile_at_every_level(scene):
    path, data = scene
    for level in (0, 1, 2):
        r = open_source(path, level=level, reader="rasterio")
        t = open_source(path, level=level, reader="tifffile")
        assert isinstance(r, RasterioSource) and r.shape == t.shape and r.dtype == t.dtype == np.uint16
        assert r.info.levels == t.info.levels == ((200, 260), (100, 130), (50, 65))
        assert r.info.georeference == t.info.georeference  # GDAL's CRS/transform == the file's geotags
        h, w, _ = r.shape
        for y0, y1, x0, x1 in REGIONS:
            y1, x1 = min(y1, h), min(x1, w)
            if y0 < y1 and x0 < x1:
                np.testing.assert_array_equal(r.read(y0, y1, x0, x1), t.read(y0, y1, x0, x1))
        r.close()
        t.close()
    r = open_source(path, reader="rasterio")
    assert r.chunks == (64, 64) and r.info.extra["bands"] == ["B04", "B03", "B02"]
    np.testing.assert_array_equal(r.read(0, 200, 0, 260), np.moveaxis(data, 0, -1))
    assert open_source(path, level=1, reader="rasterio").info.georeference.affine == (
        20.0, 0.0, 500000.0, 0.0, -20.0, 4600000.0)


def test_jpeg2000_is_read_by_gdal_automatically(tmp_path):
    assert "JP2OpenJPEG" in rasterio.drivers.raster_driver_extensions().values()
    data = bands((2, 90, 120), seed=4)
    path = tmp_path / "tile.jp2"
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=120, height=90, count=2, dtype="uint16",
                       crs=CRS, transform=TRANSFORM, QUALITY="100", REVERSIBLE="YES") as ds:
        ds.write(data)
    source = open_source(path)
    assert isinstance(source, RasterioSource) and source.info.format == "jpeg2000"
    np.testing.assert_array_equal(source.read(0, 90, 0, 120), np.moveaxis(data, 0, -1))  # lossless
    assert source.info.georeference is not None and source.info.georeference.affine[:3] == (10.0, 0.0, 500000.0)


def test_vrt_mosaic_of_two_files(tmp_path):
    data = bands((1, 80, 100), seed=2)
    left = write_geotiff(tmp_path / "left.tif", data[:, :, :60])
    right = write_geotiff(tmp_path / "right.tif", data[:, :, 60:],
                          transform=rasterio.transform.from_origin(500600.0, 4600000.0, 10, 10))
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{p.name}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="80"/><DstRect xOff="{x}" yOff="0" xSize="{w}" ySize="80"/>'
        "</SimpleSource>" for p, x, w in ((left, 0, 60), (right, 60, 40)))
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="100" rasterYSize="80"><SRS>{CRS}</SRS>'
                   "<GeoTransform>500000,10,0,4600000,0,-10</GeoTransform>"
                   f'<VRTRasterBand dataType="UInt16" band="1">{sources}</VRTRasterBand></VRTDataset>')
    source = open_source(vrt)
    assert isinstance(source, RasterioSource) and source.info.format == "vrt" and source.shape == (80, 100, 1)
    np.testing.assert_array_equal(source.read(5, 75, 40, 90), data[0, 5:75, 40:90, None])


def test_auto_falls_back_to_gdal_for_a_geotiff_tifffile_cannot_read(scene, tmp_path, monkeypatch):
    from tiler.sources.tiff import reader

    def refuse(self, *args, **kwargs):
        raise InputError(f"{args[0]}: not a readable TIFF (a codec tifffile lacks)")

    plain = tmp_path / "plain.tif"
    import tifffile

    tifffile.imwrite(plain, np.zeros((8, 8), np.uint8))
    monkeypatch.setattr(reader.TiffSource, "__init__", refuse)
    assert isinstance(open_source(scene[0]), RasterioSource)  # a GeoTIFF: GDAL's turn
    with pytest.raises(InputError, match="not a readable TIFF"):  # no georeference: tifffile's error stands
        open_source(plain)


def test_reader_errors_are_one_line(scene, tmp_path):
    path, _ = scene
    broken = tmp_path / "broken.jp2"
    broken.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40)
    text = tmp_path / "notes.vrt"
    text.write_text("hello")
    for bad in (broken, text):
        with pytest.raises(InputError) as info:
            open_source(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    choices = "auto, tifffile, openslide, wsidicom, rasterio"
    with pytest.raises(SettingsError, match=f"--reader 'gdal': unknown reader; choose one of {choices}"):
        open_source(path, reader="gdal")
    with pytest.raises(SettingsError, match="bands are its channels"):
        open_source(path, reader="rasterio", plane="z=1")
    with pytest.raises(InputError, match="level 3 does not exist; the raster has 3 level"):
        open_source(path, reader="rasterio", level=3)
    with pytest.raises(SettingsError, match=r"--channels 'B8A': no band of that name \(its bands are B04, B03"):
        open_source(path, reader="rasterio", channels="B8A")
    with pytest.raises(InputError, match="--reader tifffile reads TIFF files"):
        open_source(broken, reader="tifffile")


def test_truncated_geotiff_read_names_the_region(tmp_path):
    data = bands((1, 256, 256), seed=5)
    path = write_geotiff(tmp_path / "cut.tif", data, compress="deflate")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    source = RasterioSource(path)
    with pytest.raises(InputError, match=r"cut.tif: cannot decode the image data at rows 0:256"):
        source.read(0, 256, 0, 256)


# -- nodata -------------------------------------------------------------------------------------------

def _nodata_scene(tmp_path):
    data = bands((3, 300, 340), seed=7)
    data[:, :150, :170] = 0  # an all-nodata corner: whole tiles there are skipped
    data[:, 200:204, 250:260] = 0  # nodata pixels inside computed tiles
    return write_geotiff(tmp_path / "nodata.tif", data, nodata=0), data


def _double(tiles):
    return tiles * 2.0


@pytest.mark.parametrize("output", ["logits", "labels"])
def test_nodata_tiles_are_skipped_and_pixels_get_fill(tmp_path, output):
    path, data = _nodata_scene(tmp_path)
    model = FunctionRunner(lambda x: np.concatenate([x[:, :1], -x[:, :1]], axis=1), normalise=False)
    settings = dict(tile=64, overlap=16, chunk=64, output=output, device="cpu")
    fill = 5.0 if output == "logits" else 255
    run = tiler.run(path, model, out=tmp_path / "a.zarr", fill=fill, pyramid=False, **settings)
    plain = tiler.run(path, model, out=tmp_path / "b.zarr", reader="tifffile", pyramid=False, **settings)
    a = zarr.open_group(run.path, mode="r")
    got, ref = a["0"][...], zarr.open_group(plain.path, mode="r")["0"][...]
    valid = (data != 0).any(axis=0)
    # the skipped tiles are exactly those whose weighted part holds no valid pixel
    from tiler.config import Settings

    s = Settings(tile=64, overlap=16)  # the lattice the run used (starting at -context)
    plan = TilePlan.create((300, 340), tile=64, overlap=16, margin=s.margin, context=s.border_context)
    assert run.skipped == int(tile_skip(plan, valid, (1.0, 1.0)).sum()) > 0 and plain.skipped == 0
    np.testing.assert_array_equal(got[..., valid], ref[..., valid])  # data pixels: as if no nodata
    assert (got[..., ~valid] == fill).all()
    record = a.attrs["tiler"]
    assert record["nodata"] == {"value": fill, "input": 0.0} and "data" in record["input"]["mask"]

    # one reader registry: auto chose rasterio (nodata), named on info.reader and recorded for resume
    assert record["input"]["reader"] == "rasterio" and "reader" not in zarr.open_group(plain.path).attrs[
        "tiler"]["input"]  # tifffile is not recorded (outputs from before readers were named resume)


def test_auto_reader_names_the_library_on_info_reader(scene, tmp_path):
    from tiler.cli.options import READER_CHOICES
    from tiler.sources import READER_NAMES, READERS

    assert READER_CHOICES == READER_NAMES and "rasterio" in READERS  # --help lists the registry
    path, _ = scene
    assert open_source(path).info.reader == "tifffile"  # a plain GeoTIFF: tifffile
    assert open_source(path, reader="rasterio").info.reader == "rasterio"
    nodata, _ = _nodata_scene(tmp_path)
    source = open_source(nodata)
    assert isinstance(source, RasterioSource) and source.info.reader == "rasterio"
    assert open_source(nodata, reader="tifffile").info.reader == "tifffile"  # --reader wins
    assert open_source(nodata, channels="1").info.reader == "rasterio"


@pytest.mark.slow
def test_nodata_fill_is_the_same_on_dask(tmp_path):
    path, data = _nodata_scene(tmp_path)
    model = FunctionRunner(_double, normalise=False)
    kw = dict(tile=64, overlap=16, chunk=64, fill=-1.0, device="cpu")
    expected = tiler.predict(path, model, **kw)
    lazy = tiler.predict_dask(path, model, block=128, **kw)
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), expected)
    assert (expected[:, (data == 0).all(axis=0)] == -1.0).all()


def test_all_nodata_is_refused(tmp_path):
    path = write_geotiff(tmp_path / "empty.tif", np.zeros((1, 64, 64), np.uint16), nodata=0)
    with pytest.raises(InputError, match="every pixel is nodata"):
        tiler.predict(path, FunctionRunner(_double, normalise=False), tile=32, overlap=8, device="cpu")


# -- bands --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_multiband_channels_and_per_band_normalisation(tmp_path, dtype):
    data = bands((4, 96, 112), seed=9, dtype=dtype)
    path = write_geotiff(tmp_path / "mb.tif", data, descriptions=("B02", "B03", "B04", "B08"))
    spec = ModelSpec(name="identity", in_channels=2, scale=1 / 4000, mean=(0.3, 0.5), std=(0.2, 0.25))
    model = FunctionRunner(lambda x: x, spec)
    by_number = tiler.predict(path, model, channels="3,1", reader="rasterio", tile=32, overlap=8, device="cpu")
    by_name = tiler.predict(path, model, channels="B08,B03", tile=32, overlap=8, device="cpu")
    picked = data[[3, 1]].astype(np.float64)
    expected = (picked / 4000 - np.array([0.3, 0.5])[:, None, None]) / np.array([0.2, 0.25])[:, None, None]
    np.testing.assert_allclose(by_number, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(by_name, by_number)


@pytest.mark.slow
def test_cli_info_and_run_with_reader(scene, tmp_path):
    path, _ = scene
    cmd = [sys.executable, "-m", "tiler.cli.main"]
    info = subprocess.run([*cmd, "info", str(path), "--reader", "rasterio"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "reader       rasterio" in info.stdout and "bands        B04, B03, B02" in info.stdout
    assert "EPSG:32632" in info.stdout and "level 2" in info.stdout
    bad = subprocess.run([*cmd, "info", str(path), "--reader", "gdal"], capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice: 'gdal'" in bad.stderr
    help_text = subprocess.run([*cmd, "run", "--help"], capture_output=True, text=True).stdout
    assert "--reader {auto,tifffile,openslide,wsidicom,rasterio}" in help_text


def test_open_at_records_the_reader_for_workers(scene):
    source = open_at(scene[0], reader="rasterio", channels="B02")
    assert source.info.read is not None and source.info.read.reader == "rasterio"
    assert source.shape == (200, 260, 1)
    np.testing.assert_array_equal(source.read(0, 10, 0, 10)[..., 0], scene[1][2, :10, :10])


def test_strips_are_read_in_bands_of_whole_strips(tmp_path):
    data = bands((2, 300, 90), seed=11)
    path = tmp_path / "strips.tif"
    with rasterio.open(path, "w", driver="GTiff", width=90, height=300, count=2, dtype="uint16", crs=CRS,
                       transform=TRANSFORM, blockysize=1) as ds:
        ds.write(data)
    source = RasterioSource(path)
    assert source.info.chunks == (1, 90) and source.chunks == (256, 90)  # 256 one-row strips per read
    result = tiler.predict(path, FunctionRunner(_double, normalise=False), tile=64, overlap=16, device="cpu",
                           reader="rasterio")
    np.testing.assert_allclose(result, data.astype(np.float32) * 2, rtol=1e-6)  # blended: float sums


def test_a_reduced_nodata_mask_never_skips_a_tile_with_one_valid_pixel(tmp_path, monkeypatch):
    """Large scenes get a block-reduced mask (a block has data where any pixel has): single valid
    pixels in a sea of nodata still get computed tiles, and their values equal an unmasked run."""
    from tiler.masks import nodata

    data = np.zeros((1, 260, 300), np.uint16)
    points = [(3, 5), (131, 177), (259, 299), (200, 31)]
    for y, x in points:
        data[0, y, x] = 1000 + y
    path = write_geotiff(tmp_path / "sparse.tif", data, nodata=0)
    monkeypatch.setattr(nodata, "MAX_DATA_MASK_PIXELS", 900)  # 260 x 300 -> blocks of 10 x 10
    mask, valid = nodata.data_mask(open_source(path))
    assert mask.scale == (10.0, 10.0) and valid.factor == 10
    model = FunctionRunner(_double, normalise=False)
    kw = dict(tile=32, overlap=8, device="cpu")
    got = tiler.predict(path, model, fill=-7.0, **kw)
    ref = tiler.predict(path, model, reader="tifffile", **kw)
    for y, x in points:
        assert got[0, y, x] == ref[0, y, x] == 2 * (1000 + y)
    keep = data[0] != 0
    assert (got[0, ~keep] == -7.0).all()


@pytest.mark.slow
def test_worker_processes_reopen_the_raster_with_its_reader_and_nodata(tmp_path, model_file):
    """Real dask worker processes reopen the scene (reader, band names) and apply its nodata."""
    from tiler.distributed import cluster

    path, data = _nodata_scene(tmp_path)
    kw = dict(tile=64, overlap=16, chunk=64, block_width=128, device="cpu", fill=-3.0, reader="rasterio",
              channels="2,1,0", overrides={"scale": 1 / 4000}, pyramid=False)
    single = tiler.run(path, model_file, out=tmp_path / "one.zarr", **kw)
    client = cluster.connect(workers=2)
    try:
        multi = tiler.run(path, model_file, out=tmp_path / "two.zarr", client=client, **kw)
    finally:
        cluster.close_client(client)
    one, two = (zarr.open_group(r.path, mode="r")["0"][...] for r in (single, multi))
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-6)
    assert (two[:, (data == 0).all(axis=0)] == -3.0).all() and multi.skipped >= single.skipped > 0


def test_without_the_geo_extra_a_gdal_raster_names_the_install(tmp_path, monkeypatch):
    path = tmp_path / "scene.jp2"
    path.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40)
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio -> ImportError
    with pytest.raises(InputError, match=r"scene.jp2: reading it needs rasterio: pip install 'tiler-engine\[geo\]'"):
        open_source(path)


def test_stats_leave_out_nodata_pixels(tmp_path):
    from tiler.results.stats import channel_stats

    path, data = _nodata_scene(tmp_path)
    valid = ~(data == 0).all(axis=0)
    stats = channel_stats(path, block=128)
    pixels = data[:, valid].astype(np.float64) / 65535  # uint16 scaled by its range
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, pixels.std(axis=1), rtol=1e-9)
    assert stats.count == int(valid.sum())
