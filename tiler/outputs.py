"""Output kinds: what the blended logits are turned into before they are stored.

* ``logits``: the blended model outputs, float32 (C, H, W).
* ``probs``: softmax over channels (sigmoid for a one-channel model); uint8 ``round(p * 255)`` by
  default (what viewers read, a quarter of the bytes), float32 with ``dtype="float32"``.
* ``labels``: argmax over channels (``p > 0.5`` for one channel), uint8 (H, W).

For activation ``"none"`` the model's outputs are taken as probabilities as they are.

Blending happens on logits; the activation is applied to the blended logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SettingsError

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
            raise SettingsError(f"--dtype {self.dtype} does not work with --output {self.kind}")
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
        if self.activation == "none":
            return logits.copy()
        if self.activation == "sigmoid" or logits.shape[0] == 1:
            p = np.negative(logits)
            np.exp(p, out=p)
            p += 1.0
            return np.reciprocal(p, out=p)
        p = logits - logits.max(axis=0, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=0, keepdims=True)
        return p

    def convert(self, logits: np.ndarray, covered: np.ndarray | None = None) -> np.ndarray:
        """Blended (C, h, w) float32 logits -> stored values, shape :meth:`shape` of (h, w).

        ``covered`` is an optional (h, w) bool array; uncovered pixels get ``fill``. ``logits`` is
        not modified. Large inputs are converted in slabs of rows, so the float32 temporaries of
        the activation stay small (and in cache) whatever the chunk-row size.
        """
        h = logits.shape[1]
        slab = max(1, _SLAB_PIXELS // max(1, logits.shape[2]))
        if self.kind == "logits" or h <= slab:
            return self._convert(logits, covered)
        out = np.empty(self.shape(h, logits.shape[2]), self.store_dtype)
        for a in range(0, h, slab):
            part = None if covered is None else covered[a : a + slab]
            out[..., a : a + slab, :] = self._convert(logits[:, a : a + slab], part)
        return out

    def _convert(self, logits: np.ndarray, covered: np.ndarray | None) -> np.ndarray:
        if self.kind == "logits":
            out = logits
        elif self.kind == "labels":
            if logits.shape[0] == 1:
                # a logit above 0 is a probability above 0.5; "none": the values are probabilities
                threshold = 0.5 if self.activation == "none" else 0.0
                out = (logits[0] > threshold).astype(np.uint8)
            else:
                out = logits.argmax(axis=0).astype(np.uint8)
        else:
            out = self.probabilities(logits)
            if self.store_dtype == np.uint8:
                # clip: an activation "none" model may stray a little outside [0, 1] (no wrap-around)
                np.clip(out, 0.0, 1.0, out=out)
                out *= 255.0
                np.rint(out, out=out)
                out = out.astype(np.uint8)
        if covered is not None and not covered.all():
            out = out.copy() if out is logits else out
            out[..., ~covered] = self.fill
        return out.astype(self.store_dtype, copy=False)
