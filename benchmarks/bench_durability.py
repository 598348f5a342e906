"""What flushing the output to disk costs: the completion fsync (always on) and ``--durable``.

Each case is ``tiler run`` as a user runs it (a fresh process: start-up, model load, the run),
on a JPEG TIFF with a zero-cost TorchScript model, so the engine and the disk dominate:

- ``no fsync``: the completion flush switched off (``TILER_BENCH_NO_FSYNC=1``, read only here, by
  a sitecustomize shim that replaces :func:`tiler.store.sink.fsync_tree` with a no-op) — what tiler did
  before the flush existed;
- ``default``: every file flushed before ``complete`` is recorded;
- ``--durable``: each stripe flushed before it is recorded as done, too.

Cases alternate round by round (the host is shared; single runs move by 10 %), best of N each.

    python benchmarks/bench_durability.py [--size 8192 8192] [--rounds 3] [--output probs]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import ROOT, WORK, machine, make_tiff  # noqa: E402

SHIM = """
import os
if os.environ.get("TILER_BENCH_NO_FSYNC") == "1":
    import tiler.store.sink
    tiler.store.sink.fsync_tree = lambda *a, **k: None
"""


def zero_cost_model(path: Path) -> Path:
    """A TorchScript model returning its first two channels: no compute, real runner path."""
    import json

    import torch

    class FirstTwo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :2]

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"name": "first-two", "in_channels": 3, "out_channels": 2}
        torch.jit.save(torch.jit.script(FirstTwo()), str(path), _extra_files={"tiler.json": json.dumps(meta)})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(8192, 8192), metavar=("H", "W"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default="probs", choices=("logits", "probs", "labels"))
    args = ap.parse_args()
    image = make_tiff(*args.size)
    model = zero_cost_model(WORK / "first_two.pt")
    shim = Path(tempfile.mkdtemp()) / "sitecustomize.py"
    shim.write_text(SHIM)
    out = WORK / "durability.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), str(ROOT)])}
    cases = {"no fsync": (["--no-pyramid"], {"TILER_BENCH_NO_FSYNC": "1"}),
             "default": (["--no-pyramid"], {}),
             "--durable": (["--no-pyramid", "--durable"], {})}
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (flags, extra) in cases.items():
            cmd = [sys.executable, "-m", "tiler.cli.main", "run", str(image), "-m", str(model), "-o", str(out),
                   "--overwrite", "--device", "cpu", "--kind", args.output, *flags]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env={**env, **extra}, capture_output=True)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    mp = args.size[0] * args.size[1] / 1e6
    waited = critical_path_flush(image, model, out, args.output)
    print(f"machine: {machine()}")
    print(f"tiler run {args.size[0]}x{args.size[1]} JPEG TIFF -> {args.output}, zero-cost TorchScript, "
          f"best of {args.rounds} (whole process)\n")
    print("| case | seconds | MP/s | vs no fsync |\n|---|---:|---:|---:|")
    for name, s in best.items():
        print(f"| {name} | {s:.2f} | {mp / s:.1f} | {s / best['no fsync'] - 1:+.1%} |")
    total, flush = waited
    print(f"\nin-process tiler.run (default, pyramid on): {flush:.3f} s of {total:.2f} s waiting for the "
          f"flush before complete ({flush / total:.1%})")


def critical_path_flush(image: Path, model: Path, out: Path, output: str) -> tuple[float, float]:
    """Seconds of a default run, and of those the ones spent in ``ZarrSink.set_complete``'s flush
    (the background flush of chunk rows runs beside the work and is not counted)."""
    sys.path.insert(0, str(ROOT))
    import tiler
    import tiler.store.sink as sink

    spent = [0.0]
    real = sink.ZarrSink.set_complete

    def timed(self):
        t0 = time.perf_counter()
        real(self)
        spent[0] += time.perf_counter() - t0

    sink.ZarrSink.set_complete = timed
    t0 = time.perf_counter()
    tiler.run(image, str(model), out=out, overwrite=True, device="cpu", output=output)
    return time.perf_counter() - t0, spent[0]


if __name__ == "__main__":
    main()
