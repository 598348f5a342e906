"""PyTorch -> TorchScript, verified, with the model's metadata in the extra file ``tiler.json``.

``torch.jit.script`` is tried first (it keeps Python control flow, e.g. the UNet's padding for odd
sizes); a module it cannot compile is traced with ``torch.jit.trace`` on a random batch instead.
Half precision is chosen at run time (``tiler run --precision fp16``), so there is no fp16 export.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiler.errors import ModelError, SettingsError
from tiler.models.spec import ModelSpec

from .verify import Verification, random_batches, verify


def export_torchscript(
    module: Any,
    spec: ModelSpec,
    out: str | os.PathLike[str],
    *,
    tolerance: float | None = None,
    log: Callable[[str], object] | None = print,
    name: str | None = None,
) -> Verification:
    """Compile ``module`` to TorchScript at ``out`` with ``spec`` embedded, and verify it.

    ``name``: the model name stored in the file (default: ``out``'s file name).

    Returns the :class:`~exporters.verify.Verification`; the file is removed if it fails.
    """
    import torch

    if not spec.in_channels:
        raise SettingsError("the model's input channels are unknown (no tiler metadata in it); pass "
                            "--in-channels N (Python: overrides={'in_channels': N})")
    out = Path(out)
    model = copy.deepcopy(module).cpu().float().eval()
    batches = random_batches(spec.in_channels, spec.multiple)
    how = "script"
    meta = ModelSpec.from_dict({**spec.to_dict(), "name": name or out.name}).to_json()
    with warnings.catch_warnings():
        # PyTorch 2.13 deprecates TorchScript (it still works); tracer notes on shape checks
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if isinstance(model, torch.jit.ScriptModule):
            scripted = model
        else:
            try:
                scripted = torch.jit.script(model)
            except (RuntimeError, torch.jit.frontend.NotSupportedError):
                how = "trace"
                scripted = torch.jit.trace(model, torch.from_numpy(batches[0]))
        torch.jit.save(scripted, str(out), _extra_files={"tiler.json": meta})
        loaded = torch.jit.load(str(out), map_location="cpu")

    def run(x: Any) -> Any:
        with torch.inference_mode():
            return loaded(torch.from_numpy(x)).float().numpy()

    try:
        result = verify(run, model, batches, tolerance=tolerance, log=log)
    except ModelError as exc:
        out.unlink(missing_ok=True)
        raise ModelError(f"{out}: {exc}") from None
    if log is not None and how == "trace":
        log("note: the model could not be scripted and was traced; control flow is fixed")
    return result
