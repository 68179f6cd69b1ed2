"""The bulk page paths (alloc_pages_bulk's numpy prep, free_pages_bulk) against the
page-by-page ones: same pages, same columns, same pcp and buddy lists."""

import random

import numpy as np
import pytest

from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog


def mk() -> PhysicalMemory:
    return PhysicalMemory(Machine(ram="1G"), PROFILES["6.18"], KernelLog())


def state(pm: PhysicalMemory) -> tuple:
    zones = tuple(
        (
            tuple(z.pcp),
            tuple(tuple(z.free_list(o)) for o in range(z.max_order + 1)),
            z.free_pages,
        )
        for z in pm.zones
    )
    cols = tuple(getattr(pm, c).tobytes() for c in ("flags", "order", "refcount", "owner", "zone"))
    return zones, cols


@pytest.mark.parametrize("seed", range(3))
def test_free_pages_bulk_equals_page_by_page(seed: int) -> None:
    rng = random.Random(seed)
    a, b = mk(), mk()
    held_a: list[list[int]] = []
    held_b: list[list[int]] = []
    for _ in range(40):
        n = rng.choice([1, 5, 16, 64, 256, 700])
        got_a: list[int] = []
        got_b: list[int] = []
        a.alloc_pages_bulk(GFP_KERNEL, -1, n, got_a)
        b.alloc_pages_bulk(GFP_KERNEL, -1, n, got_b)
        assert got_a == got_b
        held_a.append(got_a)
        held_b.append(got_b)
        if rng.random() < 0.5 and held_a:
            i = rng.randrange(len(held_a))
            pages_a, pages_b = held_a.pop(i), held_b.pop(i)
            for p in pages_a:
                a.free_pages(p, 0)
            b.free_pages_bulk(pages_b)
        assert state(a) == state(b)
    a.check()
    b.check()


def test_free_pages_bulk_bad_page_is_reported_like_free_pages() -> None:
    a, b = mk(), mk()
    pa: list[int] = []
    pb: list[int] = []
    a.alloc_pages_bulk(GFP_KERNEL, -1, 32, pa)
    b.alloc_pages_bulk(GFP_KERNEL, -1, 32, pb)
    for p in pa + pa[:1]:  # the first page twice: the second free is a bad page
        a.free_pages(p, 0)
    b.free_pages_bulk(pb + pb[:1])
    assert state(a) == state(b)
    assert a.log.dmesg() == b.log.dmesg() and "Bad page state" in b.log.dmesg()


def test_bulk_prep_matches_single_allocations() -> None:
    a, b = mk(), mk()
    got: list[int] = []
    a.alloc_pages_bulk(GFP_KERNEL, -1, 300, got)
    assert len(got) == 300
    assert np.all(a.refcount[got] == 1)
    single = [b.alloc_pages(GFP_KERNEL, 0) for _ in range(300)]
    assert single == got
    assert state(a) == state(b)
