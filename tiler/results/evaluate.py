"""Segmentation metrics of an output against a ground-truth image, out of core.

The confusion matrix is accumulated in int64 one chunk row of the output at a time, in column blocks
of whole chunks (the output's labels, or the argmax of its probabilities/logits, against the truth's
labels), skipping pixels outside an optional ROI, so memory does not grow with the image; Dice, IoU
and mIoU are then computed from the integer counts:

    Dice_c = 2 TP / (2 TP + FP + FN)        IoU_c = TP / (TP + FP + FN)

A class with TP + FP + FN = 0 (absent from both) has no Dice or IoU (NaN, ``null`` in JSON) and is
left out of the mean. Confusion-matrix rows are the truth, columns the prediction.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, OutputError
from ..masks.roi import RoiMask
from ..sources import Source
from .opened import opened
from .result import StoredResult, open_result, to_labels


@dataclass(frozen=True)
class Scores:
    """Metrics of one evaluation.

    Attributes
    ----------
    confusion : (K, K) int64; ``confusion[t, p]`` = pixels of truth class t predicted as p.
    class_names : the K class names.
    """

    confusion: np.ndarray
    class_names: tuple[str, ...]

    @property
    def tp(self) -> np.ndarray:
        return np.diag(self.confusion)

    @property
    def fp(self) -> np.ndarray:
        return self.confusion.sum(axis=0) - self.tp

    @property
    def fn(self) -> np.ndarray:
        return self.confusion.sum(axis=1) - self.tp

    @property
    def dice(self) -> np.ndarray:
        """(K,) float64 Dice per class (NaN where the class is in neither image)."""
        return metrics_from_confusion(self.confusion)["dice"]

    @property
    def iou(self) -> np.ndarray:
        """(K,) float64 IoU per class (NaN where the class is in neither image)."""
        return metrics_from_confusion(self.confusion)["iou"]

    @property
    def miou(self) -> float:
        iou = self.iou
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    @property
    def accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(self.tp.sum() / total) if total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "classes": list(self.class_names),
            "dice": [clean(v) for v in self.dice],
            "iou": [clean(v) for v in self.iou],
            "miou": clean(self.miou),
            "mean_dice": clean(float(np.nanmean(self.dice))) if np.isfinite(self.dice).any() else None,
            "accuracy": clean(self.accuracy),
            "pixels": int(self.confusion.sum()),
            "confusion": self.confusion.tolist(),
            "confusion_axes": ["truth", "prediction"],
        }

    def table(self) -> str:
        names = list(self.class_names)
        width = max(8, *(len(n) for n in names))
        lines = [f"{'class':<{width}}  {'dice':>8}  {'iou':>8}  {'truth px':>12}  {'pred px':>12}"]
        truth, pred = self.confusion.sum(axis=1), self.confusion.sum(axis=0)
        for k, name in enumerate(names):
            lines.append(f"{name:<{width}}  {self.dice[k]:8.4f}  {self.iou[k]:8.4f}  {truth[k]:12d}  "
                         f"{pred[k]:12d}")
        lines.append(f"mIoU {self.miou:.4f}   mean Dice {np.nanmean(self.dice):.4f}   "
                     f"pixel accuracy {self.accuracy:.4f}   ({int(self.confusion.sum())} pixels)")
        lines.append("confusion matrix (rows: truth, columns: prediction)")
        cell = max(6, len(str(int(self.confusion.max(initial=0)))), *(len(n) for n in names))
        lines.append(" " * width + "  " + " ".join(f"{n:>{cell}}" for n in names))
        for name, row in zip(names, self.confusion):
            lines.append(f"{name:<{width}}  " + " ".join(f"{int(v):>{cell}d}" for v in row))
        return "\n".join(lines)


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class Dice and IoU (float64) from a (K, K) integer confusion matrix."""
    cm = np.asarray(confusion, np.int64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = (2 * tp) / (2 * tp + fp + fn)
        iou = tp / (tp + fp + fn)
    return {"dice": dice.astype(np.float64), "iou": iou.astype(np.float64)}


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """(K, K) int64 counts of (truth, prediction) pairs; inputs are equal-shape integer arrays."""
    dtype: Any = np.uint16 if classes * classes <= 65536 else np.int64
    idx = truth.astype(dtype).ravel() * dtype(classes) + pred.astype(dtype).ravel()
    return np.bincount(idx, minlength=classes * classes).reshape(classes, classes).astype(np.int64)


def evaluate(
    result: str | os.PathLike[str] | StoredResult,
    truth: Any,
    *,
    roi: Any = None,
    ignore_index: int | None = None,
    truth_threshold: float | None = None,
) -> Scores:
    """Dice, IoU, mIoU and the confusion matrix of an output against ground truth, chunk row by row.

    Parameters
    ----------
    result : an output group of :func:`tiler.run`.
    truth : an (H, W) label image of the output's full-resolution size (path or array); values are
        class indices 0..K-1.
    roi : optional mask (path or array, nonzero = evaluate; any resolution, see :mod:`tiler.masks.roi`).
    ignore_index : a truth value to leave out (e.g. 255 for "unlabelled").
    truth_threshold : for binary masks stored as 0/255: truth = (value >= threshold); a truth with
        more than two values (class labels, a soft mask) is refused.

    Returns
    -------
    :class:`Scores`. Raises :class:`~tiler.errors.InputError` when the truth does not fit.
    """
    if not isinstance(result, StoredResult):
        result = open_result(result)
    h, w = result.shape
    with ExitStack() as stack:
        src = stack.enter_context(opened(truth, palette="index"))  # palette label maps: class indices
        mask = stack.enter_context(RoiMask(roi, (h, w))) if roi is not None else None
        confusion = _confusion(result, src, mask, ignore_index, truth_threshold)
    return Scores(confusion=confusion, class_names=tuple(result.class_names(len(confusion))))


def _confusion(result: StoredResult, src: Source, mask: RoiMask | None, ignore_index: int | None,
               truth_threshold: float | None) -> np.ndarray:
    h, w = result.shape
    if src.shape[:2] != (h, w) or src.shape[2] != 1:
        raise InputError(f"{src.name}: the truth is {src.shape[0]} x {src.shape[1]} x {src.shape[2]}, "
                         f"the output {h} x {w}; the truth must be one channel of the output's size")
    known = result.classes  # None: labels of a model that did not record its classes
    k = known or 2
    level = result.levels[0]
    confusion = np.zeros((k, k), np.int64)
    seen: set[float] = set()  # truth values met, with --truth-threshold (at most two allowed)
    ch, cw = (int(c) for c in level.chunks[-2:])
    bw = cw * max(1, 4096 // cw)  # column blocks of whole chunks, about 4096 pixels wide
    for y0 in range(0, h, ch):
        y1 = min(y0 + ch, h)
        for x0 in range(0, w, bw):
            x1 = min(x0 + bw, w)
            pred = to_labels(np.asarray(level[..., y0:y1, x0:x1]), result.kind, result.activation)
            t = src.read(y0, y1, x0, x1)[..., 0]
            keep = np.ones(t.shape, bool)
            if ignore_index is not None:
                keep &= t != ignore_index
            if truth_threshold is not None:
                seen.update(np.unique(t[keep]).tolist())
                if len(seen) > 2:
                    values = ", ".join(f"{v:g}" for v in sorted(seen)[:6]) + (", ..." if len(seen) > 6 else "")
                    raise InputError(
                        f"{src.name}: --truth-threshold makes a two-value mask binary, but this truth holds "
                        f"more values ({values}): class labels are compared as they are, so leave "
                        f"--truth-threshold out (a soft or JPEG-compressed mask: binarise it first)")
                t = (t >= truth_threshold).astype(np.uint8)
            if mask is not None:
                keep &= mask.region(y0, y1, x0, x1)
            t, p = t[keep], pred[keep]
            if not t.size:
                continue
            if known is None and max(int(t.max()), int(p.max())) >= k:
                grown = max(int(t.max()), int(p.max())) + 1
                confusion = np.pad(confusion, ((0, grown - k), (0, grown - k)))
                k = grown
            if t.min() < 0 or t.max() >= k:
                bad = t.max() if t.max() >= k else t.min()
                hint = " (a 0/255 mask? pass --truth-threshold 128)" if bad == 255 else ""
                raise InputError(f"{src.name}: truth value {bad} at rows {y0}:{y1} is not a class of this "
                                 f"output (0..{k - 1}){hint}; or pass --ignore-index {bad}")
            if p.max() >= k:
                raise OutputError(f"{result.path}: predicted label {int(p.max())} at rows {y0}:{y1} is "
                                  f"beyond the {k} classes the run recorded")
            confusion += confusion_matrix(t, p, k)
    return confusion
