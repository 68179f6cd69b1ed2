"""Allocator-only benchmarks: the vmap area allocator without pages or page tables."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

from pyvmalloc import Kernel
from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.vmap.area import VmapArea


def _populate(k: Kernel, live: int, seed: int = 1) -> list[VmapArea]:
    """``live`` 1-page (+guard) areas, a third of them freed and re-used to fragment."""
    rng = random.Random(seed)
    space = k.vmap_space
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    areas = [space.alloc_vmap_area(2 * PAGE_SIZE, 1, vs, ve, cpu=i % 2) for i in range(live)]
    rng.shuffle(areas)
    return areas  # type: ignore[return-value]


def bench_alloc_free_pairs(live: int, pairs: int = 50_000, profile: str = "6.18") -> float:
    """1-page (+guard) alloc+free pairs per second with ``live`` areas in place.

    The freed areas go through the lazy list, the purge worker (run as deferred work)
    and, in 6.18, the per-CPU-node pools, as on a real kernel.
    """
    k = Kernel(profile, cpus=2)
    _populate(k, live)
    space = k.vmap_space
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    alloc = space.alloc_vmap_area
    unlink = space.find_unlink_vmap_area
    free = space.free_vmap_area_noflush
    wq = k.workqueue
    size = 2 * PAGE_SIZE
    gc.disable()
    try:
        t0 = time.process_time()
        for i in range(pairs):
            cpu = i & 1
            va = alloc(size, 1, vs, ve, cpu=cpu)
            free(unlink(va.va_start), cpu=cpu)  # type: ignore[union-attr,arg-type]
            if wq.pending:
                wq.run_pending()
        dt = time.process_time() - t0
    finally:
        gc.enable()
    k.check()
    return pairs / dt


def bytes_per_live_area(live: int = 100_000) -> float:
    """Python memory per live (busy) area, measured with tracemalloc."""
    gc.collect()
    tracemalloc.start()
    k = Kernel("6.18", cpus=2)
    base = tracemalloc.get_traced_memory()[0]
    areas = _populate(k, live)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del areas
    return used / live


if __name__ == "__main__":
    for n in (1_000, 10_000, 100_000):
        print(n, f"{bench_alloc_free_pairs(n, 30_000):,.0f} pairs/s")
    print(f"{bytes_per_live_area(50_000):.0f} bytes/area")
