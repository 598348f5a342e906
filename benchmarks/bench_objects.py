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
import os
import statistics
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


#: Peak RSS (MB) of each polygon worker process, read just before it is stopped.
WORKER_PEAKS: list[float] = []


def _hwm_mb(pid: str | int) -> float:
    """A process's peak resident memory (``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def case_tiler(path: Path) -> dict[str, float]:
    import zarr

    from tiler.objects.pieces import PieceMaker

    close = PieceMaker.close

    def close_and_measure(self):
        WORKER_PEAKS.extend(_hwm_mb(p.pid) for p in self._procs if p.poll() is None)
        close(self)

    PieceMaker.close = close_and_measure

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
    # VmHWM, not ru_maxrss: Linux carries the parent's RSS at fork into a child's ru_maxrss across
    # exec. The polygon worker's peak is added (an upper bound: the two peaks need not coincide).
    stats["self_mb"] = _hwm_mb("self")
    stats["worker_mb"] = sum(WORKER_PEAKS)
    stats["peak_mb"] = stats["self_mb"] + stats["worker_mb"]
    print(json.dumps(stats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(8192, 8192), metavar=("H", "W"))
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--only", choices=("tiler", "rasterio"))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    h, w = args.size
    names = [args.only] if args.only else ["tiler", "rasterio"]
    print(f"CPU: {_cpu()}; {args.rounds} interleaved round(s), medians", flush=True)
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        path = Path(tmp) / "labels.zarr"
        make_output(path, h, w, args.chunk)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for k in range(args.rounds):
            for name in names:
                out = subprocess.run([sys.executable, __file__, "--child", name, str(path)], check=True,
                                     capture_output=True, text=True, cwd=ROOT).stdout
                r = json.loads(out.strip().splitlines()[-1])
                runs[name].append(r)
                print(f"round {k + 1} {name:9s} {h}x{w}: {r['seconds']:.1f} s, {h * w / 1e6 / r['seconds']:.1f} MP/s, "
                      f"peak {r['peak_mb']:.0f} MB, {r['objects']} objects  {json.dumps(r)}", flush=True)
        med = {name: {key: statistics.median(r[key] for r in rs) for key in ("seconds", "peak_mb")}
               for name, rs in runs.items()}
        for name, m in med.items():
            print(f"median {name:9s} {h}x{w}: {m['seconds']:.2f} s, {h * w / 1e6 / m['seconds']:.1f} MP/s, "
                  f"peak {m['peak_mb']:.0f} MB")
        if len(med) == 2:
            t, r = med["tiler"], med["rasterio"]
            per_round = [f"{b['seconds'] / a['seconds']:.2f}" for a, b in zip(runs["tiler"], runs["rasterio"])]
            print(f"tiler vs rasterio: {r['seconds'] / t['seconds']:.2f}x the speed (rounds: {', '.join(per_round)}), "
                  f"{t['peak_mb'] / r['peak_mb']:.2f}x the memory")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {len(os.sched_getaffinity(0))} cores"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
