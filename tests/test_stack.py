"""Band-per-file products as one multi-channel input (tiler.sources.stack): a STAC item's assets or a
GDAL VRT, bands at different resolutions on one grid — the same pixels as stacking by hand."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pystac
import pytest
import zarr
from rasterio.transform import from_origin

import tiler
from tiler.errors import InputError, OutputError, SettingsError
from tiler.runners.base import FunctionRunner
from tiler.sources import open_at, open_source
from tiler.sources.raster import RasterioSource
from tiler.sources.stack import StackSource

from ._geo_files import CRS, bands, write_geotiff

COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B05": "rededge", "B09": "wv"}
RES = {"B02": 10, "B03": 10, "B04": 10, "B05": 20, "B09": 60}


@pytest.fixture
def product(tmp_path):
    """Sentinel-2-like: 10 m B02-B04 (120 x 180), 20 m B05, 60 m B09, one file each, and a STAC item."""
    data = {}
    for k, res in RES.items():
        h, w = 120 * 10 // res, 180 * 10 // res
        data[k] = bands((1, h, w), seed=res + len(data))[0]
        write_geotiff(tmp_path / f"{k}.tif", data[k][None], transform=from_origin(600000, 5000000, res, res),
                      block=32)
    item = pystac.Item("S2X_TEST", geometry=None, bbox=None, datetime=datetime.datetime(2026, 1, 1), properties={})
    for k in RES:
        item.add_asset(k, pystac.Asset(f"./{k}.tif", media_type=pystac.MediaType.COG, roles=["data"],
                                       extra_fields={"eo:bands": [{"name": k, "common_name": COMMON[k]}]}))
    item.add_asset("thumbnail", pystac.Asset("./thumb.png", media_type=pystac.MediaType.PNG, roles=["thumbnail"]))
    path = tmp_path / "item.json"
    item.set_self_href(str(path))
    item.save_object(include_self_link=False, dest_href=str(path))
    return path, data


def by_hand(data, keys):
    """Each band repeated to the 10 m grid (20 m: 2 x 2, 60 m: 6 x 6) and stacked channel-last."""
    out = []
    for k in keys:
        f = RES[k] // 10
        out.append(np.repeat(np.repeat(data[k], f, axis=0), f, axis=1))
    return np.dstack(out)


def test_stac_item_stacks_its_data_assets_on_the_finest_grid(product):
    path, data = product
    source = open_source(path)
    assert isinstance(source, StackSource) and source.shape == (120, 180, 5) and source.dtype == np.uint16
    assert source.info.extra["bands"] == list(RES)  # the thumbnail is no data asset
    hand = by_hand(data, RES)
    np.testing.assert_array_equal(source.read(0, 120, 0, 180), hand)
    for y0, y1, x0, x1 in [(7, 93, 13, 151), (59, 61, 119, 121), (0, 1, 179, 180)]:
        np.testing.assert_array_equal(source.read(y0, y1, x0, x1), hand[y0:y1, x0:x1])
    assert source.info.georeference is not None
    assert source.info.georeference.affine == (10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)
    assert source.info.reader == "rasterio"  # auto: a STAC item is rasterio's, as --reader rasterio
    named = open_source(path, reader="rasterio", channels="B04")
    assert isinstance(named, StackSource) and named.info.reader == "rasterio" and named.shape == (120, 180, 1)


def test_channels_choose_assets_by_key_band_name_or_number(product):
    path, data = product
    source = open_at(path, channels="red,B05,0")
    assert source.shape == (120, 180, 3) and source.info.extra["bands"] == ["B04", "B05", "B02"]
    np.testing.assert_array_equal(source.read(0, 120, 0, 180), by_hand(data, ["B04", "B05", "B02"]))
    coarse = open_source(path, channels="B05")  # the grid is the finest of the chosen bands
    assert coarse.shape == (60, 90, 1)
    np.testing.assert_array_equal(coarse.read(0, 60, 0, 90)[..., 0], data["B05"])


def test_vrt_with_separate_bands_equals_stacking_by_hand(product, tmp_path):
    _, data = product
    keys = ["B04", "B03", "B05"]
    body = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i + 1}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{k}.tif</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{data[k].shape[1]}" ySize="{data[k].shape[0]}"/>'
        '<DstRect xOff="0" yOff="0" xSize="180" ySize="120"/></SimpleSource></VRTRasterBand>'
        for i, k in enumerate(keys))
    vrt = tmp_path / "stack.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="180" rasterYSize="120"><SRS>{CRS}</SRS>'
                   f"<GeoTransform>600000,10,0,5000000,0,-10</GeoTransform>{body}</VRTDataset>")
    source = open_source(vrt)
    assert isinstance(source, RasterioSource) and source.shape == (120, 180, 3)
    np.testing.assert_array_equal(source.read(0, 120, 0, 180), by_hand(data, keys))


def test_a_run_over_a_stac_item_equals_a_run_over_the_stacked_array(product, tmp_path):
    path, data = product
    model = FunctionRunner(lambda x: x[:, :2] - x[:, 2:3], normalise=False)
    kw = dict(tile=64, overlap=16, chunk=64, device="cpu", pyramid=False)
    result = tiler.run(path, model, out=tmp_path / "stack.zarr", channels="B04,B03,B05", **kw)
    hand = tiler.predict(by_hand(data, ["B04", "B03", "B05"]), model, tile=64, overlap=16, device="cpu")
    group = zarr.open_group(result.path, mode="r")
    np.testing.assert_array_equal(group["0"][...], hand)
    record = group.attrs["tiler"]
    assert record["input"]["channels"] == ["B04", "B03", "B05"] and record["input"]["reader"] == "rasterio"
    assert record["georeference"]["affine"] == [10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0]
    # --resampling reaches the run's source (and a dask worker's: the read options travel with it)
    smooth = tiler.run(path, model, out=tmp_path / "bilinear.zarr", channels="B04,B03,B05", resampling="bilinear",
                       **kw)
    stacked = open_source(path, channels="B04,B03,B05", resampling="bilinear")
    by_interp = tiler.predict(stacked.read(0, 120, 0, 180), model, tile=64, overlap=16, device="cpu")
    stacked.close()
    np.testing.assert_allclose(zarr.open_group(smooth.path, mode="r")["0"][...], by_interp, rtol=0, atol=1e-4)
    assert not np.allclose(by_interp, hand)
    assert zarr.open_group(smooth.path, mode="r").attrs["tiler"]["input"]["resampling"] == "bilinear"
    with pytest.raises(OutputError, match="resampling: 'bilinear' recorded, None now"):  # resumed otherwise
        tiler.run(path, model, out=smooth.path, channels="B04,B03,B05", resume=True, **kw)


def test_stack_errors_are_one_line(product, tmp_path):
    path, data = product
    item = json.loads(path.read_text())

    def variant(name, **assets):
        doc = json.loads(json.dumps(item))
        doc["assets"].update(assets)
        out = tmp_path / name
        out.write_text(json.dumps(doc))
        return out

    write_geotiff(tmp_path / "other_crs.tif", data["B02"][None], crs="EPSG:32633",
                  transform=from_origin(600000, 5000000, 10, 10))
    write_geotiff(tmp_path / "shifted.tif", data["B02"][None], transform=from_origin(601000, 5000000, 10, 10))
    cases = [
        (variant("crs.json", B08={"href": "./other_crs.tif", "roles": ["data"]}), InputError, "different CRSs"),
        (variant("shift.json", B08={"href": "./shifted.tif", "roles": ["data"]}), InputError, "another extent"),
        (variant("remote.json", B08={"href": "https://example.com/B08.tif", "roles": ["data"]}), InputError,
         "asset 'B08' is remote"),
        (variant("missing.json", B08={"href": "./nope.tif", "roles": ["data"]}), InputError, "nope.tif"),
    ]
    for stac, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            open_source(stac)
        assert "\n" not in str(info.value)
    with pytest.raises(SettingsError, match="--channels 'nir': no asset or band of that name"):
        open_source(path, channels="nir")
    with pytest.raises(SettingsError, match="--channels 7: the item has 5 data asset"):
        open_source(path, channels="7")
    with pytest.raises(InputError, match="one resolution level"):
        open_source(path, level=1)


def test_bilinear_bands_match_gdal_bilinear_upsampling_and_are_the_same_in_any_region(product):
    import rasterio
    from rasterio.enums import Resampling

    path, data = product
    stack = open_source(path, channels="B04,B05,B09", resampling="bilinear")
    assert stack.dtype == np.float32 and stack.info.extra["resampling"] == "bilinear"
    whole = stack.read(0, 120, 0, 180)
    np.testing.assert_array_equal(whole[..., 0], data["B04"])  # a band on the grid: copied exactly
    for ch, key in ((1, "B05"), (2, "B09")):
        with rasterio.open(path.parent / f"{key}.tif") as ds:
            gdal = ds.read(1, out_shape=(120, 180), resampling=Resampling.bilinear).astype(np.float32)
        # GDAL rounds to the band's integer type; the interpolation itself agrees
        assert np.abs(whole[..., ch] - gdal).max() <= 0.5 + 1e-3, key
        assert not np.array_equal(whole[..., ch], by_hand(data, [key])[..., 0])  # not nearest
    # a region and its parts: the same pixels, bit for bit (the weights depend on the global index)
    np.testing.assert_array_equal(stack.read(17, 95, 31, 160),
                                  np.concatenate([stack.read(17, 50, 31, 160), stack.read(50, 95, 31, 160)]))
    np.testing.assert_array_equal(stack.read(17, 95, 31, 160), whole[17:95, 31:160])
    stack.close()
    with pytest.raises(SettingsError, match="--resampling must be one of nearest, bilinear"):
        open_source(path, resampling="cubic")


def test_bilinear_marks_nodata_wherever_the_interpolation_would_weigh_a_nodata_pixel(product):
    path, data = product
    b05 = data["B05"].copy()
    b05[10, 20] = 0  # one nodata pixel of the 20 m band: 10 m pixels 20-21 x 40-41
    write_geotiff(path.parent / "B05.tif", b05[None], transform=from_origin(600000, 5000000, 20, 20), block=32,
                  nodata=0)
    near = open_source(path, channels="B04,B05")
    smooth = open_source(path, channels="B04,B05", resampling="bilinear")
    assert near.masked and smooth.masked
    invalid_near = ~near.valid_mask(0, 120, 0, 180)
    invalid_smooth = ~smooth.valid_mask(0, 120, 0, 180)
    assert np.argwhere(invalid_near).tolist() == [[20, 40], [20, 41], [21, 40], [21, 41]]
    # every fine pixel whose centre lies within one coarse pixel of (10, 20)'s centre weighs it
    expected = np.zeros((120, 180), bool)
    expected[19:23, 39:43] = True
    np.testing.assert_array_equal(invalid_smooth, expected)
    # and the valid pixels' values never mixed the nodata value in: they equal a read where it is data
    values = smooth.read(0, 120, 0, 180)[..., 1]
    b05[10, 20] = data["B05"][10, 20]
    write_geotiff(path.parent / "B05.tif", b05[None], transform=from_origin(600000, 5000000, 20, 20), block=32)
    clean = open_source(path, channels="B04,B05", resampling="bilinear")
    np.testing.assert_array_equal(values[~invalid_smooth], clean.read(0, 120, 0, 180)[..., 1][~invalid_smooth])
    for s in (near, smooth, clean):
        s.close()
