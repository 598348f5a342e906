"""The class image of an output, read band by band, and which classes become objects.

A ``labels`` output stores (H, W) class labels; a ``probs`` output (C, H, W) probabilities, turned
into labels by :func:`~tiler.results.result.to_labels` (argmax; one channel: above 0.5). Other
outputs (logits) are refused. By default every class but the background (class 0) and the ``fill``
class (the value stored outside the tissue or ROI) becomes objects: one background or water object
can span a whole scene with thousands of holes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import OutputError, SettingsError
from ..results.result import StoredResult, to_labels

#: Pixels per band of the labelling at most (while the band can still be halved, see
#: :attr:`ClassImage.band_height`).
BAND_PIXELS = 8 << 20
#: Output kinds objects can be made from.
OBJECT_KINDS = ("labels", "probs")


def check_kind(result: StoredResult) -> None:
    """Raise :class:`OutputError` unless the output holds labels or probabilities."""
    if result.kind not in OBJECT_KINDS:
        raise OutputError(f"{result.path}: holds {result.kind}, not labels or probs; objects are made from "
                          "class labels (rerun with tiler run --kind labels or --kind probs)")


def class_names(result: StoredResult) -> list[str]:
    """Names of the output's classes (the model's, else "0", "1", ...); [] when not recorded."""
    return result.class_names()


def select_classes(result: StoredResult, classes: Sequence[str | int] | None = None) -> list[int]:
    """The class values that become objects.

    ``classes``: names (the model's class names) or class numbers; default: every class except 0
    and the recorded ``fill`` class. A name that is not a class is a :class:`SettingsError` naming
    the valid ones.
    """
    names = class_names(result)
    n = len(names) if names else 256
    if classes:
        chosen = []
        for c in classes:
            text = str(c).strip()
            if text in names:
                chosen.append(names.index(text))
            elif text.isdigit() and int(text) < n:
                chosen.append(int(text))
            else:
                valid = ", ".join(names) if names else f"0..{n - 1}"
                raise SettingsError(f"{result.path}: no class {text!r}; the classes are {valid}")
        return sorted(set(chosen))
    fill = result.record.get("settings", {}).get("fill", 0)
    skip = {0}
    if result.kind == "labels" and isinstance(fill, (int, float)) and float(fill).is_integer():
        skip.add(int(fill))
    return [c for c in range(n) if c not in skip]


@dataclass(frozen=True)
class ClassImage:
    """Bands of rows of an output's class labels, and of the probability of each class.

    Attributes
    ----------
    result : the output.
    keep : the class values that become objects (sorted).
    """

    result: StoredResult
    keep: tuple[int, ...]
    _last: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def _values(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as stored; the last band read is kept, so the labels and the
        probabilities of one band are read and decoded once."""
        if (y0, y1) not in self._last:
            self._last.clear()
            self._last[(y0, y1)] = np.asarray(self.result.levels[0][..., y0:y1, :])
        return self._last[(y0, y1)]

    @property
    def shape(self) -> tuple[int, int]:
        return self.result.shape

    @property
    def band_height(self) -> int:
        """Rows per band: the output's chunk height, halved while a band has more than
        :data:`BAND_PIXELS` pixels (the labelling and the polygon worker hold some tens of bytes per
        pixel of a band): an 8192-wide output keeps its 1024-row chunks as bands, a 32768-wide one
        gets 256-row bands, a 100000-wide one 64."""
        rows = int(self.result.levels[0].chunks[-2])
        while rows * self.shape[1] > BAND_PIXELS and rows % 2 == 0 and rows > 64:
            rows //= 2
        return rows

    def band(self, y0: int, y1: int) -> np.ndarray:
        """(y1 - y0, W) class labels of rows ``[y0, y1)``."""
        return to_labels(self._values(y0, y1), self.result.kind, self.result.activation)

    def class_probability(self, y0: int, y1: int, labels: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The probability of each pixel's own class in rows ``[y0, y1)`` of a ``probs`` output, as
        ``(values, scale)``: (h, W) stored values (uint8 or float) and the factor to probabilities
        (1/255 for uint8); None for labels. ``labels``: the band's (h, W) classes."""
        if self.result.kind != "probs":
            return None
        values = self._values(y0, y1)
        scale = 1 / 255 if values.dtype == np.uint8 else 1.0
        if values.shape[0] == 1:  # sigmoid: class 1 has p, class 0 has 1 - p
            p = values[0]
            top = np.array(255 if values.dtype == np.uint8 else 1, values.dtype)
            return np.where(labels == 1, p, top - p), scale
        return np.take_along_axis(values, labels[None].astype(np.intp), 0)[0], scale
