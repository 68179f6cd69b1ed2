"""Board what-if on a long kernel log: ``python bench/bench_board.py [LINES]`` prints
the CPU seconds of ``board_whatif`` (parse, placement, the smallest-``vmalloc=``
search) on the rpi-5.4 test board with a log of LINES lines (default 30,000): failed
requests of 1 to 16 MiB, each logged by the vmap warning and its warn_alloc line, and
a noise line after each pair.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from pyvmalloc.config import Machine
from pyvmalloc.report.board import board_whatif

BOARD = Path(__file__).resolve().parents[1] / "tests" / "data" / "boards" / "rpi-5.4"


def board_log(nlines: int, seed: int = 1) -> list[str]:
    """``nlines`` lines of a board log whose failures never fit (the worst case for
    the ``vmalloc=`` search before it refused hopeless candidates untried)."""
    rng = random.Random(seed)
    out: list[str] = []
    t = 50.0
    while len(out) < nlines:
        n = rng.choice([1, 2, 4, 8, 16]) << 20
        t += 0.01
        out += [
            f"[{t:12.6f}] vmap allocation for size {n + 4096} failed: use vmalloc=<size> "
            "to increase size",
            f"[{t:12.6f}] modprobe: vmalloc: allocation failure: {n} bytes, "
            "mode:0xcc0(GFP_KERNEL), nodemask=(null),cpuset=/,mems_allowed=0",
            f"[{t:12.6f}] CPU: 2 PID: 311 Comm: modprobe Tainted: G         C        5.4.83-v7+",
        ]
    return out[:nlines]


def bench_board_whatif(nlines: int = 30_000) -> float:
    """CPU seconds of one ``board_whatif`` over a ``nlines``-line log (arm, 1 GiB,
    vmalloc=400M, 5.4 rules)."""
    lines = board_log(nlines)
    target = Machine(arch="arm", ram=1 << 30, vmalloc_reserve=400 << 20, kernel_release="5.4")
    t0 = time.process_time()
    board_whatif(BOARD / "vmallocinfo", lines, target=target, profile="5.4")
    return time.process_time() - t0


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 30_000
    print(f"board what-if, {n:,} log lines: {bench_board_whatif(n):.3f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
