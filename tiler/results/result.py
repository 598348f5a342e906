"""Read a finished output group: its levels, what kind of values it holds, and its run record.

The commands that consume an output (``tiler export-result``, ``tiler eval``, the preview) open it
with :func:`open_result` and never look at the zarr layout themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import OutputError
from ..sources.remote import is_url, zarr_store
from ..store.sink import check_format


@dataclass(frozen=True)
class StoredResult:
    """A tiler output group as stored, opened read-only (what :func:`tiler.run` returns is a
    :class:`~tiler.api.RunResult`: what the run did).

    Attributes
    ----------
    path : the group's path (a local path, or the URL of a group on an object store).
    levels : arrays of the pyramid, full resolution first: (C, H, W) logits/probabilities or
        (H, W) labels, each level half the size of the one before.
    attributes : the group's attributes (``tiler`` run record, ``ome`` metadata).
    """

    path: Path | str
    levels: tuple[Any, ...]
    attributes: dict[str, Any]

    @property
    def record(self) -> dict[str, Any]:
        return dict(self.attributes.get("tiler", {}))

    @property
    def kind(self) -> str:
        """"labels", "probs" or "logits" (from the run record, else from the array's shape)."""
        kind = self.record.get("settings", {}).get("output")
        if kind in ("labels", "probs", "logits"):
            return str(kind)
        return "labels" if self.levels[0].ndim == 2 else "logits"

    @property
    def channels(self) -> int:
        """Output channels C (1 for labels)."""
        return 1 if self.levels[0].ndim == 2 else int(self.levels[0].shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) at full resolution."""
        h, w = self.levels[0].shape[-2:]
        return (int(h), int(w))

    @property
    def classes(self) -> int | None:
        """Number of classes: C for multi-channel outputs, 2 for one channel (sigmoid); for labels,
        the model's recorded output channels (at least 2), or None when not recorded."""
        if self.kind == "labels":
            out = int(self.record.get("model", {}).get("spec", {}).get("out_channels", 0) or 0)
            return max(out, 2) if out else None
        return max(self.channels, 2)

    @property
    def activation(self) -> str:
        return str(self.record.get("model", {}).get("spec", {}).get("activation", "softmax"))

    def class_names(self, classes: int | None = None) -> list[str]:
        """Names of ``classes`` classes (default :attr:`classes`): the model's, else "0", "1", ..."""
        n = classes or self.classes or 0
        names = list(self.record.get("model", {}).get("spec", {}).get("class_names", []) or [])
        return names if len(names) == n else [str(i) for i in range(n)]

    def class_colours(self) -> list[str]:
        """The model's class colours (``"#rrggbb"``, one per class) where it records them, else []."""
        return list(self.record.get("model", {}).get("spec", {}).get("class_colours", []) or [])

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Pixel size (y, x) in micrometres at full resolution, when the ``ome`` axes state it."""
        try:
            ms = self.attributes["ome"]["multiscales"][0]
            axes = ms["axes"]
            scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
        except (KeyError, IndexError, TypeError):
            return None
        units = {a["name"]: a.get("unit") for a in axes}
        if units.get("y") != "micrometer" or units.get("x") != "micrometer":
            return None
        return (float(scale[-2]), float(scale[-1]))

    @property
    def input_path(self) -> Path | None:
        path = self.record.get("input", {}).get("path")
        return Path(path) if path else None

    @property
    def georeference(self) -> dict[str, Any] | None:
        geo = self.record.get("georeference")
        return dict(geo) if isinstance(geo, dict) and geo else None

    def level_for(self, long_side: int) -> int:
        """Index of the smallest level whose long side is still at least ``long_side``."""
        best = 0
        for k, arr in enumerate(self.levels):
            if max(arr.shape[-2:]) >= long_side:
                best = k
        return best


def open_result(path: str | os.PathLike[str], *, require_complete: bool = True) -> StoredResult:
    """Open a tiler output group.

    Raises :class:`~tiler.errors.OutputError` if the path is not a tiler output, or (with
    ``require_complete``) if the run that writes it has not finished.
    """
    where: Any
    if is_url(path):  # s3://, gs://, https://: read through fsspec
        where = str(path).rstrip("/")
        try:
            group = zarr.open_group(zarr_store(where), mode="r")
        except (FileNotFoundError, ValueError, KeyError):
            raise OutputError(f"{where}: no such output (no zarr group there)") from None
    else:
        where = Path(path)
        if not where.exists():
            raise OutputError(f"{where}: no such output")
        try:
            group = zarr.open_group(str(where), mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise OutputError(f"{where}: is not a readable zarr group ({exc})") from None
    attributes = dict(group.attrs)
    if "0" not in group:
        raise OutputError(f"{path}: is not a tiler output (no array '0')")
    if "tiler" in attributes:
        check_format(path, attributes)
    if require_complete and attributes.get("tiler", {}).get("complete") is False:
        raise OutputError(f"{path}: the run writing it has not finished; finish it with tiler run --resume")
    paths = ["0"]
    try:
        datasets = attributes["ome"]["multiscales"][0]["datasets"]
        paths = [str(d["path"]) for d in datasets] or paths
    except (KeyError, IndexError, TypeError):
        pass
    try:
        levels = tuple(group[p] for p in paths)
    except KeyError as exc:
        raise OutputError(f"{path}: the multiscales metadata names a missing level ({exc})") from None
    return StoredResult(path=where, levels=levels, attributes=attributes)


def to_labels(values: np.ndarray, kind: str, activation: str = "softmax") -> np.ndarray:
    """Class labels from stored values.

    Parameters
    ----------
    values : (C, h, w) probabilities or logits, or (h, w) labels.
    kind : "probs", "logits" or "labels".
    activation : the model's; "none" means stored logits are already probabilities.

    Returns
    -------
    (h, w) integer labels (uint8 for up to 256 classes; labels as stored): the argmax over C (ties
    to the lowest class, as the engine does); for one channel, 1 where the probability is above 0.5
    (uint8: above 127) or the logit above 0.

    >>> to_labels(np.array([[[10, 200]], [[30, 20]]], np.uint8), "probs")
    array([[1, 0]], dtype=uint8)
    """
    if values.ndim == 2:
        return values
    if values.shape[0] == 1:
        v = values[0]
        if kind == "logits" and activation != "none":
            threshold: float = 0.0
        else:
            threshold = 127 if v.dtype == np.uint8 else 0.5
        return (v > threshold).astype(np.uint8)
    # argmax over a few channels, plane by plane: contiguous and several times faster than
    # ndarray.argmax(axis=0); a strict ">" keeps ties on the lowest class, as argmax does.
    labels = np.zeros(values.shape[1:], np.uint8 if values.shape[0] <= 256 else np.int64)
    best = values[0].copy()
    for c in range(1, values.shape[0]):
        better = values[c] > best
        labels[better] = c
        np.maximum(best, values[c], out=best)
    return labels
