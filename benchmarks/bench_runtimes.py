"""Runtimes side by side: the built-in UNet on 512 x 512 tiles, tiles/s and megapixels/s.

Columns (rows here): PyTorch fp32 and ONNX Runtime CPU always; on a machine with a usable NVIDIA
GPU also PyTorch fp16 and bf16 (autocast), ONNX Runtime CUDA (fp32 model, I/O binding) and
TensorRT (fp16 engines). Rows whose runtime is missing are listed as skipped with the reason.

What is timed is one runner call, as the engine makes it: a batch of uint8 (N, 3, 512, 512) tiles
in, normalisation, the model, float32 (N, C, 512, 512) logits back on the host. The runtimes take
turns batch by batch (round robin), so a load change on a shared machine hits all of them alike;
the median batch time is reported.

The model: tiler/models/weights/default.pt if present, else a randomly initialised UNet of the
same configuration (3 -> 3 channels, base_channels 16, bilinear); the speed does not depend on
the weight values. It is exported to ONNX (verified) in a temporary folder first.

    $ python benchmarks/bench_runtimes.py                 # about a minute on 2 CPU cores
    $ python benchmarks/bench_runtimes.py --batch-size 8 --rounds 10 --markdown
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from exporters.onnx import export_onnx
from tiler.models.files import DEFAULT_WEIGHTS, load_module
from tiler.models.spec import ModelSpec
from tiler.models.unet import UNet
from tiler.runners.base import Runner


@dataclass
class Row:
    name: str
    runner: Runner | None
    skipped: str = ""
    times: list[float] | None = None


def model_under_test() -> tuple[torch.nn.Module, ModelSpec, str]:
    if DEFAULT_WEIGHTS.exists():
        module, spec = load_module(None)
        return module, spec, f"default weights ({DEFAULT_WEIGHTS.name}, {module.config()})"
    torch.manual_seed(0)
    module = UNet(3, 3, base_channels=16, bilinear=True).eval()
    spec = ModelSpec(name="unet-random", in_channels=3, out_channels=3, multiple=UNet.multiple)
    return module, spec, f"random init, {module.config()} (default weights not found)"


def build_rows(module: torch.nn.Module, spec: ModelSpec, workdir: Path, batch: int, tile: int,
               threads: int | None) -> list[Row]:
    from tiler.runners.onnx import OnnxRunner, gpu_present
    from tiler.runners.torch import TorchRunner

    onnx32, onnx16 = workdir / "unet.onnx", workdir / "unet-fp16.onnx"
    export_onnx(module, spec, onnx32, log=lambda s: print(f"  onnx fp32 export {s}"))
    rows = [
        Row("PyTorch fp32 (CPU)", TorchRunner(module, spec, device="cpu")),
        Row("ONNX Runtime CPU (fp32)", OnnxRunner(onnx32, provider="cpu", threads=threads)),
    ]
    cuda = torch.cuda.is_available()
    why = "no CUDA GPU for PyTorch"
    rows.append(Row("PyTorch fp16 (CUDA)", TorchRunner(module, spec, device="cuda", precision="fp16"))
                if cuda else Row("PyTorch fp16 (CUDA)", None, why))
    rows.append(Row("PyTorch bf16 (CUDA)", TorchRunner(module, spec, device="cuda", precision="bf16"))
                if cuda else Row("PyTorch bf16 (CUDA)", None, why))
    for name, provider, precision, path in (
        ("ONNX Runtime CUDA (fp32)", "cuda", "fp32", onnx32),
        ("ONNX Runtime TensorRT (fp16)", "tensorrt", "fp16", onnx32),
    ):
        if not gpu_present():
            rows.append(Row(name, None, "no NVIDIA GPU"))
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner = OnnxRunner(path, provider=provider, precision=precision, trt_profile=(batch, tile, tile))
        if caught:
            rows.append(Row(name, None, str(caught[0].message)))
        else:
            rows.append(Row(name, runner))
    if gpu_present() and any(r.runner is not None and "CUDA" in r.name and "ONNX" in r.name for r in rows):
        export_onnx(module, spec, onnx16, fp16=True, log=lambda s: print(f"  onnx fp16 export {s}"))
        rows.append(Row("ONNX Runtime CUDA (fp16 model)", OnnxRunner(onnx16, provider="cuda")))
    return rows


def measure(rows: list[Row], batch: int, tile: int, rounds: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (batch, 3, tile, tile), dtype=np.uint8)
    active = [r for r in rows if r.runner is not None]
    for row in active:  # warm-up: first-call allocations, TensorRT engine builds
        row.runner(tiles)
        row.times = []
    start = time.perf_counter()
    done = 0
    while done < rounds or (time.perf_counter() - start < seconds and done < 10 * rounds):
        for row in active:
            run: Callable[[np.ndarray], np.ndarray] = row.runner  # type: ignore[assignment]
            t0 = time.perf_counter()
            run(tiles)
            row.times.append(time.perf_counter() - t0)  # type: ignore[union-attr]
        done += 1


def table(rows: list[Row], batch: int, tile: int, markdown: bool) -> str:
    head = ("runtime", "batch time (median)", "tiles/s", "megapixels/s", "runs")
    lines = []
    for row in rows:
        if not row.times:
            lines.append((row.name, "skipped", "", "", row.skipped))
            continue
        t = statistics.median(row.times)
        mps = batch * tile * tile / 1e6 / t
        lines.append((row.name, f"{t * 1000:.0f} ms", f"{batch / t:.2f}", f"{mps:.2f}", str(len(row.times))))
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(str(c[i])) for c in [head, *lines]) for i in range(len(head))]
    return "\n".join("  ".join(str(c[i]).ljust(widths[i]) for i in range(len(head))) for c in [head, *lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5, help="batches per runtime at least (default 5)")
    p.add_argument("--seconds", type=float, default=0.0, help="keep going round robin this long")
    p.add_argument("--threads", type=int, help="CPU threads for both runtimes (default: their own)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime as ort

    module, spec, what = model_under_test()
    print(f"model: {what}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, "
          f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    print(f"batches of {args.batch_size} uint8 tiles of {args.tile} x {args.tile}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_rows(module, spec, Path(tmp), args.batch_size, args.tile, args.threads)
        measure(rows, args.batch_size, args.tile, args.rounds, args.seconds)
    print(table(rows, args.batch_size, args.tile, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
