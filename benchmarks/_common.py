"""Shared pieces of the benchmarks: inputs, peak-memory measurement, subprocess cases, tables.

This module imports only NumPy and the standard library (tifffile lazily), so the competitor
environments can import it too. Every case runs in its own subprocess so that peak memories do not
mix; the child prints one JSON line prefixed with ``RESULT`` (see :func:`report`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: Generated inputs and outputs (made on first use); ``TILER_BENCH_WORK`` puts them elsewhere.
WORK = Path(os.environ.get("TILER_BENCH_WORK") or HERE / "_work")
ROOT = HERE.parent

# Workload settings of the issue (tile 512, overlap 64, batch 8).
TILE, OVERLAP, BATCH = 512, 64, 8
TIFF_TILE = 256  # stored TIFF tile edge (typical of whole-slide scanners)


# ----------------------------------------------------------------------------------- inputs
def texture(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """A deterministic tissue-like RGB uint8 image region (h, w, 3) of an infinite plane.

    Smooth blobs (sums of sinusoids) with fine noise: JPEG compresses it about as well as a
    stained slide, and any region of the plane can be made on its own (streamed writing).
    """
    yy = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    xx = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    a = np.sin(yy / 37.0) * np.cos(xx / 53.0) + 0.5 * np.sin((yy + xx) / 91.0)
    b = np.cos(yy / 23.0 + xx / 61.0) * np.sin(xx / 17.0)
    rng = np.random.default_rng((y0 * 1_000_003 + x0) & 0xFFFFFFFF)
    noise = rng.integers(0, 24, (h, w, 3), dtype=np.uint8)
    r = 200 - 60 * np.clip(a, 0, None)
    g = 150 - 70 * np.clip(a * b, -1, 1) ** 2
    bl = 210 - 50 * np.clip(b, 0, None)
    out = np.stack([r, g, bl], axis=-1) - noise
    return np.clip(out, 0, 255).astype(np.uint8)


def make_tiff(height: int, width: int, path: Path | None = None, quality: int = 90) -> Path:
    """A JPEG-compressed, 256-tiled RGB TIFF written tile by tile (never the whole image in RAM)."""
    import tifffile

    path = path or WORK / f"jpeg_{height}x{width}.tif"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t = TIFF_TILE

    def tiles():
        for y in range(0, height, t):
            for x in range(0, width, t):
                yield texture(y, x, t, t)

    tmp = path.with_suffix(".tmp.tif")
    tifffile.imwrite(
        tmp, tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(t, t),
        photometric="rgb", compression="jpeg", compressionargs={"level": quality}, bigtiff=True,
    )
    tmp.rename(path)
    return path


def make_array_file(size: int) -> Path:
    """A (size, size, 3) float32 image saved as .npy (loaded whole by each in-memory case)."""
    path = WORK / f"float_{size}.npy"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.float32, (size, size, 3))
    step = 1024
    for y in range(0, size, step):
        arr[y : y + step] = texture(y, 0, min(step, size - y), size) / np.float32(255)
    arr.flush()
    del arr
    path.with_suffix(".tmp.npy").rename(path)
    return path


def load_array(size: int) -> np.ndarray:
    """The in-memory input (made on first use): read fully into RAM (not memory-mapped)."""
    return np.load(make_array_file(size))


def make_unet_checkpoint(path: Path | None = None) -> Path:
    """The benchmark UNet: the shipped default weights if present, else ``UNet(3, 3, 16)``, seed 0."""
    import torch

    from tiler.models.files import DEFAULT_WEIGHTS
    from tiler.models.unet import UNet

    path = path or WORK / "unet.pt"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if DEFAULT_WEIGHTS.exists():
        ckpt = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
        torch.save(ckpt, path)
    else:
        torch.manual_seed(0)
        net = UNet(in_channels=3, num_classes=3, base_channels=16).eval()
        torch.save({"state_dict": net.state_dict(), "config": net.config()}, path)
    return path


def make_zero_cost_models() -> tuple[Path, Path]:
    """The zero-cost model ``x[:, :2]`` as a TorchScript file and an ONNX file (made once).

    Handed unchanged to ``tiler run`` and to the user's script: the same file on both sides.
    """
    import torch

    ts, onnx_path = WORK / "zero_cost.ts", WORK / "zero_cost.onnx"
    if ts.exists() and onnx_path.exists():
        return ts, onnx_path
    WORK.mkdir(parents=True, exist_ok=True)
    module = ZeroCost().eval()
    torch.jit.save(torch.jit.script(module), str(ts))
    axes = {0: "batch", 2: "height", 3: "width"}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 64, 64),), str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": axes, "logits": axes})
    return ts, onnx_path


def make_logits_model() -> Path:
    """A TorchScript 1x1 convolution 3 -> 2 channels (fixed weights): the float32 logits case."""
    import torch

    path = WORK / "conv1x1.ts"
    if path.exists():
        return path
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 1).eval()
    torch.jit.save(torch.jit.script(conv), str(path))
    return path


try:  # the competitors' environments have torch too; this module must import without it
    import torch as _torch

    class ZeroCost(_torch.nn.Module):
        """The zero-cost model as an ``nn.Module``: the first two channels, (N, 3, h, w) -> (N, 2, h, w)."""

        def forward(self, x: _torch.Tensor) -> _torch.Tensor:
            return x[:, :2]
except ImportError:  # pragma: no cover
    pass


# --------------------------------------------------------------------------- measurement
def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) on Linux; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since start or since :func:`reset_peak`) in MB."""
    cur = peak = 0.0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timer:
    """Times a region and records RSS before it and the peak RSS during it (whole process)."""

    def __enter__(self) -> Timer:
        self.base_mb, self.peak_before = rss_mb()
        reset_peak()
        self.cpu0 = _cpu()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = _cpu() - self.cpu0
        _, peak = rss_mb()
        self.peak_mb = max(peak, self.base_mb)


def report(name: str, timer: Timer, *, megapixels: float, tiles: int, **extra: Any) -> None:
    """Print one case's result as a ``RESULT {json}`` line (read by :func:`run_case`)."""
    res = {
        "name": name, "seconds": timer.seconds, "megapixels": megapixels, "tiles": tiles,
        "mp_s": megapixels / timer.seconds, "tiles_s": tiles / timer.seconds,
        "peak_mb": timer.peak_mb, "base_mb": timer.base_mb, "cpu_s": timer.cpu_seconds, **extra,
    }
    print("RESULT " + json.dumps(res), flush=True)


def byte_compile() -> None:
    """Write the ``.pyc`` files of tiler's package and of these benchmarks, as ``pip install`` of a
    wheel does: an editable install under ``PYTHONDONTWRITEBYTECODE=1`` (this project's VMs) would
    otherwise compile tiler's source in every process it starts (0.12 s of each ``tiler run``:
    ``import tiler.cli.main, onnxruntime`` 0.81-0.85 s without, 0.69-0.73 s with them)."""
    import compileall

    compileall.compile_dir(str(ROOT / "tiler"), quiet=1)
    compileall.compile_dir(str(HERE), maxlevels=0, quiet=1)  # not _work/ (the competitors' venvs)


def warm_memory(gib: float) -> None:
    """Touch and free ``gib`` GiB, so that the next process gets memory the VM's host has backed.

    On this project's VMs the first touch of guest memory that the host has not backed (or has
    taken back: free-page reporting) costs several times a touch of backed memory:
    ``np.ones(2 GiB)`` took 3.4 s in a fresh process, then 0.45 s; in a second process 1.4 s.
    Benchmarks of memory-heavy cases then measure the host, not the code; touching memory right
    before each case evens that out.
    """
    if gib > 0:
        block = np.ones(int(gib * (1 << 30)) // 8)
        del block


def run_process(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run ``cmd`` as a whole process, as a user runs it: wall seconds from start to exit, and the
    CPU seconds and peak RSS of that one process (``wait4``), or ``{"error": ...}``."""
    import signal
    import tempfile

    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, text=True)
        deadline = t0 + timeout
        hwm = 0.0  # the child's own VmHWM, polled (see below)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _vm_hwm_mb(proc.pid))
            if time.perf_counter() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            out.seek(0)
            tail = out.read().strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    # wait4's ru_maxrss is at least the *parent's* peak on Linux (the maxrss of the memory image a
    # process had before execve is kept, and subprocess starts children by vfork, sharing this
    # process's image): a benchmark that made a large input in-process reported that for every
    # child. VmHWM belongs to the child's own image; polled every 5 ms it is its peak.
    peak = hwm or usage.ru_maxrss / 1024
    return {"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": peak}


def _vm_hwm_mb(pid: int) -> float:
    """The peak RSS (VmHWM) of process ``pid`` so far, in MB; 0 where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_case(python: str | Path, script: Path, args: list[str], env: dict[str, str] | None = None,
             timeout: float = 3600) -> dict[str, Any]:
    """Run one case in a subprocess; its ``RESULT`` dict (or ``{"error": ...}``)."""
    cmd = [str(python), str(script), *args]
    # Competitors get no PYTHONPATH: the PyPI ``tiler`` must not find ours.
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


# --------------------------------------------------------------------------------- tables
def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` = (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("–" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """One line describing this machine."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 1024**2:.0f} GB RAM"
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {sys.version.split()[0]}, "
            f"load average {load:.1f} at start")
