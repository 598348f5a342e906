"""Polygonising the labels of a large output: tiler.objects against rasterio.features.shapes.

Each case runs in its own process (peak RSS from ``getrusage``) on the same labels output, made
band by band (never whole) as a zarr group laid out as ``tiler run --kind labels`` writes it:
winding class-1 fronts and class-2 islands that cross many chunk rows and columns.

- ``tiler``: :func:`tiler.objects.label.write_instances` (the uint32 instances written to the
  group, no pyramid) with :class:`tiler.objects.polygons.ObjectTracker` taking every object out of
  the labelling pass as a shapely geometry, merged across chunk rows, streamed chunk row by chunk
  row (what ``tiler export-result --format ...`` does before writing the file);
- ``rasterio``: the whole class mask read into memory and ``list(rasterio.features.shapes(mask,
  mask=mask > 0))`` (GDAL's polygonize; 4-connected, as tiler's default), GeoJSON-like dicts only.

    python benchmarks/bench_objects.py --size 8192 8192            # what benchmarks/OBJECTS.md shows
    python benchmarks/bench_objects.py --size 32768 32768          # the issue's size (about 15 min here)
    python benchmarks/bench_objects.py --size 2048 100000 --only tiler   # a 100k-wide strip
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def class_band(y0: int, y1: int, width: int) -> np.ndarray:
    """(y1 - y0, width) uint8 classes 0/1/2 of a smooth deterministic field (no seams between bands)."""
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    f = np.sin(x * 0.013 + 3 * np.sin(y * 0.007)) * np.cos(y * 0.011 + 2 * np.sin(x * 0.005))
    g = np.sin(x * 0.09 + np.cos(y * 0.05)) * np.sin(y * 0.08 + np.cos(x * 0.03))
    out = np.zeros(f.shape, np.uint8)
    out[f > 0.55] = 1
    out[(g > 0.8) & (f < 0.3)] = 2
    return out


def make_output(path: Path, height: int, width: int, chunk: int) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = group.create_array("0", shape=(height, width), chunks=(chunk, chunk), dtype="uint8", fill_value=0)
    for y0 in range(0, height, chunk):
        arr[y0 : y0 + chunk] = class_band(y0, min(y0 + chunk, height), width)
    group.attrs.update({"tiler": {"format": 2, "complete": True, "run_id": "bench",
                                  "settings": {"output": "labels", "fill": 0},
                                  "model": {"spec": {"out_channels": 3, "class_names": ["bg", "front", "island"]}}}})


def case_tiler(path: Path) -> dict[str, float]:
    import zarr

    from tiler.objects.classes import ClassImage, select_classes
    from tiler.objects.label import write_instances
    from tiler.objects.polygons import ObjectTracker, default_piece_workers
    from tiler.results.result import open_result

    result = open_result(path)
    image = ClassImage(result, tuple(select_classes(result)))
    tracker = ObjectTracker(image.shape[0], workers=default_piece_workers(image.shape[0], image.band_height))
    objects = 0

    def each(band):  # what tiler export-result does, less the file writing
        nonlocal objects
        objects += sum(len(b) for b in tracker.push(band))

    t0 = time.perf_counter()
    write_instances(image, zarr.open_group(str(path), mode="r+"), pyramid=False, each=each)
    objects += sum(len(b) for b in tracker.finish())
    return {"seconds": time.perf_counter() - t0, "objects": objects}


def case_rasterio(path: Path) -> dict[str, float]:
    import zarr
    from rasterio.features import shapes

    t0 = time.perf_counter()
    mask = zarr.open_array(str(path / "0"), mode="r")[...]
    t1 = time.perf_counter()
    found = list(shapes(mask, mask=mask > 0, connectivity=4))
    t2 = time.perf_counter()
    return {"seconds": t2 - t1, "read_s": t1 - t0, "objects": len(found)}


def child(name: str, path: Path) -> None:
    stats = (case_tiler if name == "tiler" else case_rasterio)(path)
    # the polygon worker process's peak too (an upper bound: the two peaks need not coincide)
    stats["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(json.dumps(stats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(8192, 8192), metavar=("H", "W"))
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--only", choices=("tiler", "rasterio"))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    h, w = args.size
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        path = Path(tmp) / "labels.zarr"
        make_output(path, h, w, args.chunk)
        rows = {}
        for name in ([args.only] if args.only else ["tiler", "rasterio"]):
            out = subprocess.run([sys.executable, __file__, "--child", name, str(path)], check=True,
                                 capture_output=True, text=True, cwd=ROOT).stdout
            rows[name] = json.loads(out.strip().splitlines()[-1])
            r = rows[name]
            print(f"{name:9s} {h}x{w}: {r['seconds']:.1f} s, {h * w / 1e6 / r['seconds']:.1f} MP/s, "
                  f"peak {r['peak_mb']:.0f} MB, {r['objects']} objects/pieces  {json.dumps(r)}", flush=True)
        if len(rows) == 2:
            t, r = rows["tiler"], rows["rasterio"]
            print(f"tiler vs rasterio: {r['seconds'] / t['seconds']:.2f}x the speed, "
                  f"{t['peak_mb'] / r['peak_mb']:.2f}x the memory")


if __name__ == "__main__":
    main()
