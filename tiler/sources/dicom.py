"""DICOM whole-slide images (VL Whole Slide Microscopy, one file per level) through wsidicom.

A folder of a series' files, or one of its files (the folder's files of the same series are then
read with it), opens as one pyramid level of a lazy (H, W, 3) uint8 RGB image:

* **levels** are the series' VOLUME instances, full resolution first; **pixel size** from their
  ``PixelSpacing`` (Shared Functional Groups > Pixel Measures, in mm: recorded in µm).
* **series**: a folder holding several pyramids (``--series N`` chooses; default the first).
* Label, overview and thumbnail instances are never read, and no patient, study or specimen
  attribute is kept: ``info`` holds only geometry, so nothing identifying can reach an output's
  attributes, a report or a preview.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SettingsError, one_line
from ._array import check_image_shape
from ._base import ReadOptions, SourceInfo

#: What to install when wsidicom is missing.
INSTALL_HINT = "pip install 'tiler-engine[dicom]' (wsidicom and pydicom)"


def import_wsidicom(name: str) -> Any:
    """The ``wsidicom`` module, or a one-line InputError naming the extra to install."""
    try:
        import wsidicom
    except ImportError as exc:
        raise InputError(f"{name}: DICOM whole-slide images need the dicom extra: {INSTALL_HINT}; "
                         f"import failed: {one_line(exc)}") from None
    return wsidicom


def _series_files(path: Path) -> list[Path]:
    """The files beside ``path`` (a DICOM file) of the same series, ``path`` first."""
    import pydicom

    def series_of(p: Path) -> str | None:
        try:
            return str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                       .get("SeriesInstanceUID", ""))
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, AttributeError, EOFError):
            return None

    uid = series_of(path)
    if not uid:
        return [path]
    others = [p for p in sorted(path.parent.iterdir())
              if p.is_file() and p != path and not p.name.startswith(".") and series_of(p) == uid]
    return [path, *others]


class DicomSource:
    """One pyramid level of a DICOM WSI series as a lazy (H, W, 3) uint8 RGB image.

    Parameters
    ----------
    path : a folder of the series' files, or one of them.
    level : pyramid level, 0 = full resolution (the order of ``tiler info``).
    series : pyramid of a folder holding several (None: the first).
    plane : not supported (one focal plane is read: the first).
    """

    def __init__(self, path: str | os.PathLike[str], *, level: int = 0, series: int | None = None,
                 plane: tuple[tuple[str, int], ...] = ()) -> None:
        self.path = Path(path)
        self.name = str(path)
        if plane:
            raise SettingsError(f"{self.name}: --plane is not available for DICOM slides (the first focal plane "
                                "is read)")
        wsidicom = import_wsidicom(self.name)
        errors = (wsidicom.errors.WsiDicomNotFoundError, wsidicom.errors.WsiDicomError,
                  wsidicom.errors.WsiDicomFileError, wsidicom.errors.WsiDicomMatchError,
                  wsidicom.errors.WsiDicomUidDuplicateError, wsidicom.errors.WsiDicomNoResolutionError,
                  wsidicom.errors.WsiDicomNotSupportedError, wsidicom.errors.WsiDicomStrictRequirementError,
                  OSError, ValueError, KeyError, AttributeError, TypeError, EOFError)
        self._errors = errors
        files: Any = self.path if self.path.is_dir() else _series_files(self.path)
        try:
            self._wsi = wsidicom.WsiDicom.open(files)
        except errors as exc:
            raise InputError(f"{self.name}: not a readable DICOM whole-slide image ({type(exc).__name__}: "
                             f"{one_line(exc)})") from None
        try:
            pyramids = list(self._wsi.pyramids)
            count = len(pyramids)
            if count == 0:
                raise InputError(f"{self.name}: the DICOM files hold no whole-slide pyramid (VOLUME images)")
            if series is not None and not 0 <= series < count:
                raise InputError(f"{self.name}: series {series} does not exist; the DICOM folder holds {count} "
                                 f"pyramid(s), 0..{count - 1}")
            self._pyramid = series or 0
            levels = sorted(pyramids[self._pyramid], key=lambda lv: -lv.size.width)
            if not 0 <= level < len(levels):
                raise InputError(f"{self.name}: level {level} does not exist; the slide has {len(levels)} "
                                 f"pyramid level(s), 0..{len(levels) - 1} (see tiler info)")
            lvl = levels[level]
            self._level = int(lvl.level)
            h, w = int(lvl.size.height), int(lvl.size.width)
            base = levels[0]
            spacing = base.pixel_spacing
            base_mpp = (float(spacing.height) * 1000.0, float(spacing.width) * 1000.0) if spacing else None
            tile = lvl.tile_size
            syntax = lvl.default_instance.image_data.transfer_syntax
            compression = None if syntax.name.startswith(("Explicit VR", "Implicit VR")) else str(syntax.name)
        except InputError:
            self.close()
            raise
        except errors as exc:
            self.close()
            raise InputError(f"{self.name}: unreadable DICOM whole-slide metadata ({type(exc).__name__}: "
                             f"{one_line(exc)})") from None
        self.shape = check_image_shape(self.name, (h, w, 3), np.dtype(np.uint8))
        self.dtype = np.dtype(np.uint8)
        self.chunks: tuple[int, int] | None = (int(tile.height), int(tile.width))
        shapes = tuple((int(lv.size.height), int(lv.size.width)) for lv in levels)
        downsample = (shapes[0][0] / h, shapes[0][1] / w)
        self.info = SourceInfo(
            format="dicom-wsi", compression=compression, chunks=self.chunks, levels=shapes,
            mpp=(base_mpp[0] * downsample[0], base_mpp[1] * downsample[1]) if base_mpp else None,
            level=level, downsample=downsample, base_mpp=base_mpp,
            series=self._pyramid, series_name=f"pyramid {self._pyramid} of {count}" if count > 1 else None,
            read=ReadOptions(level=level, series=series), reader="wsidicom",
        )

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)`` of the level as (y1 - y0, x1 - x0, 3) uint8."""
        try:
            region = self._wsi.read_region((x0, y0), self._level, (x1 - x0, y1 - y0), pyramid=self._pyramid,
                                           as_array=True)
        except self._errors as exc:
            raise InputError(f"{self.name}: cannot decode the image data at rows {y0}:{y1}, columns {x0}:{x1} "
                             f"({type(exc).__name__}: {one_line(exc)})") from None
        region = np.asarray(region)
        if region.ndim == 2:
            region = np.repeat(region[..., None], 3, axis=2)
        return np.ascontiguousarray(region[..., :3], dtype=np.uint8)

    def close(self) -> None:
        wsi = getattr(self, "_wsi", None)
        if wsi is not None:
            wsi.close()
            self._wsi = None
