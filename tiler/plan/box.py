"""One order for pixel boxes everywhere: ``(y0, y1, x0, x1)``, as ``Source.read(y0, y1, x0, x1)`` takes them.

>>> box = Box(10, 20, 5, 9)
>>> box.shape, box.slices
((10, 4), (slice(10, 20, None), slice(5, 9, None)))
>>> y0, y1, x0, x1 = box
"""

from __future__ import annotations

from typing import NamedTuple


class Box(NamedTuple):
    """The pixels ``[y0, y1) x [x0, x1)`` (rows first, each as a half-open range)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices, to index an (H, W, ...) array."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))
