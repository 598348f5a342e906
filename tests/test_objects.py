"""tiler.objects: instances equal scipy.ndimage.label up to renumbering, polygons that rasterise
back exactly, measurements equal whole-image references, the vector formats read back by
geopandas/pyogrio with their CRS, QuPath's fields, and one-line errors for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import zarr
from rasterio.features import rasterize
from rasterio.transform import Affine
from scipy import ndimage

from tiler.errors import OutputError, SettingsError
from tiler.objects import export_objects, label_array
from tiler.objects.export import default_objects_path, format_of
from tiler.objects.label import INSTANCES
from tiler.objects.polygons import iter_objects

NAMES = ("background", "tumour", "stroma")
UTM = {"affine": [10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0], "pixel_is_point": False,
       "geokeys": {"ProjectedCSTypeGeoKey": 32633}}


def make_output(path: Path, values: np.ndarray, *, kind: str = "labels", names: tuple[str, ...] = NAMES,
                chunk: int = 16, geo: dict | None = None, mpp: tuple[float, float] | None = None,
                downsample: tuple[float, float] = (1.0, 1.0), complete: bool = True, fill: float = 0) -> Path:
    """An output group laid out as tiler run writes it: (H, W) labels or (C, H, W) probs."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunks = (chunk, chunk) if values.ndim == 2 else (values.shape[0], chunk, chunk)
    group.create_array("0", shape=values.shape, chunks=chunks, dtype=values.dtype, fill_value=0)[...] = values
    record = {"format": 2, "complete": complete, "run_id": "run-1", "settings": {"output": kind, "fill": fill},
              "model": {"spec": {"out_channels": len(names), "class_names": list(names)}},
              "input": {"downsample": list(downsample)}}
    if geo:
        record["georeference"] = geo
    space = {"type": "space", "unit": "micrometer"} if mpp else {"type": "space"}
    axes = [{"name": "y", **space}, {"name": "x", **space}]
    scale = list(mpp or (1.0, 1.0))
    if values.ndim == 3:
        axes.insert(0, {"name": "c", "type": "channel"})
        scale.insert(0, 1.0)
    level = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
    group.attrs.update({"tiler": record, "ome": {"version": "0.5", "multiscales": [
        {"axes": axes, "datasets": [level]}]}})
    return path


def blobs(shape: tuple[int, int], seed: int, sigma: float = 2.0, classes: int = 3) -> np.ndarray:
    """Random smooth regions of classes 0..classes-1 (fronts winding across many bands)."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    edges = np.quantile(field, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(field, edges).astype(np.uint8)


def serpentine(h: int, w: int) -> np.ndarray:
    """One class-1 snake winding down through every band, and class-2 U shapes whose arms meet
    only several bands below where they start (their ids must merge late)."""
    img = np.zeros((h, w), np.uint8)
    for k, y in enumerate(range(1, h - 1, 6)):
        img[y, 1 : w // 2 - 1] = 1
        x = w // 2 - 2 if k % 2 == 0 else 1
        img[y : min(y + 7, h - 1), x] = 1
    for x0 in range(w // 2 + 1, w - 5, 6):
        img[2:h - 3, x0] = 2
        img[2:h - 3, x0 + 3] = 2
        img[h - 4, x0 : x0 + 4] = 2
    return img


def same_partition(ids: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> bool:
    """Whether two labellings are equal up to a renumbering on ``mask`` (a bijection of ids)."""
    pairs = np.unique(np.stack([ref[mask], ids[mask]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


# -- instances ---------------------------------------------------------------------------------

@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("case", ["blobs", "serpentine", "noise"])
def test_instances_equal_scipy_label_on_the_whole_image_up_to_renumbering(connectivity, case):
    image = {"blobs": lambda: blobs((150, 131), seed=3),
             "serpentine": lambda: serpentine(97, 120),
             "noise": lambda: (np.random.default_rng(5).random((64, 70)) * 3).astype(np.uint8)}[case]()
    ids, count = label_array(image, keep=[1, 2], connectivity=connectivity, band=8)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    total = 0
    for c in (1, 2):
        ref, n = ndimage.label(image == c, structure)
        total += n
        assert same_partition(ids, ref, image == c)
    assert count == total and (ids[image == 0] == 0).all() and len(np.unique(ids)) == count + 1


def test_the_serpentine_is_one_object_and_each_u_is_one():
    image = serpentine(97, 120)
    ids, _ = label_array(image, keep=[1], band=4)
    assert len(np.unique(ids[image == 1])) == 1
    ids, n = label_array(image, keep=[2], band=4)
    assert n == len(range(120 // 2 + 1, 120 - 5, 6))


def test_instances_into_zarr_chunks_are_numbered_band_by_band(tmp_path):
    image = blobs((100, 90), seed=1)
    out = zarr.open_array(str(tmp_path / "i.zarr"), mode="w", shape=image.shape, chunks=(16, 32), dtype="uint32")
    _, count = label_array(image, keep=[1, 2], band=16, out=out)
    ids = out[...]
    seen = 0
    for y0 in range(0, 100, 16):  # ids first seen in a band lie above every earlier band's
        new = np.setdiff1d(np.unique(ids[y0 : y0 + 16]), np.unique(ids[:y0]))
        new = new[new > 0]
        assert not len(new) or new.min() > ids[:y0].max(initial=0)
        seen += len(new)
    assert seen == count == len(np.unique(ids)) - 1


def test_pass_two_rewrites_only_the_bands_of_objects_joined_further_down():
    """Pass 1 writes each component with the id of the object it continues, so objects that only
    cross band borders are never rewritten; a U whose arms meet below is (its upper bands)."""

    class Counting(np.ndarray):
        writes: list = []

        def __setitem__(self, key, value):
            Counting.writes.append(key[0].start)
            super().__setitem__(key, value)

    bars = np.zeros((64, 40), np.uint8)
    bars[:, 3::6] = 1  # vertical bars through all 8 bands
    out = np.zeros(bars.shape, np.uint32).view(Counting)
    _, n = label_array(bars, keep=[1], band=8, out=out)
    assert n == len(range(3, 40, 6)) and Counting.writes == list(range(0, 64, 8))  # pass 1 only
    Counting.writes = []
    u = np.zeros((64, 40), np.uint8)
    u[2:50, 5] = u[2:50, 9] = u[49, 5:10] = 1  # one U: arms from band 0, joined in band 6
    out = np.zeros(u.shape, np.uint32).view(Counting)
    ids, n = label_array(u, keep=[1], band=8, out=out)
    assert n == 1 and len(np.unique(np.asarray(ids)[u == 1])) == 1
    assert Counting.writes[:8] == list(range(0, 64, 8)) and sorted(Counting.writes[8:]) == list(range(0, 48, 8))


# -- polygons ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("connectivity", "lookup"), [(4, True), (8, True), (4, False)])
def test_polygons_rasterise_back_to_the_instances_and_the_class_mask(connectivity, lookup, monkeypatch):
    if not lookup:  # the index built by search instead of a lookup table (ids above LOOKUP_MAX)
        monkeypatch.setattr("tiler.objects.measure.LOOKUP_MAX", 0)
    image = blobs((120, 101), seed=7)
    ids, count = label_array(image, keep=[1, 2], connectivity=connectivity, band=8)
    batches = list(iter_objects(ids, lambda y0, y1: image[y0:y1], band=8))
    got = np.concatenate([b.ids for b in batches])
    geoms = np.concatenate([b.geometry for b in batches])
    assert sorted(got.tolist()) == np.unique(ids)[1:].tolist() and len(got) == count  # each once, none split
    assert shapely.is_valid(geoms).all()
    back = rasterize(zip(geoms, got.tolist()), out_shape=image.shape, dtype="uint32")
    assert (back == ids).all()
    classes = rasterize(zip(geoms, np.concatenate([b.classes for b in batches]).tolist()), out_shape=image.shape,
                        dtype="uint8")
    assert (classes == image).all()
    area = np.concatenate([b.area for b in batches])
    assert (area == np.bincount(ids.ravel())[got]).all()
    assert np.allclose(shapely.area(geoms), area)
    kinds = {g.geom_type for g in geoms}
    assert kinds == ({"Polygon"} if connectivity == 4 else {"Polygon", "MultiPolygon"})


@pytest.mark.parametrize("lookup", [True, False])
def test_instances_not_numbered_band_by_band_are_an_error(lookup, monkeypatch):
    if not lookup:
        monkeypatch.setattr("tiler.objects.measure.LOOKUP_MAX", 0)
    ids = np.zeros((8, 8), np.uint32)
    ids[0:2, 0:2] = 1
    ids[6:8, 6:8] = 1  # id 1 again, far below, not continuing from the band above
    with pytest.raises(OutputError, match="not numbered band by band"):
        list(iter_objects(ids, lambda y0, y1: (ids[y0:y1] > 0).astype(np.uint8), band=4, where="x.zarr"))


@pytest.mark.parametrize(("connectivity", "workers"), [(4, 0), (8, 0), (4, 1), (8, 1)])
def test_objects_out_of_the_labelling_pass_equal_those_of_the_stored_instances(connectivity, workers):
    """Also with the bands polygonised in a worker process, queued ahead (``push``/``finish``)."""
    from tiler.objects.label import label_bands
    from tiler.objects.polygons import ObjectTracker

    image = serpentine(61, 80) | (blobs((61, 80), seed=12) * (serpentine(61, 80) == 0))
    image = np.where(image > 2, 2, image).astype(np.uint8)
    tracker, fused = ObjectTracker(61, workers=workers), []
    ids = np.zeros(image.shape, np.uint32)
    each = (lambda b: fused.append(tracker.add(b))) if not workers else (lambda b: fused.extend(tracker.push(b)))
    count = label_bands(lambda y0, y1: image[y0:y1], ids, shape=image.shape, keep=[1, 2], band=8,
                        connectivity=connectivity, each=each)
    fused.extend(tracker.finish())
    stored = list(iter_objects(ids, lambda y0, y1: image[y0:y1], band=8, workers=workers))

    def table(batches):
        rows = [(int(i), int(c), int(a), g) for b in batches for i, c, a, g in
                zip(b.ids, b.classes, b.area, b.geometry)]
        return sorted(rows, key=lambda r: r[0])

    a, b = table(fused), table(stored)
    assert len(a) == len(b) == count
    assert all(x[:3] == y[:3] and x[3].equals(y[3]) for x, y in zip(a, b))


def test_objects_touching_only_at_a_corner_are_one_valid_multipolygon_under_8_connectivity():
    image = np.zeros((12, 12), np.uint8)
    image[2:6, 2:6] = 1  # two squares meeting at the corner (6, 6), across the band border at row 6
    image[6:10, 6:10] = 1
    ids, n = label_array(image, keep=[1], connectivity=8, band=6)
    (batch,) = [b for b in iter_objects(ids, lambda y0, y1: image[y0:y1], band=6) if len(b)]
    assert n == 1 and batch.geometry[0].geom_type == "MultiPolygon" and batch.geometry[0].is_valid
    assert len(batch.geometry[0].geoms) == 2 and batch.geometry[0].area == 32
    ids4, n4 = label_array(image, keep=[1], connectivity=4, band=6)
    geoms = np.concatenate([b.geometry for b in iter_objects(ids4, lambda y0, y1: image[y0:y1], band=6)])
    assert n4 == 2 and {g.geom_type for g in geoms} == {"Polygon"}


def test_holes_are_kept_across_band_borders_and_an_island_in_a_hole_is_its_own_object():
    image = np.zeros((30, 30), np.uint8)
    image[3:27, 3:27] = 1
    image[8:22, 8:22] = 0  # the hole spans several bands
    image[12:18, 12:18] = 2  # an island of another class inside it
    ids, n = label_array(image, keep=[1, 2], band=4)
    batches = list(iter_objects(ids, lambda y0, y1: image[y0:y1], band=4))
    by_class = {int(c): g for b in batches for c, g in zip(b.classes, b.geometry)}
    ring = by_class[1]
    assert n == 2 and ring.geom_type == "Polygon" and len(ring.interiors) == 1
    assert ring.area == 24 * 24 - 14 * 14 and shapely.Polygon(ring.interiors[0]).area == 14 * 14
    assert by_class[2].area == 36 and len(by_class[2].interiors) == 0


@pytest.mark.parametrize("channels", [3, 1])
def test_centroids_and_mean_probabilities_equal_whole_image_references(tmp_path, channels):
    labels = blobs((80, 70), seed=2, classes=channels if channels > 1 else 2)
    rng = np.random.default_rng(0)
    if channels == 1:  # sigmoid: p > 0.5 (stored > 127) is class 1
        probs = np.where(labels == 1, rng.integers(128, 256, labels.shape), rng.integers(0, 128, labels.shape))
        probs = probs.astype(np.uint8)[None]
        own = np.where(labels == 1, probs[0], 255 - probs[0]) / 255
    else:
        probs = rng.integers(0, 256, (3, 80, 70)).astype(np.uint8)
        probs[labels, np.arange(80)[:, None], np.arange(70)[None, :]] = 255  # the argmax is the label
        own = np.take_along_axis(probs.astype(np.float64) / 255, labels[None].astype(np.intp), 0)[0]
    names = NAMES if channels == 3 else ("background", "tumour")
    out = make_output(tmp_path / "p.zarr", probs, kind="probs", names=names)
    import pyarrow.parquet as pq

    tables = []
    for k in range(2):  # labelled during the export, then read from the stored instances
        export_objects(out, tmp_path / f"p{k}.geojson", table=tmp_path / f"m{k}.parquet")
        tables.append(pq.read_table(tmp_path / f"m{k}.parquet").to_pandas().set_index("id").sort_index())
    got = tables[0]
    assert got.equals(tables[1])
    ids = zarr.open_group(str(out), mode="r")[INSTANCES]["0"][...]
    index = got.index.to_numpy()
    centre = np.array(ndimage.center_of_mass(np.ones_like(ids), ids, index))  # (row, col) of pixel centres
    assert np.allclose(got["centroid_x"], centre[:, 1] + 0.5) and np.allclose(got["centroid_y"], centre[:, 0] + 0.5)
    assert np.allclose(got["mean_probability"], ndimage.mean(own, ids, index))
    assert (got["area_px"].to_numpy() == np.bincount(ids.ravel())[index]).all()
    assert (got["bbox_x1"] - got["bbox_x0"] > 0).all()


# -- export formats ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "geoparquet"])
def test_georeferenced_objects_keep_the_crs_and_rasterise_back_in_map_coordinates(tmp_path, fmt):
    image = blobs((60, 50), seed=4)
    out = make_output(tmp_path / "scene.zarr", image, geo=UTM)
    path = export_objects(out, format=fmt, connectivity=8)
    assert path == default_objects_path(out, fmt)
    df = gpd.read_parquet(path) if fmt == "geoparquet" else gpd.read_file(path)
    assert df.crs is not None and df.crs.to_epsg() == 32633
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)
    back = rasterize(zip(df.geometry, df["class"]), out_shape=image.shape, transform=transform, dtype="uint8")
    assert (back == image * np.isin(image, [1, 2])).all()
    assert np.allclose(df["area_m2"], df["area_px"] * 100.0) and np.allclose(df.geometry.area, df["area_m2"])
    assert shapely.is_valid(df.geometry.values).all()
    assert set(df["class_name"]) == {"tumour", "stroma"}


def test_qupath_geojson_has_object_type_classification_and_level0_pixels(tmp_path):
    image = blobs((40, 48), seed=6)
    out = make_output(tmp_path / "slide.zarr", image, mpp=(2.0, 2.0), downsample=(4.0, 4.0))
    path = export_objects(out, format="qupath", classes=["tumour"], object_type="detection")
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data
    features = data["features"]
    assert features and all(f["properties"]["objectType"] == "detection" for f in features)
    assert {f["properties"]["classification"]["name"] for f in features} == {"tumour"}
    assert all(f["properties"]["classification"]["color"] == [230, 25, 75] for f in features)
    geoms = [shapely.geometry.shape(f["geometry"]) for f in features]
    # level-0 pixels: 4x the output's; rasterising at 1/4 gives the tumour mask back
    back = rasterize([(g, 1) for g in geoms], out_shape=image.shape, transform=Affine.scale(4.0), dtype="uint8")
    assert (back == (image == 1)).all()
    m = [f["properties"]["measurements"] for f in features]
    assert all(abs(x["area_um2"] - 4.0 * x["area_px"]) < 1e-9 for x in m)


def test_min_area_simplify_and_table_as_csv(tmp_path):
    image = blobs((64, 64), seed=8, sigma=1.0)
    out = make_output(tmp_path / "o.zarr", image)
    ids, _ = label_array(image, keep=[1, 2], band=16)
    areas = np.bincount(ids.ravel())[1:]
    path = export_objects(out, tmp_path / "big.geojson", min_area=10, simplify=0.5, table=tmp_path / "t.csv")
    df = gpd.read_file(path)
    assert len(df) == (areas >= 10).sum() and (df["area_px"] >= 10).all()
    import pandas as pd

    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["id"]) == list(df["id"]) and "bbox_x0" in table and "centroid_y" in table


@pytest.mark.slow
def test_instances_are_an_ome_zarr_labels_image_and_are_reused(tmp_path):
    image = blobs((48, 40), seed=9)
    out = make_output(tmp_path / "o.zarr", image)
    export_objects(out, tmp_path / "a.geojson")
    group = zarr.open_group(str(out), mode="r")
    assert group["labels"].attrs["ome"]["labels"] == ["instances"]
    node = group[INSTANCES]
    meta = node.attrs["tiler_objects"]
    assert meta["complete"] is True and meta["classes"] == [1, 2] and meta["connectivity"] == 4
    assert node.attrs["ome"]["image-label"]["source"]["image"] == "../../"
    assert node.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Labels, Reader

    nodes = list(Reader(parse_url(str(out)))())
    assert any(isinstance(spec, Labels) for n in nodes for spec in n.specs)
    before = (Path(out) / INSTANCES / "zarr.json").stat().st_mtime_ns
    export_objects(out, tmp_path / "b.geojson")  # same settings: the instances are reused
    assert json.loads((Path(out) / INSTANCES / "zarr.json").read_text())["attributes"]["tiler_objects"]["count"] \
        == meta["count"]
    export_objects(out, tmp_path / "c.geojson", connectivity=8)  # other settings: labelled again
    assert zarr.open_group(str(out), mode="r")[INSTANCES].attrs["tiler_objects"]["connectivity"] == 8
    assert before != (Path(out) / INSTANCES / "zarr.json").stat().st_mtime_ns


def test_fill_class_and_background_are_skipped_by_default(tmp_path):
    image = blobs((40, 40), seed=10)
    out = make_output(tmp_path / "o.zarr", image, fill=2)
    df = gpd.read_file(export_objects(out))
    assert set(df["class"]) == {1}


# -- bad inputs --------------------------------------------------------------------------------

def test_bad_inputs_are_one_line_errors(tmp_path):
    image = blobs((32, 32), seed=11)
    logits = make_output(tmp_path / "l.zarr", np.zeros((2, 32, 32), np.float32), kind="logits")
    with pytest.raises(OutputError, match="holds logits, not labels or probs"):
        export_objects(logits)
    running = make_output(tmp_path / "r.zarr", image, complete=False)
    with pytest.raises(OutputError, match="has not finished"):
        export_objects(running)
    path = export_objects(running, partial=True)  # the rows so far; the output itself is untouched
    assert path.exists() and INSTANCES.split("/")[0] not in zarr.open_group(str(running), mode="r")
    assert not list(tmp_path.glob(".tiler-instances-*"))
    done = make_output(tmp_path / "d.zarr", image)
    with pytest.raises(SettingsError, match=r"no class 'nuclei'; the classes are background, tumour, stroma"):
        export_objects(done, classes=["nuclei"])
    export_objects(done)
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        export_objects(done)
    with pytest.raises(SettingsError, match="cannot tell the vector format"):
        format_of("objects.shp")
    with pytest.raises(OutputError, match="no such output"):
        export_objects(tmp_path / "missing.zarr")
    for bad in ({"connectivity": 6}, {"min_area": -1}, {"format": "kml"}):
        with pytest.raises(SettingsError):
            export_objects(done, tmp_path / "x.geojson", **bad)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("fmt", ["geojson", "qupath", "gpkg", "geoparquet"])
def test_an_output_without_objects_gives_an_empty_but_valid_file(tmp_path, fmt):
    out = make_output(tmp_path / "glass.zarr", np.zeros((20, 24), np.uint8), geo=UTM)
    path = export_objects(out, format=fmt, table=tmp_path / "t.parquet")
    df = gpd.read_parquet(path) if fmt == "geoparquet" else gpd.read_file(path)
    assert len(df) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "t.parquet").num_rows == 0


def test_a_polygon_worker_that_dies_leaves_its_bands_to_the_parent_with_the_same_pieces():
    """Its bands are polygonised in this process: nothing lost or doubled, the same pieces."""
    from tiler.objects.pieces import PieceMaker, band_pieces

    image = serpentine(64, 80) | (blobs((64, 80), seed=5) * (serpentine(64, 80) == 0))
    bands = [label_array(np.where(image[y:y + 16] > 0, 1, 0).astype(np.uint8), keep=[1], band=16)
             for y in range(0, 64, 16)]
    maker = PieceMaker(1)
    maker._procs[0].kill()
    maker._procs[0].wait()
    seqs = [maker.submit(ids.astype(np.int32), n, 16 * k) for k, (ids, n) in enumerate(bands)]
    got = [maker.take(s) for s in seqs]
    maker.close()
    for (ids, n), k, (gid, geoms) in zip(bands, range(4), got):
        want_ids, want = band_pieces(ids.astype(np.int32), n, 16 * k)
        assert (gid == want_ids).all() and all(a.equals(b) for a, b in zip(geoms, want))


def test_bands_queued_past_the_byte_budget_wait_for_the_worker_not_for_the_caller():
    """``submit`` waits only while bands wait for the worker: answered bands, not yet taken, do not
    hold it (a caller that takes only between submissions must not stall)."""
    from tiler.objects.label import label_bands
    from tiler.objects.polygons import ObjectTracker

    image = serpentine(96, 64)
    ids = np.zeros(image.shape, np.uint32)
    tracker = ObjectTracker(96, workers=1)
    tracker._maker._queue_bytes = 1  # every band alone fills the budget
    got, count = [], []

    def run():
        count.append(label_bands(lambda y0, y1: image[y0:y1], ids, shape=image.shape, keep=[1], band=8,
                                 each=lambda b: got.extend(tracker.push(b))))
        got.extend(tracker.finish())

    import threading

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "submit waited for a take that only its caller could make"
    assert sum(len(b) for b in got) == count[0]
