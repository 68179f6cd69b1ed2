"""Micro-benchmarks of the physical-memory and page-table models.

Import and call: ``bench_order0(n)``, ``bench_map_unmap_1m(n)``, ``bench_64g()``.
Run as a script for a quick report.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.pgtable import PAGE_KERNEL, PageTables
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog


def bench_order0(n: int = 200_000) -> float:
    """Order-0 ``alloc_page(GFP_KERNEL)`` + ``free_page`` pairs per second (4 GiB)."""
    pm = PhysicalMemory(Machine(), PROFILES["6.18"], KernelLog())
    alloc, free = pm.alloc_page, pm.free_page
    # warm up: a few pages held so the pcp list cycles through refill/drain too
    held = [alloc(GFP_KERNEL) for _ in range(100)]
    t = time.process_time()
    for _ in range(n):
        p = alloc(GFP_KERNEL)
        assert p is not None
        free(p)
    dt = time.process_time() - t
    for p in held:
        if p is not None:
            free(p)
    return n / dt


def bench_map_unmap_1m(n: int = 5_000) -> float:
    """Map + unmap of a 1 MiB (256-page) vmalloc range, pairs per second."""
    m = Machine()
    log = KernelLog()
    pm = PhysicalMemory(m, PROFILES["6.18"], log)
    pt = PageTables(m, pm, log)
    pfns = []
    for _ in range(256):
        p = pm.alloc_page(GFP_KERNEL)
        assert p is not None
        pfns.append(p)
    arr = np.asarray(pfns, np.uint64)
    va = m.vmalloc_start + (1 << 20) + 0x3000  # straddles a PMD boundary every other MiB
    size = 256 << 12
    t = time.process_time()
    for i in range(n):
        a = va + (i & 7) * size
        pt.map_pages(a, arr, PAGE_KERNEL)
        pt.unmap(a, size)
    return n / (time.process_time() - t)


def bench_64g() -> dict[str, Any]:
    """Build a 64 GiB machine: seconds and numpy column bytes per page."""
    t = time.process_time()
    pm = PhysicalMemory(Machine(ram="64G"), PROFILES["6.18"], KernelLog())
    build = time.process_time() - t
    return {
        "build_seconds": build,
        "bytes_per_page": pm.column_bytes / pm.max_pfn,
        "column_mib": pm.column_bytes / (1 << 20),
        "pages": pm.max_pfn,
        "totalram_pages": pm.totalram_pages,
    }


if __name__ == "__main__":
    print(f"order-0 alloc+free: {bench_order0():,.0f} pairs/s (target >= 300,000)")
    print(f"1 MiB map+unmap:    {bench_map_unmap_1m():,.0f} pairs/s (target >= 2,000)")
    print(f"64 GiB machine:     {bench_64g()}")
