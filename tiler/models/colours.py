"""Class colours: a model's own (``ModelSpec.class_colours``, ``"#rrggbb"``) or a colour-blind-safe
palette, for previews and OME-Zarr label images.

>>> class_colours(3)[1:].astype(int).tolist()
[[230, 159, 0], [86, 180, 233]]
>>> hex_colour((230, 159, 0))
'E69F00'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Okabe & Ito's colour-blind-safe palette (RGB), black left out (it hides on dark tissue): the class
#: colours of a model that records none. Class c >= 1 uses OKABE_ITO[(c - 1) % 7]; class 0 is
#: background and never drawn.
OKABE_ITO = np.array([
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
    (204, 121, 167),
], np.float32)


def class_colours(n: int, model_colours: Sequence[str] = ()) -> np.ndarray:
    """(n, 3) float32 RGB colours for classes 0..n-1: the model's (``"#rrggbb"``, one per class,
    when it records them for all n), else Okabe–Ito; class 0 is black (never drawn)."""
    if len(model_colours) == n and n:
        return np.array([hex_rgb(c) for c in model_colours], np.float32)
    idx = np.arange(n)
    return np.where((idx == 0)[:, None], 0.0, OKABE_ITO[(idx - 1) % len(OKABE_ITO)]).astype(np.float32)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#e69f00"`` -> (230, 159, 0)."""
    text = colour.lstrip("#")
    if len(text) != 6:
        raise ValueError(f"expected a colour as #rrggbb, got {colour!r}")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))


def hex_colour(rgb: Sequence[float]) -> str:
    """(230, 159, 0) -> ``"E69F00"`` (OME's ``omero`` channel colour form)."""
    return "".join(f"{int(round(v)):02X}" for v in rgb[:3])
