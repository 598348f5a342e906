"""Model runners: ``(N, C, h, w)`` tiles in, ``(N, C_out, h, w)`` float32 logits out.

:class:`Runner` is the one interface the engine uses; :class:`TorchRunner` runs PyTorch modules
(and TorchScript), :class:`~tiler.runners.onnx.OnnxRunner` ONNX files under ONNX Runtime;
:func:`~tiler.runners.factory.load_runner` builds one from a model argument.
Device, precision and provider choices live in the runners and nowhere else.

May import: errors, models.
"""

from __future__ import annotations

from .base import Runner

__all__ = ["Runner"]
