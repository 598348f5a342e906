"""Review fixes: the zarr output sink."""

from __future__ import annotations


