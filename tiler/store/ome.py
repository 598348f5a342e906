"""OME-Zarr 0.5 metadata of an output group."""

from __future__ import annotations

from typing import Any

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
