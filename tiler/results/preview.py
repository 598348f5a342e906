"""A PNG preview: the input's thumbnail with the prediction overlaid in colour.

The thumbnail is at most ``max_side`` pixels on its long side. Both the input and the prediction
are sampled at the thumbnail's pixel centres from the smallest pyramid level that is still at least
that large (the input's own pyramid, the output's OME-Zarr levels), reading one block at a time, so
a preview of a gigapixel slide reads little and holds little.

Colours: the model's class colours where its metadata has them (``class_colours``), Okabe and
Ito's colour-blind-safe palette otherwise; labels get one colour per class with class 0
(background) left uncoloured; probabilities (and
logits, through the model's activation) blend the class colours weighted by probability, class 0
again uncoloured, so confident foreground shows strongest. The overlay's opacity is ``alpha``
(0.4; ``--opacity``) times the foreground weight. The PNG has a legend below the image: each class
name beside its colour.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..models.colours import class_colours
from .result import StoredResult, open_result


def legend(names: list[str], colours: np.ndarray, width: int, *, probabilities: bool = False) -> np.ndarray:
    """A (h, width, 3) uint8 white strip naming each class beside its colour, in rows that wrap.

    Class 0 (background, never drawn) gets an empty box. ``probabilities``: a note that colours are
    blended by probability. Text is drawn with Pillow's default font.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    box, pad, row = 13, 6, 20
    items = [f"{name}" + (" (not drawn)" if k == 0 else "") for k, name in enumerate(names)]
    if probabilities:
        items[0] += "; colours mixed by probability"
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = [int(probe.textlength(text, font=font)) + box + 4 + 2 * pad for text in items]
    places, x, y = [], pad, pad
    for size in sizes:
        if x > pad and x + size > width:
            x, y = pad, y + row
        places.append((x, y))
        x += size
    strip = Image.new("RGB", (width, y + row + pad - 4), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, ((x, y), text) in enumerate(zip(places, items)):
        fill = None if k == 0 else tuple(int(v) for v in colours[k])
        draw.rectangle((x, y, x + box - 1, y + box - 1), fill=fill, outline=(90, 90, 90) if k == 0 else fill)
        draw.text((x + box + 4, y - 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(strip, np.uint8)


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
    model_colours = result.class_colours()
    if values.ndim == 2:
        colours = class_colours(max(int(values.max()) + 1, 2, len(model_colours)), model_colours)
        colour = colours[values]
        weight = (values > 0).astype(np.float32)
    else:
        p = _probabilities(values, result)
        colours = class_colours(max(p.shape[0], 2), model_colours)
        fg = p if p.shape[0] == 1 else p[1:]
        fg_colours = colours[1:] if p.shape[0] > 1 else colours[1:2]
        weight = fg.sum(axis=0)
        colour = np.tensordot(fg, fg_colours, axes=(0, 0)) / np.maximum(weight, 1e-6)[..., None]
        weight = np.clip(weight, 0.0, 1.0)
    a = (alpha * weight)[..., None]
    return np.clip(base * (1.0 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


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
    if read["series"] is None and read["reader"] is None and path.is_file() and _magic(path) in _TIFF_MAGIC:
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
                   alpha: float = 0.4, with_legend: bool = False) -> np.ndarray:
    """The preview of an output as an (h, w, 3) uint8 RGB array, at most ``max_side`` pixels long;
    ``with_legend``: with :func:`legend` below it (h grows by the strip's height)."""
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
    image = overlay(base.astype(np.float32), values, result, alpha)
    if not with_legend:
        return image
    n = result.classes or max(int(values.max()) + 1, 2)
    names = result.class_names(n)
    strip = legend(names, class_colours(n, result.class_colours()), image.shape[1],
                   probabilities=result.kind != "labels")
    return np.concatenate([image, strip], axis=0)


def default_preview_path(out: str | os.PathLike[str]) -> Path:
    """``scan.zarr`` -> ``scan.zarr.png`` (never the input's own name)."""
    return Path(f"{os.fspath(out).rstrip('/')}.png")


def write_preview(result: StoredResult | str | os.PathLike[str], path: str | os.PathLike[str] | None = None,
                  *, max_side: int = 1536, alpha: float = 0.4) -> Path:
    """Render the preview of an output and write it as PNG; return the PNG's path."""
    import imagecodecs

    from ..errors import OutputError, SettingsError

    if not isinstance(result, StoredResult):
        result = open_result(result)
    here = result.path if isinstance(result.path, Path) else Path(result.path.rsplit("/", 1)[-1])
    target = Path(path) if path is not None else default_preview_path(here)
    if result.input_path is not None and target.resolve() == result.input_path.resolve():
        raise OutputError(f"{target}: is the input image; choose another path for the preview")
    if not 0 <= alpha <= 1:
        raise SettingsError(f"opacity {alpha:g} is not between 0 and 1")
    rgb = render_preview(result, max_side=max_side, alpha=alpha, with_legend=True)
    try:
        target.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(rgb)))
    except OSError as exc:
        raise OutputError(f"{target}: cannot write the preview ({exc.strerror or exc})") from None
    return target
