"""Train the built-in default model: ``python -m tools.train --out trained.pt``.

To replace the shipped weights, name them and say so: ``--out tiler/models/weights/default.pt --overwrite``.

What the model learns is a classical rule, not expert annotation: it *distils* :func:`label_rule`
(optical-density threshold for glass vs tissue, colour-deconvolution hematoxylin threshold for
nuclei) applied to crops of synthetic slides (:mod:`tools.synthetic`, built from scikit-image's
``ihc.png``). The crops go through JPEG (quality 90) first, as the demo slide's tiles do. Seeded:
the same machine and thread count give the same weights. CPU, a few minutes.

``scikit-image`` and ``scipy`` are imported here only (``demo``/``test`` extras).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Class indices of the default model's output channels.
CLASS_NAMES = ("background", "tissue", "nuclei")
#: Rule thresholds. Optical density is natural-log, summed over R, G, B; glass is about 0.16.
TISSUE_OD, HEMATOXYLIN, MIN_NUCLEUS, MIN_REGION = 0.25, 0.03, 30, 64


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def label_rule(rgb: np.ndarray) -> np.ndarray:
    """The classical rule the default model distils: (H, W, 3) uint8 -> (H, W) uint8 labels.

    0 background (glass): Gaussian-smoothed (sigma 2) optical density below ``TISSUE_OD``, small
    specks and holes (< ``MIN_REGION`` px) cleaned; 1 tissue: the rest; 2 nuclei: tissue whose
    hematoxylin (``skimage.color.rgb2hed``) exceeds ``HEMATOXYLIN`` and half its DAB, opened with
    a 3x3 cross, objects under ``MIN_NUCLEUS`` px removed. Pixels within ~8 px of the array's edge
    see less context than inside; label a larger region and crop when that matters.
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed

    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=-1)
    tissue = ndi.gaussian_filter(od, 2.0, mode="reflect") > TISSUE_OD
    tissue = _remove_small(tissue, MIN_REGION)
    tissue = ~_remove_small(~tissue, MIN_REGION)
    hed = rgb2hed(rgb)
    nuclei = (hed[..., 0] > HEMATOXYLIN) & (hed[..., 0] > 0.5 * hed[..., 2]) & tissue
    nuclei = _remove_small(ndi.binary_opening(nuclei), MIN_NUCLEUS)
    labels = tissue.astype(np.uint8)
    labels[nuclei] = 2
    return labels


def jpeg_roundtrip(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    """(H, W, 3) uint8 through JPEG and back, as the demo slide's tiles are stored."""
    import imagecodecs

    return imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(rgb, level=quality))


def make_patches(
    n: int, size: int = 256, *, seeds: tuple[int, ...] = (1, 2, 3, 4), slide_size: int = 4096, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training crops: (n, size, size, 3) uint8 images and (n, size, size) uint8 rule labels.

    Crops are drawn uniformly from synthetic slides (one per seed in ``seeds``), half of them
    re-drawn until they hold some tissue, so glass does not dominate.
    """
    from tools.synthetic import SyntheticSlide

    rng = np.random.default_rng(seed)
    slides = [SyntheticSlide((slide_size, slide_size), background=0.5, seed=s) for s in seeds]
    pad = 16
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, size, size), np.uint8)
    for i in range(n):
        slide = slides[i % len(slides)]
        for _ in range(20):
            y = int(rng.integers(pad, slide_size - size - pad))
            x = int(rng.integers(pad, slide_size - size - pad))
            if i % 2 or slide.tissue(y, y + size, x, x + size).mean() > 0.2:
                break
        rgb = jpeg_roundtrip(slide.rgb(y - pad, y + size + pad, x - pad, x + size + pad))
        images[i] = rgb[pad:-pad, pad:-pad]
        labels[i] = label_rule(rgb)[pad:-pad, pad:-pad]
    return images, labels


def train(
    *, patches: int = 320, epochs: int = 6, base_channels: int = 8, batch_size: int = 8, seed: int = 0,
    align_corners: bool = False, init: str | Path | None = None, max_lr: float = 3e-3, log: Any = print,
) -> dict[str, Any]:
    """Train the default UNet; return the checkpoint dict (``state_dict``, ``config``, ``tiler``).

    ``align_corners=False`` (bilinear upsampling that is shift-equivariant, so the model tiles
    exactly); ``init``: fine-tune from the weights of that checkpoint (any upsampling: the weights
    are the same tensors) instead of a random start.
    """
    import torch
    from torch.nn import functional as F

    from tiler.models.spec import ModelSpec
    from tiler.models.unet import UNet

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    images, labels = make_patches(patches, seed=seed)
    log(f"made {patches} patches of {images.shape[1]} px in {time.perf_counter() - t0:.0f} s; "
        f"class fractions {np.bincount(labels.ravel(), minlength=3) / labels.size}")
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = x_all.mean(dim=(0, 2, 3))
    std = x_all.std(dim=(0, 2, 3))
    x_all = (x_all - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    y_all = torch.from_numpy(labels).long()
    freq = torch.bincount(y_all.ravel(), minlength=3).float() / y_all.numel()
    class_weight = (1.0 / (freq + 1e-3)) ** 0.5
    class_weight /= class_weight.mean()

    model = UNet(in_channels=3, num_classes=3, base_channels=base_channels, bilinear=True,
                 align_corners=align_corners)
    if init is not None:
        from tiler.models.checkpoints import to_builtin, unwrap

        state, _config, _meta = unwrap(torch.load(init, map_location="cpu", weights_only=True))
        model.load_state_dict(to_builtin(state)[0])
        log(f"fine-tuning from {init} (align_corners={align_corners})")
    model = model.to(memory_format=torch.channels_last)  # several times faster on CPU (oneDNN)
    steps = epochs * (patches // batch_size)
    optim = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=max_lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(patches, generator=gen)
        total = 0.0
        for k in range(patches // batch_size):
            idx = order[k * batch_size : (k + 1) * batch_size]
            x, y = x_all[idx].contiguous(memory_format=torch.channels_last), y_all[idx]
            if torch.rand(1, generator=gen).item() < 0.5:  # flips: the rule is flip-invariant
                x, y = x.flip(-1), y.flip(-1)
            loss = F.cross_entropy(model(x), y, weight=class_weight)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            total += loss.item()
        log(f"epoch {epoch + 1}/{epochs}: loss {total / (patches // batch_size):.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
    model.eval()
    spec = ModelSpec(
        name="tiler-tissue-unet", in_channels=3, out_channels=3, multiple=UNet.multiple,
        context=model.context_radius(),
        mean=tuple(round(float(v), 5) for v in mean), std=tuple(round(float(v), 5) for v in std),
        activation="softmax", class_names=CLASS_NAMES,
    )
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return {"state_dict": state, "config": model.config(), "tiler": spec.to_dict(),
            "training": {"patches": patches, "epochs": epochs, "seed": seed, "patch_size": 256,
                         "max_lr": max_lr, "init": Path(init).name if init else None}}


def evaluate(model: Any = None, *, size: tuple[int, int] = (2048, 2048), seed: int = 100) -> dict[str, float]:
    """Score a model on a held-out synthetic slide (not among the training seeds).

    Runs :func:`tiler.predict` with the default settings on the JPEG-stored slide and compares the
    argmax with :func:`label_rule` (accuracy, Dice per class) and with the generator's ground
    truth of glass (fraction of true glass predicted background, and of true tissue predicted not
    background).
    """
    import tempfile

    import tifffile

    from tiler.api import predict
    from tools.demo import make_slide
    from tools.synthetic import SyntheticSlide

    with tempfile.TemporaryDirectory() as tmp:
        path = make_slide(Path(tmp) / "heldout.tif", size, levels=1, seed=seed)
        rgb = tifffile.imread(path)
        pred = predict(path, model, device="cpu").argmax(axis=0)
    rule = label_rule(rgb)
    truth = SyntheticSlide(size, seed=seed).tissue(0, size[0], 0, size[1])
    scores = {"accuracy": float((pred == rule).mean())}
    for c, name in enumerate(CLASS_NAMES):
        p, r = pred == c, rule == c
        scores[f"dice_{name}"] = float(2 * (p & r).sum() / max(1, p.sum() + r.sum()))
    scores["glass_recall"] = float((pred[~truth] == 0).mean())
    scores["tissue_recall"] = float((pred[truth] != 0).mean())
    scores["rule_glass_recall"] = float((rule[~truth] == 0).mean())
    scores["rule_tissue_recall"] = float((rule[truth] != 0).mean())
    return scores


#: The weights the package ships (``tiler/models/weights/default.pt``).
SHIPPED = (Path(__file__).resolve().parents[1] / "tiler" / "models" / "weights" / "default.pt")

TRAIN_EXAMPLES = """\
examples:
  $ python -m tools.train --out trained.pt             # a few minutes on a CPU
  $ python -m tools.train --eval-only                  # score the shipped weights
  $ python -m tools.train --out tiler/models/weights/default.pt --overwrite   # replace them
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.train", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_EXAMPLES)
    parser.add_argument("--out", metavar="FILE",
                        help="checkpoint to write (default trained.pt here; an existing file, the "
                             "shipped weights included, only with --overwrite); with --eval-only, the "
                             "one to score (default: the shipped weights)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--patches", type=int, default=320, metavar="N",
                        help="training crops drawn from synthetic slides (default 320)")
    parser.add_argument("--epochs", type=int, default=6, metavar="N", help="passes over the crops (default 6)")
    parser.add_argument("--base-channels", type=int, default=8, metavar="N",
                        help="UNet width: channels of the first level, doubled per level (default 8)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed for the crops and the initial weights (default 0)")
    parser.add_argument("--align-corners", action="store_true",
                        help="bilinear upsampling with align_corners=True (the seeds' UNet; not shift-equivariant)")
    parser.add_argument("--init", metavar="FILE", help="fine-tune from this checkpoint instead of a random start")
    parser.add_argument("--max-lr", type=float, default=3e-3, metavar="X",
                        help="peak of the one-cycle learning rate (default 3e-3)")
    parser.add_argument("--eval-only", action="store_true", help="score --out without training")
    args = parser.parse_args(argv)

    import torch

    out = Path(args.out) if args.out else SHIPPED if args.eval_only else Path("trained.pt")
    if not args.eval_only and out.exists() and not args.overwrite:
        parser.error(f"{out} already exists{' (the shipped weights)' if out.resolve() == SHIPPED else ''}; "
                     f"pass --overwrite to replace it")
    if not args.eval_only:
        torch.manual_seed(args.seed)
        checkpoint = train(patches=args.patches, epochs=args.epochs, base_channels=args.base_channels,
                           seed=args.seed, align_corners=args.align_corners, init=args.init, max_lr=args.max_lr)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    scores = evaluate(out)
    print("held-out slide (seed 100, 2048 x 2048):", ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
