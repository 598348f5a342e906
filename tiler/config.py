"""What a run can be told, defined once for every entry point, in three kinds.

* :class:`Settings`: tiling, blending, output kind and layout; the fields of
  :meth:`Settings.record` determine the values and are recorded and fingerprinted, the rest
  (``batch_size``, ``prefetch``, ``stitch_threads``, ``block_height``) are run options: how fast,
  never what.
* :class:`ModelOptions`: how the model is loaded and run (device, precision, provider, trust, compile).
* The keyword groups (:data:`READ_KEYWORDS`, :data:`MASK_KEYWORDS`, :data:`MODEL_KEYWORDS`,
  :data:`VALUE_KEYWORDS`) and their check.

May import: errors, plan (the window defaults), runners (the test-time augmentation modes).

:func:`tiler.predict`, :func:`tiler.run`, :func:`tiler.predict_dask` and
:func:`tiler.cli.batch.run_batch` all accept every name in :data:`VALUE_KEYWORDS`, with the same
meaning; each checks what it is given with :func:`check_keywords`, so that a misspelt or unknown
keyword is a one-line :class:`~tiler.errors.SettingsError` naming the valid ones (and the nearest
match), never a raw ``TypeError`` from deep inside.

>>> check_keywords("tiler.run", {"overlapp": 64}, SETTING_KEYWORDS)
Traceback (most recent call last):
...
tiler.errors.SettingsError: tiler.run() got an unknown keyword 'overlapp' (did you mean 'overlap'?); valid: ...
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .errors import SettingsError
from .plan import windows
from .runners.tta import TTA_MODES

#: Pixels per model call when the batch size is not given: 8 tiles of 512 x 512.
BATCH_PIXELS = 8 * 512 * 512

#: Default output chunk edge for uint8 values (probabilities, labels): 1 MiB per channel.
CHUNK = 1024
#: Default chunk edge for float32 values (logits): 1 MiB per channel too, and the stitcher's
#: float32 row buffers (one chunk row high) a quarter of 1024's. Measured (README, Benchmarks; 2-channel
#: logits of 32768 x 16384, the CLI): peak RSS 1809 MB at 1024, 1477 MB at 512.
FLOAT_CHUNK = 512


@dataclass(frozen=True)
class Settings:
    """Every setting of a run that is not the input, the model or the output path.

    Defaults: 1024-pixel tiles overlapping by 256, each cropped by a 128-pixel margin (constant
    window: the overlap-tile strategy of the U-Net paper), the lattice starting 128 pixels before
    the image, so every pixel -- the image's borders too -- is predicted with at least 128 pixels
    of context on every side, at (1024 / 768)^2 = 1.78x the work of no overlap (as 512 / 128 did).
    128 px covers the built-in UNet's receptive-field radius (122 px) and is a multiple of its 16,
    so for it the defaults are exact: tiled output equals one whole-image pass
    (``benchmarks/SEAMS.md``). One default for every device: outputs never depend on where they
    ran. Given only a tile, the overlap is a quarter of it and (constant window) the margin half
    the overlap; another window gets no margin. Chunks of 1024 pixels; blocks as wide as 16384 pixels.

    ``overlap`` is in pixels, or, as in MONAI's ``sliding_window_inference``, a fraction of the
    tile (``0 < overlap < 1``): it is then converted to ``round(overlap * tile)`` pixels, and
    those pixels are what is stored and recorded (``Settings(tile=512, overlap=0.25).overlap``
    is 128). Pixel counts given as integral floats (``128.0``) or NumPy integers become ``int``.
    """

    tile: int = 1024
    #: None: a quarter of the tile.
    overlap: int = None  # type: ignore[assignment]  # an int after __post_init__
    #: None: half the overlap with the constant window (the overlap is cropped), else 0.
    margin: int = None  # type: ignore[assignment]  # an int after __post_init__
    window: str = "constant"
    sigma_scale: float = windows.SIGMA_SCALE
    #: Tiles per model call. None: as many as hold :data:`BATCH_PIXELS` pixels (8 tiles of 512,
    #: 2 of the default 1024), so the model's memory does not grow with the tile. A run option:
    #: it never changes the values.
    batch_size: int = None  # type: ignore[assignment]  # an int after __post_init__
    output: str = "logits"
    dtype: str | None = None
    fill: float = 0.0
    #: Output chunk edge. None: :data:`CHUNK` for 1-byte stored values, :data:`FLOAT_CHUNK` for
    #: float32 ones (``output="logits"`` or ``dtype="float32"``), so a chunk holds about as many
    #: bytes either way — and the stitcher's float32 row buffers, one chunk row high, stay small.
    chunk: int = None  # type: ignore[assignment]  # an int after __post_init__
    block_height: int | None = None
    block_width: int | None = 16384
    prefetch: int = 2
    #: Threads blending and converting side by side (None: one per core, at most 4). Any number
    #: gives the same values: each owns whole chunk columns and sums in lattice order.
    stitch_threads: int | None = None
    #: Mirrored context at the image borders: the lattice starts this many pixels before the image
    #: (and ends at least as far past it). None: ``max(margin, overlap // 2)``, as much as a seam
    #: between two tiles gets. See :attr:`border_context`.
    context: int | None = None
    #: Tile exactly: the model's context radius is cropped off every tile (constant window), the
    #: lattice aligned to its size multiple, so the output equals one pass over the whole mirrored
    #: image (see :mod:`tiler.engine.exact`); ``tile`` is kept, the rest is derived.
    exact: bool = False
    #: Test-time augmentation, averaged on logits: "none", "flip" (2), "flips" (4) or "d4" (8).
    tta: str = "none"

    def __post_init__(self) -> None:
        if self.batch_size is None:
            tile = _pixels("tile", self.tile)
            object.__setattr__(self, "batch_size", max(1, BATCH_PIXELS // (tile * tile)))
        if self.chunk is None:
            stores_floats = self.output == "logits" or self.dtype == "float32"
            object.__setattr__(self, "chunk", FLOAT_CHUNK if stores_floats else CHUNK)
        for name in ("tile", "batch_size", "chunk", "prefetch"):
            object.__setattr__(self, name, _pixels(name, getattr(self, name)))
        if self.overlap is None:
            object.__setattr__(self, "overlap", self.tile // 4)
        if self.context is not None:
            object.__setattr__(self, "context", _pixels("context", self.context))
        if self.tta not in TTA_MODES:
            raise SettingsError(f"unknown test-time augmentation {self.tta!r}; choose one of "
                                f"{', '.join(TTA_MODES)}")
        overlap = self.overlap
        if isinstance(overlap, (float, np.floating)) and 0 < overlap < 1:
            object.__setattr__(self, "overlap", round(float(overlap) * self.tile))
        else:
            object.__setattr__(self, "overlap", _pixels(
                "overlap", overlap, "give whole pixels (e.g. 128) or a fraction of the tile between 0 "
                "and 1 (e.g. 0.25)"))
        if self.margin is None:
            object.__setattr__(self, "margin", self.overlap // 2 if self.window == "constant" else 0)
        object.__setattr__(self, "margin", _pixels("margin", self.margin))

    def record(self) -> dict[str, Any]:
        """The settings that determine the output values (recorded and checked on resume)."""
        keys = ("tile", "overlap", "margin", "window", "sigma_scale", "output", "dtype", "fill", "chunk")
        return {k: getattr(self, k) for k in keys} | {
            "block_width": self.block_width, "context": self.border_context, "exact": self.exact,
            "tta": self.tta}

    @property
    def border_context(self) -> int:
        """Pixels of mirrored context before the image where the lattice starts: ``context``, or
        ``max(margin, overlap // 2)`` when it is None."""
        return self.context if self.context is not None else max(self.margin, self.overlap // 2)


def read_settings(source: Any) -> dict[str, Any]:
    """:class:`Settings` fields from a ``Settings``, a mapping, or a JSON file: a flat object of
    fields, or what ``tiler calibrate --json FILE`` writes (its ``"settings"``: the chosen ones).

    Unknown fields and unreadable files are a one-line SettingsError naming the file.
    """
    where = "settings"
    if isinstance(source, Settings):
        return {f.name: getattr(source, f.name) for f in fields(Settings)}
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        try:
            data = json.loads(open(source, encoding="utf-8").read())
        except OSError as exc:
            raise SettingsError(f"{where}: cannot read the settings file ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise SettingsError(f"{where}: not a JSON settings file ({exc})") from None
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise SettingsError(f"settings must be a Settings, a dict or a JSON file, not {type(source).__name__}")
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: a settings file holds a JSON object, not {type(data).__name__}")
    if "tiler_calibration" in data:
        if not isinstance(data.get("settings"), dict):
            raise SettingsError(f"{where}: the calibration found no setting within its tolerance; "
                                "rerun tiler calibrate with a larger --tolerance")
        data = data["settings"]
    unknown = sorted(set(data) - set(SETTING_KEYWORDS))
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(SETTING_KEYWORDS)}")
    return data


def _pixels(name: str, value: Any, fix: str = "give a whole number") -> int:
    """``value`` as an ``int`` (NumPy integers and integral floats too), else a SettingsError."""
    if isinstance(value, (bool, np.bool_)):
        raise SettingsError(f"{name} {value!r} is not a number of pixels; {fix}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise SettingsError(f"{name} {value!r} is not a whole number; {fix}")


@dataclass(frozen=True)
class ModelOptions:
    """How the model is loaded and run: the :data:`MODEL_KEYWORDS` of every entry point.

    >>> ModelOptions(device="cpu", compile=True).runner_keywords(batch_size=4)["compile"]
    4
    """

    device: str | None = "auto"
    precision: str = "fp32"
    provider: str = "auto"
    trust_model: bool = False
    #: ``torch.compile`` the model, every batch padded to the batch size (compiled once).
    compile: bool = False
    #: Model metadata fields to replace (``ModelSpec`` names: in_channels, mean, std, ...).
    overrides: dict[str, Any] | None = None

    def keywords(self) -> dict[str, Any]:
        """The options as keywords of :func:`tiler.run` and the other entry points."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def runner_keywords(self, batch_size: int | None = None) -> dict[str, Any]:
        """Keywords of :func:`~tiler.runners.factory.load_runner`: with ``compile``, the batch size
        every call is padded to (``True`` when not known yet: a worker pads to its job's)."""
        return self.keywords() | {"compile": (batch_size or True) if self.compile else False}


#: Fields of :class:`~tiler.config.Settings`: tiling, blending, output kind, layout, threads.
SETTING_KEYWORDS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
#: How the input is read: which pixels the model sees (pyramid level, resampling, the series of a
#: multi-series file, the plane of a stack, the channels and their order, the library that reads it).
READ_KEYWORDS: tuple[str, ...] = ("level", "mpp", "series", "plane", "channels", "reader")
#: Which tiles are computed at all (the rest get ``fill``).
MASK_KEYWORDS: tuple[str, ...] = ("tissue", "roi")
#: How the model is loaded and run.
MODEL_KEYWORDS: tuple[str, ...] = tuple(f.name for f in fields(ModelOptions))
#: Every keyword that changes the values computed: all four entry points accept each of them.
VALUE_KEYWORDS: frozenset[str] = frozenset(SETTING_KEYWORDS + READ_KEYWORDS + MASK_KEYWORDS + MODEL_KEYWORDS)


def keyword_names(function: Callable[..., Any]) -> set[str]:
    """The optional keyword parameters ``function`` names in its signature (not ``**kwargs``, not
    required positional ones such as ``image``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(function).parameters.values()
            if p.kind in kinds and p.default is not inspect.Parameter.empty}


def check_keywords(where: str, given: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise a one-line SettingsError for the first key of ``given`` not in ``valid``.

    ``where`` names the entry point (``"tiler.run"``); the message lists every valid name and,
    where one is close, suggests it.
    """
    valid = sorted(set(valid))
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingsError(f"{where}() got an unknown keyword {name!r}{hint}; valid: {', '.join(valid)}")
