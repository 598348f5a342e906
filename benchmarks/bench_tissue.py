"""What ``--tissue auto`` saves on a slide that is mostly glass.

Generates (once, under benchmarks/_work) a pyramidal JPEG-tiled OME-TIFF slide of SIZE x SIZE pixels
at 0.5 µm with about 60 % glass (a smooth random field above its 60 % quantile is tissue, as in
tests/_wsi_files.py), then runs the same model over it with and without ``--tissue auto`` and prints
tiles computed and skipped, wall time, the speed-up and whether the output on the tissue mask is
identical. Models: ``zero`` (a FunctionRunner that costs nothing: what is left is reading, mask
detection, blending and writing) and ``unet`` (UNet(3, 3, base 8), random weights, CPU).

    python benchmarks/bench_tissue.py [--size 8192] [--tile 512] [--overlap 128] [--model zero unet]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiler
from tiler.masks.skip import build_skip
from tiler.masks.tissue import auto_tissue
from tiler.models.unet import UNet
from tiler.plan.lattice import TilePlan
from tiler.runners.base import FunctionRunner
from tiler.runners.factory import load_runner
from tiler.sources import open_at

WORK = Path(__file__).resolve().parent / "_work"


def make_slide(path: Path, size: int, *, background: float = 0.6, seed: int = 0) -> None:
    """SIZE x SIZE RGB, 3 levels (x1, x4, x16), JPEG tiles of 512, PhysicalSize 0.5 µm; strip-wise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    coarse = ndimage.zoom(rng.normal(size=(3, 3)), 256 / 3, order=3, mode="nearest")[:256, :256]
    threshold = np.quantile(coarse, background)
    img = np.empty((size, size, 3), np.uint8)
    step = 512
    for y0 in range(0, size, step):
        # the field at full resolution for this strip: bilinear from the 256 x 256 coarse field
        ys = (np.arange(y0, y0 + step) + 0.5) * 256 / size - 0.5
        xs = (np.arange(size) + 0.5) * 256 / size - 0.5
        field = ndimage.map_coordinates(coarse, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest")
        tissue = field > threshold
        strip = np.repeat(rng.integers(232, 246, size=(step, size, 1), dtype=np.uint8), 3, axis=2)
        pink = np.array([205, 115, 175], np.int16) - rng.integers(0, 60, size=(step, size, 1), dtype=np.int16)
        strip[tissue] = pink.astype(np.uint8)[tissue]
        img[y0 : y0 + step] = strip
    meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    levels = [img, img[::4, ::4], img[::16, ::16]]
    with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tif:
        tif.write(img, subifds=2, tile=(512, 512), photometric="rgb", compression="jpeg", metadata=meta)
        for lvl in levels[1:]:
            tif.write(np.ascontiguousarray(lvl), subfiletype=1, tile=(256, 256), photometric="rgb",
                      compression="jpeg")


def runner(kind: str):
    if kind == "zero":
        return FunctionRunner(lambda x: np.zeros((x.shape[0], 2, *x.shape[2:]), np.float32), normalise=False)
    torch.manual_seed(0)
    return load_runner(UNet(3, 3, base_channels=8).eval(), device="cpu")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--model", nargs="+", default=["zero", "unet"])
    args = p.parse_args()
    WORK.mkdir(exist_ok=True)
    slide = WORK / f"tissue_{args.size}.ome.tif"
    if not slide.exists():
        t = time.perf_counter()
        make_slide(slide, args.size)
        print(f"generated {slide} in {time.perf_counter() - t:.1f} s")
    src = open_at(slide)
    t = time.perf_counter()
    mask = auto_tissue(slide, src)
    mask_s = time.perf_counter() - t
    skip, _ = build_skip(TilePlan.create((args.size, args.size), tile=args.tile, overlap=args.overlap),
                         slide, src, tissue="auto")
    src.close()
    print(f"slide {args.size}x{args.size}, tile {args.tile}, overlap {args.overlap}; mask {mask.array.shape} "
          f"({mask.fraction:.1%} foreground) in {mask_s:.2f} s; lattice {skip.shape}, "
          f"{(~skip).sum()} of {skip.size} tiles touch tissue")
    torch.set_num_threads(2)
    for kind in args.model:
        model = runner(kind)
        kw = {"tile": args.tile, "overlap": args.overlap, "device": "cpu", "output": "labels", "pyramid": False}
        res = {}
        for mode in ("full", "tissue"):
            out = WORK / f"tissue_{kind}_{mode}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            res[mode] = tiler.run(slide, model, out=out, tissue="auto" if mode == "tissue" else None, **kw)
        full, masked = res["full"], res["tissue"]
        same = _same_on_mask(WORK / f"tissue_{kind}_full.zarr", WORK / f"tissue_{kind}_tissue.zarr", mask)
        print(f"{kind:5s} full   {full.tiles:5d} tiles            {full.seconds:7.1f} s "
              f"({full.megapixels / full.seconds:.1f} MP/s)")
        print(f"{kind:5s} tissue {masked.tiles:5d} tiles {masked.skipped:5d} skipped {masked.seconds:7.1f} s "
              f"(speed-up x{full.seconds / masked.seconds:.2f}; computed {masked.tiles / full.tiles:.1%} "
              f"of the tiles; identical on the mask: {same})")


def _same_on_mask(a: Path, b: Path, mask) -> bool:
    import zarr

    za, zb = zarr.open_group(a, mode="r")["0"], zarr.open_group(b, mode="r")["0"]
    h, w = za.shape[-2:]
    step = 1024
    for y0 in range(0, h, step):
        ys = np.minimum((np.arange(y0, min(h, y0 + step)) / mask.scale[0]).astype(int), mask.array.shape[0] - 1)
        xs = np.minimum((np.arange(w) / mask.scale[1]).astype(int), mask.array.shape[1] - 1)
        fg = mask.array[ys][:, xs]
        if not np.array_equal(za[..., y0 : y0 + step, :][..., fg], zb[..., y0 : y0 + step, :][..., fg]):
            return False
    return True


if __name__ == "__main__":
    main()
