"""``load_runner``: a model argument (module, runner, path or None) -> a :class:`~tiler.runners.base.Runner`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputNotFoundError, SettingsError
from ..models.files import is_onnx, load_module
from ..models.spec import ModelSpec


def load_runner(
    model: Any = None,
    *,
    device: str | None = "auto",
    precision: str = "fp32",
    spec: ModelSpec | None = None,
    provider: str = "auto",
    trust_model: bool = False,
    overrides: dict[str, Any] | None = None,
    compile: bool | int = False,
) -> Any:
    """A runner for ``model`` (see the module docstring). ``spec`` replaces the model's metadata.

    ``provider`` (auto, tensorrt, cuda, cpu) picks the ONNX Runtime execution provider for
    ``.onnx`` files; ``trust_model`` allows checkpoints that need full unpickling; ``overrides``
    replaces single metadata fields (``ModelSpec`` names: in_channels, mean, std, ...), as the
    command line's ``--mean`` etc. do. ``compile`` wraps a PyTorch model in ``torch.compile``
    with every batch padded to the same shape (an int: that many tiles, the engine's batch size;
    True: the largest batch seen).
    """
    from .base import Runner

    if isinstance(model, Runner):
        if compile:
            raise SettingsError("compile applies to a model or checkpoint, not to a ready Runner: "
                                "build it with TorchRunner(..., compile=True)")
        return model
    if isinstance(model, (str, os.PathLike)) and is_onnx(model):
        from .onnx import OnnxRunner

        if not Path(model).exists():
            raise InputNotFoundError(f"{model}: model file not found")
        if compile:
            raise SettingsError(f"{model}: --compile is for PyTorch models (ONNX Runtime optimises on its own)")
        runner = OnnxRunner(model, spec=spec, provider=provider, device=device, precision=precision)
        if overrides:
            runner.spec = runner.spec.with_overrides(**overrides)
        return runner
    from .torch import TorchRunner

    module, module_spec = load_module(model, trust_model=trust_model)
    spec = (spec or module_spec).with_overrides(**(overrides or {}))
    return TorchRunner(module, spec, device=device, precision=precision, compile=bool(compile),
                       pad_batches=compile if compile else None)
