"""Model export: PyTorch -> ONNX (:mod:`exporters.onnx`) and TorchScript (:mod:`exporters.torchscript`).

Every export stores the model's :class:`~tiler.models.spec.ModelSpec` in the file and is verified
against the PyTorch model (:mod:`exporters.verify`). ``tiler export`` calls :func:`export`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiler.models.spec import ModelSpec

from .verify import FP16_TOLERANCE, FP32_TOLERANCE, Verification, verify

__all__ = ["FORMATS", "FP16_TOLERANCE", "FP32_TOLERANCE", "Verification", "export", "verify"]

FORMATS = ("onnx", "torchscript")


def export(
    model: Any,
    out: str | os.PathLike[str],
    *,
    format: str = "onnx",
    fp16: bool = False,
    opset: int | None = None,
    size: int | None = None,
    tolerance: float | None = None,
    trust_model: bool = False,
    spec: ModelSpec | None = None,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], object] | None = print,
) -> Verification:
    """Export ``model`` (an ``nn.Module``, a checkpoint or TorchScript path, or None for the
    built-in default) to ``out`` in ``format`` ("onnx" or "torchscript"), verified.

    ``spec`` replaces the model's own metadata (needed for an ``nn.Module`` that has no
    ``in_channels`` attribute); it is stored in the file. ``overrides`` replace single fields of it
    (``tiler export --in-channels 3 --mean ...``). See :mod:`exporters.onnx` for ``opset``,
    ``fp16`` and ``size``, :mod:`exporters.verify` for ``tolerance``.
    """
    from tiler.errors import SettingsError
    from tiler.models.load import load_module

    if format not in FORMATS:
        raise SettingsError(f"unknown export format {format!r}; use onnx or torchscript")
    module, own_spec = load_module(model, trust_model=trust_model)
    spec = (spec or own_spec).with_overrides(**(overrides or {}))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        from .onnx import DEFAULT_OPSET, export_onnx

        return export_onnx(module, spec, out, opset=opset or DEFAULT_OPSET, fp16=fp16, size=size,
                           tolerance=tolerance, log=log)
    if fp16 or opset or size:
        raise SettingsError("--fp16, --opset and --fixed-size apply to ONNX exports only "
                            "(TorchScript runs in half precision with `tiler run --precision fp16`)")
    from .torchscript import export_torchscript

    return export_torchscript(module, spec, out, tolerance=tolerance, log=log)
