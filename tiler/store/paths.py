"""Where an output goes, and where it may not: the default path beside the input; never the
input itself, inside it or around it; never over another run's output or a finished one unasked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..sources import Source
from .identity import input_paths, store_root
from .ownership import read_owner
from .sink import ZarrSink


def default_output_path(image: Any) -> Path:
    """The output beside the input: ``scan.tif`` -> ``scan.zarr`` (``scan.ome.tif``, ``scan.svs``,
    ``scan.png`` likewise); a zarr input ``scan.zarr`` (or ``scan.ome.zarr``) -> ``scan.pred.zarr``,
    never the input itself.

    >>> str(default_output_path("a/scan.ome.tif")), str(default_output_path("a/scan.zarr"))
    ('a/scan.zarr', 'a/scan.pred.zarr')
    """
    if not isinstance(image, (str, os.PathLike)):
        raise OutputError("an output path (out=...) is needed when the input is not a file")
    path = Path(image)
    name = path.name
    store = store_root(path.resolve()) if path.exists() else path.resolve()
    if store != path.resolve():  # a node inside a zarr store (scan.zarr/0): beside the store
        inner = path.resolve().relative_to(store).parts
        outer = path.parents[len(inner) - 1]  # the store, as the user named it
        stem = store.name[: -len(".zarr")] if store.name.lower().endswith(".zarr") else store.name
        return outer.with_name(f"{stem}.{'-'.join(inner)}.pred.zarr")
    if name.lower().endswith((".zarr", ".zarr/")) or path.is_dir():  # a zarr store: never itself
        for suffix in (".ome.zarr", ".zarr"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return path.with_name(name + ".pred.zarr")
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".png", ".jpg", ".jpeg", ".ndpi", ".mrxs",
                   ".scn", ".bif", ".vms", ".vmu", ".svslide", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".zarr")


def refuse_input_as_output(image: Any, source: Source, out: Path) -> None:
    """The output may not be the input, lie inside it (or inside its zarr store), or contain it
    (``--overwrite`` would delete it)."""
    target = out.resolve()
    for path in dict.fromkeys([*input_paths(image), *input_paths(source)]):  # in order, each once
        source_path = path.resolve()
        if target == source_path or source_path in target.parents or target in source_path.parents:
            relation = ("is" if target == source_path else "is inside" if source_path in target.parents
                        else "contains")
            raise OutputError(f"{out}: the output {relation} the input {path}; choose another output path")


def refuse_existing(path: Path, target: Path) -> None:
    """The error for an existing output without --overwrite or --resume (``target``: its real path)."""
    holder = read_owner(target)
    if holder is not None and not holder.is_dead():
        raise OutputError(f"{path}: another tiler run is writing this output: {holder.describe()}")
    try:
        complete = ZarrSink.open(path).attributes.get("tiler", {}).get("complete", False)
    except OutputError:
        raise OutputError(
            f"{path}: already exists and is not a tiler output; choose another output path"
        ) from None
    if complete:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    raise OutputError(
        f"{path}: an incomplete output exists; pass --resume to continue it or --overwrite to start again"
    )
