"""The pixel size a run reads at: the user's ``--level``/``--mpp``, else the model's own.

A model trained at 0.5 µm/px run on a 0.25 µm/px scan sees cells twice their trained size and
fails without a sound. So when the model states the pixel size it was trained at
(:attr:`~tiler.models.spec.ModelSpec.mpp`: checkpoints, ONNX metadata, ``--model-mpp``) and the user
chose no resolution, the input is read at that pixel size (the matching level, resampled: the
``--mpp`` machinery), said once as a :class:`~tiler.errors.Note`. A file stating no pixel size is
read as it is, with a one-line :class:`~tiler.errors.PixelSizeWarning`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from ..errors import Note, PixelSizeWarning
from ..models.spec import ModelSpec
from ..sources import open_source
from ..sources._levels import MPP_TOLERANCE


def model_mpp(image: Any, spec: ModelSpec, *, level: int | None, mpp: float | None,
              **read: Any) -> float | None:
    """The ``mpp`` to open ``image`` at: ``mpp`` itself when the user gave a level or a pixel size,
    else the model's pixel size when the file states one (None: full resolution as stored).

    ``read`` holds the other :class:`~tiler.sources.ReadOptions` (series, plane, channels, reader)
    used to look at the file's pixel size. Arrays and sources given as objects are never resampled
    (they have no pixel size the model could be matched to).
    """
    if spec.mpp is None or level is not None or mpp is not None or not isinstance(image, (str, os.PathLike)):
        return mpp
    source = open_source(image, **read)
    try:
        have, name = source.info.mpp, source.name
    finally:
        source.close()
    target = float(spec.mpp)
    if have is None:
        warnings.warn(PixelSizeWarning(
            f"{name}: the file states no pixel size, so it cannot be matched to the {target:g} µm/px the model "
            f"{spec.name!r} was trained at; reading it as stored (choose with --mpp X or --level N)"), stacklevel=2)
        return None
    if all(abs(m - target) <= MPP_TOLERANCE * target for m in have):
        return None  # level 0 already is the model's pixel size
    warnings.warn(Note(
        f"{name}: reading at the model's pixel size, {target:g} µm/px (the file's is {max(have):.4g} µm/px); "
        "--mpp X or --level N choose another"), stacklevel=2)
    return target
