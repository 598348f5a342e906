"""Run one bench_engine case in this process, for a profiler (see PROFILE.md).

    PYTHONPATH=$PWD py-spy record -r 200 -f raw -o mem.raw -- python benchmarks/profile_case.py memory 8192
    python benchmarks/pyspy_summary.py mem.raw
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine as E

if __name__ == "__main__":
    case, sizes = sys.argv[1], [int(v) for v in sys.argv[2:]]
    {"memory": E.case_memory, "file": E.case_file, "unet": E.case_unet}[case](*sizes)
