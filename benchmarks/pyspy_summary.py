"""Summarise py-spy raw (collapsed) stacks: share of samples per thread, self time per line."""

from __future__ import annotations

import collections
import sys


def main(path: str, top: int = 25) -> None:
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            total += int(n)
            threads[frames[0]] += int(n)
            own[frames[-1]] += int(n)
    print(f"{total} samples")
    for name, n in threads.most_common(8):
        print(f"{n / total:6.1%}  thread {name}")
    for name, n in own.most_common(top):
        print(f"{n / total:6.1%}  {name}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
