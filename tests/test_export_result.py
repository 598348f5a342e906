"""tiler export-result and the PNG preview: TIFF pyramids read back equal, geotags, colours."""

from __future__ import annotations

import json

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

import tiler
from tiler.cli.main import main as cli
from tiler.errors import OutputError
from tiler.models.spec import ModelSpec
from tiler.results import export as er
from tiler.results.export import export_result, iter_tiles
from tiler.results.preview import centres, class_colours, overlay, render_preview, sample
from tiler.results.result import StoredResult
from tiler.runners.base import FunctionRunner

GEO = {"transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0],
       "geokeys": {"GTModelTypeGeoKey": 1, "GTRasterTypeGeoKey": 1, "ProjectedCSTypeGeoKey": 32632,
                   "GTCitationGeoKey": "WGS 84 / UTM zone 32N"}}


def sigmoid_model() -> FunctionRunner:
    return FunctionRunner(lambda x: (x[:, :1] - 0.5) * 20, spec=ModelSpec(name="thr", activation="sigmoid"))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A pyramidal input TIFF and three outputs over it: probs (2 ch), labels, logits (1 ch)."""
    tmp = tmp_path_factory.mktemp("export")
    yy, xx = np.mgrid[0:600, 0:900]
    img = np.stack([(xx * 255 // 899), (yy * 255 // 599), np.full_like(xx, 90)], -1).astype(np.uint8)
    with tifffile.TiffWriter(tmp / "in.tif") as tif:
        tif.write(img, tile=(64, 64), photometric="rgb", subifds=1)
        tif.write(img[::2, ::2], tile=(64, 64), photometric="rgb", subfiletype=1)
    two = FunctionRunner(lambda x: np.concatenate([x[:, :1] * 0, (x[:, :1] - 0.5) * 20], 1))
    common = dict(tile=128, overlap=32, chunk=128, pyramid_levels=3)
    tiler.run(tmp / "in.tif", two, out=tmp / "p.zarr", output="probs", **common)
    tiler.run(tmp / "in.tif", two, out=tmp / "l.zarr", output="labels", **common)
    tiler.run(tmp / "in.tif", sigmoid_model(), out=tmp / "g.zarr", output="logits", **common)
    return tmp, img


@pytest.mark.parametrize("name", ["p.zarr", "l.zarr", "g.zarr"])
def test_ome_tiff_levels_equal_zarr_levels(outputs, name) -> None:
    tmp, _ = outputs
    path = export_result(tmp / name, tile=64)
    assert path == tmp / (name[0] + ".pred.ome.tif")
    g = zarr.open_group(str(tmp / name), mode="r")
    viewer = name == "l.zarr"  # uint8, one channel: the levels also in the main IFD chain (OpenSlide)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and len(tif.series) == (3 if viewer else 1)
        series = tif.series[0]
        assert series.axes == ("CYX" if name == "p.zarr" else "YX")  # tifffile squeezes C = 1
        assert len(series.levels) == 3
        for k, level in enumerate(series.levels):
            np.testing.assert_array_equal(level.asarray().reshape(g[str(k)].shape), g[str(k)][...])
        assert series.keyframe.is_tiled and series.keyframe.tilewidth == 64
        assert len(tif.pages) == (3 if viewer else g["0"].shape[0])  # levels are SubIFDs (and pages)


def test_tiles_are_read_one_band_of_one_channel_at_a_time(outputs) -> None:
    tmp, _ = outputs
    arr = zarr.open_group(str(tmp / "p.zarr"), mode="r")["0"]
    reads = []

    class Spy:
        shape, ndim = arr.shape, arr.ndim

        def __getitem__(self, key):
            out = arr[key]
            reads.append(out.shape)
            return out

    tiles = list(iter_tiles(Spy(), 64))
    assert len(tiles) == 2 * 10 * 15 and all(t.shape[0] <= 64 and t.shape[1] <= 64 for t in tiles)
    assert all(len(r) == 2 and r[0] <= 64 for r in reads)  # (rows, width) of one channel


def _with_georeference(tmp, name, geo) -> None:
    g = zarr.open_group(str(tmp / name), mode="r+")
    record = dict(g.attrs["tiler"])
    record["georeference"] = geo
    g.attrs["tiler"] = record


def test_geotiff_tags_and_overviews(outputs, tmp_path) -> None:
    tmp, _ = outputs
    import shutil

    shutil.copytree(tmp / "p.zarr", tmp_path / "p.zarr")
    _with_georeference(tmp_path, "p.zarr", GEO)
    path = export_result(tmp_path / "p.zarr", format="geotiff", tile=64)
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    with tifffile.TiffFile(path) as tif:
        geo = tif.geotiff_metadata
        assert geo["ModelPixelScale"] == [10.0, 10.0, 0.0]
        assert geo["ModelTiepoint"] == [0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0]
        assert int(geo["ProjectedCSTypeGeoKey"]) == 32632 and int(geo["GTModelTypeGeoKey"]) == 1
        assert geo["GTCitationGeoKey"] == "WGS 84 / UTM zone 32N"
        # One page with a sample per channel (GDAL bands, pixel-interleaved as GDAL's COG driver
        # writes them), overviews in the main IFD chain.
        assert [p.shape for p in tif.pages] == [g[k].shape[1:] + g[k].shape[:1] for k in ("0", "1", "2")]
        assert tif.pages[0].planarconfig == 1 and tif.pages[1].subfiletype == 1
        np.testing.assert_array_equal(np.moveaxis(tif.pages[2].asarray(), -1, 0), g["2"][...])
        round_trip = json.loads(json.dumps(geo))  # tifffile's own dict, as attributes store it
    _with_georeference(tmp_path, "p.zarr", round_trip)
    again = export_result(tmp_path / "p.zarr", tmp_path / "again.tif", format="geotiff", tile=64)
    with tifffile.TiffFile(again) as tif:
        assert json.loads(json.dumps(tif.geotiff_metadata)) == round_trip
    _with_georeference(tmp_path, "p.zarr", {"geotransform": [100.0, 0.5, 0.1, 200.0, 0.2, -0.5]})
    rotated = export_result(tmp_path / "p.zarr", tmp_path / "rot.tif", format="geotiff", tile=64)
    with tifffile.TiffFile(rotated) as tif:
        m = np.array(tif.pages[0].tags["ModelTransformationTag"].value).reshape(4, 4)
        np.testing.assert_array_equal(m[:2], [[0.5, 0.1, 0, 100.0], [0.2, -0.5, 0, 200.0]])


def test_geotiff_without_georeference_warns(outputs, tmp_path) -> None:
    tmp, _ = outputs
    with pytest.warns(UserWarning, match="no georeference"):
        path = export_result(tmp / "l.zarr", tmp_path / "plain.tif", format="geotiff", tile=64)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_geotiff and tif.pages[0].shape == (600, 900)


def test_refuses_to_overwrite(outputs) -> None:
    tmp, _ = outputs
    (tmp / "exists.tif").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists"):
        export_result(tmp / "l.zarr", tmp / "exists.tif")
    with pytest.raises(OutputError, match="is the input"):
        export_result(tmp / "l.zarr", tmp / "in.tif", overwrite=True)
    assert cli(["export-result", str(tmp / "l.zarr"), "-o", str(tmp / "exists.tif")]) == 1


def test_overlay_colours_exactly() -> None:
    result = StoredResult(path=None, levels=(np.zeros((2, 1, 3)),), attributes={})  # type: ignore[arg-type]
    base = np.full((1, 3, 3), 100.0, np.float32)
    probs = np.array([[[255, 0, 128]], [[0, 255, 127]]], np.uint8)  # (C=2, h=1, w=3)
    out = overlay(base, probs, result, alpha=0.4)
    red = class_colours(2)[1]
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background: untouched
    np.testing.assert_array_equal(out[0, 1], np.floor(100 * 0.6 + red * 0.4 + 0.5))
    labels = np.array([[0, 1, 2]], np.uint8)
    out = overlay(base, labels, result, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 2], np.floor(50 + class_colours(3)[2] * 0.5 + 0.5))


def test_sample_picks_cell_centres() -> None:
    img = np.arange(100 * 60).reshape(100, 60, 1)
    out = sample(lambda y0, y1, x0, x1: img[y0:y1, x0:x1], (100, 60), (10, 6), block=16)
    np.testing.assert_array_equal(out[..., 0], img[5::10, 5::10, 0])


def test_preview_uses_the_input_pyramid_and_shows_the_input(outputs, monkeypatch) -> None:
    tmp, img = outputs
    from tiler.results.opened import opened as real

    levels = []

    def spy(path, **kw):
        levels.append(kw.get("level", 0))
        return real(path, **kw)

    monkeypatch.setattr("tiler.results.opened.opened", spy)
    rgb = render_preview(tmp / "l.zarr", max_side=300)
    assert rgb.shape == (200, 300, 3) and levels[-1] == 1  # the 450-wide level, not the full one
    labels = zarr.open_group(str(tmp / "l.zarr"), mode="r")["1"][...]
    # Where the label is 0 the preview is the input's own pixel, from the input's level 1 (the
    # image at [::2, ::2]) at the same cell centres as the labels' level 1.
    ys, xs = centres(200, 300), centres(300, 450)
    thumb = img[::2, ::2][np.ix_(ys, xs)]
    bg = labels[np.ix_(ys, xs)] == 0
    assert bg.any() and (~bg).any()
    np.testing.assert_array_equal(rgb[bg], thumb[bg])
    assert not np.array_equal(rgb[~bg], thumb[~bg])


def test_preview_without_input_and_cli_png(outputs, tmp_path) -> None:
    tmp, _ = outputs
    img = np.random.default_rng(0).integers(0, 256, (80, 120)).astype(np.uint8)
    out = tmp_path / "arr.zarr"
    tiler.run(img, sigmoid_model(), out=out, tile=32, overlap=8, output="probs")
    with pytest.warns(UserWarning, match="not available"):
        rgb = render_preview(out)
    assert rgb.shape == (80, 120, 3)
    with pytest.warns(UserWarning, match="not available"):
        assert cli(["export-result", str(out), "--format", "png", "--max-side", "60"]) == 0
    png = imagecodecs.png_decode((tmp_path / "arr.zarr.png").read_bytes())
    assert png.shape[1:] == (60, 3) and png.shape[0] > 40  # 40 x 60 and the legend below


def test_run_preview_flag(outputs, tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    tmp, _ = outputs

    class Threshold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, :1] - 0.5) * 20

    torch.jit.script(Threshold()).save(str(tmp_path / "m.pt"))
    out = tmp_path / "cli.zarr"
    code = cli(["run", str(tmp / "in.tif"), "--model", str(tmp_path / "m.pt"), "--device", "cpu",
                "-o", str(out), "--tile", "128", "--overlap", "32", "--kind", "probs", "--preview",
                "--no-pyramid"])
    assert code == 0 and "preview" in capsys.readouterr().out
    png = imagecodecs.png_decode((tmp_path / "cli.zarr.png").read_bytes())
    assert png.shape[1:] == (900, 3) and 600 < png.shape[0] < 700  # never enlarged; 900 < 1536; a legend
    assert sorted(zarr.open_group(str(out), mode="r").array_keys()) == ["0", "progress"]


# --- never a half-written file at the target path ----------------------------------------------------

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


def _labels_output(tmp_path, colours=None):
    labels = np.zeros((60, 200), np.uint8)
    labels[:, 50:100], labels[:, 100:150], labels[:, 150:] = 1, 2, 3
    g = zarr.open_group(str(tmp_path / "lab.zarr"), mode="w", zarr_format=3)
    g.create_array("0", shape=labels.shape, chunks=(32, 32), dtype="uint8")
    g["0"][...] = labels
    spec = {"out_channels": 4, "class_names": ["background", "tumour", "stroma", "necrosis"]}
    if colours:
        spec["class_colours"] = colours
    g.attrs["tiler"] = {"format": 2, "complete": True, "settings": {"output": "labels"}, "model": {"spec": spec}}
    return tmp_path / "lab.zarr"


def _has_colour(img: np.ndarray, rgb) -> bool:
    return bool((img.reshape(-1, 3) == np.asarray(rgb, np.uint8)).all(axis=1).any())


def test_preview_png_has_a_legend_with_the_model_colours_or_okabe_ito_and_opacity(tmp_path) -> None:
    from tiler.models.colours import OKABE_ITO
    from tiler.results.preview import legend

    out = _labels_output(tmp_path)
    with pytest.warns(UserWarning, match="not available"):
        assert cli(["export-result", str(out), "--format", "png", "--opacity", "1"]) == 0
    png = imagecodecs.png_decode((tmp_path / "lab.zarr.png").read_bytes())
    image, strip = png[:60], png[60:]
    for k in (1, 2, 3):  # opacity 1: the class colour itself, in the image and in the legend
        colour = OKABE_ITO[k - 1].astype(np.uint8)
        np.testing.assert_array_equal(image[30, 50 * k + 25], colour)
        assert _has_colour(strip, colour)
    np.testing.assert_array_equal(image[30, 10], [128, 128, 128])  # background: the grey base, undrawn
    # the names are drawn: another name gives another strip
    colours = class_colours(4)
    assert not np.array_equal(legend(["background", "tumour", "stroma", "necrosis"], colours, 200),
                              legend(["background", "tumour", "stroma", "fat"], colours, 200))
    # the model's colours win where it records them
    mine = ["#000000", "#ff0000", "#00ff00", "#0000ff"]
    (tmp_path / "m").mkdir()
    out = _labels_output(tmp_path / "m", mine)
    with pytest.warns(UserWarning, match="not available"):
        assert cli(["export-result", str(out), "--format", "png", "--opacity", "0.5"]) == 0
    png = imagecodecs.png_decode((out.parent / "lab.zarr.png").read_bytes())
    np.testing.assert_array_equal(png[30, 75], np.floor(128 * 0.5 + np.array([255, 0, 0]) * 0.5 + 0.5))
    assert _has_colour(png[60:], [0, 0, 255])
    with pytest.raises(SystemExit):
        cli(["export-result", str(out), "--format", "png", "--opacity", "1.5", "--overwrite"])


@pytest.mark.parametrize("kind", ["probs", "labels"])
def test_uint8_ome_tiff_pyramid_is_seen_by_openslide_and_tifffile(outputs, tmp_path, kind) -> None:
    """Three-class probabilities (as RGB) and labels: every level, as OpenSlide and tifffile read it,
    equals the zarr level. (pyvips is not installed here, so it is not checked.)"""
    openslide = pytest.importorskip("openslide")
    tmp, _ = outputs
    three = FunctionRunner(lambda x: np.concatenate([x[:, :1] * 0, (x[:, :1] - 0.5) * 20, (x[:, 1:2] - 0.5) * 20], 1),
                           spec=ModelSpec(name="three", class_names=("bg", "a", "b")))
    out = tmp_path / f"{kind}.zarr"
    tiler.run(tmp / "in.tif", three, out=out, output=kind, tile=128, overlap=32, chunk=128, pyramid_levels=3)
    path = export_result(out, tile=64)
    g = zarr.open_group(str(out), mode="r")
    levels = [np.asarray(g[str(k)]) for k in range(3)]
    rgb = [np.moveaxis(v, 0, -1) if kind == "probs" else np.repeat(v[..., None], 3, -1) for v in levels]
    slide = openslide.OpenSlide(str(path))
    try:
        assert slide.level_count == 3
        for k, want in enumerate(rgb):
            h, w = want.shape[:2]
            assert slide.level_dimensions[k] == (w, h)
            region = np.asarray(slide.read_region((0, 0), k, (w, h)))
            np.testing.assert_array_equal(region[..., :3], want)
            assert (region[..., 3] == 255).all()
    finally:
        slide.close()
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert series.axes == ("YXS" if kind == "probs" else "YX") and len(series.levels) == 3
        for k, level in enumerate(series.levels):
            np.testing.assert_array_equal(level.asarray(), rgb[k] if kind == "probs" else levels[k])
