"""Map a stored N-D image (TIFF series, OME-Zarr array) with named axes to one (H, W, C) plane.

Only a real channel axis becomes channels: ``S`` (TIFF samples) or ``C`` (OME, ImageJ, or an axis
a writer declared as channels). Size-1 axes are dropped; any other axis longer than 1 (``Z``
stacks, ``T`` time series, ``I``/``Q`` pages of a multi-page file) must be fixed to one index with
``--plane z=K`` or the image is refused with a message naming the axes and the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, SettingsError

#: Axis letters that hold channels of one plane.
CHANNEL_AXES = ("S", "C")
#: What a user calls an extra axis, for messages.
_AXIS_WORDS = {"Z": "z planes", "T": "time points", "I": "pages", "Q": "pages", "C": "channels",
               "S": "samples", "R": "tiles", "E": "lambdas", "H": "lifetime bins", "P": "pages"}


@dataclass(frozen=True)
class AxisLayout:
    """How to turn the stored array into an (h, w, c) region.

    Attributes
    ----------
    index : per stored axis, the integer plane index, or None for Y, X and the channel axis.
    y, x : positions of Y and X among the stored axes.
    channel : position of the channel axis among the stored axes, or None (one channel).
    channels : number of channels.
    """

    index: tuple[int | None, ...]
    y: int
    x: int
    channel: int | None
    channels: int

    def read(self, array: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)`` of the chosen plane of ``array`` as (h, w, c)."""
        key: list[Any] = [slice(None) if i is None else i for i in self.index]
        key[self.y], key[self.x] = slice(y0, y1), slice(x0, x1)
        region = np.asarray(array[tuple(key)])
        kept = [a for a, i in enumerate(self.index) if i is None]  # axes left after integer indexing
        order = [kept.index(self.y), kept.index(self.x)]
        if self.channel is None:
            return region.transpose(order)[..., None]
        return region.transpose([*order, kept.index(self.channel)])


def _describe(axes: Sequence[str], shape: Sequence[int]) -> str:
    return " x ".join(f"{a}={n}" for a, n in zip(axes, shape))


def axis_layout(
    name: str,
    axes: Sequence[str],
    shape: Sequence[int],
    plane: tuple[tuple[str, int], ...] = (),
    *,
    where: str = "",
    others: str = "",
) -> AxisLayout:
    """The :class:`AxisLayout` for a stored image with upper-case axis names ``axes``.

    ``plane`` fixes extra axes to one index (``(("Z", 3),)``); ``where`` names the image in messages
    (``"series 1 ('macro')"``); ``others`` lists the file's other series for the refusal message.
    Raises :class:`InputError` for images with an extra axis longer than 1 and no plane chosen.
    """
    axes = [str(a).upper() for a in axes]
    shape = [int(n) for n in shape]
    label = f"{name}: {where + ' ' if where else ''}"
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{label}has axes {''.join(axes)!r}, with no Y and X")
    chosen = dict(plane)
    for key, k in chosen.items():
        if key not in axes:
            raise SettingsError(
                f"{label}--plane {key.lower()}={k}: the image has no {key} axis ({_describe(axes, shape)})"
            )
        n = shape[axes.index(key)]
        if k >= n:
            raise SettingsError(f"{label}--plane {key.lower()}={k}: {key} has {n} plane(s), 0..{n - 1}")
    index: list[int | None] = []
    channel: list[int] = []
    extra: list[int] = []
    for i, (a, n) in enumerate(zip(axes, shape)):
        if a in ("Y", "X"):
            index.append(None)
        elif a in chosen:
            index.append(chosen[a])
        elif n == 1:
            index.append(0)
        elif a in CHANNEL_AXES:
            index.append(None)
            channel.append(i)
        else:
            index.append(None)
            extra.append(i)
    if len(channel) > 1:
        extra.extend(channel[1:] if axes[channel[0]] == "S" else channel[:1])
        channel = [c for c in channel if c not in extra]
    if extra:
        what = ", ".join(f"{shape[i]} {_AXIS_WORDS.get(axes[i], axes[i] + ' planes')}" for i in extra)
        how = " and ".join(f"{axes[i].lower()}=K (K in 0..{shape[i] - 1})" for i in extra)
        raise InputError(
            f"{label}has axes {_describe(axes, shape)}: {what}, not channels of one image; tiler reads "
            f"one 2-D plane, so choose it with --plane {how}" + (f", or another series with --series N "
                                                                   f"({others})" if others else "")
        )
    c = channel[0] if channel else None
    return AxisLayout(tuple(index), axes.index("Y"), axes.index("X"), c, shape[c] if c is not None else 1)
