"""Blending windows: the weight each pixel of a tile's output gets when tiles are merged.

A window is separable: ``w(y, x) = w1(y) * w1(x)`` with a 1-D profile ``w1`` of length ``tile``.
The profile is zero in a band of ``margin`` pixels at both ends (where a convolutional network sees
zero padding instead of context) and strictly positive inside it, evaluated at pixel centres so that
even the outermost weighted pixel has a positive weight (a Hann window sampled at its end points
would give the image's first row no weight at all).

Windows are looked up by name in :data:`WINDOWS`; ``list_windows()`` gives the names.

>>> profile("linear", 8).round(3).tolist()
[0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125]
>>> profile("constant", 8, margin=2).tolist()
[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import SettingsError

#: Default sigma of the gaussian window as a fraction of the weighted length (nnU-Net, MONAI).
SIGMA_SCALE = 0.125


def _constant(t: np.ndarray, sigma_scale: float) -> np.ndarray:
    return np.ones_like(t)


def _gaussian(t: np.ndarray, sigma_scale: float) -> np.ndarray:
    # t in (0, 1): relative position of pixel centres; sigma relative to the weighted length.
    return np.exp(-0.5 * ((t - 0.5) / sigma_scale) ** 2)


def _linear(t: np.ndarray, sigma_scale: float) -> np.ndarray:
    return 1.0 - np.abs(2.0 * t - 1.0)


def _cosine(t: np.ndarray, sigma_scale: float) -> np.ndarray:
    return np.sin(np.pi * t) ** 2


#: Window name -> profile function of relative pixel-centre positions in (0, 1).
WINDOWS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "constant": _constant,
    "gaussian": _gaussian,
    "linear": _linear,
    "cosine": _cosine,
}


def list_windows() -> list[str]:
    """Names of the registered windows."""
    return sorted(WINDOWS)


def profile(
    name: str, tile: int, *, margin: int = 0, sigma_scale: float = SIGMA_SCALE
) -> np.ndarray:
    """1-D window profile, float64 array of shape ``(tile,)``.

    Zero on ``[0, margin)`` and ``[tile - margin, tile)``; strictly positive in between.
    """
    if name not in WINDOWS:
        raise SettingsError(f"unknown window {name!r}; choose one of {', '.join(list_windows())}")
    inner = tile - 2 * margin
    if inner <= 0:
        raise SettingsError(f"margin {margin} leaves no weighted pixels in a tile of {tile}")
    if sigma_scale <= 0:
        raise SettingsError(f"sigma_scale must be positive, got {sigma_scale}")
    t = (np.arange(inner, dtype=np.float64) + 0.5) / inner
    w = np.zeros(tile, dtype=np.float64)
    w[margin : tile - margin] = WINDOWS[name](t, sigma_scale)
    # Floor tiny gaussian tails so every weighted pixel stays strictly positive in float32.
    w[margin : tile - margin] = np.maximum(w[margin : tile - margin], 1e-6)
    return w


def window_2d(
    name: str, tile: int, *, margin: int = 0, sigma_scale: float = SIGMA_SCALE
) -> np.ndarray:
    """2-D window, float32 array of shape ``(tile, tile)``: the outer product of two profiles."""
    p = profile(name, tile, margin=margin, sigma_scale=sigma_scale)
    return np.outer(p, p).astype(np.float32)
