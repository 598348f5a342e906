"""Blending on the model's device: ``Σ w·y`` accumulated in torch where the outputs already are.

:class:`TorchStitcher` is the :class:`~tiler.engine.stitch.Stitcher` with its sums in torch tensors
on a device (a GPU, or the CPU in tests): the model's outputs never travel to the host tile by
tile; only finished, normalised chunk rows are copied back, once each. It adds the same weights in
the same (lattice) order with the same float32 operations as the NumPy stitcher, so on the CPU the
two agree to rounding (tested to 1e-6). It is used when a runner returns device tensors
(``TorchRunner(..., blend_on_device=True)``); off by default until a GPU measurement shows it faster
(see benchmarks/gpu/run.sh).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..plan.lattice import TilePlan
from ..plan.partition import Block
from .stitch import Band, Stitcher, check_finite


class TorchStitcher(Stitcher):
    """A :class:`Stitcher` whose ``Σ w·y`` (and ``Σ w``) live on ``device`` as torch tensors.

    :meth:`add` takes (N, C, tile, tile) float32 torch tensors on ``device`` (or NumPy arrays,
    moved there); released :class:`Band` logits are (C, h, w) float32 NumPy arrays on the host.
    """

    def __init__(self, plan: TilePlan, block: Block, window: np.ndarray, channels: int, band: int,
                 target: Callable[[int, int], np.ndarray | None] | None = None, *, complete: bool = False,
                 target_zeroed: bool = False, device: Any = "cpu") -> None:
        import torch

        # blending into a host array in place would copy every tile back: not here
        super().__init__(plan, block, window, channels, band, None, complete=complete)
        self.torch = torch
        self.device = torch.device(device)
        self._window = torch.from_numpy(np.ascontiguousarray(window, np.float32)).to(self.device)
        self._table: Any = None  # Σw table on the device (complete stitches), built on first use

    def _zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.float32, device=self.device)

    def add(self, outputs: Any, index: np.ndarray) -> None:
        """Add a batch: ``outputs`` (N, C, tile, tile) float32 on the device, ``index`` (N, 2)."""
        if isinstance(outputs, np.ndarray):
            outputs = self.torch.from_numpy(outputs).to(self.device)
        super().add(outputs, index)

    def _weigh(self, outputs: Any, n: int, ys: slice, xs: slice) -> tuple[Any, Any]:
        w_part = self._window[ys, xs]
        return outputs[n, :, ys, xs] * w_part, w_part

    def _divisor(self, y0: int, h: int) -> Any:
        """``Σ w`` (h, W_block) of block rows ``[y0, y0 + h)`` from the table, on the device."""
        sums = self.sums()
        if self._table is None:
            self._table = self.torch.from_numpy(sums.table).to(self.device)
        k = sums.index[y0 - sums.y0 : y0 - sums.y0 + h]
        return self._table[self.torch.from_numpy(np.ascontiguousarray(k)).to(self.device)]

    def _release(self, j: int, y0: int, y1: int) -> Band:
        pending: Any = self._pending.pop(j, (None, None))  # torch tensors here
        acc, wsum = pending
        h, w = y1 - y0, self.block.x1 - self.block.x0
        covered = None
        if acc is None:
            if self.complete:
                raise RuntimeError(f"no tile was added to band {j} of a complete stitch")
            host = np.zeros((self.channels, h, w), np.float32)
            covered = np.zeros((h, w), bool)
            return Band(j, y0, y1, self.block.x0, self.block.x1, host, covered)
        if self.complete:
            acc /= self._divisor(y0, h)
        elif self._added.pop(j, 0) == len(self.plan.rows.touching(y0, y1)) * self._cols:
            acc /= wsum
        else:
            cov = wsum > 0
            acc = self.torch.where(cov, acc / self.torch.where(cov, wsum, 1), 0)
            covered = cov.cpu().numpy()
            if covered.all():
                covered = None
        host = acc.cpu().numpy()
        check_finite(host, y0, self.block.x0)
        return Band(j, y0, y1, self.block.x0, self.block.x1, host, covered)
