"""Turn what the user names as a model into a :class:`~tiler.runners.Runner`.

Accepted: a ``Runner``; an ``nn.Module``; ``None`` for the built-in default; a path to

- an ONNX file (``.onnx``): run by ONNX Runtime (:class:`~tiler.runners.onnx.OnnxRunner`);
- a TorchScript file (``torch.jit.save``), with its metadata in the extra file ``tiler.json``;
- a checkpoint of a UNet in the built-in (seed) or the Pytorch-UNet layout (see
  :mod:`tiler.models.checkpoints`): a state dict, alone or under ``"state_dict"``/``"model"``,
  with optional ``"config"`` and ``"tiler"`` metadata.

Checkpoints are read with ``torch.load(weights_only=True)``: no pickled code runs. One that needs
full unpickling (a whole pickled ``nn.Module``, custom classes) is refused unless
``trust_model=True``. TorchScript and ONNX files hold no pickled code and load without it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InputNotFoundError, ModelError
from .checkpoints import load_into_unet, unet_config, unwrap
from .spec import ModelSpec

#: The built-in default model (see tiler/models/weights/MODEL_CARD.md).
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.pt"
#: Kept for callers of the earlier name.
unet_config_from_state_dict = unet_config


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def is_onnx(path: str | os.PathLike[str]) -> bool:
    """True for an ONNX file (by its ``.onnx`` suffix)."""
    return Path(path).suffix.lower() == ".onnx"


def read_checkpoint(path: Path, *, trust_model: bool = False) -> Any:
    """``torch.load`` a checkpoint safely (``weights_only=True``) unless ``trust_model``.

    Raises ModelError for unreadable files, and for checkpoints that need full unpickling (which
    can run arbitrary code) when ``trust_model`` is False, naming what they wanted to load.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise ModelError(f"{path}: cannot read the checkpoint ({_first_line(exc)})") from None
        if not trust_model:
            wanted = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if wanted:
                raise ModelError(
                    f"{path}: refusing to load: the checkpoint needs full unpickling, which can run "
                    f"arbitrary code (it imports {wanted.group(1)}); pass --trust-model "
                    "(trust_model=True) only if you trust its source, or re-save it as a plain state dict"
                ) from None
            reason = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise ModelError(
                f"{path}: cannot read the checkpoint safely ({reason}): the file is corrupt, or needs "
                "full unpickling, which can run arbitrary code; pass --trust-model only if you trust it"
            ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot read the checkpoint ({_first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError,
            AttributeError, ModuleNotFoundError) as exc:
        raise ModelError(f"{path}: cannot unpickle the checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(path: Path, *, trust_model: bool = False) -> tuple[Any, ModelSpec]:
    """Build the built-in UNet from a checkpoint file of either layout; return (module, spec).

    With ``trust_model``, a checkpoint holding a whole pickled ``nn.Module`` (alone or under
    ``"model"``) is used as it is.
    """
    import torch

    checkpoint = read_checkpoint(path, trust_model=trust_model)
    whole = checkpoint.get("model") if isinstance(checkpoint, dict) else checkpoint
    if isinstance(whole, torch.nn.Module):
        spec_of = spec_of_module(whole)
        meta = checkpoint.get("tiler", {}) if isinstance(checkpoint, dict) else {}
        return whole.eval(), ModelSpec.from_dict({**spec_of.to_dict(), "name": path.name, **meta})
    state, config, meta = unwrap(checkpoint)
    try:
        module, _layout = load_into_unet(state, config)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    spec = ModelSpec(
        name=path.name,
        in_channels=module.in_channels,
        out_channels=module.num_classes,
        multiple=module.multiple,
        context=module.context_radius(),
    )
    if meta:
        spec = ModelSpec.from_dict({**spec.to_dict(), **meta})
    return module, spec


def load_torchscript(path: Path) -> tuple[Any, ModelSpec]:
    """Load a TorchScript file and the ModelSpec stored in its ``tiler.json`` extra file."""
    import torch

    extra = {"tiler.json": ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in PyTorch 2.13 but still works
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        raise ModelError(f"{path}: cannot load the TorchScript model ({_first_line(exc)})") from None
    meta = json.loads(extra["tiler.json"]) if extra["tiler.json"] else {"name": path.name}
    return module, ModelSpec.from_dict(meta)


def spec_of_module(module: Any) -> ModelSpec:
    """A best guess of the metadata of an ``nn.Module`` given from Python."""
    return ModelSpec(
        name=type(module).__name__,
        in_channels=int(getattr(module, "in_channels", 0) or 0),
        out_channels=int(getattr(module, "num_classes", 0) or 0),
        multiple=int(getattr(module, "multiple", 1) or 1),
        context=int(module.context_radius()) if callable(getattr(module, "context_radius", None)) else 0,
    )


def load_module(model: Any = None, *, trust_model: bool = False) -> tuple[Any, ModelSpec]:
    """(``nn.Module``, spec) for an ``nn.Module``, None (built-in default) or a PyTorch file."""
    import torch

    if model is None:
        if not DEFAULT_WEIGHTS.exists():
            raise ModelError(f"the built-in default weights are missing ({DEFAULT_WEIGHTS})")
        module, spec = load_checkpoint(DEFAULT_WEIGHTS)
        # oneDNN runs this small UNet ~1.8x faster channels-last on the CPU (CUDA prefers it too);
        # NCHW inputs are converted by the first convolution. Logits agree within 1e-5.
        return module.to(memory_format=torch.channels_last), spec
    if isinstance(model, torch.nn.Module):
        return model, spec_of_module(model)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"cannot use a {type(model).__name__} as a model; pass an nn.Module or a path")
    path = Path(model)
    if not path.exists():
        raise InputNotFoundError(f"{path}: model file not found")
    if is_onnx(path):
        raise ModelError(f"{path}: an ONNX file is not a PyTorch model")
    if _is_torchscript(path):
        return load_torchscript(path)
    return load_checkpoint(path, trust_model=trust_model)


