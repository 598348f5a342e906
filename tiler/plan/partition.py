"""The output split into work units: :class:`Block` s of whole chunks, recorded per stripe.

>>> part = Partition.create((5000, 3000), chunk=1024, block_width=2048)
>>> part.block_width, len(list(part.blocks()))
(2048, 2)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import SettingsError


@dataclass(frozen=True)
class Block:
    """A unit of work: the output pixels ``[y0, y1) x [x0, x1)``, a whole number of chunks.

    ``row`` and ``col`` index the block in the partition's grid. A block is written by exactly one
    worker; its completion is recorded per chunk row (see :class:`Partition`).
    """

    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)


@dataclass(frozen=True)
class Partition:
    """The output split into blocks of whole chunks.

    Attributes
    ----------
    height, width : output size in pixels.
    chunk : output chunk edge in pixels (square chunks).
    block_height, block_width : block size in pixels, multiples of ``chunk``.

    Completion is recorded per *stripe*: one chunk row of one block column, the grid
    ``(ceil(height / chunk), n_block_cols)``. Stripes depend on ``chunk`` and ``block_width`` only,
    so a run may be resumed with another ``block_height`` (another worker count).
    """

    height: int
    width: int
    chunk: int
    block_height: int
    block_width: int

    @classmethod
    def create(
        cls,
        shape: tuple[int, int],
        *,
        chunk: int = 1024,
        block_height: int | None = None,
        block_width: int | None = 16384,
    ) -> Partition:
        """Blocks of ``block_height x block_width`` (rounded up to whole chunks; ``None`` = all)."""
        height, width = shape
        if chunk < 16:
            raise SettingsError(f"chunk {chunk} is too small; use at least 16 pixels")

        def whole(n: int | None, extent: int) -> int:
            n = extent if n is None else n
            return max(chunk, math.ceil(n / chunk) * chunk)

        return cls(height, width, chunk, whole(block_height, height), whole(block_width, width))

    @property
    def grid(self) -> tuple[int, int]:
        """Number of block rows and block columns."""
        return (math.ceil(self.height / self.block_height), math.ceil(self.width / self.block_width))

    @property
    def stripes(self) -> tuple[int, int]:
        """Shape of the completion record: chunk rows x block columns."""
        return (math.ceil(self.height / self.chunk), self.grid[1])

    def blocks(self) -> Iterator[Block]:
        """Every block, in raster order."""
        rows, cols = self.grid
        for r in range(rows):
            for c in range(cols):
                y0, x0 = r * self.block_height, c * self.block_width
                yield Block(
                    r, c, y0, min(y0 + self.block_height, self.height),
                    x0, min(x0 + self.block_width, self.width),
                )

    def chunk_rows(self, block: Block) -> range:
        """Global chunk-row indices covered by ``block``."""
        return range(block.y0 // self.chunk, math.ceil(block.y1 / self.chunk))
