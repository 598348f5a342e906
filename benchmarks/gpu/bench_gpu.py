"""The GPU path in one short run: one table, every row a measurement (or the reason it has none).

Rows (each on the same image and the same tiles; tile 512, overlap 64):

* the model alone on the engine's batches vs ``tiler.predict`` end to end, for the built-in UNet
  (shipped weights) and a base-32 UNet, in fp32 / fp16 / bf16: tiles/s, MP/s, the ratio, and the
  GPU utilisation sampled by ``nvidia-smi`` while the case ran;
* channels-last vs contiguous memory format for the model alone (fp16);
* blending on the device (``TorchRunner(..., blend_on_device=True)``) vs on the host;
* one ``compile=True`` case (fp16, built-in UNet);
* CUDA out-of-memory halving: an oversized batch (the engine halves it until it fits; the batch it
  settled on and the time are reported);
* MONAI ``sliding_window_inference`` with the same module on the same image
  (``sw_device="cuda"``, ``device="cpu"``), fp16 autocast like tiler's fp16 row;
* ``tiler run`` from a zlib TIFF (a compression the machine's tifffile decodes without
  imagecodecs) to a zarr of uint8 probabilities, as a user runs it;
* ONNX Runtime's CUDA / TensorRT providers: measured if present, else reported as not measurable.

``--dry-run`` runs every case on the CPU at tiny sizes (the same code paths, the same table): how
the script is checked on a machine without a GPU. ::

    bash benchmarks/gpu/run.sh            # on the GPU machine (<= 5 minutes on one H200)
    python benchmarks/gpu/bench_gpu.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TILE, OVERLAP = 512, 64


class GpuSampler:
    """``nvidia-smi`` utilisation samples (every 100 ms) while a case runs; mean %, or None."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi") and torch.cuda.is_available():
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip().split(",")[0]))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> tuple[float, float | None, Any]:
    """Best wall seconds of ``repeat`` calls (after one warm-up), GPU utilisation of the timed calls."""
    out = fn()
    sync(device)
    best = float("inf")
    with GpuSampler() as gpu:
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return best, gpu.mean, out


def unet(base: int) -> tuple[torch.nn.Module, Any]:
    """(module, spec): the built-in UNet with its shipped weights (base 0), or a random base-``base`` UNet."""
    from tiler.models.files import load_module
    from tiler.models.unet import UNet

    if base == 0:
        return load_module(None)
    torch.manual_seed(0)
    module, spec = load_module(None)
    return UNet(in_channels=3, num_classes=spec.out_channels or 2, base_channels=base).eval(), spec


def engine_batches(image: np.ndarray, batch: int) -> list[np.ndarray]:
    """The uint8 (N, 3, 512, 512) batches tiler.predict computes for ``image``, as the loader makes them."""
    from tiler.config import Settings
    from tiler.engine.job import Job
    from tiler.engine.load import TileLoader
    from tiler.runners.base import FunctionRunner
    from tiler.sources import open_source

    source = open_source(image)
    job = Job.create(source, FunctionRunner(lambda x: x), Settings(tile=TILE, overlap=OVERLAP, batch_size=batch))
    out = []
    for block in job.partition.blocks():
        rows, cols = job.plan.tiles_touching(block)
        out += [np.array(b.tiles) for b in TileLoader(source, job.plan, rows, cols, batch_size=batch) if len(b.index)]
    return out


Row = dict[str, Any]


def model_vs_end_to_end(image: np.ndarray, device: torch.device, precision: str, base: int, batch: int,
                        repeat: int, **runner_kw: Any) -> Row:
    import tiler
    from tiler.runners.torch import TorchRunner

    module, spec = unet(base)
    runner = TorchRunner(module, spec, device=device, precision=precision, **runner_kw)
    batches = engine_batches(image, batch)
    tiles = sum(len(b) for b in batches)
    model_s, model_gpu, _ = timed(lambda: [runner(b) for b in batches], device, repeat)
    run_s, run_gpu, _ = timed(
        lambda: tiler.predict(image, runner, tile=TILE, overlap=OVERLAP, batch_size=batch), device, repeat)
    mp = image.shape[0] * image.shape[1] / 1e6
    return {"tiles": tiles, "model tiles/s": tiles / model_s, "model GPU %": model_gpu,
            "tiler tiles/s": tiles / run_s, "tiler MP/s": mp / run_s, "tiler GPU %": run_gpu,
            "end to end / model": run_s / model_s}


def channels_last(image: np.ndarray, device: torch.device, batch: int, repeat: int) -> Row:
    module, _ = unet(0)
    module = module.to(device).eval()
    x = torch.rand(batch, 3, TILE, TILE, device=device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    out: Row = {}
    for name, fmt in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last)):
        m, xx = module.to(memory_format=fmt), x.contiguous(memory_format=fmt)

        def call(m: torch.nn.Module = m, xx: torch.Tensor = xx) -> Any:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                return m(xx)

        s, gpu, _ = timed(call, device, repeat)
        out[f"{name} tiles/s"] = batch / s
        out[f"{name} GPU %"] = gpu
    return out


def oom_halving(image: np.ndarray, device: torch.device) -> Row:
    """An oversized batch: CUDA raises OutOfMemoryError, the engine halves until it fits."""
    import tiler
    from tiler.runners.torch import TorchRunner

    if device.type != "cuda":
        return {"note": "no out-of-memory on the CPU device (host memory is not a device limit)"}
    module, spec = unet(32)
    runner = TorchRunner(module, spec, device=device, precision="fp32")
    tiles_total = len(engine_batches(image, 10_000)[0])
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        tiler.predict(image, runner, tile=TILE, overlap=OVERLAP, batch_size=tiles_total)
        sync(device)
        seconds = time.perf_counter() - t0
    caught = [str(w.message) for w in seen if "out of device memory" in str(w.message)]
    return {"asked batch": tiles_total, "settled batch": caught[0].split("on ")[1].split(" tiles")[0] if caught else
            "(fitted)", "seconds": seconds, "tiles/s": tiles_total / seconds}


def monai_same_module(image: np.ndarray, device: torch.device, batch: int, repeat: int) -> Row:
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return {"note": "MONAI not installed (run.sh installs it from benchmarks/gpu/_wheels)"}
    module, spec = unet(0)
    module = module.to(device).eval()
    scale = 1 / 255
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def call() -> Any:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() * scale
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
            return sliding_window_inference(x, (TILE, TILE), batch, module, overlap=OVERLAP / TILE,
                                            mode="gaussian", sw_device=device, device="cpu")

    s, gpu, _ = timed(call, device, repeat)
    mp = image.shape[0] * image.shape[1] / 1e6
    return {"MP/s": mp / s, "GPU %": gpu}


def cli_run(size: int, device: torch.device, batch: int, work: Path) -> Row:
    import os

    import tifffile

    tif = work / f"zlib_{size}.tif"
    if not tif.exists():
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        tifffile.imwrite(tif, img, tile=(256, 256), compression="zlib", photometric="rgb",
                         maxworkers=os.cpu_count())  # tiles compressed in parallel
    out = work / "cli.zarr"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "tiler.cli.main", "run", str(tif), "-o", str(out), "--kind", "probs",
           "--device", str(device), "--precision", "fp16" if device.type == "cuda" else "fp32",
           "--batch-size", str(batch), "--no-progress"]
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        seconds = time.perf_counter() - t0
    if proc.returncode:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1]}
    return {"seconds (whole process)": seconds, "MP/s": size * size / 1e6 / seconds, "GPU %": gpu.mean}


def _env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH, the rest (run.sh's folder
    of carried wheels: zarr, dask) kept."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def onnx_providers() -> Row:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"note": "onnxruntime not installed"}
    have = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
    if not gpu:
        return {"note": f"not measurable here: onnxruntime {ort.__version__} has only {', '.join(have)}"}
    return {"note": f"available: {', '.join(gpu)} (run benchmarks/bench_runtimes.py --device cuda)"}


def table(rows: list[tuple[str, Row]]) -> str:
    lines = ["| case | measurements |", "|---|---|"]
    for name, row in rows:
        cells = []
        for k, v in row.items():
            if v is None:
                v = "n/a"
            elif isinstance(v, float):
                v = f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
            cells.append(f"{k}: {v}")
        lines.append(f"| {name} | {'; '.join(cells)} |")
    return "\n".join(lines)


def cases(args: argparse.Namespace, device: torch.device, work: Path) -> Iterator[tuple[str, Callable[[], Row]]]:
    size, batch, repeat = args.size, args.batch, args.repeat
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    for base, name in ((0, "built-in UNet"), (32, "UNet base 32")):
        for p in precisions:
            yield f"{name} {p}", lambda b=base, p=p: model_vs_end_to_end(image, device, p, b, batch, repeat)
    p16 = "fp16" if device.type == "cuda" else "bf16"
    yield f"built-in UNet {p16}, blended on the device", lambda: model_vs_end_to_end(
        image, device, p16, 0, batch, repeat, blend_on_device=True)
    yield f"built-in UNet {p16}, memory format (model alone)", lambda: channels_last(image, device, batch, repeat)
    yield "UNet base 32, oversized batch (OOM halving)", lambda: oom_halving(image, device)
    yield f"MONAI sliding_window_inference, same module, {p16} autocast", lambda: monai_same_module(
        image, device, batch, repeat)
    yield f"tiler run zlib TIFF {args.cli_size}² -> probs", lambda: cli_run(args.cli_size, device, batch, work)
    yield "ONNX Runtime CUDA / TensorRT", onnx_providers
    # last: compiling takes the longest and is the likeliest to run into run.sh's time limit
    yield f"built-in UNet {p16}, compile=True", lambda: model_vs_end_to_end(
        image, device, p16, 0, batch, 1, compile=batch, pad_batches=batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes: the same code paths and table")
    p.add_argument("--size", type=int, help="in-memory image edge (default 8192; 640 with --dry-run)")
    p.add_argument("--cli-size", type=int, help="TIFF edge for `tiler run` (default 16384; 640 with --dry-run)")
    p.add_argument("--batch", type=int, help="tiles per model call (default 32; 2 with --dry-run)")
    p.add_argument("--repeat", type=int, default=None, help="timed calls per case, best kept (default 3; 1)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    dry = args.dry_run
    args.size = args.size or (640 if dry else 8192)
    args.cli_size = args.cli_size or (640 if dry else 16384)
    args.batch = args.batch or (2 if dry else 32)
    args.repeat = args.repeat or (1 if dry else 3)
    if not dry and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --dry-run to check the script on the CPU")
    device = torch.device("cpu" if dry else "cuda")
    where = "CPU (dry run)" if dry else torch.cuda.get_device_name(device)
    print(f"device: {where}; torch {torch.__version__}; Python {sys.version.split()[0]}", flush=True)
    rows: list[tuple[str, Row]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in cases(args, device, Path(tmp)):
            t0 = time.perf_counter()
            try:
                row = fn()
            except Exception as exc:  # one failed case must not cost the others (device time is scarce)
                row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            print(f"{name}: {json.dumps(row, default=str)} ({time.perf_counter() - t0:.1f} s)", flush=True)
            rows.append((name, row))
            if args.json:  # after every case: what ran is kept if the time limit stops the rest
                args.json.write_text(json.dumps(rows, default=str, indent=1))
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
