"""GeoTIFF georeferencing read, adjusted for levels and resampling, and carried to the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import tiler
from tiler.cli.main import main
from tiler.errors import InputError
from tiler.geo.georef import GeoReference, geotiff_tags
from tiler.runners.base import FunctionRunner
from tiler.sources import ResampledSource, open_at, open_source

from ._wsi_files import GEO_ASCII, GEO_DOUBLES, GEOKEYS, slide_image, write_geotiff

IDENTITY = FunctionRunner(lambda x: x[:, :1], normalise=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("geo")
    img = slide_image((256, 320), seed=4)
    write_geotiff(d / "scene.tif", img, scale=(10.0, 10.0), origin=(500000.0, 4600000.0), levels=2)
    write_geotiff(d / "matrix.tif", img[..., 0], scale=(2.5, 4.0), origin=(1000.0, 2000.0), transformation=True)
    tifffile.imwrite(d / "plain.tif", img, metadata=None)
    return d


def _to_map(affine: tuple[float, ...], col: float, row: float) -> tuple[float, float]:
    a, b, c, d, e, f = affine
    return (a * col + b * row + c, d * col + e * row + f)


def test_geotiff_tags_are_read_as_stored(scenes: Path) -> None:
    src = open_source(scenes / "scene.tif")
    g = src.info.georeference
    src.close()
    assert g is not None and g.pixel_scale == (10.0, 10.0, 0.0)
    assert g.tiepoints == ((0.0, 0.0, 0.0, 500000.0, 4600000.0, 0.0),) and g.transformation is None
    assert g.geokeys == GEOKEYS and g.double_params == GEO_DOUBLES and g.ascii_params == GEO_ASCII
    assert g.affine == (10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0) and not g.pixel_is_point
    m = open_source(scenes / "matrix.tif")
    assert m.info.georeference.affine == (2.5, 0.0, 1000.0, 0.0, -4.0, 2000.0)
    m.close()
    plain = open_source(scenes / "plain.tif")
    assert plain.info.georeference is None
    plain.close()


def test_levels_and_resampling_scale_the_georeference(scenes: Path) -> None:
    lvl = open_source(scenes / "scene.tif", level=1)
    g = lvl.info.georeference
    assert lvl.shape[:2] == (128, 160) and g.pixel_scale == (20.0, 20.0, 0.0)
    assert g.tiepoints[0][3:5] == (500000.0, 4600000.0)  # tie point unchanged in model space
    lvl.close()
    # A matrix gets its raster axes scaled; the output's pixel corners map where the source's did.
    src = open_source(scenes / "matrix.tif")
    g0 = src.info.georeference
    src.close()
    g = g0.downsampled((2.0, 2.5))
    for col, row in [(0, 0), (3, 7), (10.5, 2)]:
        assert _to_map(g.affine, col, row) == pytest.approx(_to_map(g0.affine, col * 2.5, row * 2.0))
    with pytest.raises(InputError, match="no pixel size"):
        open_at(scenes / "scene.tif", mpp=2.0)
    resampled = ResampledSource(open_source(scenes / "scene.tif"), 2.5)
    assert resampled.info.georeference.pixel_scale == (25.0, 25.0, 0.0)
    assert resampled.info.georeference.tiepoints[0][3:5] == (500000.0, 4600000.0)
    resampled.close()


def test_pixel_is_point_keeps_centres_aligned() -> None:
    keys = (1, 1, 0, 1, 1025, 0, 1, 2)  # GTRasterTypeGeoKey = PixelIsPoint
    g0 = GeoReference(pixel_scale=(1.0, 1.0, 0.0), tiepoints=((0, 0, 0, 100.0, 200.0, 0),), geokeys=keys)
    assert g0.pixel_is_point
    g = g0.downsampled(4)
    # output centre 0 is at source coordinate (0 + 0.5) * 4 - 0.5 = 1.5
    assert _to_map(g.affine, 0, 0) == pytest.approx(_to_map(g0.affine, 1.5, 1.5))
    m0 = GeoReference(transformation=(1.0, 0, 0, 100.0, 0, -1.0, 0, 200.0, 0, 0, 0, 0, 0, 0, 0, 1), geokeys=keys)
    assert _to_map(m0.downsampled(4).affine, 2, 1) == pytest.approx(_to_map(m0.affine, 9.5, 5.5))


def test_attrs_round_trip_and_tags_for_export(scenes: Path, tmp_path: Path) -> None:
    src = open_source(scenes / "scene.tif")
    g = src.info.georeference
    src.close()
    assert GeoReference.from_attrs(g.to_attrs()) == g
    assert g.named_geokeys() == {"GTModelTypeGeoKey": 1, "GTRasterTypeGeoKey": 1,
                                 "GTCitationGeoKey": "WGS 84 / UTM zone 33N",
                                 "ProjectedCSTypeGeoKey": 32633, "ProjLinearUnitsGeoKey": 9001}
    out = tmp_path / "export.tif"
    tifffile.imwrite(out, np.zeros((64, 80), np.uint8), extratags=geotiff_tags(g, 4), metadata=None)
    with tifffile.TiffFile(out) as tif:
        back = GeoReference.from_tiff_tags(tif.pages[0].tags)
        assert tif.pages[0].geotiff_tags["ProjectedCSTypeGeoKey"] == 32633
    assert back == g.downsampled(4) and back.pixel_scale == (40.0, 40.0, 0.0)
    assert back.ascii_params == GEO_ASCII and back.geokeys == GEOKEYS


def test_run_carries_the_georeference(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    tiler.run(scenes / "scene.tif", IDENTITY, out=out, tile=64, overlap=16, level=1)
    meta = zarr.open_group(out, mode="r").attrs["tiler"]
    g = GeoReference.from_attrs(meta["georeference"])
    assert meta["georeference"]["affine"] == [20.0, 0.0, 500000.0, 0.0, -20.0, 4600000.0]
    assert meta["georeference"]["ModelPixelScaleTag"] == [20.0, 20.0, 0.0]
    assert meta["georeference"]["geokeys"]["ProjectedCSTypeGeoKey"] == 32633
    assert g.geokeys == GEOKEYS and meta["input"]["downsample"] == [2.0, 2.0]
    # export-result's GeoTIFF writer takes the raw tags as they are
    from tiler.geo.tiff_tags import geotiff_tags as export_tags

    assert export_tags(meta["georeference"]) == geotiff_tags(g)
    out2 = tmp_path / "m.zarr"
    tiler.run(scenes / "matrix.tif", IDENTITY, out=out2, tile=64, overlap=16)
    meta = zarr.open_group(out2, mode="r").attrs["tiler"]
    assert meta["georeference"]["ModelTransformationTag"][:4] == [2.5, 0.0, 0.0, 1000.0]
    out3 = tmp_path / "p.zarr"
    tiler.run(scenes / "plain.tif", IDENTITY, out=out3, tile=64, overlap=16)
    assert "georeference" not in zarr.open_group(out3, mode="r").attrs["tiler"]


def test_info_shows_the_georeference(scenes: Path, capsys) -> None:
    assert main(["info", str(scenes / "scene.tif")]) == 0
    out = capsys.readouterr().out
    assert "georef       x = 10*col + 0*row + 500000" in out and "EPSG:32633" in out
    assert "level 1      128 x 160 (downsample 2)" in out
