"""Turn what the user names as a model into a :class:`~tiler.runners.Runner`.

Accepted: a ``Runner``; an ``nn.Module``; ``None`` for the built-in default; a path to a checkpoint
of the built-in UNet (a state dict, alone or under ``"state_dict"``/``"model"``, with optional
``"config"`` and ``"tiler"`` metadata), or a TorchScript file. Checkpoints are read with
``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InputNotFoundError, ModelError
from .spec import ModelSpec

#: The built-in default model (see tiler/models/weights/MODEL_CARD.md).
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.pt"


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def unet_config_from_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Infer the built-in UNet's constructor arguments from its state-dict keys and shapes."""
    try:
        first = state["in_conv.double_conv.0.weight"]
        last = state["out_conv.conv.weight"]
    except KeyError as exc:
        raise ModelError(f"not a checkpoint of the built-in UNet (no key {exc})") from None
    return {
        "in_channels": int(first.shape[1]),
        "num_classes": int(last.shape[0]),
        "base_channels": int(first.shape[0]),
        "bilinear": "up1.up.weight" not in state,
    }


def _unwrap(checkpoint: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(state dict, config, tiler metadata) from a raw or wrapped checkpoint."""
    if not isinstance(checkpoint, dict):
        raise ModelError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key], checkpoint.get("config", {}), checkpoint.get("tiler", {})
    return checkpoint, {}, {}


def load_checkpoint(path: Path) -> tuple[Any, ModelSpec]:
    """Build the built-in UNet from a checkpoint file; return (module, spec)."""
    import torch

    from .unet import UNet

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the checkpoint ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # torch raises UnpicklingError (and others) for pickled code
        raise ModelError(
            f"{path}: the checkpoint needs full unpickling, which can run arbitrary code "
            f"({type(exc).__name__}); re-save it as a plain state dict"
        ) from None
    state, config, meta = _unwrap(checkpoint)
    config = {**unet_config_from_state_dict(state), **config}
    module = UNet(**config)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"{path}: checkpoint does not fit the built-in UNet; missing keys: "
            f"{', '.join(missing[:5]) or 'none'}; unexpected keys: {', '.join(unexpected[:5]) or 'none'}"
        )
    spec = ModelSpec(
        name=path.name,
        in_channels=config["in_channels"],
        out_channels=config["num_classes"],
        multiple=UNet.multiple,
    )
    if meta:
        spec = ModelSpec.from_dict({**spec.to_dict(), **meta})
    return module, spec


def spec_of_module(module: Any) -> ModelSpec:
    """A best guess of the metadata of an ``nn.Module`` given from Python."""
    return ModelSpec(
        name=type(module).__name__,
        in_channels=int(getattr(module, "in_channels", 0) or 0),
        out_channels=int(getattr(module, "num_classes", 0) or 0),
        multiple=int(getattr(module, "multiple", 1) or 1),
    )


def load_runner(
    model: Any = None,
    *,
    device: str | None = "auto",
    precision: str = "fp32",
    spec: ModelSpec | None = None,
) -> Any:
    """A runner for ``model`` (see the module docstring). ``spec`` replaces the model's metadata."""
    from ..runners.base import Runner

    if isinstance(model, Runner):
        return model
    import torch

    from ..runners.torch import TorchRunner

    if model is None:
        if not DEFAULT_WEIGHTS.exists():
            raise ModelError(f"the built-in default weights are missing ({DEFAULT_WEIGHTS})")
        model = DEFAULT_WEIGHTS
    if isinstance(model, torch.nn.Module):
        return TorchRunner(model, spec or spec_of_module(model), device=device, precision=precision)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise InputNotFoundError(f"{path}: model file not found")
        if _is_torchscript(path):
            extra = {"tiler.json": ""}
            try:
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            except RuntimeError as exc:
                raise ModelError(f"{path}: cannot load the TorchScript model ({exc})") from None
            import json

            meta = json.loads(extra["tiler.json"]) if extra["tiler.json"] else {"name": path.name}
            module_spec = ModelSpec.from_dict(meta)
        else:
            module, module_spec = load_checkpoint(path)
        return TorchRunner(module, spec or module_spec, device=device, precision=precision)
    raise ModelError(f"cannot use a {type(model).__name__} as a model; pass an nn.Module or a path")
