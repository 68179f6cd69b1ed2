"""Parser throughput: ``python bench/bench_parse.py [TRACE ...]`` prints lines/s.

Without arguments it builds a 1,000,000-line file from the bundled default capture's
events and parses that.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pyvmalloc.trace.parse import iter_trace, open_text

DEFAULT = Path(__file__).resolve().parents[1] / "src/pyvmalloc/data/captures/default"


def bench_parse(path: str | Path, repeat: int = 3) -> float:
    """Parse ``path`` ``repeat`` times (streaming, events discarded); return the best
    rate in lines per second (like ``timeit``, the best run is the least disturbed)."""
    with open_text(path) as f:
        nlines = sum(1 for _ in f)
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.process_time()
        for _ev in iter_trace(path):
            pass
        best = min(best, time.process_time() - t0)
    return nlines / best


def make_big_trace(dest: Path, nlines: int = 1_000_000) -> Path:
    """Write a tracefs-format file of ``nlines`` event lines (repeating a real capture)."""
    with open_text(DEFAULT) as f:
        events = [ln for ln in f if ln.strip() and not ln.startswith("#") and "vmap" in ln]
    with dest.open("w") as out:
        k = 0
        while k < nlines:
            chunk = events[: nlines - k]
            out.writelines(chunk)
            k += len(chunk)
    return dest


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv]
    with tempfile.TemporaryDirectory() as tmp:
        if not paths:
            paths = [make_big_trace(Path(tmp) / "big.trace")]
        for p in paths:
            rate = bench_parse(p)
            print(f"{p}: {rate:,.0f} lines/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
