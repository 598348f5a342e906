"""The check every export passes: the exported model and the PyTorch model agree on random batches.

Both run on the same random batches (values in [0, 1), like scaled pixels); the largest absolute
difference of their logits is printed and must be within the tolerance, or the export fails with
a ModelError. Tolerances: :data:`FP32_TOLERANCE` absolute for fp32 exports;
:data:`FP16_TOLERANCE` times ``max(1, max |logit|)`` for fp16 exports (half precision keeps about
three significant digits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tiler.errors import ModelError

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`: the largest difference, the tolerance, the shapes tried."""

    max_abs_diff: float
    tolerance: float
    shapes: tuple[tuple[int, ...], ...]

    def summary(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        return (f"verified on batches {shapes}: max |exported - pytorch| = {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:.3g})")


def random_batches(
    channels: int, multiple: int = 1, *, size: int | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Two float32 (N, C, h, w) batches: (2, C, s, s) and, unless ``size`` fixes h and w, a
    (3, C, s', s'') of another shape, so that dynamic batch and spatial axes are exercised.

    ``s`` is ``size`` or the smallest multiple of ``multiple`` >= 64.
    """
    rng = np.random.default_rng(seed)
    m = max(1, multiple)
    s = size or -(-64 // m) * m
    shapes = [(2, channels, s, s)]
    if size is None:
        shapes.append((3, channels, s + 2 * m, s + 4 * m))
    return [rng.random(shape, dtype=np.float32) for shape in shapes]


def verify(
    exported: Callable[[np.ndarray], np.ndarray],
    module: object,
    batches: Sequence[np.ndarray],
    *,
    fp16: bool = False,
    tolerance: float | None = None,
    log: Callable[[str], object] | None = print,
) -> Verification:
    """Compare ``exported(x)`` with the fp32 PyTorch ``module(x)`` on each (N, C, h, w) batch.

    Parameters
    ----------
    exported : runs the exported model: float32 (N, C, h, w) -> (N, C_out, h, w).
    module : the PyTorch ``nn.Module`` it was exported from (run in fp32 on the CPU).
    fp16 : the export is half precision (the default tolerance is relative then).
    tolerance : the largest allowed absolute difference; default as in the module docstring.
    log : where the one-line summary goes (None: nowhere).
    """
    import torch

    worst, bound = 0.0, 0.0
    for x in batches:
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).float().numpy()
        try:
            got = np.asarray(exported(x), dtype=np.float32)
        except ModelError as exc:
            raise ModelError(f"the exported model failed on a batch of shape {x.shape}: {exc}") from None
        if got.shape != ref.shape:
            raise ModelError(
                f"the exported model gives shape {got.shape}, PyTorch {ref.shape}, for {x.shape}"
            )
        scale = max(1.0, float(np.abs(ref).max()))
        tol = tolerance if tolerance is not None else (FP16_TOLERANCE * scale if fp16 else FP32_TOLERANCE)
        diff = float(np.abs(got - ref).max())
        if not diff <= tol:  # also catches NaN
            raise ModelError(
                f"export verification failed: max |exported - pytorch| = {diff:.3g} on a batch of "
                f"shape {x.shape}, above the tolerance {tol:.3g}"
            )
        worst, bound = max(worst, diff), max(bound, tol)
    result = Verification(worst, bound, tuple(tuple(x.shape) for x in batches))
    if log is not None:
        log(result.summary())
    return result
