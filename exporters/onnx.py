"""PyTorch -> ONNX, verified, with the model's metadata in ``metadata_props``.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): with torch 2.13
both exporters handle the built-in UNet, and this one takes 0.2 s where the dynamo exporter takes
about 10 s and prints a page of progress. The graph has one input ``input`` (N, C, h, w) and one
output ``logits`` (N, C_out, h, w), with dynamic batch and (unless ``size`` fixes them) spatial
axes; tiles must still be multiples of the spec's ``multiple``. Opset :data:`DEFAULT_OPSET` runs
on ONNX Runtime 1.13 and later.

fp16: the model is converted with ``module.half()`` and exported with a half-precision input, so
the whole graph (input and output included) is float16; :class:`~tiler.runners.onnx.OnnxRunner`
casts tiles to float16 and logits back to float32. (onnxconverter-common's converter is not a
dependency.)
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tiler.errors import ModelError, SettingsError
from tiler.models.spec import ModelSpec

from .verify import Verification, random_batches, verify

DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(
    module: Any,
    spec: ModelSpec,
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    size: int | None = None,
    tolerance: float | None = None,
    log: Callable[[str], object] | None = print,
    name: str | None = None,
) -> Verification:
    """Export ``module`` to ONNX at ``out``, store ``spec`` in it, and verify it.

    Parameters
    ----------
    module : an ``nn.Module`` mapping (N, C, h, w) float32 -> (N, C_out, h, w).
    spec : its metadata; ``in_channels`` must be known.
    opset : the ONNX opset.
    fp16 : export in half precision.
    size : fix the spatial axes to ``size`` x ``size`` (for models that cannot take other sizes).
    tolerance, log : see :func:`exporters.verify.verify`.

    ``name``: the model name stored in the file (default: ``out``'s file name).

    Returns the :class:`~exporters.verify.Verification`; the file is removed if it fails.
    """
    import onnx
    import torch

    if not spec.in_channels:
        raise SettingsError("the model's input channels are unknown (no tiler metadata in it); pass "
                            "--in-channels N (Python: overrides={'in_channels': N})")
    out = Path(out)
    model = copy.deepcopy(module).cpu().eval()
    model = model.half() if fp16 else model.float()
    batches = random_batches(spec.in_channels, spec.multiple, size=size)
    example = torch.from_numpy(batches[0])
    example = example.half() if fp16 else example
    axes = {0: "batch"} if size else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # the legacy exporter's deprecation notice, and tracer notes on Python-level shape checks
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (example,), str(out), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"ONNX export failed (opset {opset}): {first}") from None
    proto = onnx.load(str(out))
    meta = {**spec.to_dict(), "name": name or out.name}
    del proto.metadata_props[:]
    proto.metadata_props.add(key="tiler", value=ModelSpec.from_dict(meta).to_json())
    proto.doc_string = f"{spec.name} exported by tiler ({'fp16' if fp16 else 'fp32'}, opset {opset})"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))

    from tiler.runners.onnx import OnnxRunner

    try:
        runner = OnnxRunner(out, provider="cpu")
        reference = copy.deepcopy(module).cpu().float().eval()
        return verify(runner.run, reference, batches, fp16=fp16, tolerance=tolerance, log=log)
    except ModelError as exc:
        out.unlink(missing_ok=True)
        hint = "" if size else "; if the model needs a fixed input size, pass --fixed-size N"
        raise ModelError(f"{out}: {exc}{hint}") from None


def run_onnx(path: str | os.PathLike[str], x: np.ndarray) -> np.ndarray:
    """Run an exported file on one float32 (N, C, h, w) batch on the CPU (for checks and tests)."""
    from tiler.runners.onnx import OnnxRunner

    return OnnxRunner(path, provider="cpu").run(x)
