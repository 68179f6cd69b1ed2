"""Kernel page tables: mapping, walks, faults, huge PMDs, page-table accounting."""

import numpy as np
import pytest

from pyvmalloc.config import PROFILES, Machine
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.pgtable import (
    PAGE_KERNEL,
    PAGE_KERNEL_EXEC,
    PAGE_KERNEL_NOCACHE,
    PAGE_KERNEL_RO,
    PageFault,
    PageTables,
    pgprot_nx,
)
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.printk import KernelLog


def mk(**kw):
    m = Machine(**kw)
    log = KernelLog()
    pm = PhysicalMemory(m, PROFILES["6.18"], log)
    return m, pm, PageTables(m, pm, log), log


def pages(pm, n):
    return [pm.alloc_page(GFP_KERNEL) for _ in range(n)]


def test_prot_values():
    assert PAGE_KERNEL == 0x8000000000000163
    assert PAGE_KERNEL_EXEC == 0x163
    assert PAGE_KERNEL_RO == 0x8000000000000121
    assert PAGE_KERNEL_NOCACHE == 0x800000000000017B
    assert pgprot_nx(PAGE_KERNEL_EXEC) == PAGE_KERNEL


def test_preallocation_consumes_buddy_pages():
    _, pm, pt, _ = mk(ram="64M")
    assert pt.nr_pgtable_pages == 64 == pm.nr_pgtable_pages  # 32 TiB / 512 GiB PUD pages
    _, _pm5, pt5, _ = mk(ram="64M", paging_levels=5)
    assert pt5.nr_pgtable_pages == 50  # 12800 TiB / 256 TiB P4D pages
    _, _pm32, pt32, _ = mk(arch="i386", ram="1G")
    assert pt32.nr_pgtable_pages == 0
    pm.check()
    pt.check()


def test_map_translate_roundtrip_and_table_cost():
    m, pm, pt, _ = mk(ram="64M")
    before = pt.nr_pgtable_pages
    pf = pages(pm, 300)
    va = m.vmalloc_start + 0x1FF000  # crosses a PMD boundary after one page
    assert pt.map_pages(va, pf, PAGE_KERNEL) == 0
    # one PMD page + two PTE pages (PUD preallocated)
    assert pt.nr_pgtable_pages == before + 3
    for i in (0, 1, 299):
        assert pt.translate(va + i * 4096 + 7) == (pf[i] << 12) + 7
    pt.unmap(va, 300 * 4096)
    assert pt.nr_pgtable_pages == before + 3  # unmapping never frees page tables
    with pytest.raises(PageFault) as ei:
        pt.translate(va)
    assert ei.value.level == "PTE"
    assert pt.map_pages(va, pf, PAGE_KERNEL) == 0  # tables reused
    assert pt.nr_pgtable_pages == before + 3
    pm.check()
    pt.check()


def test_walk_levels():
    m, pm, pt, _ = mk(ram="64M")
    pf = pages(pm, 1)
    va = m.vmalloc_start + (5 << 30) + (3 << 21) + (7 << 12)
    pt.map_pages(va, pf, PAGE_KERNEL)
    w = pt.walk(va + 0x123)
    assert [lv.name for lv in w.levels] == ["PGD", "PUD", "PMD", "PTE"]
    assert [lv.index for lv in w.levels] == [402, 5, 3, 7]
    assert w.levels[-1].entry == (pf[0] << 12) | PAGE_KERNEL
    assert w.levels[-1].flags == ["PRESENT", "RW", "ACCESSED", "DIRTY", "GLOBAL", "NX"]
    assert w.levels[0].entry & 0xFFF == 0x067
    assert w.phys == (pf[0] << 12) + 0x123
    text = pt.render_walk(va + 0x123)
    assert "P4D        (folded" in text and "=> phys" in text


def test_fault_text_and_describer():
    m, _pm, pt, _ = mk(ram="64M")
    va = m.vmalloc_start + 0x5000
    with pytest.raises(PageFault) as ei:
        pt.read(va, 4)
    e = ei.value
    assert e.addr == va and e.level == "PUD"
    lines = str(e).splitlines()
    assert lines[0] == "BUG: unable to handle page fault for address: ffffc90000005000"
    assert lines[1] == "#PF: supervisor read access in kernel mode"
    assert lines[2] == "#PF: error_code(0x0000) - not-present page"
    assert lines[3].startswith("PGD ") and " P4D " in lines[3] and lines[3].endswith("PUD 0 ")
    pt.fault_describer = lambda a: (
        f"address is in the guard page of the area {a - 0x1000:#x}-{a:#x}"
    )
    with pytest.raises(PageFault, match="guard page of the area"):
        pt.write(va, b"x")


def test_read_write_across_pages_and_ro():
    m, pm, pt, _ = mk(ram="64M")
    pf = pages(pm, 3)
    va = m.vmalloc_start
    pt.map_pages(va, pf[:2], PAGE_KERNEL)
    pt.write(va + 4000, bytes(range(200)))
    assert pt.read(va + 4000, 200) == bytes(range(200))
    assert pm.read(pf[1], 0, 104) == bytes(range(96, 200))
    ro = va + (1 << 21)
    pt.map_pages(ro, pf[2:], PAGE_KERNEL_RO)
    assert pt.read(ro, 2) == b"\0\0"
    with pytest.raises(PageFault, match="permissions violation"):
        pt.write(ro, b"no")


def test_double_map_is_ebusy_with_warn():
    m, pm, pt, log = mk(ram="64M")
    pf = pages(pm, 4)
    assert pt.map_pages(m.vmalloc_start, pf, PAGE_KERNEL) == 0
    assert pt.map_pages(m.vmalloc_start + 0x2000, pf, PAGE_KERNEL) == -16
    assert log.lines[-1].level == "WARN"


def test_huge_pmd_mapping():
    m, pm, pt, _ = mk()
    hp = pm.alloc_pages(GFP_KERNEL, 9)
    pm.split_page(hp, 9)
    va = m.vmalloc_start + (1 << 30)
    # an empty PTE table under the PMD is freed when the huge entry goes in
    small = pages(pm, 1)
    pt.map_pages(va, small, PAGE_KERNEL)
    pt.unmap(va, 4096)
    n = pt.nr_pgtable_pages
    assert pt.map_pages(va, np.arange(hp, hp + 512), PAGE_KERNEL, page_shift=21) == 0
    assert pt.nr_pgtable_pages == n - 1
    w = pt.walk(va + 0x12345)
    assert [lv.name for lv in w.levels] == ["PGD", "PUD", "PMD"]
    assert "PSE" in w.levels[-1].flags and w.page_size == 2 << 20
    assert pt.translate(va + 0x12345) == (hp << 12) + 0x12345
    pt.unmap(va, 2 << 20)
    with pytest.raises(PageFault) as ei:
        pt.translate(va)
    assert ei.value.level == "PMD"
    pm.check()
    pt.check()


def test_huge_request_falls_back_when_unaligned():
    m, pm, pt, _ = mk()
    hp = pm.alloc_pages(GFP_KERNEL, 9)
    va = m.vmalloc_start + (1 << 30) + 0x1000  # not PMD aligned
    assert pt.map_pages(va, np.arange(hp, hp + 512), PAGE_KERNEL, page_shift=21) == 0
    assert [lv.name for lv in pt.walk(va).levels][-1] == "PTE"
    assert pt.translate(va + (511 << 12)) == (hp + 511) << 12


def test_five_level_walk():
    m, pm, pt, _ = mk(ram="64M", paging_levels=5)
    pf = pages(pm, 1)
    pt.map_pages(m.vmalloc_start, pf, PAGE_KERNEL)
    w = pt.walk(m.vmalloc_start)
    assert [lv.name for lv in w.levels] == ["PGD", "P4D", "PUD", "PMD", "PTE"]
    assert w.levels[0].index == 416


def test_i386_two_level():
    m, pm, pt, _ = mk(arch="i386", ram="1G")
    pf = pages(pm, 2)
    va = m.vmalloc_start
    assert pt.map_pages(va, pf, PAGE_KERNEL) == 0
    w = pt.walk(va)
    assert [lv.name for lv in w.levels] == ["PGD", "PTE"]
    assert w.levels[-1].entry == (pf[0] << 12) | 0x163  # no NX without PAE
    assert pt.nr_pgtable_pages == 1
    with pytest.raises(PageFault) as ei:
        pt.translate(va + 0x2000)
    assert str(ei.value).splitlines()[0].endswith(f"{va + 0x2000:08x}")
    assert "*pde = " in str(ei.value)
    pt.check()


def test_modules_area_uses_static_upper_tables():
    m, pm, pt, _ = mk(ram="64M")
    n = pt.nr_pgtable_pages
    pt.map_pages(m.modules_vaddr, pages(pm, 1), PAGE_KERNEL_EXEC)
    assert pt.nr_pgtable_pages == n + 1  # only the PTE page


def test_direct_map():
    _m, pm, pt, _ = mk(ram="64M")
    p = pm.alloc_page(GFP_KERNEL)
    addr = pm.page_address(p)
    assert addr == 0xFFFF888000000000 + (p << 12)
    assert pm.virt_to_page(addr + 5) == p
    pt.write(addr + 10, b"dm")
    assert pm.read(p, 10, 2) == b"dm"
    assert pt.walk(addr).direct_map


def test_map_unmap_speed():
    import time

    m, pm, pt, _ = mk(ram="64M")
    arr = np.asarray(pages(pm, 256), np.uint64)
    t = time.perf_counter()
    for i in range(500):
        pt.map_pages(m.vmalloc_start + (i % 4) * (1 << 20), arr, PAGE_KERNEL)
        pt.unmap(m.vmalloc_start + (i % 4) * (1 << 20), 1 << 20)
    assert 500 / (time.perf_counter() - t) > 2000
