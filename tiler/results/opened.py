"""Open a source for the length of a ``with`` block and close its file afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..sources import Source, open_source


@contextmanager
def opened(image: Any, **kwargs: Any) -> Iterator[Source]:
    """``with opened(path) as source: ...``; a Source passed in is used as is and left open."""
    source = open_source(image, **kwargs)
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if source is not image and callable(close):
            close()
