"""Peak memory and time of tiler eval, tiler stats and tiler export-result on large outputs.

For each size N, a (2, N, N) uint8 probability output (with its pyramid) and an (N, N) uint8 truth
zarr are generated chunk by chunk (no model); then each command runs in a fresh process through
the CLI entry point, and the process's peak resident memory (``ru_maxrss``) is reported.

    $ python benchmarks/bench_outofcore.py --sizes 8192 32768
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def make(work: Path, size: int, chunk: int) -> tuple[Path, Path]:
    import numpy as np
    import zarr
    from bench_pyramid import make_output

    from tiler.store.pyramid import build_pyramid

    out = work / f"probs_{size}.zarr"
    make_output(str(out), size, 2, chunk)
    g = zarr.open_group(str(out), mode="r+")
    g.attrs["tiler"] = {"complete": True, "settings": {"output": "probs"}}
    build_pyramid(g, method="mean")
    truth = zarr.create_array(str(work / f"truth_{size}.zarr"), shape=(size, size), chunks=(chunk, chunk),
                              dtype="uint8", fill_value=0)
    for y0 in range(0, size, chunk):
        ys = np.arange(y0, y0 + chunk)[:, None]
        xs = np.arange(size)[None, :]
        truth[y0 : y0 + chunk, :] = ((ys // 41 + xs // 47) % 2).astype(np.uint8)
    return out, work / f"truth_{size}.zarr"


def measure(argv: list[str]) -> dict[str, float]:
    from tiler.cli.main import main as cli

    t0 = time.perf_counter()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(argv)
    return {"rc": code, "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--_measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure)))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_outofcore_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                        f"from bench_outofcore import make; from pathlib import Path; "
                        f"make(Path({str(work)!r}), {size}, {args.chunk})"], check=True)
        print(f"made {size}: {time.perf_counter() - t0:.1f} s", flush=True)
        out, truth = work / f"probs_{size}.zarr", work / f"truth_{size}.zarr"
        tif = work / f"probs_{size}.ome.tif"
        for name, argv in [
            ("eval", ["eval", str(out), str(truth)]),
            ("stats", ["stats", str(truth)]),
            ("export-result tiff", ["export-result", str(out), "-o", str(tif), "--overwrite"]),
            ("export-result png", ["export-result", str(out), "-f", "png", "-o", str(work / "p.png"),
                                   "--overwrite"]),
        ]:
            res = subprocess.run([sys.executable, __file__, "--_measure", *argv], check=True,
                                 capture_output=True, text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            image = f"{size} x {size} uint8 (truth)" if name == "stats" else f"2 x {size} x {size} uint8"
            r.update(command=name, size=size, image=image)
            if name == "export-result tiff":
                r["file_mib"] = round(tif.stat().st_size / 2**20, 1)
            rows.append(r)
            print(json.dumps(r), flush=True)
        shutil.rmtree(out)
        shutil.rmtree(truth)
        tif.unlink(missing_ok=True)
    print("\n| command | image | time | peak RSS |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| tiler {r['command']} | {r['image']} | {r['seconds']} s | "
              f"{r['peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
