"""Model metadata that travels with the weights (like timm's ``PretrainedCfg``).

A :class:`ModelSpec` says what a model expects and gives: input channels, output channels, the
spatial multiple its input size must have, how to normalise pixels, the output activation and the
class names. It is stored in checkpoints under the key ``"tiler"``, in ONNX ``metadata_props`` and
in TorchScript ``extra_files``; command-line flags override it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import ModelError


@dataclass(frozen=True)
class Normalisation:
    """Raw pixels -> float32 model input: ``(x * scale - mean) / std``, per channel.

    Split in two so that the tile loader can fuse the first part into its copy of each tile
    (one pass from the decoded image into the float32 batch; no raw batch, no second buffer):
    :meth:`copy_into` converts and scales, :meth:`finish` applies mean and std to a whole batch.
    """

    scale: np.float32
    mean: np.ndarray | None = None  #: (1, C, 1, 1) float32
    std: np.ndarray | None = None  #: (1, C, 1, 1) float32

    def copy_into(self, dst: np.ndarray, src: np.ndarray) -> None:
        """``dst[...] = src * scale`` in float32, ``src`` of any dtype and strides."""
        if self.scale == 1:
            np.copyto(dst, src, casting="unsafe")
        else:  # convert and scale in one pass
            np.multiply(src, self.scale, out=dst, casting="unsafe")

    def finish(self, tiles: np.ndarray) -> None:
        """Subtract the mean and divide by the std, in place, on (N, C, h, w) float32 tiles (C-contiguous,
        or the tile loader's channels-last view of an (N, h, w, C) buffer)."""
        if self.mean is None or self.std is None:
            return
        nhwc = tiles.transpose(0, 2, 3, 1)
        if not tiles.flags.c_contiguous and nhwc.flags.c_contiguous:
            # channels innermost: broadcasting a (C,) vector there runs NumPy's inner loop C pixels
            # at a time (10x slower); rows of w * C values against the vector repeated w times
            # run it a whole row at a time, the same operations on the same values
            n, c, h, w = tiles.shape
            rows = nhwc.reshape(n * h, w * c)
            rows -= np.tile(self.mean.ravel(), w)
            rows /= np.tile(self.std.ravel(), w)
            return
        tiles -= self.mean
        tiles /= self.std


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and gives.

    Attributes
    ----------
    name : a label for reports.
    in_channels, out_channels : C_in of the input, C_out of the logits. 0 = unknown (accept any).
    multiple : spatial size multiple the input needs (16 for a UNet with 4 poolings).
    scale : multiply pixels by this before mean/std; None = by dtype (1/255 for uint8,
        1/65535 for uint16, 1 for floats).
    mean, std : per-channel normalisation after scaling; empty = none.
    activation : "softmax", "sigmoid" or "none": how logits become probabilities.
    class_names : names of the output channels.
    mpp : the pixel size in µm the model was trained at (None: not stated). ``tiler run`` reads
        an input at this pixel size unless ``--level`` or ``--mpp`` says otherwise.
    class_colours : ``"#rrggbb"`` per output class, for previews and OME-Zarr labels; empty = a
        colour-blind-safe palette. Left out of :meth:`to_dict` when empty (so the records and
        fingerprints of models without it are what they were).
    context : receptive-field radius in input pixels (output pixel y depends on inputs within
        ``context`` of y); 0 = unknown (``exact`` tiling then probes it). The built-in UNet's is
        computed from its architecture.
    """

    name: str = "model"
    in_channels: int = 0
    out_channels: int = 0
    multiple: int = 1
    scale: float | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    activation: str = "softmax"
    class_names: tuple[str, ...] = field(default_factory=tuple)
    mpp: float | None = None
    class_colours: tuple[str, ...] = field(default_factory=tuple)
    context: int = 0

    def __post_init__(self) -> None:
        if self.mpp is not None:
            try:
                mpp = float(self.mpp)
            except (TypeError, ValueError):
                raise ModelError(f"model metadata has a pixel size (mpp) that is not a number: {self.mpp!r}") from None
            if not mpp > 0 or mpp == float("inf"):
                raise ModelError(f"model metadata has a pixel size (mpp) that is not a positive number: {mpp}")
            object.__setattr__(self, "mpp", mpp)
        bad = [c for c in self.class_colours if not re.fullmatch(r"#[0-9a-fA-F]{6}", str(c))]
        if bad:
            raise ModelError(f"model metadata has class colours that are not #rrggbb: {bad}")
        if self.activation not in ("softmax", "sigmoid", "none"):
            raise ModelError(f"unknown activation {self.activation!r} in model metadata")
        if len(self.mean) != len(self.std):
            raise ModelError(f"model metadata has {len(self.mean)} means but {len(self.std)} stds")
        if any(not s > 0 for s in self.std):  # 0 (or NaN) would turn every tile into inf/NaN
            raise ModelError(f"model metadata has a std that is not positive: {list(self.std)}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; ``mpp`` only when stated (so records written before it existed
        compare equal)."""
        d = asdict(self)
        for k in ("mean", "std", "class_names", "class_colours"):
            d[k] = list(d[k])
        if d["mpp"] is None:
            del d["mpp"]
        if not d["class_colours"]:
            del d["class_colours"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("mean", "std", "class_names", "class_colours"):
            if k in known:
                known[k] = tuple(known[k])
        try:
            return cls(**known)
        except TypeError as exc:
            raise ModelError(f"model metadata is malformed ({exc})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def with_overrides(self, **overrides: Any) -> ModelSpec:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def input_scale(self, dtype: np.dtype) -> float:
        """Factor that maps the image's pixel range to [0, 1]."""
        if self.scale is not None:
            return float(self.scale)
        dtype = np.dtype(dtype)
        return 1.0 / float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
