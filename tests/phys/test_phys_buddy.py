"""The buddy allocator: exact pfns, splits, merges, pcp, watermarks, warnings."""

import pytest

from pyvmalloc import gfp
from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.gfp import GFP_ATOMIC, GFP_HIGHUSER, GFP_KERNEL
from pyvmalloc.phys import PG_PCP, InvariantError, PhysicalMemory
from pyvmalloc.printk import KernelLog

NOWARN = gfp.__GFP_NOWARN
ZERO = gfp.__GFP_ZERO


def mk(**kw):
    log = KernelLog()
    return PhysicalMemory(Machine(**kw), PROFILES["6.18"], log), log


def row(node, zone, counts):
    return f"Node {node}, zone {zone:>8} " + "".join(f"{c:6d} " for c in counts) + "\n"


def test_fresh_buddyinfo_by_hand():
    pm, _ = mk(ram="64M")
    # DMA: [1 MiB, 16 MiB) free -> 256 (o8), 512 (o9), 1024/2048/3072 (o10)
    # DMA32: image [16, 24) MiB, memmap [62, 64) MiB -> 9 x o10 from 24 MiB, 1 x o9
    assert pm.buddyinfo() == (
        row(0, "DMA", [0] * 8 + [1, 1, 3]) + row(0, "DMA32", [0] * 9 + [1, 9])
    )
    assert pm.buddyinfo().splitlines()[0] == (
        "Node 0, zone      DMA      0      0      0      0      0      0      0      0"
        "      1      1      3 "
    )
    dma32 = pm.zones[1]
    assert dma32.free_list(10) == [0x1800 + 1024 * i for i in range(9)]  # ascending
    pm.check()


def test_first_allocations_come_from_pcp_batch():
    pm, _ = mk()  # 4 GiB: Normal zone first, pcp batch 63
    normal = pm.zones[2]
    assert normal.pcp_batch == 63
    got = [pm.alloc_page(GFP_KERNEL) for _ in range(3)]
    assert got == [0x100000, 0x100001, 0x100002]
    # rmqueue_bulk pulled 63 pages one by one, all split out of the first o10 block
    assert len(normal.pcp) == 60
    assert list(normal.pcp)[:2] == [0x100003, 0x100004]
    assert normal.free_list(0) == [0x10003F]
    assert [normal.free_list(o) for o in (6, 7, 8, 9)] == [
        [0x100040],
        [0x100080],
        [0x100100],
        [0x100200],
    ]
    assert normal.nr_free[10] == 239
    # frees go to the head of the pcp list: LIFO
    pm.free_page(got[1])
    assert pm.alloc_page(GFP_KERNEL) == got[1]
    pm.check()


def test_split_and_merge_order1():
    pm, _ = mk(ram="64M")
    z = pm.zones[1]
    fresh = pm.buddyinfo()
    p = pm.alloc_pages(GFP_KERNEL, 1)
    # __rmqueue_smallest: the smallest large-enough block is the o9 one at 60 MiB
    assert p == 0x3C00
    # expand(): upper halves at the heads of orders 8..1
    assert [z.free_list(o) for o in range(1, 9)] == [[0x3C00 + (1 << o)] for o in range(1, 9)]
    assert pm.buddyinfo().splitlines()[1].split()[4:] == ["0"] + ["1"] * 8 + ["0", "9"]
    # the next order-1 request takes the head of the order-1 list
    assert pm.alloc_pages(GFP_KERNEL, 1) == 0x3C02
    pm.free_pages(0x3C02, 1)
    pm.free_pages(p, 1)
    # merged all the way back to order 9 (its buddy at 62 MiB is the memmap)
    assert z.free_list(9) == [0x3C00]
    assert pm.buddyinfo() == fresh
    pm.check()


def test_free_to_tail_when_higher_buddy_is_free():
    pm, _ = mk(ram="64M")
    z = pm.zones[1]
    p, q, r, s, t = (pm.alloc_pages(GFP_KERNEL, o) for o in (1, 1, 2, 1, 1))
    b = 0x3C00  # all carved from the order-9 block at 60 MiB
    assert (p, q, r, s, t) == (b, b + 2, b + 4, b + 8, b + 10)
    pm.free_pages(p, 1)  # buddy q busy; higher buddy (b+4, o2) busy -> head
    assert z.free_list(1) == [b]
    pm.free_pages(s, 1)  # buddy t busy; higher buddy (b+12, o2) free -> tail
    assert z.free_list(1) == [b, b + 8]
    assert pm.alloc_pages(GFP_KERNEL, 1) == b
    pm.check()


def test_watermarks_stop_allocations_and_warn():
    pm, log = mk(ram="64M")
    dma, dma32 = pm.zones
    held = []
    while (p := pm.alloc_page(GFP_KERNEL | NOWARN)) is not None:
        held.append(p)
    # GFP_KERNEL stops at the min watermark (+ lowmem_reserve for the DMA zone)
    assert dma32.free_pages == dma32.wmark[0] == 166
    assert dma.free_pages == dma.wmark[0] + dma.lowmem_reserve[2] == 65 + 38
    assert not log.lines
    assert pm.alloc_page(GFP_KERNEL) is None
    assert log.lines[-1].text == (
        "swapper/0: page allocation failure: order:0, mode:0xcc0(GFP_KERNEL), "
        "nodemask=(null),cpuset=/,mems_allowed=0"
    )
    # GFP_ATOMIC may dig into the reserves: min - min/2 - (min - min/2)/4
    while pm.alloc_page(GFP_ATOMIC | NOWARN) is not None:
        pass
    assert dma32.free_pages == 63
    pm.check()
    for p in held:
        pm.free_page(p)
    pm.drain_pages()
    pm.check()


def test_nofail_warns_where_kernel_would_loop():
    pm, log = mk(ram="64M")
    assert pm.alloc_pages(GFP_KERNEL | gfp.__GFP_NOFAIL | NOWARN, 10) is not None
    while pm.alloc_pages(GFP_KERNEL | NOWARN, 10) is not None:
        pass
    assert pm.alloc_pages(GFP_KERNEL | gfp.__GFP_NOFAIL | NOWARN, 10) is None
    assert "retry forever" in log.lines[-1].text


def test_too_large_order():
    pm, log = mk(ram="64M")
    assert pm.alloc_pages(GFP_KERNEL, 11) is None
    assert log.lines[-1].level == "WARN"


def test_zone_modifiers_and_fallback():
    pm, _ = mk()
    d = pm.alloc_pages(gfp.__GFP_DMA | GFP_KERNEL, 0)
    assert pm.page_zone(d).name == "DMA"
    d32 = pm.alloc_pages(gfp.__GFP_DMA32 | GFP_KERNEL, 0)
    assert pm.page_zone(d32).name == "DMA32"
    assert pm.page_zone(pm.alloc_pages(GFP_HIGHUSER, 0)).name == "Normal"
    pm.check()


def test_highmem_on_i386():
    pm, _ = mk(arch="i386", ram="2G")
    hi = pm.alloc_pages(GFP_HIGHUSER, 0)
    assert pm.page_zone(hi).name == "HighMem"
    lo = pm.alloc_pages(GFP_KERNEL, 0)
    assert pm.page_zone(lo).name == "Normal"
    assert pm.alloc_pages(gfp.__GFP_DMA32 | GFP_KERNEL, 0) is not None  # DMA32 -> Normal
    pm.check()


def test_numa_preference_and_thisnode():
    pm, _ = mk(ram="8G", numa_nodes=2)
    p = pm.alloc_pages_node(1, GFP_KERNEL, 0)
    assert pm.page_to_nid(p) == 1
    assert pm.page_to_nid(pm.alloc_pages_node(0, GFP_KERNEL, 0)) == 0
    # node 1 exhausted down to its watermarks: fallback to node 0, but not with THISNODE
    while (q := pm.alloc_pages_node(1, GFP_KERNEL | gfp.__GFP_THISNODE | NOWARN, 10)) is not None:
        assert pm.page_to_nid(q) == 1
    q = pm.alloc_pages_node(1, GFP_KERNEL | NOWARN, 10)
    assert q is not None and pm.page_to_nid(q) == 0
    pm.check()


def test_bulk_allocator():
    pm, _ = mk()
    out: list[int] = [12345]  # pre-populated entries count, like the kernel's array
    n = pm.alloc_pages_bulk(GFP_KERNEL, -1, 101, out)
    assert n == 101 and len(out) == 101
    assert out[1:4] == [0x100000, 0x100001, 0x100002]
    assert len(set(out)) == 101
    assert pm.alloc_pages_bulk(GFP_KERNEL, -1, 101, out) == 101
    for p in out[1:]:
        pm.free_page(p)
    pm.check()


def test_split_page_and_free_each():
    pm, _ = mk(ram="64M")
    p = pm.alloc_pages(GFP_KERNEL, 3)
    pm.set_owner(p, 77)
    pm.split_page(p, 3)
    assert all(pm.get_owner(p + i) == 77 for i in range(8))
    pm.check()
    for i in range(8):
        pm.free_page(p + i)
    pm.drain_pages()
    pm.check()
    assert p == 0x3C00 and pm.zones[1].free_list(9) == [p]


def test_bad_free_is_reported():
    pm, log = mk(ram="64M")
    p = pm.alloc_page(GFP_KERNEL)
    pm.free_page(p)
    pm.free_page(p)
    assert "Bad page state" in log.lines[-1].text
    q = pm.alloc_pages(GFP_KERNEL, 2)
    pm.free_pages(q, 1)
    assert "freed with order 1" in log.lines[-1].text
    pm.check()


def test_refcount_get_page():
    pm, _ = mk(ram="64M")
    p = pm.alloc_page(GFP_KERNEL)
    pm.get_page(p)
    pm.free_page(p)
    assert pm.refcount[p] == 1
    pm.free_page(p)
    assert pm.flags[p] & PG_PCP


def test_contents_and_zeroing():
    pm, _ = mk(ram="64M")
    p = pm.alloc_pages(GFP_KERNEL, 1)
    assert pm.read(p, 0, 8) == bytes(8)
    pm.write(p, 4094, b"abcd")  # spans into the next page
    assert pm.read(p + 1, 0, 2) == b"cd"
    assert pm.read(p, 4094, 4) == b"abcd"
    pm.free_pages(p, 1)
    q = pm.alloc_pages(GFP_KERNEL, 1)
    assert q == p and pm.read(q, 4094, 4) == b"abcd"  # stale data survives (no init_on_free)
    pm.free_pages(q, 1)
    q = pm.alloc_pages(GFP_KERNEL | ZERO, 1)
    assert pm.read(q, 4094, 4) == bytes(4)
    pm.write(q, 0, b"x")
    pm.zero(q)
    assert pm.read(q, 0, 1) == b"\0"


def test_check_detects_corruption():
    pm, _ = mk(ram="64M")
    z = pm.zones[1]
    p = pm.alloc_pages(GFP_KERNEL, 1)
    pm.check()
    # forge a free buddy next to its free twin: both at order 1 in the list
    pm.flags[p] = 0x02  # PG_buddy instead of PG_alloc
    z.add_head(p, 1)
    pm.order[p] = 1
    with pytest.raises(InvariantError) as ei:
        pm.check()
    assert ei.value.pfn == p


def test_check_detects_double_state():
    pm, _ = mk(ram="64M")
    p = pm.alloc_page(GFP_KERNEL)
    pm.flags[p + 5] |= 0x10  # claims an allocated head inside a free block
    with pytest.raises(InvariantError, match=hex(p + 5)):
        pm.check()


def test_stats_and_alias():
    pm, _ = mk(ram="64M")
    p = pm.alloc_pages(GFP_KERNEL, 2)
    pm.__free_pages(p, 2)
    st = pm.stats()
    assert st["totalram_pages"] == 13568
    assert st["zones"][1]["name"] == "DMA32"
    assert pm.nr_free_pages() == 13568
    assert "pagesets" in pm.zoneinfo()
