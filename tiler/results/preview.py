"""A PNG preview: the input's thumbnail with the prediction overlaid in colour.

The thumbnail is at most ``max_side`` pixels on its long side. Both the input and the prediction
are sampled at the thumbnail's pixel centres from the smallest pyramid level that is still at least
that large (the input's own pyramid, the output's OME-Zarr levels), reading one block at a time, so
a preview of a gigapixel slide reads little and holds little.

Colours: labels get a fixed palette with class 0 (background) left uncoloured; probabilities (and
logits, through the model's activation) blend the class colours weighted by probability, class 0
again uncoloured, so confident foreground shows strongest. The overlay's opacity is ``alpha``
(0.4) times the foreground weight.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .result import StoredResult, open_result

#: Class colours (RGB); class 0 is background and never drawn. Class c uses PALETTE[(c - 1) % 12 + 1].
PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (170, 110, 40),
], np.float32)


def class_colours(n: int) -> np.ndarray:
    """(n, 3) float32 RGB colours for classes 0..n-1 (class 0 black, unused)."""
    idx = np.arange(n)
    return np.where((idx == 0)[:, None], PALETTE[0], PALETTE[(idx - 1) % (len(PALETTE) - 1) + 1])


def thumbnail_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of a thumbnail at most ``max_side`` on its long side (never enlarged).

    >>> thumbnail_shape(40000, 100000, 1536)
    (614, 1536)
    """
    f = min(1.0, max_side / max(height, width))
    return (max(1, round(height * f)), max(1, round(width * f)))


def centres(n_out: int, n_in: int) -> np.ndarray:
    """Indices into an axis of ``n_in`` pixels of the centres of ``n_out`` equal cells."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def sample(
    read: Callable[[int, int, int, int], np.ndarray],
    shape: tuple[int, int],
    out_shape: tuple[int, int],
    block: int = 2048,
) -> np.ndarray:
    """Nearest-neighbour resampling of a large image, reading one block at a time.

    Parameters
    ----------
    read : ``read(y0, y1, x0, x1)`` -> (y1 - y0, x1 - x0, C) pixels of the large image.
    shape : (H, W) of the large image. out_shape : (h, w) wanted.
    block : edge of the blocks read (memory is about ``block**2 * C`` pixels).

    Returns
    -------
    (h, w, C) array: pixel ``(i, j)`` is the large image's pixel at the centre of cell ``(i, j)``.
    """
    rows, cols = centres(out_shape[0], shape[0]), centres(out_shape[1], shape[1])
    out: np.ndarray | None = None
    for y0 in range(0, shape[0], block):
        ri = np.nonzero((rows >= y0) & (rows < y0 + block))[0]
        if not ri.size:
            continue
        for x0 in range(0, shape[1], block):
            ci = np.nonzero((cols >= x0) & (cols < x0 + block))[0]
            if not ci.size:
                continue
            r, c = rows[ri], cols[ci]
            region = read(int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1)
            if out is None:
                out = np.zeros((*out_shape, region.shape[-1]), region.dtype)
            out[ri[0] : ri[-1] + 1, ci[0] : ci[-1] + 1] = region[np.ix_(r - r[0], c - c[0])]
    assert out is not None
    return out


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(h, w, C) pixels of any dtype -> (h, w, 3) uint8 for display.

    uint8 is kept; other types are stretched between their 0.5 and 99.5 percentiles. One or two
    channels show the first as grey; more show the first three.
    """
    img = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    if img.dtype == np.uint8:
        return img
    f = img.astype(np.float32)
    lo, hi = np.percentile(f, [0.5, 99.5])
    return np.clip((f - lo) / max(float(hi - lo), 1e-12) * 255.0, 0, 255).astype(np.uint8)


def _probabilities(values: np.ndarray, result: StoredResult) -> np.ndarray:
    """(C, h, w) stored values -> float32 probabilities."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    v = values.astype(np.float32)
    if result.kind != "logits":
        return v
    from ..engine.outputs import OutputSpec

    return OutputSpec(channels=v.shape[0], activation=result.activation).probabilities(v)


def overlay(base: np.ndarray, values: np.ndarray, result: StoredResult, alpha: float = 0.4) -> np.ndarray:
    """Blend a prediction thumbnail over a (h, w, 3) uint8 image.

    ``values`` is (h, w) labels or (C, h, w) probabilities/logits. Returns (h, w, 3) uint8.
    """
    if values.ndim == 2:
        colours = class_colours(max(int(values.max()) + 1, 2))
        colour = colours[values]
        weight = (values > 0).astype(np.float32)
    else:
        p = _probabilities(values, result)
        colours = class_colours(max(p.shape[0], 2))
        fg = p if p.shape[0] == 1 else p[1:]
        fg_colours = colours[1:] if p.shape[0] > 1 else colours[1:2]
        weight = fg.sum(axis=0)
        colour = np.tensordot(fg, fg_colours, axes=(0, 0)) / np.maximum(weight, 1e-6)[..., None]
        weight = np.clip(weight, 0.0, 1.0)
    a = (alpha * weight)[..., None]
    return np.clip(base * (1.0 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _input_thumbnail(result: StoredResult, out_shape: tuple[int, int]) -> np.ndarray | None:
    from ..errors import TilerError
    from .opened import opened

    path = result.input_path
    if path is None or not path.exists():
        warnings.warn(f"{result.path}: the input {path or '(an array)'} is not available; the preview "
                      "shows the prediction on grey", stacklevel=3)
        return None
    recorded = result.record.get("input", {})
    # the series, plane, channels and reader the run read (never a label/macro image: the default excludes them)
    read = {"series": recorded.get("series"), "plane": recorded.get("plane") or (),
            "channels": recorded.get("channels"), "reader": recorded.get("reader")}
    if read["series"] is None and read["reader"] is None and path.is_file() and path.open("rb").read(4) in _TIFF_MAGIC:
        read["series"] = 0  # no series recorded: the run read series 0
    try:
        with opened(path, **read) as source:
            levels = list(source.info.levels) or [source.shape[:2]]
        level = max((k for k, (h, w) in enumerate(levels) if max(h, w) >= max(out_shape)), default=0)
        with opened(path, level=level, **read) as source:
            raw = sample(source.read, source.shape[:2], out_shape)
    except TilerError as exc:
        warnings.warn(f"cannot read the input for the preview ({exc}); showing the prediction on grey",
                      stacklevel=3)
        return None
    return to_rgb(raw)


def render_preview(result: StoredResult | str | os.PathLike[str], *, max_side: int = 1536,
                   alpha: float = 0.4) -> np.ndarray:
    """The preview of an output as an (h, w, 3) uint8 RGB array, at most ``max_side`` pixels long."""
    if not isinstance(result, StoredResult):
        result = open_result(result)
    thumb = thumbnail_shape(*result.shape, max_side)
    arr = result.levels[result.level_for(max(thumb))]

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        v = np.asarray(arr[..., y0:y1, x0:x1])
        return v[..., None] if v.ndim == 2 else np.moveaxis(v, 0, -1)

    pred = sample(read, arr.shape[-2:], thumb)
    values = pred[..., 0] if arr.ndim == 2 else np.moveaxis(pred, -1, 0)
    base = _input_thumbnail(result, thumb)
    if base is None:
        base = np.full((*thumb, 3), 128, np.uint8)
    return overlay(base.astype(np.float32), values, result, alpha)


def default_preview_path(out: str | os.PathLike[str]) -> Path:
    """``scan.zarr`` -> ``scan.zarr.png`` (never the input's own name)."""
    return Path(f"{os.fspath(out).rstrip('/')}.png")


def write_preview(result: StoredResult | str | os.PathLike[str], path: str | os.PathLike[str] | None = None,
                  *, max_side: int = 1536, alpha: float = 0.4) -> Path:
    """Render the preview of an output and write it as PNG; return the PNG's path."""
    import imagecodecs

    from ..errors import OutputError

    if not isinstance(result, StoredResult):
        result = open_result(result)
    target = Path(path) if path is not None else default_preview_path(result.path)
    if result.input_path is not None and target.resolve() == result.input_path.resolve():
        raise OutputError(f"{target}: is the input image; choose another path for the preview")
    rgb = render_preview(result, max_side=max_side, alpha=alpha)
    try:
        target.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(rgb)))
    except OSError as exc:
        raise OutputError(f"{target}: cannot write the preview ({exc.strerror or exc})") from None
    return target
