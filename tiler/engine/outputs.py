"""Output kinds: what the blended logits are turned into before they are stored.

* ``logits``: the blended model outputs, float32 (C, H, W).
* ``probs``: softmax over channels (sigmoid for a one-channel model); uint8 ``round(p * 255)`` by
  default (what viewers read, a quarter of the bytes), float32 with ``dtype="float32"``.
* ``labels``: argmax over channels (``p > 0.5`` for one channel), uint8 (H, W).

For activation ``"none"`` the model's outputs are taken as probabilities as they are.

Blending happens on logits; the activation is applied to the blended logits.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import SettingsError

OUTPUT_KINDS = ("logits", "probs", "labels")
#: Pixels (rows x width) converted at a time: bounds the activation's float32 temporaries.
_SLAB_PIXELS = 1 << 18


@dataclass(frozen=True)
class OutputSpec:
    """How blended logits become stored values.

    Attributes
    ----------
    kind : "logits", "probs" or "labels".
    channels : model output channels C.
    dtype : stored dtype; None picks the default of the kind.
    activation : "softmax", "sigmoid" or "none" (logits taken as probabilities).
    fill : value stored where no computed tile covers a pixel (tiles skipped by a mask).
    """

    kind: str = "logits"
    channels: int = 1
    dtype: str | None = None
    activation: str = "softmax"
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise SettingsError(f"unknown output {self.kind!r}; choose one of {', '.join(OUTPUT_KINDS)}")
        allowed = {"logits": ("float32",), "probs": ("uint8", "float32"), "labels": ("uint8",)}[self.kind]
        if self.dtype is not None and self.dtype not in allowed:
            raise SettingsError(f"--dtype {self.dtype} does not work with --kind {self.kind}")
        if self.kind == "labels" and self.channels > 255:
            raise SettingsError(f"{self.channels} classes do not fit uint8 labels")
        if self.store_dtype == np.uint8 and not 0 <= self.fill <= 255:
            raise SettingsError(f"--fill {self.fill:g} does not fit the uint8 {self.kind} output (0..255)")

    @property
    def store_dtype(self) -> np.dtype:
        default = {"logits": "float32", "probs": "uint8", "labels": "uint8"}[self.kind]
        return np.dtype(self.dtype or default)

    def shape(self, height: int, width: int) -> tuple[int, ...]:
        """Stored array shape: (C, H, W), or (H, W) for labels."""
        return (height, width) if self.kind == "labels" else (self.channels, height, width)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 logits -> (C, h, w) float32 probabilities (a new array)."""
        p = np.empty(logits.shape, np.float32)
        self._probabilities_into(logits, p, np.empty((1, *logits.shape[1:]), np.float32))
        return p

    def _probabilities_into(self, logits: np.ndarray, p: np.ndarray, tmp: np.ndarray) -> None:
        """Probabilities of (C, h, w) ``logits`` into ``p`` (same shape); ``tmp`` (1, h, w) scratch."""
        if self.activation == "none":
            np.copyto(p, logits)
        elif self.activation == "sigmoid" or logits.shape[0] == 1:
            np.negative(logits, out=p)
            np.exp(p, out=p)
            p += 1.0
            np.reciprocal(p, out=p)
        elif logits.shape[0] == 2:
            self._softmax2_into(logits, p, tmp)
        else:  # softmax, shifted by the maximum
            np.max(logits, axis=0, keepdims=True, out=tmp)
            np.subtract(logits, tmp, out=p)
            np.exp(p, out=p)
            np.sum(p, axis=0, keepdims=True, out=tmp)
            p /= tmp

    @staticmethod
    def _softmax2_into(logits: np.ndarray, p: np.ndarray, tmp: np.ndarray) -> None:
        """Two-class softmax with one ``exp`` per pixel instead of two, the same bits as the general
        formula: the larger logit's term is exp(0) = 1 exactly, the other's is e = exp(-|l0 - l1|)
        (IEEE subtraction is antisymmetric), and their sum s = 1 + e in either order. The numerator
        of each class is max(e, [it is the larger]) (e <= 1): no masked copies, which are slow."""
        e, s = tmp[0], _scratch("sum", tmp.shape[1:])
        with np.errstate(over="ignore"):  # |l0 - l1| > float32 max: exp(-inf) = 0, as it should
            np.subtract(logits[0], logits[1], out=e)
        np.greater_equal(e, 0.0, out=p[0], casting="unsafe")  # 1.0 where class 0 is the larger
        np.less(e, 0.0, out=p[1], casting="unsafe")  # (ties: both terms are 1, either is right)
        np.abs(e, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.add(e, 1.0, out=s)
        for c in (0, 1):
            np.maximum(p[c], e, out=p[c])
            np.divide(p[c], s, out=p[c])

    @staticmethod
    def _softmax2_uint8_into(logits: np.ndarray, out: np.ndarray, e: np.ndarray) -> None:
        """Two-class uint8 probabilities: class 1 is rint(255 / (1 + exp(l0 - l1))), class 0 the
        rest of 255, so the two always sum to 255. Five passes instead of the general path's
        fifteen; each value within 1 of rint(255 * softmax) computed exactly, like the general
        path's (which differs from this one in about 6 pixels per million). ``e``: (h, w) scratch."""
        with np.errstate(over="ignore"):  # l0 - l1 very large: exp = inf, class 1 gets 255 / inf = 0
            np.subtract(logits[0], logits[1], out=e)
            np.exp(e, out=e)  # p0 / p1
        e += 1.0
        np.divide(255.0, e, out=e)  # 255 * p1
        np.rint(e, out=e)
        np.copyto(out[1], e, casting="unsafe")
        np.subtract(255, out[1], out=out[0])

    def convert(
        self, logits: np.ndarray, covered: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Blended (C, h, w) float32 logits -> stored values, shape :meth:`shape` of (h, w).

        ``covered`` is an optional (h, w) bool array; uncovered pixels get ``fill``. ``logits`` is
        not modified. ``out``: where to put the result (a new array if None; ignored for logits,
        which are returned as they are when every pixel is covered). Converted in slabs of rows
        with per-thread scratch buffers, so the activation's temporaries stay small, in cache and
        allocated once, whatever the chunk-row size.
        """
        if self.kind == "logits":
            if covered is None or covered.all():
                return logits
            out = logits.copy()
            out[..., ~covered] = self.fill
            return out
        h, w = logits.shape[1:]
        if out is None:
            out = np.empty(self.shape(h, w), self.store_dtype)
        slab = max(1, _SLAB_PIXELS // max(1, w))
        for a in range(0, h, slab):
            part = None if covered is None else covered[a : a + slab]
            self._convert_slab(logits[:, a : a + slab], out[..., a : a + slab, :], part)
        return out

    def _convert_slab(self, logits: np.ndarray, out: np.ndarray, covered: np.ndarray | None) -> None:
        if self.kind == "labels":
            if logits.shape[0] == 1:
                # a logit above 0 is a probability above 0.5; "none": the values are probabilities
                out[...] = logits[0] > (0.5 if self.activation == "none" else 0.0)
            else:
                out[...] = logits.argmax(axis=0)
        else:
            shape = logits.shape
            tmp = _scratch("tmp", (1, *shape[1:]))
            if self.store_dtype == np.uint8 and self.activation == "softmax" and shape[0] == 2:
                self._softmax2_uint8_into(logits, out, tmp[0])
            elif self.store_dtype != np.uint8:
                self._probabilities_into(logits, out, tmp)
            else:
                p = _scratch("p", shape)
                self._probabilities_into(logits, p, tmp)
                if self.activation == "none":
                    # a "none" model may stray a little outside [0, 1]: clip (no wrap-around);
                    # softmax and sigmoid are in [0, 1] already
                    np.clip(p, 0.0, 1.0, out=p)
                p *= 255.0
                np.rint(p, out=p)
                np.copyto(out, p, casting="unsafe")
        if covered is not None and not covered.all():
            out[..., ~covered] = self.fill


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An array of ``shape`` that this thread reuses for ``name`` (contents undefined)."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    n = math.prod(shape)
    buf = buffers.get(name)
    if buf is None or buf.size < n:
        buf = buffers[name] = np.empty(n, dtype)
    return buf[:n].reshape(shape)
