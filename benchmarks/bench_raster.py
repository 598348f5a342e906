"""GDAL rasters: the same GeoTIFF run through tifffile and through rasterio, with and without nodata.

A ``zero`` model (a FunctionRunner that costs nothing) leaves reading, blending and writing: what the
reader costs. Inputs are made once under ``benchmarks/_work`` (uint16, 3 bands, deflate, 512-pixel
blocks, EPSG:32632); ``nodata`` is the same scene with its left quarter set to 0 = nodata (whole
tiles skipped there, the valid mask read once up front and again per written chunk row). Cases run
interleaved in one process, best of ``--repeat``; the ratios are what count.

    python benchmarks/bench_raster.py [--size 4096] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
WORK = HERE / "_work"


def scene(path: Path, size: int, nodata: bool) -> Path:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint16",
                       crs="EPSG:32632", transform=from_origin(500000, 4600000, 10, 10), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", nodata=0 if nodata else None) as ds:
        for y0 in range(0, size, 512):
            yy, xx = np.mgrid[y0 : y0 + 512, 0:size].astype(np.float32)
            band = (np.sin(yy / 37) * np.cos(xx / 53) * 1500 + 2000).astype(np.uint16)
            data = np.stack([band, band // 2 + 7, band // 3 + 11])
            if nodata:
                data[:, :, : size // 4] = 0
            ds.write(data, window=Window(0, y0, size, 512))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    import tiler
    from tiler.runners.base import FunctionRunner

    WORK.mkdir(exist_ok=True)
    plain = scene(WORK / f"raster_{args.size}.tif", args.size, nodata=False)
    masked = scene(WORK / f"raster_{args.size}_nodata.tif", args.size, nodata=True)
    zero = FunctionRunner(lambda x: np.zeros((x.shape[0], 2, *x.shape[2:]), np.float32), normalise=False)
    cases = {"tifffile": (plain, "tifffile"), "rasterio": (plain, "rasterio"),
             "rasterio + nodata (25 %)": (masked, "rasterio")}
    best: dict[str, tuple[float, int, int]] = {}
    for _ in range(args.repeat):
        for name, (path, reader) in cases.items():
            out = WORK / "raster_out.zarr"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            r = tiler.run(path, zero, out=out, reader=reader, output="labels", tile=512, overlap=64,
                          device="cpu", pyramid=False)
            s = time.perf_counter() - t
            if name not in best or s < best[name][0]:
                best[name] = (s, r.tiles, r.skipped)
    mp = args.size * args.size / 1e6
    print(f"| input ({args.size}², uint16 x 3, deflate) | reader | s | MP/s | tiles computed / skipped |")
    print("|---|---|---:|---:|---:|")
    for name, (s, tiles, skipped) in best.items():
        print(f"| {'nodata' if 'nodata' in name else 'plain'} | {name} | {s:.2f} | {mp / s:.1f} | "
              f"{tiles} / {skipped} |")


if __name__ == "__main__":
    main()
