"""How close tiled inference is to whole-image inference for the built-in UNet: one table.

Runs the built-in default model over a crop of a generated demo slide once as a whole (mirrored by
its context radius rounded up to 16, 128 px, on every side: whole-image inference as
:mod:`tiler.engine.exact` defines it) and tiled under each setting of a fixed list: the old
default lattice (starting at pixel 0), the defaults, two overlaps, each window, ``exact``, and
with test-time augmentation (compared with the whole pass under the same augmentation). Prints a
Markdown table: max and p99 |Δ logit|, label agreement, cost (tile pixels per image pixel, the
lattice over a large image; x K for K-fold TTA) and measured tiles/s.

    python benchmarks/seams.py [--size 1024] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiler.calibrate import tiled, whole_pass
from tiler.config import Settings
from tiler.runners.factory import load_runner
from tiler.runners.tta import count

ROWS: list[tuple[str, Settings]] = [
    ("old default (lattice at 0): 512 / 128, gaussian", Settings(tile=512, overlap=128, window="gaussian",
                                                                 context=0)),
    ("512 / 128, gaussian, borders mirrored", Settings(tile=512, overlap=128, window="gaussian")),
    ("512 / 256, gaussian", Settings(tile=512, overlap=256, window="gaussian")),
    ("512 / 128, cosine", Settings(tile=512, overlap=128, window="cosine")),
    ("512 / 128, linear", Settings(tile=512, overlap=128, window="linear")),
    ("512 / 128, constant, margin 64", Settings(tile=512, overlap=128, window="constant")),
    ("**default**: 1024 / 256, constant, margin 128", Settings()),
    ("1024 / 256, gaussian", Settings(tile=1024, overlap=256, window="gaussian")),
    ("exact, tile 512", Settings(tile=512, exact=True)),
    ("exact, tile 1024", Settings(tile=1024, exact=True)),
    ("512 / 128, gaussian, tta flip", Settings(tile=512, overlap=128, window="gaussian", tta="flip")),
    ("default, tta flips", Settings(tta="flips")),
    ("exact, tile 1024, tta d4", Settings(tile=1024, exact=True, tta="d4")),
]


def test_image(size: int) -> np.ndarray:
    import tifffile

    from tools.demo import make_slide

    path = Path(__file__).parent / "_work" / f"seams_{size}.tif"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        make_slide(path, shape=(size, size), levels=1, background=0.3)
    return tifffile.imread(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="crop edge in pixels (default 1024)")
    p.add_argument("--quick", action="store_true", help="leave out the TTA rows")
    args = p.parse_args()
    image = test_image(args.size)
    runner = load_runner(None, device="cpu")
    pad = -(-runner.spec.context // 16) * 16
    print(f"image {args.size}x{args.size} (demo slide, 30 % glass); model {runner.spec.name}, context radius "
          f"{runner.spec.context} px (whole pass mirrored by {pad}); {runner.describe()}\n")
    print("| setting (tile / overlap, window) | max abs Δ | p99 abs Δ | labels agree | cost | tiles/s |")
    print("|---|---:|---:|---:|---:|---:|")
    references: dict[str, np.ndarray] = {}
    for label, settings in ROWS:
        if args.quick and settings.tta != "none":
            continue
        if settings.tta not in references:
            references[settings.tta] = whole_pass(runner, image, pad, 16, settings.tta)
        whole = references[settings.tta]
        out, job, seconds = tiled(runner, image, settings)
        s = job.settings
        diff = np.abs(out - whole)
        agree = float((out.argmax(0) == whole.argmax(0)).mean())
        cost = (s.tile / (s.tile - s.overlap)) ** 2 * count(s.tta)
        print(f"| {label} | {diff.max():.2g} | {np.percentile(diff, 99):.2g} | {100 * agree:.4f} % | "
              f"{cost:.2f}x | {job.plan.n_tiles / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
