"""Model runners: ``(N, C, h, w)`` tiles in, ``(N, C_out, h, w)`` float32 logits out.

:class:`Runner` is the one interface the engine uses; :class:`TorchRunner` runs PyTorch modules
(and TorchScript). Device, precision and provider choices live in the runners and nowhere else.
"""

from __future__ import annotations

from .base import Runner

__all__ = ["Runner"]
