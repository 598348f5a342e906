"""Keep freed heap memory in the process, so large temporary buffers are reused without page faults.

PyTorch on the CPU allocates and frees its activations (tens to hundreds of MB) for every batch.
glibc's malloc hands freed memory at the top of a heap back to the kernel, and the next batch
faults it in again page by page, each page zeroed by the kernel: measured on the built-in UNet,
as much system time as model time. Asking malloc to keep a pad of freed memory
(``mallopt(M_TOP_PAD)``) removes that: the UNet's CPU inference ran twice as fast
(benchmarks/RUNTIMES.md). The cost is that up to the pad stays mapped after a peak. A side
effect: setting any malloc parameter freezes glibc's adaptive mmap threshold at its 128 KiB start,
so freed blocks of 128 KiB to 32 MiB go back to the kernel at once. Measured, that costs nothing on
tiler's own runs (the engine recycles its large buffers), and raising the threshold to 32 MiB as
well made the in-memory benchmark 40 % slower, so the threshold is left alone.

``tiler`` (the command line) does this at start; library users opt in with
:func:`keep_freed_memory` (or ``MALLOC_TOP_PAD_`` in the environment, which this leaves alone).
It only matters for glibc (Linux); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``M_TOP_PAD`` in glibc's ``malloc.h``.
_M_TOP_PAD = -2


def keep_freed_memory(nbytes: int = 1 << 30) -> bool:
    """Ask glibc's malloc to keep up to ``nbytes`` of freed memory per heap instead of returning it.

    Returns True when the setting was made; False on other platforms or C libraries, or when the
    user chose a pad already (``MALLOC_TOP_PAD_``, or ``top_pad`` in ``GLIBC_TUNABLES``).
    """
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_TOP_PAD_" in os.environ or "top_pad" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no libc found, or one without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_TOP_PAD, min(int(nbytes), 2**31 - 1)))
