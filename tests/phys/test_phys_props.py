"""Property tests: random alloc/free/split/bulk sequences keep every invariant."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvmalloc import gfp
from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.gfp import GFP_ATOMIC, GFP_KERNEL
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog

MASKS = [
    GFP_KERNEL,
    GFP_KERNEL | gfp.__GFP_NOWARN,
    GFP_ATOMIC | gfp.__GFP_NOWARN,
    gfp.__GFP_DMA | GFP_KERNEL | gfp.__GFP_NOWARN,
    GFP_KERNEL | gfp.__GFP_ZERO | gfp.__GFP_HIGHMEM | gfp.__GFP_NOWARN,
]

op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 10), st.sampled_from(MASKS)),
    st.tuples(st.just("free"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("split"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("bulk"), st.integers(2, 150), st.sampled_from(MASKS)),
    st.tuples(st.just("drain"), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["x86_64", "i386"]), st.lists(op, min_size=1, max_size=60))
def test_random_sequences_keep_invariants(arch, ops):
    m = Machine(ram="64M") if arch == "x86_64" else Machine(arch="i386", ram="1G")
    pm = PhysicalMemory(m, PROFILES["6.18"], KernelLog())
    total = pm.totalram_pages
    held: list[tuple[int, int]] = []
    for kind, a, mask in ops:
        if kind == "alloc":
            p = pm.alloc_pages(mask, a)
            if p is not None:
                held.append((p, a))
        elif kind == "free" and held:
            p, o = held.pop(a % len(held))
            pm.free_pages(p, o)
        elif kind == "split" and held:
            p, o = held.pop(a % len(held))
            pm.split_page(p, o)
            held.extend((p + i, 0) for i in range(1 << o))
        elif kind == "bulk":
            out: list[int] = []
            pm.alloc_pages_bulk(mask, -1, a, out)
            held.extend((p, 0) for p in out)
        elif kind == "drain":
            pm.drain_pages()
        pm.check()
        pcp = sum(len(z.pcp) for z in pm.zones)
        assert pm.nr_free_pages() + pcp + sum(1 << o for _, o in held) == total
    for p, o in held:
        pm.free_pages(p, o)
    pm.drain_pages()
    pm.check()
    assert pm.nr_free_pages() == total
