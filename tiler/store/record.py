"""The run record: what an output says, under ``tiler``, about the run that wrote it.

:func:`run_record` builds it (input, model, value-determining settings, their fingerprint);
:func:`check_resumable` refuses a ``--resume`` whose record differs, and :func:`differences`
says why:

>>> old = {"input": {"path": "a.tif"}, "model": {"fingerprint": "1"}, "settings": {"tile": 512}}
>>> new = {"input": {"path": "a.tif"}, "model": {"fingerprint": "1"}, "settings": {"tile": 256}}
>>> differences(old, new)
'settings differ (tile: 512 recorded, 256 now)'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..sources import Source
from ..sources.remote import is_url
from ..version import __version__
from .identity import input_digest
from .sink import FORMAT, check_format, read_attributes

#: Keys named first when several differ (what a user recognises before digests and timestamps).
_FIRST = ("path", "shape", "dtype", "level", "downsample", "mpp", "mask", "digest")


def _changed(old: Any, new: Any) -> list[str]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [f"{old!r} recorded, {new!r} now"]
    keys = sorted(set(old) | set(new), key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), str(k)))
    return [f"{k}: {old.get(k)!r} recorded, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """``"input differs (bytes: ...); settings differ (tile: ...)"``: what is not the same."""
    parts = []
    for key, label in (("input", "input differs"), ("settings", "settings differ")):
        changed = _changed(recorded.get(key, {}), current.get(key, {}))
        if changed:
            parts.append(f"{label} ({'; '.join(changed[:3])})")
    old_model, new_model = recorded.get("model", {}), current.get("model", {})
    if old_model.get("spec") != new_model.get("spec") or old_model.get("fingerprint") != new_model.get(
        "fingerprint"
    ):
        parts.append(f"the model differs ({old_model.get('name')!r} recorded, {new_model.get('name')!r} now, "
                     "or its weights changed)")
    return "; ".join(parts) or "the recorded run was made by another tiler version or setup"


def input_record(image: Any, source: Source, masks: Any = (), roi: Any = None) -> dict[str, Any]:
    record: dict[str, Any] = {"shape": list(source.shape), "dtype": str(source.dtype)}
    info = source.info
    record.update(level=info.level, downsample=list(info.downsample),
                  mpp=list(info.mpp) if info.mpp else None)
    record.update({k: v for k, v in read_record(info).items() if v is not None})
    if masks:
        record["mask"] = {m.kind: {"foreground": round(m.fraction, 4), "shape": list(m.array.shape)}
                          for m in masks}
        if isinstance(roi, (str, os.PathLike)):
            record["mask"]["roi"]["path"] = str(Path(roi).resolve())
        if roi is not None and "roi" in record["mask"]:  # the same area elsewhere is another mask
            record["mask"]["roi"]["digest"] = input_digest(roi)
    if is_url(image):
        record["path"] = image
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image).resolve()
        record["path"] = str(path)
        if path.is_file():
            stat = path.stat()
            record["bytes"] = stat.st_size
            record["mtime_ns"] = stat.st_mtime_ns
    record["digest"] = input_digest(image)
    return record


#: Readers that were the only ones before the input record named its reader (not recorded, so
#: that outputs written then still resume).
_FIRST_READERS = frozenset({None, "tifffile", "zarr", "imagecodecs"})


def read_record(info: Any) -> dict[str, Any]:
    """The series (when not 0, as before series could be chosen), plane, channels, the reader
    (when not one of the first ones) that read the input, and a band stack's resampling (when not
    the nearest neighbour it always was)."""
    read = getattr(info, "read", None)
    reader = getattr(info, "reader", None)
    resampling = getattr(read, "resampling", "nearest")
    return {"series": info.series or None,
            "plane": {a.lower(): i for a, i in read.plane} if read is not None and read.plane else None,
            "channels": list(read.channels) if read is not None and read.channels is not None else None,
            "reader": None if reader in _FIRST_READERS else reader,
            **({"resampling": resampling} if resampling != "nearest" else {})}


#: What an output records the version of -> the distributions that provide it (the first installed).
VERSIONED = {"numpy": ("numpy",), "zarr": ("zarr",), "tifffile": ("tifffile",),
             "torch": ("torch",), "onnxruntime": ("onnxruntime-gpu", "onnxruntime"), "dask": ("dask",)}


def library_versions() -> dict[str, str | None]:
    """``{"tiler": "0.2.0", "python": "3.11.7", "numpy": "2.1.3", "torch": "2.13.0+cpu", "onnxruntime": None, …}``:
    the installed versions (package metadata, so nothing is imported), recorded under
    ``tiler.versions`` of every output; not part of the run's fingerprint."""
    import platform
    from importlib import metadata

    versions: dict[str, str | None] = {"tiler": __version__, "python": platform.python_version()}
    for key, distributions in VERSIONED.items():
        versions[key] = None
        for name in distributions:
            try:
                versions[key] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def run_fingerprint(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def run_record(
    image: Any, source: Source, runner: Any, settings: dict[str, Any], masks: Any, roi: Any
) -> dict[str, Any]:
    """What the output records about its run under ``tiler`` (compared on ``--resume``); ``settings``
    is :meth:`Settings.record() <tiler.config.Settings.record>`."""
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": __version__,
        "input": input_record(image, source, masks, roi),
        "model": {"name": runner.spec.name, "runner": runner.describe(), "spec": runner.spec.to_dict()},
        "settings": settings,
        "versions": library_versions(),
    }
    fingerprint = getattr(runner, "fingerprint", None)
    record["model"]["fingerprint"] = fingerprint() if callable(fingerprint) else None
    if source.info.georeference is not None:
        record["georeference"] = source.info.georeference.to_attrs()
    if getattr(source, "masked", False):  # the input's nodata pixels hold the fill value
        record["nodata"] = {"value": settings.get("fill", 0.0), "input": source.info.nodata}
    record["fingerprint"] = run_fingerprint(record["input"], record["model"]["spec"], record["settings"],
                                             record["model"]["fingerprint"])
    return record


def recorded_chunk(path: Any) -> int | None:
    """The chunk edge an existing output at ``path`` recorded (None: no output, or no record).

    A resume without an explicit chunk continues with it: the default depends on the values
    stored (and changed for float32 outputs), and the chunk must match the written arrays."""
    chunk = read_attributes(path).get("tiler", {}).get("settings", {}).get("chunk")
    return chunk if isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0 else None


def check_resumable(path: Any, attributes: dict[str, Any], record: dict[str, Any], *, force: bool) -> None:
    """Raise :class:`OutputError` unless the output at ``path`` is this run's to continue."""
    check_format(path, attributes, resume=True)
    recorded = attributes.get("tiler", {})
    if recorded.get("fingerprint") != record["fingerprint"]:
        raise OutputError(
            f"{path}: cannot resume: {differences(recorded, record)}; use --overwrite to start again"
        )
    unknown = []
    if record["model"]["fingerprint"] is None:
        unknown.append(f"the model ({record['model']['runner']} has no weight digest)")
    if record["input"].get("digest") is None:
        unknown.append("the input (an array-like tiler cannot digest)")
    if unknown and not force:
        raise OutputError(
            f"{path}: cannot resume: cannot check that {' or '.join(unknown)} is unchanged; "
            "pass resume='force' if it is"
        )
