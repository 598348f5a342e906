"""Benchmark the tiler engine: megapixels/s, tiles/s and peak memory, one subprocess per case.

Cases (tile 512, overlap 64, batch 8, gaussian window):

* ``memory``  — ``tiler.predict`` on an 8192 x 8192 x 3 float32 array with the zero-cost
  ``nn.Module`` (``x[:, :2]``), and with a NumPy function as the "engine floor" (no framework call).
* ``file``    — ``tiler.run`` from a JPEG-tiled 8192 x 16384 TIFF to a zarr of uint8 probabilities,
  the zero-cost model as a TorchScript file (and the NumPy function as the engine floor); again at
  32768 rows to show that peak memory does not grow with the height.
* ``unet``    — the built-in UNet (shipped weights, or a random-init ``UNet(3, 3, 16)``) from a TIFF
  to zarr, against the model alone on the same batches of tiles (the runner on the decoded uint8
  batches, and on the loader's normalised channels-last batches: the module's own time on the
  pipeline's input): three alternating rounds of each, best against best and the median of the
  rounds' ratios (end-to-end / model-only).

Each case runs in a fresh process set up as ``tiler run`` sets itself up (freed memory kept:
``tiler.malloc.keep_freed_memory``).

Inputs are generated once into ``benchmarks/_work/`` (streamed, tile by tile); a single case
(``--case ... --size ...``) makes the inputs it needs. Run::

    python benchmarks/bench_engine.py            # full sizes (a few minutes on 2 cores)
    python benchmarks/bench_engine.py --quick    # small sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import _common as C  # noqa: E402

SIZES = {
    "full": {"memory": 8192, "file": [(8192, 16384), (32768, 16384)], "unet": (2048, 2048)},
    "quick": {"memory": 2048, "file": [(2048, 4096), (8192, 4096)], "unet": (1024, 1024)},
}


#: Rounds of (model alone, whole run) in the unet case; the best of each is compared.
UNET_ROUNDS = 3

#: Level 0 only, like the competitors' scripts: the default OME-Zarr pyramid (levels 1, 2, ...
#: built after level 0, see tiler/store/pyramid.py) is extra work that they do not do.
RUN_OPTIONS = {"pyramid": False}


def zero_cost(x):
    """The zero-cost "model": the first two channels of the (float32) tiles."""
    return x[:, :2]


def zero_runner():
    from tiler.runners.base import FunctionRunner

    return FunctionRunner(zero_cost, normalise=False)


# ------------------------------------------------------------------------- child cases
def case_memory(size: int, model: str = "module", second_call: bool = False) -> None:
    """``tiler.predict`` on the in-memory array: the zero-cost ``nn.Module`` (what users pass), or
    the NumPy function (``function``: the engine floor, no framework call). ``second_call``: time the
    second call in this process (a pipeline calling ``predict`` image after image), not the first."""
    import tiler

    C.make_array_file(size)
    image = C.load_array(size)
    runner = zero_runner() if model == "function" else C.ZeroCost().eval()

    def call():
        return tiler.predict(image, runner, tile=C.TILE, overlap=C.OVERLAP, window="gaussian", batch_size=C.BATCH,
                             device="cpu", overrides=None if model == "function" else {"scale": 1.0})

    if second_call:
        first = call()
        del first  # its memory is freed before the timed call, as in a loop over images
    with C.Timer() as t:
        out = call()
    n = _tiles((size, size))
    C.report(f"tiler memory {model} {size}x{size}", t, megapixels=size * size / 1e6, tiles=n,
             out_shape=list(out.shape), second_call=second_call)


def case_file(height: int, width: int, model: str = "ts") -> None:
    """``tiler.run`` TIFF -> zarr probabilities in this process: the zero-cost TorchScript file
    (``ts``), the NumPy function (``function``: the engine floor) or the built-in UNet."""
    import tiler

    path = C.make_tiff(height, width)  # made on first use
    out = C.WORK / f"out_{height}x{width}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    if model == "function":
        runner = zero_runner()
    elif model == "unet":
        runner = C.make_unet_checkpoint()
    else:
        runner = C.make_zero_cost_models()[0]
    with C.Timer() as t:
        res = tiler.run(path, runner, out=out, overwrite=True, output="probs", device="cpu",
                        tile=C.TILE, overlap=C.OVERLAP, window="gaussian", batch_size=C.BATCH, **RUN_OPTIONS)
    C.report(f"tiler file {model} {height}x{width}", t, megapixels=height * width / 1e6, tiles=res.tiles,
             model_s=res.stats.model_seconds)
    shutil.rmtree(out, ignore_errors=True)


def case_unet(height: int, width: int) -> None:
    import numpy as np

    import tiler
    from tiler.config import Settings
    from tiler.engine.job import Job
    from tiler.engine.load import TileLoader
    from tiler.runners.factory import load_runner
    from tiler.sources import open_source

    path = C.make_tiff(height, width)  # made on first use
    ckpt = C.make_unet_checkpoint()
    out = C.WORK / f"out_unet_{height}x{width}.zarr"
    runner = load_runner(ckpt, device="cpu")
    # The exact batches the engine computes, for the model-only time: as decoded (uint8, the
    # runner normalises them and hands its module channels-last copies: what calling the runner
    # on tiles costs) and as the pipeline's loader hands them to the runner (normalised float32,
    # already channels-last: the module's own time on the pipeline's input)
    settings = Settings(tile=C.TILE, overlap=C.OVERLAP, window="gaussian", batch_size=C.BATCH, output="probs")
    source = open_source(path)
    job = Job.create(source, runner, settings)
    norm = runner.normalisation(source.dtype)
    batches, ready = [], []
    for block in job.partition.blocks():
        rows, cols = job.plan.tiles_touching(block)
        for b in TileLoader(source, job.plan, rows, cols, batch_size=C.BATCH):
            if len(b.index):
                batches.append(np.array(b.tiles))
        for b in TileLoader(source, job.plan, rows, cols, batch_size=C.BATCH, normalisation=norm,
                            channels_last=runner.channels_last):
            if len(b.index):
                ready.append(b.tiles)
    runner(batches[0])  # warm-up (allocator, oneDNN kernels)

    # Alternate the model alone (both inputs) and the whole run, UNET_ROUNDS times; compare the
    # best of each, and the median of each round's ratio (on a shared machine all drift by several
    # per cent from minute to minute).
    model_runs, module_runs, runs = [], [], []
    for _ in range(UNET_ROUNDS):
        m0, c0 = time.perf_counter(), C._cpu()
        for b in batches:
            runner(b)
        model_runs.append((time.perf_counter() - m0, C._cpu() - c0))
        m0 = time.perf_counter()
        for b in ready:
            runner(b, normalised=True)
        module_runs.append(time.perf_counter() - m0)
        with C.Timer() as t:
            res = tiler.run(path, ckpt, out=out, overwrite=True, device="cpu", output="probs",
                            tile=C.TILE, overlap=C.OVERLAP, window="gaussian", batch_size=C.BATCH, **RUN_OPTIONS)
        runs.append((t, res))
    model_only, model_cpu = min(model_runs)
    module_only = min(module_runs)
    t, res = min(runs, key=lambda r: r[0].seconds)
    tiles = sum(len(b) for b in batches)
    C.report(f"tiler unet {height}x{width}", t, megapixels=height * width / 1e6, tiles=tiles,
             model_only_s=model_only, model_only_cpu_s=model_cpu, module_only_s=module_only,
             pipeline_s=res.stats.seconds, model_in_pipeline_s=res.stats.model_seconds, rounds=UNET_ROUNDS,
             all_seconds=[round(r[0].seconds, 3) for r in runs],
             all_model_only_s=[round(m[0], 3) for m in model_runs],
             all_module_only_s=[round(m, 3) for m in module_runs],
             ratio=t.seconds / model_only, pipeline_ratio=res.stats.seconds / model_only,
             module_ratio=t.seconds / module_only,
             median_round_ratio=statistics.median(r[0].seconds / m[0] for r, m in zip(runs, model_runs)),
             median_round_module_ratio=statistics.median(r[0].seconds / m for r, m in zip(runs, module_runs)),
             cpu_ratio=t.cpu_seconds / model_cpu)
    shutil.rmtree(out, ignore_errors=True)


def _tiles(shape: tuple[int, int]) -> int:
    from tiler.config import Settings
    from tiler.plan.lattice import TilePlan

    s = Settings(tile=C.TILE, overlap=C.OVERLAP, window="gaussian")  # the lattice the runs use
    return TilePlan.create(shape, tile=s.tile, overlap=s.overlap, margin=s.margin, context=s.border_context).n_tiles


# ------------------------------------------------------------------------------ parent
def prepare(sizes: dict) -> None:
    """Generate the inputs (once) in benchmarks/_work."""
    C.WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    C.make_array_file(sizes["memory"])
    for h, w in sizes["file"]:
        C.make_tiff(h, w)
    C.make_tiff(*sizes["unet"])
    C.make_unet_checkpoint()
    C.make_zero_cost_models()
    C.make_logits_model()
    if time.perf_counter() - t0 > 1:
        print(f"(inputs generated in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def engine_cases(sizes: dict) -> list[tuple[str, list[str]]]:
    """(workload key, child arguments) of every engine case."""
    m = sizes["memory"]
    cases = [("memory", ["--case", "memory", "--size", str(m), "--model", "module"]),
             ("memory, engine floor (NumPy function)", ["--case", "memory", "--size", str(m), "--model", "function"])]
    for i, (h, w) in enumerate(sizes["file"]):
        cases.append((f"file{i}", ["--case", "file", "--size", str(h), str(w), "--model", "ts"]))
    h, w = sizes["file"][0]
    cases.append(("file0, engine floor (NumPy function)",
                  ["--case", "file", "--size", str(h), str(w), "--model", "function"]))
    cases.append(("unet", ["--case", "unet", "--size", *map(str, sizes["unet"])]))
    return cases


COLUMNS = [
    ("name", "case", ""), ("seconds", "s", ".2f"), ("cpu_s", "CPU s", ".2f"), ("mp_s", "MP/s", ".1f"),
    ("tiles_s", "tiles/s", ".1f"), ("peak_mb", "peak MB", ".0f"), ("base_mb", "RSS before MB", ".0f"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small inputs (smoke test)")
    p.add_argument("--case", choices=["memory", "file", "unet"],
                   help="run one case in this process and print its RESULT line (inputs made on first use "
                        "under benchmarks/_work, or $TILER_BENCH_WORK)")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="with --case: the image size (memory: N; file, unet: HEIGHT WIDTH)")
    p.add_argument("--model", default=None, choices=["module", "function", "ts", "unet"],
                   help="with --case memory/file: the zero-cost nn.Module, NumPy function or TorchScript "
                        "file, or the UNet (default: module for memory, ts for file)")
    p.add_argument("--second-call", action="store_true",
                   help="with --case memory: time the second call in the process (the first one untimed)")
    p.add_argument("--only", nargs="+", help="run only these workloads (memory file0 file1 unet)")
    args = p.parse_args()
    if args.case:  # a child: set up the process as `tiler run` does (see tiler/malloc.py)
        from tiler.malloc import keep_freed_memory

        keep_freed_memory()
    if args.case == "memory":
        return case_memory(args.size[0], model=args.model or "module", second_call=args.second_call)
    if args.case == "file":
        return case_file(*args.size, model=args.model or "ts")
    if args.case == "unet":
        return case_unet(*args.size)

    sizes = SIZES["quick" if args.quick else "full"]
    print(f"machine: {C.machine()}")
    prepare(sizes)
    rows = []
    for key, case_args in engine_cases(sizes):
        if args.only and key not in args.only:
            continue
        r = C.run_case(sys.executable, Path(__file__), case_args, env={"PYTHONPATH": str(C.ROOT)})
        r.setdefault("name", key)
        rows.append(r)
        if "error" in r:
            print(f"{key}: {r['error']}", file=sys.stderr)
    print(C.table(rows, COLUMNS))
    for r in rows:
        if "model_only_s" in r:
            print(f"\n{r['name']}: end to end {r['seconds']:.2f} s (pipeline {r['pipeline_s']:.2f} s, "
                  f"of which model {r['model_in_pipeline_s']:.2f} s), model alone on the same {r['tiles']} "
                  f"tiles {r['model_only_s']:.2f} s (best of {r['rounds']} alternating rounds each): "
                  f"ratio {r['ratio']:.3f} (pipeline without set-up {r['pipeline_ratio']:.3f}; median of "
                  f"the rounds' ratios {r['median_round_ratio']:.3f}); CPU time "
                  f"{r['cpu_s']:.1f} s vs {r['model_only_cpu_s']:.1f} s: ratio {r['cpu_ratio']:.3f}. The module "
                  f"alone on the loader's normalised channels-last batches {r['module_only_s']:.2f} s: ratio "
                  f"{r['module_ratio']:.3f} (median of the rounds' ratios {r['median_round_module_ratio']:.3f})")


if __name__ == "__main__":
    main()
