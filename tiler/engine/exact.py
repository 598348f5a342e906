"""Exact tiling: settings under which tiled output equals one pass of the model over the whole image.

A convolutional network's output at pixel y depends only on the input within its *context radius*
R of y. If every tile is cropped by C >= R on each side (margin C, constant window: the kept parts
abut), the lattice starts C pixels before the image (mirrored context at every border) and both
the tile and the stride are multiples of the model's size multiple M (its poolings see the same
grid in every tile), and C is a multiple of M too, then the tiled output equals one pass of the
model over the whole image mirrored by C on every side (bottom and right a little further, to make
the padded size a multiple of M) and cropped back -- for a *shift-equivariant* model. Bilinear
upsampling with ``align_corners=True`` (Pytorch-UNet's and the seed layout's) maps coordinates by
the input size, so it is not; :func:`measure_residual` says how far from exact such a model is.

R comes from the model's metadata (``ModelSpec.context``: the built-in UNet's from its
architecture, :meth:`~tiler.models.unet.UNet.context_radius`), else from :func:`probe_radius`:
the footprint of a change at one tile's centre, times a safety factor (ReLUs that are dead on the
probe image hide part of the receptive field).

>>> from tiler.config import Settings
>>> s = exact_settings(Settings(tile=1024), radius=122, multiple=16)
>>> s.tile, s.overlap, s.margin, s.border_context, s.window
(1024, 256, 128, 128, 'constant')
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import ExactnessWarning, SettingsError
from ..runners.base import Runner

#: A measured max |tiled - whole| (logits) at or below this is called exact (float32 rounding).
TOLERANCE = 1e-3
#: Probed radii are multiplied by this (dead ReLUs on the probe image make probes undercount).
SAFETY = 1.5


@dataclass(frozen=True)
class ExactReport:
    """What exact tiling found: the model's context radius (``probed`` or known), the crop C
    (the radius rounded up to the multiple) and the residual measured on a random image."""

    radius: int
    probed: bool
    context: int
    residual: float

    @property
    def exact(self) -> bool:
        return self.residual <= TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"residual": float(f"{self.residual:.3g}"), "exact": self.exact}

    def describe(self) -> str:
        how = f"probed x{SAFETY}" if self.probed else "from the architecture"
        return (f"exact: context radius {self.radius} px ({how}), {self.context} px cropped per tile edge, "
                f"max |tiled - whole| {self.residual:.2g} measured")


def exact_settings(settings: Settings, *, radius: int, multiple: int) -> Settings:
    """``settings`` with overlap ``2C``, margin and border context ``C`` (C: ``radius`` rounded up
    to ``multiple``) and a constant window; the tile is kept. SettingsError if it is too small."""
    m = max(1, multiple)
    c = math.ceil(radius / m) * m
    tile = settings.tile
    if tile % m:
        raise SettingsError(f"tile {tile} is not a multiple of {m}, which the model needs; "
                            f"try --tile {max(m, round(tile / m) * m)}")
    if tile - 2 * c < m:
        raise SettingsError(
            f"tile {tile} is too small for exact tiling: the model's context radius is {radius} px, so "
            f"{c} px are cropped off each tile edge; use at least --tile {2 * c + m} (--tile {8 * c}: "
            f"1.78x the work of no overlap)"
        )
    return replace(settings, overlap=2 * c, margin=c, context=c, window="constant")


def _random_image(shape: tuple[int, int, int], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """(C, h, w) random pixels of ``dtype`` over its range (floats: [0, 1))."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, 0), min(info.max, 2**16 - 1) + 1, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def probe_radius(runner: Runner, channels: int, dtype: np.dtype, *, tile: int, multiple: int = 1) -> int:
    """The context radius of ``runner``'s model, probed: how far from a changed block of pixels at the
    centre of a random ``tile``-sized input its output changes, times :data:`SAFETY`.

    SettingsError when the change reaches the tile's edge (the model sees the whole tile: no
    exact tiling at this tile size, or a global operation such as a mean over the tile).
    """
    m = max(1, multiple)
    base = _random_image((channels, tile, tile), dtype, seed=1)
    other = _random_image((channels, tile, tile), dtype, seed=2)
    c0 = (tile // 2) // m * m
    changed = base.copy()
    changed[:, c0 : c0 + m, c0 : c0 + m] = other[:, c0 : c0 + m, c0 : c0 + m]
    y = runner(np.stack([base, changed]))
    diff = np.abs(y[1] - y[0]).max(axis=0)
    ys, xs = np.nonzero(diff > 1e-6 * max(1.0, float(np.abs(y).max())))
    if len(ys) == 0:
        return 0
    reach = max(c0 - ys.min(), ys.max() - (c0 + m - 1), c0 - xs.min(), xs.max() - (c0 + m - 1))
    if ys.min() == 0 or xs.min() == 0 or ys.max() == tile - 1 or xs.max() == tile - 1:
        raise SettingsError(
            f"the model {runner.spec.name!r}: a change at the centre of a {tile}-px tile changes its output up "
            f"to the tile's edge, so its context is wider than the tile and it cannot be tiled exactly at "
            f"this size; try a larger --tile, or give the context radius in the model's metadata"
        )
    return math.ceil(SAFETY * int(reach))


def measure_residual(runner: Runner, settings: Settings, channels: int, dtype: np.dtype, *,
                     multiple: int = 1) -> float:
    """max |tiled - whole| over the kept parts of three tiles (two side by side, one below) of a
    random (tile + stride)^2 image under ``settings`` (already exact), against one model pass over
    that image: 0 up to float rounding for a shift-equivariant model with enough context."""
    t, c = settings.tile, settings.margin
    s = t - settings.overlap
    image = _random_image((channels, t + s, t + s), dtype)
    whole = runner(image[None], tta=settings.tta)[0]
    corners = [(0, 0), (0, s), (s, 0)]
    tiles = runner(np.stack([image[:, y : y + t, x : x + t] for y, x in corners]), tta=settings.tta)
    residual = 0.0
    for out, (y, x) in zip(tiles, corners):
        kept = out[:, c : t - c, c : t - c]
        residual = max(residual, float(np.abs(kept - whole[:, y + c : y + t - c, x + c : x + t - c]).max()))
    return residual


def resolve(settings: Settings, runner: Runner, channels: int, dtype: np.dtype, *,
            name: str = "") -> tuple[Settings, ExactReport]:
    """The exact settings for ``runner`` on ``channels``-channel images of ``dtype``, and what was
    found; warns (:class:`~tiler.errors.ExactnessWarning`) with the measured residual when the model
    is not shift-equivariant (the output is then close to, not equal to, whole-image inference)."""
    spec = runner.spec
    multiple = max(1, spec.multiple)
    probed = not spec.context
    radius = probe_radius(runner, channels, dtype, tile=settings.tile, multiple=multiple) if probed else spec.context
    exact = exact_settings(settings, radius=radius, multiple=multiple)
    residual = measure_residual(runner, exact, channels, dtype, multiple=multiple)
    report = ExactReport(radius, probed, exact.margin, residual)
    if not report.exact:
        module = getattr(runner, "module", None)
        why = ("its bilinear upsampling uses align_corners=True, which maps coordinates by the input size"
               if getattr(module, "shift_equivariant", True) is False
               else "its output depends on where a tile starts, or on more context than found")
        warnings.warn(
            f"{name + ': ' if name else ''}--exact: the model {spec.name!r} is not shift-equivariant ({why}): "
            f"tiles differ from one whole-image pass by up to {residual:.3g} (logits, measured on a random "
            f"image), so the output is close to, not exactly, whole-image inference",
            ExactnessWarning, stacklevel=3,
        )
    return exact, report
