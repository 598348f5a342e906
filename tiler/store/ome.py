"""OME-Zarr 0.5 metadata of an output group: ``multiscales``, ``omero`` channel names and colours
for probabilities/logits, and the ``labels/prediction`` label image of a labels output."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import zarr

from ..sources import Source


def ome_metadata(shape: tuple[int, ...], source: Source) -> dict[str, Any]:
    """OME-Zarr 0.5 ``multiscales`` for the full-resolution array (pixel size where known)."""
    mpp = getattr(source.info, "mpp", None)
    space = {"type": "space", "unit": "micrometer"} if mpp else {"type": "space"}
    axes = [{"name": "y", **space}, {"name": "x", **space}]
    scale = list(mpp) if mpp else [1.0, 1.0]
    if len(shape) == 3:
        axes.insert(0, {"name": "c", "type": "channel"})
        scale.insert(0, 1.0)
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": "prediction",
                "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            }
        ],
    }


#: The name of the label image a labels output carries (``labels/prediction``).
LABEL_IMAGE = "prediction"


def omero_metadata(names: list[str], colours: list[str], *, kind: str, dtype: str) -> dict[str, Any]:
    """OME ``omero`` rendering metadata for a (C, H, W) probabilities/logits output: each channel's
    class name and colour (``"RRGGBB"``) and a display window (uint8: 0..255; float probabilities:
    0..1; logits: -10..10)."""
    if kind == "logits":
        lo, hi = -10.0, 10.0
    else:
        lo, hi = (0.0, 255.0) if dtype == "uint8" else (0.0, 1.0)
    return {
        "channels": [
            {"label": name, "color": colour, "active": True, "coefficient": 1.0, "family": "linear",
             "inverted": False, "window": {"min": lo, "max": hi, "start": lo, "end": hi}}
            for name, colour in zip(names, colours)
        ],
        "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
    }


def image_label_metadata(names: list[str], colours: list[tuple[int, int, int]]) -> dict[str, Any]:
    """OME-Zarr ``image-label``: each class value's colour (background transparent) and name."""
    return {
        "version": "0.5",
        "colors": [{"label-value": k, "rgba": [*map(int, rgb), 0 if k == 0 else 255]}
                   for k, rgb in enumerate(colours)],
        "properties": [{"label-value": k, "class": name} for k, name in enumerate(names)],
        "source": {"image": "../../"},
    }


def add_label_image(group: Any, path: Path, names: list[str], colours: list[tuple[int, int, int]]) -> None:
    """Give a labels output (``(H, W)`` levels ``0, 1, …`` at the root, which stay) an OME-Zarr
    label image ``labels/prediction`` with the same levels, class colours and names, so viewers
    (napari, through ome-zarr) open it as a Labels layer.

    The level arrays are the root's own chunk files, hard-linked (copied where the file system has
    no hard links): no second copy of the data on disk. Chunks are only ever replaced by renaming a
    new file into place, never rewritten in place, so the links stay equal to the root's levels.
    """
    ome = dict(group.attrs["ome"])
    multiscales = [dict(m) for m in ome["multiscales"]]
    labels = path / "labels"
    target = labels / LABEL_IMAGE
    if target.exists():
        shutil.rmtree(target)
    for dataset in multiscales[0]["datasets"]:
        _link_tree(path / dataset["path"], target / dataset["path"])
    multiscales[0]["name"] = LABEL_IMAGE
    label_group = zarr.open_group(str(target), mode="a", zarr_format=3)  # the arrays' folders are there
    label_group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales,
                                "image-label": image_label_metadata(names, colours)}
    zarr.open_group(str(labels), mode="a", zarr_format=3).attrs["ome"] = {"version": "0.5", "labels": [LABEL_IMAGE]}


def _link_tree(src: Path, dst: Path) -> None:
    for folder, _, files in os.walk(src):
        out = dst / Path(folder).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(folder) / name, out / name)
            except OSError:
                shutil.copy2(Path(folder) / name, out / name)
