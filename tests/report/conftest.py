"""Helpers for the explorer's tests: expected values from the trace alone."""

from __future__ import annotations

from pathlib import Path

from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.replay import load_capture
from pyvmalloc.trace.snapshot import parse_vmallocinfo


def kernel_busy_counts(cap: Path) -> tuple[int, list[int]]:
    """Busy areas after each replayed event, from the trace and snapshot alone."""
    trace, snap, _meta = load_capture(cap)
    info = parse_vmallocinfo(snap)
    parsed = parse_trace(trace)
    start = parsed.marker("snapshot-end")
    end = parsed.marker("end-snapshot-begin")
    events = [
        e
        for e in parsed.events
        if (start is None or e.line > start.line) and (end is None or e.line < end.line)
    ]
    n = len(info.busy)
    counts = []
    for e in events:
        if e.name == "alloc_vmap_area" and not e.failed:
            n += 1
        elif e.name == "free_vmap_area_noflush":
            n -= 1
        counts.append(n)
    return len(info.busy), counts
