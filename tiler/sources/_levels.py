"""Pick the pyramid level and resampling that give a requested pixel size (``--level``, ``--mpp``)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

from ..errors import InputError, SettingsError
from ._base import ReadOptions, Source, SourceInfo
from ._open import open_source
from ._resample import ResampledSource

#: A level whose pixel size is within this fraction of the request is used as it is.
MPP_TOLERANCE = 0.01


def level_mpps(info: SourceInfo) -> list[tuple[float, float] | None]:
    """Pixel size (y, x) in µm of every pyramid level (None where the file states none)."""
    if not info.levels:
        return [info.mpp]
    return [info.level_mpp(k) for k in range(len(info.levels))]


def choose_level(info: SourceInfo, mpp: float, *, name: str = "input") -> int:
    """The coarsest level whose pixel size is at most ``mpp`` (within :data:`MPP_TOLERANCE`).

    Falls back to level 0 (to be upsampled) when every level is coarser than ``mpp``.
    """
    sizes = level_mpps(info)
    if any(s is None for s in sizes):
        raise InputError(
            f"{name}: the file states no pixel size (no OME PhysicalSize, SVS MPP or resolution "
            "tags), so --mpp cannot be used; choose a level with --level N instead"
        )
    fine = [(max(s), k) for k, s in enumerate(sizes) if s and max(s) <= mpp * (1 + MPP_TOLERANCE)]
    return max(fine)[1] if fine else 0


def open_at(
    image: Any, *, level: int | None = None, mpp: float | None = None, series: int | None = None,
    plane: Any = None, channels: Any = None, reader: str | None = None, resampling: str | None = None,
) -> Source:
    """Open ``image`` at pyramid ``level``, or at pixel size ``mpp`` µm (level + resampling).

    With ``mpp`` the nearest level at least as fine is read and resampled by ``mpp / level_mpp``
    (area averaging, :class:`ResampledSource`) unless it is within 1 % already; the source's
    ``info.mpp`` is then the pixel size of the image the model sees. ``series``, ``plane`` and
    ``channels`` choose the image, plane and channels (see :class:`~tiler.sources.ReadOptions`);
    the returned source's ``info.read`` records all of them, to reopen it the same way elsewhere.
    ``reader`` names the library that opens a file (see :func:`~tiler.sources.open_source`).
    """
    options = ReadOptions.of(level=level, mpp=mpp, series=series, plane=plane, channels=channels, reader=reader,
                             resampling=resampling)
    source = _open_at(image, options)
    if source is not image and isinstance(getattr(source, "info", None), SourceInfo):
        source.info = replace(source.info, read=options)
    return source


def _open_at(image: Any, options: ReadOptions) -> Source:
    level, mpp = options.level, options.mpp
    what: dict[str, Any] = {"series": options.series, "plane": options.plane, "channels": options.channels,
                            "reader": options.reader, "resampling": options.resampling}
    if level is not None and mpp is not None:
        raise SettingsError("--level and --mpp both choose the resolution; give one of them")
    if level is not None and level < 0:
        raise SettingsError(f"--level must be >= 0, got {level}")
    if mpp is None:
        source = open_source(image, level=level or 0, **what)
        if level and source.info.level != level:
            source.close()
            raise InputError(
                f"{source.name}: has a single resolution level (only pyramidal TIFF levels are "
                f"read); level {level} does not exist"
            )
        return source
    if not mpp > 0:
        raise SettingsError(f"--mpp must be a pixel size in µm > 0, got {mpp}")
    base = open_source(image, **what)
    k = choose_level(base.info, mpp, name=base.name)
    source = base if k == 0 else open_source(image, level=k, **what)
    if source is not base and hasattr(base, "close"):
        base.close()
    have = source.info.mpp
    assert have is not None  # choose_level checked
    if all(abs(m - mpp) <= MPP_TOLERANCE * mpp for m in have):
        return source
    if max(have) > mpp:
        warnings.warn(
            f"{source.name}: the finest level has {max(have):.4g} µm pixels, coarser than --mpp "
            f"{mpp:g}; upsampling it",
            stacklevel=2,
        )
    return ResampledSource(source, (mpp / have[0], mpp / have[1]), mpp=(mpp, mpp))
