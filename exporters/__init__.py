"""Model export: PyTorch -> ONNX (:mod:`exporters.onnx`) and TorchScript (:mod:`exporters.torchscript`).

Every export stores the model's :class:`~tiler.models.spec.ModelSpec` in the file and is verified
against the PyTorch model (:mod:`exporters.verify`). ``tiler export`` calls :func:`export`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiler.errors import OutputError, SettingsError, TilerError
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
    from tiler.models.files import load_module

    if format not in FORMATS:
        raise SettingsError(f"unknown export format {format!r}; use onnx or torchscript")
    module, own_spec = load_module(model, trust_model=trust_model)
    spec = (spec or own_spec).with_overrides(**(overrides or {}))
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place once verified: a failed export (or one
    # interrupted) leaves an earlier file at ``out`` as it was.
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        result = _export(module, spec, partial, format=format, fp16=fp16, opset=opset, size=size,
                         tolerance=tolerance, log=log, name=target.name)
        os.replace(partial, target)
    except TilerError as exc:
        raise type(exc)(str(exc).replace(str(partial), str(target))) from None
    except OSError as exc:
        raise OutputError(f"{target}: cannot write the export ({exc.strerror or exc})") from None
    finally:
        partial.unlink(missing_ok=True)
    return result


def _export(module: Any, spec: ModelSpec, out: Path, *, format: str, fp16: bool, opset: int | None,
            size: int | None, tolerance: float | None, log: Callable[[str], object] | None,
            name: str) -> Verification:
    if format == "onnx":
        from .onnx import DEFAULT_OPSET, export_onnx

        return export_onnx(module, spec, out, opset=opset or DEFAULT_OPSET, fp16=fp16, size=size,
                           tolerance=tolerance, log=log, name=name)
    if fp16 or opset or size:
        raise SettingsError("--fp16, --opset and --fixed-size apply to ONNX exports only "
                            "(TorchScript runs in half precision with `tiler run --precision fp16`)")
    from .torchscript import export_torchscript

    return export_torchscript(module, spec, out, tolerance=tolerance, log=log, name=name)
