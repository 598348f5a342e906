"""tiler against its competitors on the path users run: the same model object on every side.

Every comparison hands the same model to every implementation (tile 512, overlap 64, batch 8,
gaussian window where the library has one):

1. ``memory`` — an 8192 x 8192 x 3 float32 array in memory, the zero-cost ``nn.Module``
   ``x[:, :2]`` (``benchmarks/_common.py ZeroCost``): ``tiler.predict(image, module)`` vs MONAI
   ``sliding_window_inference`` with the same module, each the first call in a fresh process, then
   again as the second call in a process (the first untimed: a pipeline's steady state). A NumPy
   function through tiler is shown as the "engine floor" (what the tiling machinery costs with no
   framework call at all); with ``--others``, pytorch-toolbelt and the PyPI ``tiler`` package with the same module.
2. ``file`` — a JPEG-tiled 8192 x 16384 TIFF -> zarr of uint8 probabilities, the zero-cost model
   as one TorchScript file and one ONNX file: ``tiler run`` as a user types it (a whole process:
   start, imports, model load, default pyramid; ``--no-pyramid`` as a second row) vs the script a
   user writes without us (tifffile.imread, MONAI, softmax, uint8, zarr), also a whole process, with
   the same file. Then ``tiler run`` at 32768 rows (peak memory flat with height) and float32
   logits of a TorchScript 1x1 convolution at 32768 x 16384.
3. ``unet`` — the built-in UNet (the same checkpoint) on a 2048 x 2048 JPEG TIFF: ``tiler run``
   vs the same script, whole processes.

Rounds interleave all the cases of a workload (drifting load on a shared machine hits them
alike); each row reports the median of its rounds, and ratios are medians of the per-round
ratios. Whole processes are timed from start to exit, with their own CPU time and peak RSS
(``wait4``). Competitors run in their own environments (``bash benchmarks/setup_competitors.sh``). ::

    python benchmarks/bench_competitors.py [--quick] [--rounds N] [--only memory file unet] [--others]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

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
TILER = Path(sys.executable).parent / "tiler"  # the console script a user runs


def tiler_run(tif: Path, model: Path, *extra: str) -> list[str]:
    """``tiler run`` exactly as a user types it (output removed before each round)."""
    out = C.WORK / f"cli_{tif.stem}.zarr"
    return [str(TILER), "run", str(tif), "--model", str(model), "-o", str(out), "--kind", "probs",
            "--tile", str(C.TILE), "--overlap", str(C.OVERLAP), "--batch-size", str(C.BATCH), "--window", "gaussian",
            "--device", "cpu", "--no-progress", *extra]


Case = dict[str, Any]


def workloads(s: dict, others: bool) -> dict[str, list[Case]]:
    """workload -> cases; ``process``: timed as a whole process; ``vs``: the case it is compared to."""
    ts, onnx = C.make_zero_cost_models()
    conv = C.make_logits_model()
    unet = C.make_unet_checkpoint()
    m, (fh, fw), (th, tw), (uh, uw) = s["memory"], s["file"][0], s["file"][1], s["unet"]
    eng, comp = HERE / "bench_engine.py", HERE / "_competitors.py"
    tif, tall, small = C.WORK / f"jpeg_{fh}x{fw}.tif", C.WORK / f"jpeg_{th}x{tw}.tif", C.WORK / f"jpeg_{uh}x{uw}.tif"
    py = sys.executable
    memory = [
        {"label": "tiler.predict, nn.Module", "cmd": [py, eng, "--case", "memory", "--size", m, "--model", "module"],
         "mp": m * m / 1e6, "vs": "MONAI sliding_window_inference, same nn.Module"},
        {"label": "engine floor: tiler.predict, NumPy function", "mp": m * m / 1e6,
         "cmd": [py, eng, "--case", "memory", "--size", m, "--model", "function"]},
        {"label": "MONAI sliding_window_inference, same nn.Module", "mp": m * m / 1e6,
         "cmd": [VENV_COMP, comp, "monai", "--size", m]},
        # The second call in the same process: a pipeline calling either image after image. The
        # first call also pays the first touch of fresh memory, which on this project's VMs costs
        # about 1 ms per MB (see README), more than the tiling itself
        {"label": "tiler.predict, nn.Module, second call in the process", "mp": m * m / 1e6,
         "cmd": [py, eng, "--case", "memory", "--size", m, "--model", "module", "--second-call"],
         "vs": "MONAI, same nn.Module, second call in the process"},
        {"label": "engine floor, second call in the process", "mp": m * m / 1e6,
         "cmd": [py, eng, "--case", "memory", "--size", m, "--model", "function", "--second-call"]},
        {"label": "MONAI, same nn.Module, second call in the process", "mp": m * m / 1e6,
         "cmd": [VENV_COMP, comp, "monai", "--size", m, "--second-call"]},
    ]
    if others:
        memory += [
            {"label": "pytorch-toolbelt ImageSlicer/TileMerger, same nn.Module", "mp": m * m / 1e6,
             "cmd": [VENV_COMP, comp, "toolbelt", "--size", m]},
            {"label": "tiler (PyPI) Tiler/Merger, same nn.Module", "mp": m * m / 1e6,
             "cmd": [VENV_PKG, comp, "tilerpkg", "--size", m]},
        ]
    script = "tifffile+MONAI+zarr script"
    file = []
    for fmt, model in (("TorchScript", ts), ("ONNX", onnx)):
        file += [
            {"label": f"tiler run, {fmt}", "cmd": tiler_run(tif, model), "process": True, "mp": fh * fw / 1e6,
             "vs": f"{script}, {fmt}"},
            {"label": f"tiler run --no-pyramid, {fmt}", "cmd": tiler_run(tif, model, "--no-pyramid"),
             "process": True, "mp": fh * fw / 1e6, "vs": f"{script}, {fmt}"},
            {"label": f"{script}, {fmt}", "cmd": [VENV_COMP, comp, "user", "--size", fh, fw, "--model-file", model],
             "process": True, "mp": fh * fw / 1e6},
        ]
    file += [
        {"label": f"tiler run, TorchScript, {th} rows", "cmd": tiler_run(tall, ts), "process": True,
         "mp": th * tw / 1e6},
        {"label": f"tiler run --kind logits (float32, 2 ch), 1x1 conv, {th} rows",
         "cmd": [*tiler_run(tall, conv), "--kind", "logits"], "process": True, "mp": th * tw / 1e6},
    ]
    unet_cases = [
        {"label": "tiler run, built-in UNet", "cmd": tiler_run(small, unet), "process": True, "mp": uh * uw / 1e6,
         "vs": f"{script}, built-in UNet"},
        {"label": f"{script}, built-in UNet", "cmd": [VENV_COMP, comp, "user", "--size", uh, uw, "--model-file", unet],
         "process": True, "mp": uh * uw / 1e6},
    ]
    return {"memory": memory, "file": file, "unet": unet_cases}


def run_one(case: Case) -> dict[str, Any]:
    cmd = [str(c) for c in case["cmd"]]
    env = {"PYTHONPATH": str(C.ROOT)} if cmd[0] in (sys.executable, str(TILER)) else None
    if case.get("process"):
        for path in C.WORK.glob("cli_*.zarr"):
            shutil.rmtree(path, ignore_errors=True)
        for path in C.WORK.glob("cli_*.owner.json"):
            path.unlink()
        r = C.run_process(cmd, env=env)
    else:
        r = C.run_case(cmd[0], Path(cmd[1]), cmd[2:], env=env)
    if "error" not in r:
        r["mp_s"] = case["mp"] / r["seconds"]
    return r


COLUMNS = [
    ("workload", "workload", ""), ("label", "implementation", ""), ("seconds", "s (median)", ".2f"),
    ("cpu_s", "CPU s", ".1f"), ("mp_s", "MP/s", ".1f"), ("peak_mb", "peak RSS MB", ".0f"),
    ("speedup", "tiler speed-up", ".2f"), ("range", "per-round speed-ups", ""),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small inputs (smoke test)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3); medians reported")
    p.add_argument("--warm-gib", type=float, default=4.0,
                   help="GiB touched before each case, so that it gets memory the VM's host has backed "
                        "(default 4; 0: off)")
    p.add_argument("--only", nargs="+", choices=["memory", "file", "unet"])
    p.add_argument("--others", action="store_true", help="also pytorch-toolbelt and the PyPI tiler (memory)")
    args = p.parse_args()
    for venv in (VENV_COMP, VENV_PKG):
        if not venv.exists():
            sys.exit(f"{venv} is missing: run `bash benchmarks/setup_competitors.sh` first")
    sizes = SIZES["quick" if args.quick else "full"]
    print(f"machine: {C.machine()}", flush=True)
    C.byte_compile()  # tiler as a user's install has it
    E.prepare(sizes)
    rows = []
    for workload, cases in workloads(sizes, args.others).items():
        if args.only and workload not in args.only:
            continue
        runs: list[list[dict[str, Any]]] = [[] for _ in cases]
        for _ in range(max(1, args.rounds)):
            for case, case_runs in zip(cases, runs):
                C.warm_memory(args.warm_gib)
                case_runs.append(run_one(case))
        by_label = {c["label"]: (c, r) for c, r in zip(cases, runs)}
        for case, case_runs in zip(cases, runs):
            ok = [r for r in case_runs if "error" not in r]
            if not ok:
                print(f"{workload} / {case['label']}: {case_runs[0]['error']}", file=sys.stderr)
                rows.append({"workload": workload, "label": case["label"]})
                continue
            row = {"workload": workload, "label": case["label"]}
            for key in ("seconds", "cpu_s", "peak_mb", "mp_s"):
                row[key] = statistics.median(r[key] for r in ok)
            if case.get("vs") in by_label:
                theirs = by_label[case["vs"]][1]
                ratios = [t["seconds"] / o["seconds"] for o, t in zip(case_runs, theirs)
                          if "error" not in o and "error" not in t]
                if ratios:
                    row["speedup"] = statistics.median(ratios)
                    row["range"] = f"{min(ratios):.2f}–{max(ratios):.2f}"
            rows.append(row)
        print(C.table([r for r in rows if r["workload"] == workload], COLUMNS), flush=True)
    print("\n" + C.table(rows, COLUMNS))


if __name__ == "__main__":
    main()
