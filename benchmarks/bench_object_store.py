"""Object stores against local disk: a JPEG TIFF run from a local S3 server to it, and with latency.

A moto S3 server (``ThreadedMotoServer``) runs on 127.0.0.1 in a helper process, with a TCP relay
in front of it that sleeps a fixed delay before relaying each request (``tests/_s3.py``'s
``Proxy``): the delay stands for the round trip to a remote region; concurrent requests overlap
it, sequential ones add it up. The run itself is in-process ``tiler.run`` with a zero-cost
TorchScript model (the engine and the I/O dominate), uint8 probabilities, default tiling:

- ``local -> local``: the TIFF and the output on the local disk;
- ``s3 -> local``: the TIFF read from S3 (isolates the input's requests and bytes);
- ``s3 -> s3``: both on the local S3 server;
- ``s3 -> s3, +D ms``: both through the relay adding D ms per request.

Requests and bytes are tiler's own count (:data:`tiler.sources.remote.COUNTERS`: every object-store
request, header and owner-record reads included). Cases alternate round by round; best of N.

    python benchmarks/bench_object_store.py [--size 8192 16384] [--rounds 2] [--delay-ms 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import ROOT, WORK, machine, make_tiff  # noqa: E402
from bench_durability import zero_cost_model  # noqa: E402

SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests._s3 import Proxy, start_moto
server, url = start_moto()
proxy = Proxy(url, delay={delay})
print(url, proxy.url, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(8192, 16384), metavar=("H", "W"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    args = ap.parse_args()
    image = make_tiff(*args.size)
    model = zero_cost_model(WORK / "first_two.pt")
    helper = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), delay=args.delay_ms / 1000)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert helper.stdout is not None
    direct, delayed = helper.stdout.readline().split()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": direct})
    import boto3
    import s3fs

    import tiler
    from tiler.sources.remote import COUNTERS

    boto3.client("s3", endpoint_url=direct).create_bucket(Bucket="bench")
    s3fs.S3FileSystem().put(str(image), "bench/scan.tif")
    url = "s3://bench/scan.tif"
    mp = args.size[0] * args.size[1] / 1e6
    cases = {
        "local -> local": (str(image), WORK / "os_local.zarr", direct),
        "s3 -> local": (url, WORK / "os_s3_local.zarr", direct),
        "s3 -> s3": (url, "s3://bench/out.zarr", direct),
        f"s3 -> s3, +{args.delay_ms:g} ms/request": (url, "s3://bench/out_delayed.zarr", delayed),
    }
    best: dict[str, dict[str, float]] = {}
    try:
        for _ in range(args.rounds):
            for name, (source, out, endpoint) in cases.items():
                os.environ["AWS_ENDPOINT_URL"] = endpoint
                s3fs.S3FileSystem.clear_instance_cache()
                before = COUNTERS.snapshot()
                t0 = time.perf_counter()
                result = tiler.run(source, str(model), out=str(out), overwrite=True, device="cpu", output="probs")
                seconds = time.perf_counter() - t0
                requests, nbytes, retries = (a - b for a, b in zip(COUNTERS.snapshot(), before))
                row = {"s": seconds, "requests": requests, "bytes": nbytes, "retries": retries, "tiles": result.tiles}
                if name not in best or seconds < best[name]["s"]:
                    best[name] = row
    finally:
        assert helper.stdin is not None
        helper.stdin.close()
        helper.wait(timeout=30)
    print(f"machine: {machine()}")
    print(f"tiler.run {args.size[0]}x{args.size[1]} JPEG TIFF (tiles 256) -> uint8 probs, zero-cost TorchScript, "
          f"default settings, pyramid on, best of {args.rounds}\n")
    print("| case | seconds | MP/s | vs local | requests/MP | MB/MP | retries |\n|---|---:|---:|---:|---:|---:|---:|")
    local = best["local -> local"]["s"]
    for name, r in best.items():
        print(f"| {name} | {r['s']:.2f} | {mp / r['s']:.1f} | {local / r['s']:.2f}x | "
              f"{r['requests'] / mp:.1f} | {r['bytes'] / mp / 1e6:.3f} | {int(r['retries'])} |")


if __name__ == "__main__":
    main()
