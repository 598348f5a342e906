"""Peak memory of building the OME-Zarr pyramid of a large output, for several image sizes.

For each size, one child process writes a (C, N, N) uint8 probability output chunk by chunk (a
cheap pattern, no model), and a second, fresh child process builds its pyramid with
:func:`tiler.store.pyramid.build_pyramid` and reports its peak resident memory (``ru_maxrss``), its
resident memory just before the build (imports, zarr) and the time taken.

    $ python benchmarks/bench_pyramid.py --sizes 8192 16384 32768 --channels 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_output(path: str, size: int, channels: int, chunk: int) -> None:
    import numpy as np
    import zarr

    g = zarr.open_group(path, mode="w", zarr_format=3)
    arr = g.create_array("0", shape=(channels, size, size), chunks=(channels, chunk, chunk), dtype="uint8",
                         dimension_names=("c", "y", "x"), fill_value=0)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": "prediction", "axes": [
        {"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * 3}]}]}]}
    for y0 in range(0, size, chunk):
        ys = np.arange(y0, y0 + chunk)[:, None]
        xs = np.arange(size)[None, :]
        p = ((ys // 37 + xs // 53) * 7 % 256).astype(np.uint8)
        row = np.stack([p] + [255 - p] * (channels - 1))
        arr[:, y0 : y0 + chunk, :] = row


def build(path: str) -> dict[str, float]:
    import zarr

    from tiler.store.pyramid import build_pyramid

    g = zarr.open_group(path, mode="r+")
    before = _rss_mib()
    t0 = time.perf_counter()
    shapes = build_pyramid(g, method="mean")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"levels": len(shapes), "seconds": round(seconds, 1), "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1), "last_level": list(shapes[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--workdir", default=None, help="where to put the outputs (default: a temp dir)")
    ap.add_argument("--_make", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._make:
        make_output(args._make[0], int(args._make[1]), args.channels, args.chunk)
        return
    if args._build:
        print(json.dumps(build(args._build)))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pyramid_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        path = str(work / f"probs_{size}.zarr")
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--channels", str(args.channels), "--chunk", str(args.chunk)]
        subprocess.run([*cmd, "--_make", path, str(size)], check=True)
        made = time.perf_counter() - t0
        out = subprocess.run([sys.executable, __file__, "--_build", path], check=True, capture_output=True,
                             text=True)
        r = json.loads(out.stdout)
        r.update(size=size, channels=args.channels, chunk=args.chunk, create_seconds=round(made, 1))
        rows.append(r)
        print(json.dumps(r), flush=True)
        shutil.rmtree(path)
    print("\n| output (C x H x W, uint8) | levels | build time | RSS before build | peak RSS |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['channels']} x {r['size']} x {r['size']} | {r['levels']} | {r['seconds']} s | "
              f"{r['rss_before_mib']} MiB | {r['peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
