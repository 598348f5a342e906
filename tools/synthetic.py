"""A synthetic whole-slide image, rendered on demand region by region from real tissue texture.

The texture is scikit-image's ``ihc.png`` (``skimage.data.immunohistochemistry()``: 512x512 RGB,
colonic glands, IHC for FHL2 revealed with DAB and counterstained with hematoxylin; acquired at the
Center for Microscopy And Molecular Imaging (CMMI); "no known copyright restrictions" per its
docstring; shipped in the scikit-image wheel, BSD-3-Clause, so nothing is downloaded).

The slide is a continuous function of level-0 pixel coordinates, so any region of any pyramid level
can be rendered alone, without the rest of the image:

- tissue = smooth random blobs: a coarse and a fine Gaussian-smoothed noise field, interpolated
  bilinearly and thresholded at the quantile that leaves ``background`` of the area as glass;
- texture = ``layers`` copies of the image, each mirror-tiled (period 1024 px, seamless), turned by
  one of the 8 rotations/flips, shifted, with its own stain-colour jitter, blended in optical
  density with smooth random weights, so no repeat is obvious;
- glass = near-white with slight noise.

``scikit-image`` and ``scipy`` are imported here only (they are in the ``demo``/``test`` extras).

>>> slide = SyntheticSlide((1024, 1536), seed=1)
>>> slide.rgb(0, 256, 0, 512).shape, slide.rgb(0, 256, 0, 512).dtype
((256, 512, 3), dtype('uint8'))
>>> slide.tissue(0, 512, 0, 768, level=1).shape
(512, 768)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Level-0 pixels per grid cell of the coarse (blob shape) and fine (ragged edge) noise fields.
COARSE_STEP, FINE_STEP, WEIGHT_STEP = 512, 48, 192
#: Optical density (natural log) of the glass: RGB about (242, 240, 244).
GLASS_OD = np.array([0.053, 0.061, 0.044], np.float32)


@lru_cache(maxsize=1)
def texture_rgb() -> np.ndarray:
    """scikit-image's ``ihc.png``: (512, 512, 3) uint8 (see the module docstring for its source)."""
    from skimage import data

    return np.ascontiguousarray(data.immunohistochemistry()[..., :3])


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float32) + 1.0) / 256.0)


@lru_cache(maxsize=64)
def _texture_od(variant: int, factor: int) -> np.ndarray:
    """Optical density of ``ihc.png`` turned by dihedral ``variant`` (0..7) and block-averaged by
    ``factor`` (a power of two): (n, n, 3) float32, n = 512 / factor."""
    rgb = texture_rgb().astype(np.float32)
    f = min(factor, 256)
    n = rgb.shape[0] // f
    rgb = rgb[: n * f, : n * f].reshape(n, f, n, f, 3).mean(axis=(1, 3))
    rgb = np.rot90(rgb, variant % 4)
    if variant >= 4:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(_od(rgb))


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into a length-``n`` axis tiled by mirroring (period 2n, seamless)."""
    m = index % (2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _lerp_axis(field: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``field`` along ``axis`` at fractional grid ``coords``."""
    n = field.shape[axis]
    c = np.clip(coords, 0, n - 1.000001)
    i = c.astype(np.int64)
    t = (c - i).astype(np.float32)
    a, b = np.take(field, i, axis=axis), np.take(field, i + 1, axis=axis)
    t = t[:, None] if axis == 0 else t[None, :]
    return a + (b - a) * t


def _sample(field: np.ndarray, step: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear sample of a grid field (cell = ``step`` level-0 px) at level-0 pixel centres."""
    rows = _lerp_axis(field, ys / step, 0)
    return _lerp_axis(rows, xs / step, 1)


@dataclass(frozen=True)
class _Layer:
    variant: int
    offset: tuple[int, int]
    jitter: np.ndarray  # (3,) per-channel OD factors
    weight: np.ndarray  # grid field
    strength: np.ndarray  # grid field, stain intensity


class SyntheticSlide:
    """A procedurally defined RGB slide of level-0 size ``shape`` = (H, W).

    Parameters
    ----------
    shape : (height, width) at full resolution.
    background : fraction of the area that is glass (about; the blobs are random).
    seed : the same seed gives the same slide, pixel for pixel.
    layers : texture layers blended together.
    """

    def __init__(
        self, shape: tuple[int, int], *, background: float = 0.6, seed: int = 0, layers: int = 8
    ) -> None:
        if not 0.0 <= background < 1.0:
            raise ValueError(f"background must be in [0, 1), got {background}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.background, self.seed = float(background), int(seed)
        rng = np.random.default_rng(seed)
        h, w = self.shape

        def grid(step: int) -> tuple[int, int]:
            return h // step + 3, w // step + 3

        coarse = _smooth_noise(rng, grid(COARSE_STEP), 1.2)
        fine = _smooth_noise(rng, grid(FINE_STEP), 1.5)
        self._coarse, self._fine = coarse, fine
        self._layers = tuple(
            _Layer(
                variant=int(rng.integers(8)),
                offset=(int(rng.integers(1024)), int(rng.integers(1024))),
                jitter=rng.uniform(0.92, 1.08, 3).astype(np.float32),
                weight=_smooth_noise(rng, grid(WEIGHT_STEP), 1.0),
                strength=_smooth_noise(rng, grid(COARSE_STEP), 1.0),
            )
            for _ in range(layers)
        )
        self._noise_seed = int(rng.integers(2**31))
        # Threshold at the background quantile of the field sampled on a 64-px lattice.
        ys = np.arange(32, h, 64, dtype=np.float64) if h > 64 else np.array([h / 2])
        xs = np.arange(32, w, 64, dtype=np.float64) if w > 64 else np.array([w / 2])
        self._threshold = float(np.quantile(self._field(ys, xs), background)) if background > 0 else -1e9

    def level_shape(self, level: int) -> tuple[int, int]:
        """(H, W) of pyramid ``level`` (each level halves, rounding up)."""
        d = 2**level
        return (-(-self.shape[0] // d), -(-self.shape[1] // d))

    def _coords(self, lo: int, hi: int, level: int) -> np.ndarray:
        d = 2**level
        return (np.arange(lo, hi, dtype=np.float64) + 0.5) * d - 0.5

    def _field(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return _sample(self._coarse, COARSE_STEP, ys, xs) + 0.35 * _sample(self._fine, FINE_STEP, ys, xs)

    def tissue(self, y0: int, y1: int, x0: int, x1: int, *, level: int = 0) -> np.ndarray:
        """Ground truth: (y1-y0, x1-x0) bool, True where the region of ``level`` is tissue."""
        ys, xs = self._coords(y0, y1, level), self._coords(x0, x1, level)
        return self._field(ys, xs) > self._threshold

    def rgb(self, y0: int, y1: int, x0: int, x1: int, *, level: int = 0) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)`` of pyramid ``level``: (h, w, 3) uint8."""
        d = 2**level
        ys, xs = self._coords(y0, y1, level), self._coords(x0, x1, level)
        alpha = np.clip((self._field(ys, xs) - self._threshold) / 0.06, 0.0, 1.0)
        od = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        if alpha.any():
            od = self._texture(ys, xs, y0, y1, x0, x1, d)
        od = alpha[..., None] * od + GLASS_OD
        out = 256.0 * np.exp(-od) - 1.0
        # Noise seeded by the region so the same region always renders the same.
        rng = np.random.default_rng((self._noise_seed, level, y0, x0))
        out += rng.normal(0.0, 1.5, out.shape).astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _texture(
        self, ys: np.ndarray, xs: np.ndarray, y0: int, y1: int, x0: int, x1: int, d: int
    ) -> np.ndarray:
        """Blended tissue optical density: (h, w, 3) float32."""
        weights = np.stack([_sample(lay.weight, WEIGHT_STEP, ys, xs) for lay in self._layers])
        weights = np.exp(6.0 * (weights - weights.max(axis=0)))
        weights /= weights.sum(axis=0)
        od = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        iy, ix = np.arange(y0, y1), np.arange(x0, x1)
        for lay, wk in zip(self._layers, weights):
            if wk.max() < 0.02:  # a layer that does not show here
                continue
            tex = _texture_od(lay.variant, d)
            n = tex.shape[0]
            ty = _mirror(iy + lay.offset[0] // d, n)
            tx = _mirror(ix + lay.offset[1] // d, n)
            wk = wk * (1.0 + 0.15 * _sample(lay.strength, COARSE_STEP, ys, xs))
            patch = tex.take(ty, axis=0).take(tx, axis=1)
            patch *= lay.jitter
            patch *= wk[..., None]
            od += patch
        return od
