"""Checkpoints of UNets trained elsewhere, mapped onto the built-in :class:`~tiler.models.unet.UNet`.

Two layouts are recognised from the state-dict keys:

``seed``
    The built-in UNet's own layout: ``in_conv``, ``down1``..``down4``, ``up1``..``up4``, ``out_conv``.
``pytorch-unet``
    The layout of the widely used milesial/Pytorch-UNet: ``inc``, ``down1``..``down4``,
    ``up1``..``up4``, ``outc``. Inside, both use ``double_conv`` / ``maxpool_conv`` / ``up`` /
    ``conv``, so the mapping renames the top level only. Its training script stores an extra
    ``mask_values`` list beside the tensors; entries that are not tensors are dropped.

Width (``base_channels``), input channels, classes and bilinear vs transposed-convolution
upsampling are read from the tensor shapes. A prefix in front of every model key (``module.``
from ``DataParallel``, ``_orig_mod.`` from ``torch.compile``, ``model.`` from a Lightning module)
is stripped. Convolutions with a bias before BatchNorm (older Pytorch-UNet releases) are folded
into the BatchNorm running mean, which is exact in evaluation mode.

>>> from tiler.models.unet import UNet
>>> state = {"module.inc." + k[len("in_conv."):] if k.startswith("in_conv.") else "module." + k: v
...          for k, v in UNet(3, 2, base_channels=8).state_dict().items()}
>>> state = {k.replace("out_conv", "outc"): v for k, v in state.items()}
>>> mapped, layout = to_builtin(state)
>>> layout, unet_config(mapped)
('pytorch-unet', {'in_channels': 3, 'num_classes': 2, 'base_channels': 8, 'bilinear': True})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ModelError

#: Top-level module renames, layout -> {their name: built-in name}.
LAYOUTS: dict[str, dict[str, str]] = {
    "seed": {"in_conv": "in_conv", "out_conv": "out_conv"},
    "pytorch-unet": {"inc": "in_conv", "outc": "out_conv"},
}
#: The key that identifies each layout (after the top-level name).
_ANCHOR = ".double_conv.0.weight"
#: Wrapper keys under which training scripts store the state dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def unwrap(checkpoint: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(state dict, UNet config, tiler metadata) from a raw or wrapped checkpoint.

    Accepts a state dict alone or under one of :data:`WRAPPER_KEYS`, with optional ``"config"``
    (UNet constructor arguments) and ``"tiler"`` (:class:`~tiler.models.spec.ModelSpec` fields).
    """
    if not isinstance(checkpoint, Mapping):
        raise ModelError(f"the checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    for key in WRAPPER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and any(_is_tensor(v) for v in inner.values()):
            return dict(inner), dict(checkpoint.get("config") or {}), dict(checkpoint.get("tiler") or {})
    return dict(checkpoint), {}, {}


def detect_layout(state: Mapping[str, Any]) -> tuple[str, str]:
    """(layout name, key prefix) of a state dict; ModelError if it is no known UNet layout."""
    for key in state:
        for layout, renames in LAYOUTS.items():
            for first in renames:
                anchor = first + _ANCHOR
                if key.endswith(anchor) and (key == anchor or key[: -len(anchor)].endswith(".")):
                    return layout, key[: -len(anchor)]
    sample = ", ".join(list(state)[:4]) or "none"
    raise ModelError(
        "the state dict is not a UNet of a known layout (expected keys like "
        f"'in_conv{_ANCHOR}' or 'inc{_ANCHOR}'; first keys: {sample})"
    )


def _fold_conv_bias(state: dict[str, Any]) -> None:
    """Fold ``double_conv.{0,3}.bias`` into the following BatchNorm (``running_mean -= bias``)."""
    for key in [k for k in state if k.endswith((".double_conv.0.bias", ".double_conv.3.bias"))]:
        bn = key[: -len("0.bias")] + str(int(key[-6]) + 1) + ".running_mean"
        if bn in state:
            state[bn] = state[bn] - state.pop(key)


def to_builtin(state: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Rename a state dict of either layout to the built-in UNet's keys; return (state, layout)."""
    layout, prefix = detect_layout(state)
    renames = LAYOUTS[layout]
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not key.startswith(prefix) or not _is_tensor(value):
            continue  # outside the model (a Lightning module's loss) or not a tensor (mask_values)
        key = key[len(prefix):]
        top, dot, rest = key.partition(".")
        out[renames.get(top, top) + dot + rest] = value
    _fold_conv_bias(out)
    return out, layout


def unet_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in UNet's constructor arguments from a state dict in its own (seed) layout."""
    try:
        first = state["in_conv.double_conv.0.weight"]
        last = state["out_conv.conv.weight"]
    except KeyError as exc:
        raise ModelError(f"the state dict has no key {exc} of the built-in UNet") from None
    return {
        "in_channels": int(first.shape[1]),
        "num_classes": int(last.shape[0]),
        "base_channels": int(first.shape[0]),
        "bilinear": "up1.up.weight" not in state,
    }


def load_into_unet(state: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Build the built-in UNet and load a state dict of either layout; return (module, layout).

    Raises ModelError naming the missing and unexpected keys (in the checkpoint's own names) or
    the tensors whose shapes differ.
    """
    from .unet import UNet

    mapped, layout = to_builtin(state)
    module = UNet(**{**unet_config(mapped), **(config or {})})
    expected = module.state_dict()
    for key in expected:  # BatchNorm counters: absent from some older checkpoints, unused in eval
        if key.endswith(".num_batches_tracked") and key not in mapped:
            mapped[key] = expected[key]
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        back = {new: old for old, new in LAYOUTS[layout].items()}

        def theirs(key: str) -> str:
            top, dot, rest = key.partition(".")
            return back.get(top, top) + dot + rest

        raise ModelError(
            f"the checkpoint ({layout} layout) does not fit the built-in UNet; "
            f"missing keys: {_few(missing, theirs)}; unexpected keys: {_few(unexpected, theirs)}"
        )
    wrong = [
        f"{k} {tuple(mapped[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items() if tuple(mapped[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ModelError(
            f"the checkpoint ({layout} layout) has tensors of other shapes than the built-in UNet "
            f"{module.config()}: {_few(wrong)}"
        )
    module.load_state_dict(mapped, strict=True)
    return module.eval(), layout


def _few(keys: list[str], fmt: Any = str, n: int = 6) -> str:
    if not keys:
        return "none"
    shown = ", ".join(fmt(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")
