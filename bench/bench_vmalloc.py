"""vmalloc+vfree throughput of the model (6.18, a few thousand live areas).

Run: ``python bench/bench_vmalloc.py``.
"""

from __future__ import annotations

import time

from pyvmalloc.kernel import Kernel


def _kernel(live: int = 3000) -> tuple[Kernel, list[int]]:
    k = Kernel("6.18", cpus=2)
    keep = [k.vmalloc(4096 * (1 + i % 4), cpu=i % 2) for i in range(live)]
    return k, keep


def _bench(size: int, n: int) -> float:
    k, _keep = _kernel()
    t = time.process_time()
    for i in range(n):
        a = k.vmalloc(size, cpu=i & 1)
        k.vfree(a, cpu=i & 1)
    dt = time.process_time() - t
    k.check()
    return n / dt


def bench_vmalloc_4k(n: int = 20000) -> float:
    """vmalloc(4 KiB) + vfree pairs per second."""
    return _bench(4096, n)


def bench_vmalloc_1m(n: int = 2000) -> float:
    """vmalloc(1 MiB) + vfree pairs per second."""
    return _bench(1 << 20, n)


def bench_long_busy_list(loops: int = 20000) -> float:
    """µs per loop of test_vmalloc's ``long_busy_list_alloc_test`` shape, on the Kernel
    directly (no harness): 15,000 one-page areas live, then per loop vmalloc(100 pages),
    vmalloc(1 page), vfree of both (multi-page areas through the pcp lists)."""
    k = Kernel("6.18", cpus=2)
    keep = [k.vmalloc(8 * 15000)] + [k.vmalloc(4096) for _ in range(15000)]
    t = time.process_time()
    for _ in range(loops):
        p1 = k.vmalloc(100 * 4096)
        p2 = k.vmalloc(4096)
        k.vfree(p1)
        k.vfree(p2)
    dt = time.process_time() - t
    for a in keep:
        k.vfree(a)
    k.check()
    return dt / loops * 1e6


if __name__ == "__main__":
    print(f"vmalloc(4 KiB)+vfree: {bench_vmalloc_4k():,.0f} pairs/s")
    print(f"vmalloc(1 MiB)+vfree: {bench_vmalloc_1m():,.0f} pairs/s")
    print(f"long_busy_list loop:  {bench_long_busy_list():,.1f} us/loop")
