"""How close tiled inference is to whole-image inference for the built-in UNet.

Runs the built-in default model (random-init UNet(3, 3, 16) if the weights are missing) over a
crop of a generated slide twice: tiled with the given settings, and on the whole crop at once
(reflect-padded by 256 pixels). Prints max / mean / p99 absolute logit
differences and the fraction of pixels whose label differs.

    python benchmarks/seams.py [--size 1024] [--tile 512] [--overlap 128] [--window gaussian]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiler
from tiler.runners.factory import load_runner


def test_image(size: int) -> np.ndarray:
    try:
        import tifffile

        from tools.demo import make_slide

        path = Path(__file__).parent / "_work" / f"seams_{size}.tif"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            make_slide(path, shape=(size, size), levels=1, background=0.3)
        return tifffile.imread(path)
    except ImportError:
        from skimage import data

        ihc = data.immunohistochemistry()
        reps = -(-size // ihc.shape[0])
        return np.tile(ihc, (reps, reps, 1))[:size, :size]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--window", default="gaussian")
    p.add_argument("--margin", type=int, default=0)
    args = p.parse_args()
    image = test_image(args.size)
    try:
        runner = load_runner(None, device="cpu")
    except tiler.ModelError:
        from tiler.models.unet import UNet

        torch.manual_seed(0)
        runner = load_runner(UNet(3, 3, 16).eval(), device="cpu")
        print("(default weights missing: random-init UNet(3, 3, 16))")
    tiled = tiler.predict(image, runner, tile=args.tile, overlap=args.overlap, window=args.window,
                          margin=args.margin, device="cpu")
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    pad = 256  # generous reflect context at the borders, as the border tiles get (multiple of 16)
    with torch.inference_mode():
        xp = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8).numpy()
    whole = runner(xp)[0][:, pad:-pad, pad:-pad]
    diff = np.abs(tiled - whole)
    labels_differ = float((tiled.argmax(0) != whole.argmax(0)).mean())
    inner = diff[:, 64:-64, 64:-64]  # away from the image border, where tiles see no reflected context
    print(f"image {args.size}x{args.size}, tile {args.tile}, overlap {args.overlap}, window {args.window}, "
          f"margin {args.margin}")
    print(f"logits |tiled - whole|: max {diff.max():.4f}, mean {diff.mean():.5f}, "
          f"p99 {np.percentile(diff, 99):.4f}; logit range {whole.min():.2f}..{whole.max():.2f}")
    print(f"  > 64 px from the image border: max {inner.max():.4f}, mean {inner.mean():.5f}, "
          f"p99 {np.percentile(inner, 99):.4f}")
    print(f"labels that differ: {labels_differ * 100:.3f} % of pixels")


if __name__ == "__main__":
    main()
