"""The engine and its competitors side by side, in one run, on the same data and settings.

Workloads (tile 512, overlap 64, batch 8, gaussian window where the library has one):

1. machinery, in memory: an 8192 x 8192 x 3 float32 array, zero-cost model ``x[:, :2]``:
   tiler.predict vs MONAI ``sliding_window_inference``, pytorch-toolbelt ``ImageSlicer`` /
   ``TileMerger`` (pyramid weights) and the PyPI ``tiler`` package's ``Tiler`` / ``Merger`` (hann).
2. file to file: a JPEG-tiled 8192 x 16384 TIFF -> zarr of uint8 probabilities, zero-cost model:
   tiler.run vs the script a user writes without us (tifffile.imread, MONAI, softmax, uint8, zarr);
   tiler.run again at 32768 rows (the script would need about 28 GB there).
3. model-bound: the built-in UNet on a 2048 x 2048 JPEG TIFF -> zarr probabilities, tiler.run vs
   the same user script with the same UNet.

Competitors run in their own virtual environments (``bash benchmarks/setup_competitors.sh``); each
case runs in its own subprocess, so peak memories (peak RSS of that process) do not mix. ::

    python benchmarks/bench_competitors.py [--quick] [--repeat N] [--only memory file unet]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import _common as C  # noqa: E402
import bench_engine as E  # noqa: E402

VENV_COMP = C.WORK / "venv-competitors" / "bin" / "python"
VENV_PKG = C.WORK / "venv-tilerpkg" / "bin" / "python"
SIZES = {
    "full": {"memory": 8192, "file": [(8192, 16384), (32768, 16384)], "unet": (2048, 2048)},
    "quick": {"memory": 2048, "file": [(2048, 4096), (8192, 4096)], "unet": (1024, 1024)},
}


def workloads(s: dict) -> dict[str, list[tuple[str, Path | str, Path, list[str]]]]:
    """workload -> [(label, python, script, args)]; the first entry is ours."""
    ours, comp = sys.executable, HERE / "_competitors.py"
    m, (fh, fw), (th, tw), (uh, uw) = s["memory"], s["file"][0], s["file"][1], s["unet"]
    eng = HERE / "bench_engine.py"
    return {
        "memory": [
            ("tiler.predict", ours, eng, ["--case", "memory", "--size", str(m)]),
            ("MONAI sliding_window_inference", VENV_COMP, comp, ["monai", "--size", str(m)]),
            ("pytorch-toolbelt ImageSlicer/TileMerger", VENV_COMP, comp, ["toolbelt", "--size", str(m)]),
            ("tiler (PyPI) Tiler/Merger", VENV_PKG, comp, ["tilerpkg", "--size", str(m)]),
        ],
        "file": [
            ("tiler.run", ours, eng, ["--case", "file", "--size", str(fh), str(fw)]),
            ("tifffile+MONAI+zarr script", VENV_COMP, comp, ["user", "--size", str(fh), str(fw)]),
            (f"tiler.run at {th} rows", ours, eng, ["--case", "file", "--size", str(th), str(tw)]),
        ],
        "unet": [
            ("tiler.run", ours, eng, ["--case", "file", "--model", "unet", "--size", str(uh), str(uw)]),
            ("tifffile+MONAI+zarr script", VENV_COMP, comp, ["user", "--model", "unet", "--size", str(uh), str(uw)]),
        ],
    }


COLUMNS = [
    ("workload", "workload", ""), ("label", "implementation", ""), ("seconds", "s", ".2f"),
    ("cpu_s", "CPU s", ".1f"), ("mp_s", "MP/s", ".2f"), ("tiles_s", "tiles/s", ".1f"),
    ("peak_mb", "peak MB", ".0f"), ("speedup", "tiler speed-up", ".2f"),
    ("cpu_speedup", "CPU-time ratio", ".2f"), ("mem_ratio", "peak / tiler's", ".2f"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small inputs (smoke test)")
    p.add_argument("--repeat", type=int, default=1,
                   help="N rounds, each running every case once (interleaved); keep each case's fastest")
    p.add_argument("--only", nargs="+", choices=["memory", "file", "unet"])
    args = p.parse_args()
    for venv in (VENV_COMP, VENV_PKG):
        if not venv.exists():
            sys.exit(f"{venv} is missing: run `bash benchmarks/setup_competitors.sh` first")
    sizes = SIZES["quick" if args.quick else "full"]
    print(f"machine: {C.machine()}")
    E.prepare({**sizes, "unet": sizes["unet"]})
    C.make_tiff(*sizes["unet"])
    env = {"PYTHONPATH": str(C.ROOT)}
    rows = []
    for workload, cases in workloads(sizes).items():
        if args.only and workload not in args.only:
            continue
        results = []
        # rounds interleave the implementations, so that drifting load on a shared machine hits
        # them alike; each keeps its fastest run
        runs_of: list[list[dict]] = [[] for _ in cases]
        for _ in range(max(1, args.repeat)):
            for runs, (_, python, script, case_args) in zip(runs_of, cases):
                runs.append(C.run_case(python, script, case_args, env=env if python == sys.executable else None))
        for runs, (label, *_) in zip(runs_of, cases):
            ok = [r for r in runs if "error" not in r]
            r = min(ok, key=lambda r: r["seconds"]) if ok else runs[0]
            if "error" in r:
                print(f"{workload} / {label}: {r['error']}", file=sys.stderr)
            results.append({**r, "workload": workload, "label": label})
        ours = results[0]
        for r in results[1:]:
            if "error" not in r and "error" not in ours and not r["label"].startswith("tiler.run"):
                r["speedup"] = ours["mp_s"] / r["mp_s"]
                # CPU seconds per megapixel, theirs / ours: robust to other load on the machine
                r["cpu_speedup"] = (r["cpu_s"] / r["megapixels"]) / (ours["cpu_s"] / ours["megapixels"])
                r["mem_ratio"] = r["peak_mb"] / ours["peak_mb"]
        rows.extend(results)
        print(C.table(results, COLUMNS), flush=True)
    print("\n" + C.table(rows, COLUMNS))


if __name__ == "__main__":
    main()
