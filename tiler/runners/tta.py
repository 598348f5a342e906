"""Test-time augmentation: the dihedral transforms of square tiles, and their average.

A mode names a set of transforms of the ``(h, w)`` plane; each is ``k`` quarter turns after an
optional flip of the ``w`` axis. :func:`augment` stacks every transform of an (N, C, t, t) batch
into one (K*N, C, t, t) batch (one model call, on the device), :func:`merge` undoes each on the
(K*N, C_out, t, t) outputs and averages them: float32 logits, before any activation.

=========  ====  ==================================================================
mode        K    transforms
=========  ====  ==================================================================
``none``    1    identity
``flip``    2    identity, flip left-right
``flips``   4    identity, flip left-right, flip up-down, both (a half turn)
``d4``      8    the four quarter turns, each with and without a left-right flip
=========  ====  ==================================================================

The functions work on NumPy arrays and on torch tensors alike (:data:`NUMPY` / ``ops`` given by the
caller), so a runner can augment where its batch lives.

>>> import numpy as np
>>> x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
>>> big = augment(x, "d4")
>>> big.shape
(16, 1, 3, 3)
>>> bool(np.allclose(merge(big, "d4", 2), x))  # undoing every transform gives the tiles back
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Modes in order of cost.
TTA_MODES: tuple[str, ...] = ("none", "flip", "flips", "d4")
#: Mode -> transforms ``(quarter turns, flip left-right first)``.
TRANSFORMS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((k, f) for f in (False, True) for k in range(4)),
}


@dataclass(frozen=True)
class ArrayOps:
    """How to flip the last axis, turn the last two axes and concatenate along the first."""

    flip: Callable[[Any], Any]
    rot90: Callable[[Any, int], Any]
    cat: Callable[[list[Any]], Any]


NUMPY = ArrayOps(
    flip=lambda a: a[..., ::-1],
    rot90=lambda a, k: np.rot90(a, k, axes=(-2, -1)),
    cat=lambda parts: np.concatenate(parts),
)


def count(mode: str) -> int:
    """K, the model inputs per tile under ``mode``."""
    return len(TRANSFORMS[mode])


def augment(x: Any, mode: str, ops: ArrayOps = NUMPY) -> Any:
    """(N, C, t, t) -> (K*N, C, t, t): every transform of ``mode``, transform-major."""
    parts = []
    for k, flip in TRANSFORMS[mode]:
        a = ops.flip(x) if flip else x
        parts.append(ops.rot90(a, k) if k else a)
    return parts[0] if len(parts) == 1 else ops.cat(parts)


def merge(y: Any, mode: str, n: int, ops: ArrayOps = NUMPY) -> Any:
    """(K*N, C_out, t, t) outputs of :func:`augment`'s batch -> (N, C_out, t, t) mean of the
    outputs with each transform undone (summed in transform order, then divided by K)."""
    transforms = TRANSFORMS[mode]
    if len(transforms) == 1:
        return y
    parts = []
    for i, (k, flip) in enumerate(transforms):
        a = y[i * n : (i + 1) * n]
        a = ops.rot90(a, -k) if k else a
        parts.append(ops.flip(a) if flip else a)
    total = parts[0] + parts[1]  # a new array: the outputs are never added into
    for a in parts[2:]:
        total += a
    return total / len(transforms)
