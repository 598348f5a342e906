"""tiler export-result --format geotiff: a valid Cloud-Optimized GeoTIFF (rio-cogeo's validator), read
back by rasterio with the input's CRS and transform, class names as band descriptions, nodata."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
import zarr
from rasterio.crs import CRS as GdalCRS
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

import tiler
from tiler.models.spec import ModelSpec
from tiler.results.export import export_result
from tiler.runners.base import FunctionRunner
from tiler.sources import open_source
from tiler.sources.raster import RasterioSource

from ._geo_files import bands, write_geotiff

LAEA = "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m +no_defs"


def three_classes() -> FunctionRunner:
    spec = ModelSpec(name="bands", in_channels=3, out_channels=3, scale=1 / 4000,
                     class_names=("water", "forest", "urban"))
    return FunctionRunner(lambda x: x * 8.0, spec)


def run(tmp_path, path, output, name="", **kw):
    out = tmp_path / f"{path.stem}.{output}{name}.zarr"
    tiler.run(path, three_classes(), out=out, output=output, tile=128, overlap=32, chunk=128, device="cpu",
              pyramid_levels=3, **kw)
    return out


def valid_cog(path):
    is_valid, errors, warns = cog_validate(str(path), strict=True)
    assert is_valid and not errors and not warns, (errors, warns)


@pytest.mark.parametrize("crs", ["EPSG:32632", LAEA])
def test_export_is_a_cog_with_the_inputs_crs_and_transform(tmp_path, crs):
    transform = from_origin(4321000.0, 3210000.0, 20.0, 20.0)
    scene = write_geotiff(tmp_path / "scene.tif", bands((3, 500, 620)), crs=crs, transform=transform, block=128)
    out = run(tmp_path, scene, "probs")
    cog = export_result(out, format="geotiff", tile=256)
    valid_cog(cog)
    stored = zarr.open_group(out, mode="r")
    with rasterio.open(cog) as ds, rasterio.open(scene) as src:
        assert ds.crs == src.crs == GdalCRS.from_user_input(crs)
        assert ds.transform == src.transform
        assert ds.descriptions == ("water", "forest", "urban")
        assert ds.count == 3 and ds.dtypes[0] == "uint8" and ds.nodata is None
        np.testing.assert_array_equal(ds.read(), stored["0"][...])
        assert ds.overviews(1) == [2, 4]  # tiler's own pyramid levels
        with rasterio.open(cog, overview_level=0) as ov:
            np.testing.assert_array_equal(ov.read(), stored["1"][...])


def test_a_coarser_level_exports_its_own_transform(tmp_path):
    scene = write_geotiff(tmp_path / "pyr.tif", bands((3, 400, 400)), block=128, overviews=(2,))
    out = run(tmp_path, scene, "labels", level=1, reader="rasterio")
    cog = export_result(out, format="geotiff", tile=128)
    valid_cog(cog)
    with rasterio.open(cog) as ds:
        assert ds.transform == from_origin(500000.0, 4600000.0, 20.0, 20.0) and ds.shape == (200, 200)
        assert ds.descriptions == ("labels",)


def _nodata_scene(tmp_path):
    data = bands((3, 384, 384), seed=3)
    data[:, :200, :150] = 0
    return write_geotiff(tmp_path / "nd.tif", data, nodata=0, block=128), ~(data == 0).all(axis=0)


def test_probabilities_with_nodata_get_an_internal_mask(tmp_path):
    scene, valid = _nodata_scene(tmp_path)
    cog = export_result(run(tmp_path, scene, "probs"), format="geotiff", tile=128)
    valid_cog(cog)
    with rasterio.open(cog) as ds:
        assert ds.nodata is None and all(rasterio.enums.MaskFlags.per_dataset in f for f in ds.mask_flag_enums)
        np.testing.assert_array_equal(ds.dataset_mask() != 0, valid)
        assert (ds.read()[:, ~valid] == 0).all()
    again = open_source(cog)  # the export as an input: GDAL reads it, with its mask
    assert isinstance(again, RasterioSource) and again.masked
    np.testing.assert_array_equal(again.valid_mask(0, 384, 0, 384), valid)


def test_labels_with_nodata_get_a_nodata_value_unless_the_fill_is_a_class(tmp_path):
    scene, valid = _nodata_scene(tmp_path)
    cog = export_result(run(tmp_path, scene, "labels", fill=255), format="geotiff", tile=128)
    valid_cog(cog)
    with rasterio.open(cog) as ds:
        assert ds.nodata == 255
        np.testing.assert_array_equal(ds.dataset_mask() != 0, valid)
    out = run(tmp_path, scene, "labels", name=".fill0")  # fill 0: the class 'water'
    with pytest.warns(UserWarning, match="nodata pixels hold 0, which is also a class"):
        cog = export_result(out, tmp_path / "fill0.tif", format="geotiff", tile=128)
    with rasterio.open(cog) as ds:
        assert ds.nodata is None


@pytest.mark.slow
def test_cli_export_and_existing_file_kept(tmp_path):
    scene = write_geotiff(tmp_path / "cli.tif", bands((3, 256, 256)), block=128)
    out = run(tmp_path, scene, "labels")
    cmd = [sys.executable, "-m", "tiler.cli.main", "export-result", str(out), "--format", "geotiff"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "cli.labels.pred.tif"
    valid_cog(target)
    before = target.read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0 and "already exists; pass --overwrite" in again.stderr
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*plain*"))


def test_export_without_rasterio_georeference_still_valid(tmp_path):
    """An output from an array has no georeference: still a valid COG (with a warning)."""
    out = tmp_path / "arr.zarr"
    tiler.run(bands((3, 200, 200)).transpose(1, 2, 0), three_classes(), out=out, output="probs", tile=64,
              overlap=16, chunk=64, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cog = export_result(out, format="geotiff", tile=64)
    assert any("has no georeference" in str(w.message) for w in caught)
    valid_cog(cog)
    with rasterio.open(cog) as ds:
        assert ds.crs is None and ds.descriptions == ("water", "forest", "urban")
