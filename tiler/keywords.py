"""The keywords that determine a run's values, defined once for every entry point.

:func:`tiler.predict`, :func:`tiler.run`, :func:`tiler.predict_dask` and
:func:`tiler.batch.run_batch` all accept every name in :data:`VALUE_KEYWORDS`, with the same
meaning; each checks what it is given with :func:`check_keywords`, so that a misspelt or unknown
keyword is a one-line :class:`~tiler.errors.SettingsError` naming the valid ones (and the nearest
match), never a raw ``TypeError`` from deep inside.

>>> check_keywords("tiler.run", {"overlapp": 64}, SETTING_KEYWORDS)
Traceback (most recent call last):
...
tiler.errors.SettingsError: tiler.run() got an unknown keyword 'overlapp' (did you mean 'overlap'?); valid: ...
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

from .engine import Settings
from .errors import SettingsError

#: Fields of :class:`~tiler.engine.Settings`: tiling, blending, output kind, layout, threads.
SETTING_KEYWORDS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
#: How the input is read: which pixels the model sees (pyramid level, resampling, the series of a
#: multi-series file, the plane of a stack, the channels and their order).
READ_KEYWORDS: tuple[str, ...] = ("level", "mpp", "series", "plane", "channels")
#: Which tiles are computed at all (the rest get ``fill``).
MASK_KEYWORDS: tuple[str, ...] = ("tissue", "roi")
#: How the model is loaded and run.
MODEL_KEYWORDS: tuple[str, ...] = ("device", "precision", "provider", "trust_model", "compile", "overrides")
#: Every keyword that changes the values computed: all four entry points accept each of them.
VALUE_KEYWORDS: frozenset[str] = frozenset(SETTING_KEYWORDS + READ_KEYWORDS + MASK_KEYWORDS + MODEL_KEYWORDS)


def keyword_names(function: Callable[..., Any]) -> set[str]:
    """The optional keyword parameters ``function`` names in its signature (not ``**kwargs``, not
    required positional ones such as ``image``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(function).parameters.values()
            if p.kind in kinds and p.default is not inspect.Parameter.empty}


def check_keywords(where: str, given: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise a one-line SettingsError for the first key of ``given`` not in ``valid``.

    ``where`` names the entry point (``"tiler.run"``); the message lists every valid name and,
    where one is close, suggests it.
    """
    valid = sorted(set(valid))
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingsError(f"{where}() got an unknown keyword {name!r}{hint}; valid: {', '.join(valid)}")
