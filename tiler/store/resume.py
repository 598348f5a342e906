"""Why a recorded run and the current one differ: the message for a refused ``--resume``.

>>> old = {"input": {"path": "a.tif"}, "model": {"fingerprint": "1"}, "settings": {"tile": 512}}
>>> new = {"input": {"path": "a.tif"}, "model": {"fingerprint": "1"}, "settings": {"tile": 256}}
>>> differences(old, new)
'settings differ (tile: 512 recorded, 256 now)'
"""

from __future__ import annotations

from typing import Any

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
