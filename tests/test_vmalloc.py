"""vmalloc end to end: addresses, flags, accounting, failures, misuse, data."""

from __future__ import annotations

import pytest

from pyvmalloc.gfp import __GFP_NOWARN, GFP_KERNEL
from pyvmalloc.kernel import Kernel
from pyvmalloc.pgtable import PageFault
from pyvmalloc.vmalloc import (
    VM_ALLOC,
    VM_ALLOW_HUGE_VMAP,
    VM_IOREMAP,
    VM_MAP,
    VM_MAP_PUT_PAGES,
    VM_USERMAP,
    get_vm_area_size,
)

START = 0xFFFFC90000000000
PAGE = 4096


def _all_freed(k: Kernel) -> None:
    """After vm_unmap_aliases (a purge) nothing but page tables remains in use."""
    k.vm_unmap_aliases()
    k.check()
    assert k.nr_vmalloc_pages == 0
    assert k.slab.slab_bytes == 0
    assert k.phys_pages_used() == k.pgtable_pages_added()


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_vmalloc_first_area_and_guard(profile: str) -> None:
    k = Kernel(profile)
    a = k.vmalloc(20000)
    # PAGE_ALIGN(20000) = 5 pages, plus one guard page, lowest fit at VMALLOC_START
    assert a == START
    vm = k.find_vm_area(a)
    assert vm is not None
    assert vm.size == 6 * PAGE and get_vm_area_size(vm) == 5 * PAGE
    assert vm.flags == VM_ALLOC and vm.nr_pages == 5
    assert k.nr_vmalloc_pages == 5
    b = k.vmalloc(4096)
    assert b == a + 6 * PAGE
    k.check()
    k.vfree(a)
    k.vfree(b)
    k.check()
    _all_freed(k)


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_sizeof_vm_struct_slab(profile: str) -> None:
    k = Kernel(profile)
    a = k.vmalloc(PAGE)
    # vm_struct (64 bytes in 5.4, 72 -> kmalloc-96 in 6.x) + 8-byte pages array
    assert k.slab.slab_bytes == (64 if profile == "5.4" else 96) + 8
    k.vfree(a)
    assert k.slab.slab_bytes == 0


def test_vzalloc_zeroes_and_vmalloc_may_not() -> None:
    k = Kernel()
    a = k.vmalloc(PAGE)
    k.write(a, b"\xaa" * 64)
    pfn = k.vmalloc_to_page(a)
    k.vfree(a)
    k.vm_unmap_aliases()
    # the freed page is on the pcp list head: the next order-0 allocation reuses it
    b = k.vmalloc(PAGE)
    assert k.vmalloc_to_page(b) == pfn
    assert k.read(b, 4) == b"\xaa" * 4  # stale contents: vmalloc does not zero
    c = k.vzalloc(PAGE)
    assert k.read(c, PAGE) == bytes(PAGE)
    k.vfree(b)
    k.vfree(c)
    _all_freed(k)


def test_vmalloc_node_and_numa_line() -> None:
    k = Kernel(numa_nodes=2, ram="4G")
    a = k.vmalloc_node(3 * PAGE, 1, caller="f+0x1/0x10")
    vm = k.find_vm_area(a)
    assert vm is not None and vm.pages is not None
    assert all(k.phys.page_to_nid(int(p)) == 1 for p in vm.pages)
    assert k.vmallocinfo().splitlines()[0].endswith("pages=3 vmalloc N1=3")
    k.vfree(a)
    _all_freed(k)


def test_vmalloc_user_and_32() -> None:
    k = Kernel()
    a = k.vmalloc_user(100)
    vm = k.find_vm_area(a)
    assert vm is not None and vm.flags == VM_ALLOC | VM_USERMAP
    assert k.read(a, 100) == bytes(100)
    b = k.vmalloc_32(PAGE * 2)
    vmb = k.find_vm_area(b)
    assert vmb is not None and vmb.pages is not None
    assert all(int(p) < (4 << 30) >> 12 for p in vmb.pages)  # ZONE_DMA32: below 4 GiB
    c = k.vmalloc_32_user(10)
    assert " user" in k.vmallocinfo().splitlines()[-1]
    for x in (a, b, c):
        k.vfree(x)
    _all_freed(k)


def test_dunder_vmalloc_variants() -> None:
    k = Kernel()
    a = getattr(k, "__vmalloc")(PAGE, GFP_KERNEL)
    b = getattr(k, "__vmalloc_node")(5 * PAGE, 8 * PAGE * 4, GFP_KERNEL, 0, "t+0x0/0x1")
    assert b % (32 * PAGE) == 0  # fix_align_alloc_test: align THREAD_ALIGN << 1
    k.vfree(a)
    k.vfree(b)
    _all_freed(k)


def test_pages_array_vpages_nested_vmalloc() -> None:
    k = Kernel()
    # 513 pages -> 4104-byte array > PAGE_SIZE: nested vmalloc of 2 pages, same caller
    a = k.vmalloc(513 * PAGE, caller="htab_map_alloc+0x2e4/0x5a0")
    lines = k.vmallocinfo().splitlines()
    size = 514 * PAGE
    assert lines[0] == (
        f"0x{a:016x}-0x{a + size:016x} {size:7d} htab_map_alloc+0x2e4/0x5a0 "
        "pages=513 vmalloc vpages N0=513"
    )
    # the pages array lands right after the main area: 2 pages + guard
    assert lines[1] == (
        f"0x{a + size:016x}-0x{a + size + 3 * PAGE:016x}   12288 htab_map_alloc+0x2e4/0x5a0 "
        "pages=2 vmalloc N0=2"
    )
    assert k.nr_vmalloc_pages == 515
    k.vfree(a)
    k.check()
    # vfree frees the main area first, then the nested array area
    assert [va.va_start for va in k.vmap_space.lazy] == [a, a + size]
    _all_freed(k)


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_misuse_warnings(profile: str) -> None:
    k = Kernel(profile)
    a = k.vmalloc(PAGE)
    k.vfree(a)
    k.vfree(a)  # double free
    assert k.log.lines[-1].text == f"Trying to vfree() nonexistent vm area ({a:#x})"
    assert k.log.lines[-1].level == "WARN"
    k.vfree(START + 0x123456000)
    assert "nonexistent vm area" in k.log.lines[-1].text
    b = k.vmalloc(PAGE)
    k.vfree(b + 1)
    texts = [line.text for line in k.log.lines[-2:]]
    if profile == "5.4":
        assert texts[-1] == f"Trying to vfree() bad address ({b + 1:#x})"
    else:
        assert texts == [
            # v6.18 remove_vm_area: WARN(!PAGE_ALIGNED(addr), "Trying to vfree() bad
            # address (%p)\n"), then vfree's own "nonexistent vm area" WARN.
            f"Trying to vfree() bad address ({b + 1:#x})",
            f"Trying to vfree() nonexistent vm area ({b + 1:#x})",
        ]
    k.vunmap(START + 0x200000000)
    expect = "vunmap" if profile == "6.18" else "vfree"
    assert (
        k.log.lines[-1].text
        == f"Trying to {expect}() nonexistent vm area ({START + 0x200000000:#x})"
    )
    k.vfree(0)  # NULL is fine
    k.vfree(b)
    _all_freed(k)


def test_interrupt_context() -> None:
    k = Kernel(deferred_work="manual")
    a = k.vmalloc(PAGE)
    k.vfree(a, in_interrupt=True)
    assert k.find_vm_area(a) is not None  # deferred
    assert k.run_deferred_work() >= 1
    assert k.find_vm_area(a) is None
    with k.interrupt_context():
        assert k.vmalloc(PAGE) == 0
    assert k.log.lines[-1].level == "BUG"
    k.check()


def test_vfree_atomic_auto_work() -> None:
    k = Kernel()
    a = k.vmalloc(PAGE)
    k.vfree_atomic(a, cpu=1)
    assert k.find_vm_area(a) is None  # the work ran after the call returned
    _all_freed(k)


def test_out_of_vmalloc_space_small_range() -> None:
    k = Kernel()
    vr = getattr(k, "__vmalloc_node_range")
    start = START + (1 << 30)
    a = vr(PAGE, 1, start, start + 3 * PAGE, caller="x+0x0/0x1")
    assert a == start
    b = vr(PAGE, 1, start, start + 3 * PAGE)
    assert b == 0
    text = k.log.lines[-1].text
    assert text.startswith("swapper/0: vmalloc error: size 4096, vm_struct allocation failed")
    assert "vmalloc_node_range for size 8192 failed" in k.log.lines[-2].text
    k.vfree(a)
    _all_freed(k)


def test_out_of_vmalloc_space_54() -> None:
    k = Kernel("5.4")
    vr = getattr(k, "__vmalloc_node_range")
    start = START + (1 << 30)
    assert vr(2 * PAGE, 1, start, start + 2 * PAGE) == 0
    assert k.log.lines[-1].text.startswith("swapper/0: vmalloc: allocation failure: 8192 bytes")
    assert "vmap allocation for size 12288 failed" in k.log.lines[-2].text
    k.check()


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_out_of_pages_midway(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    total = k.phys.totalram_pages
    size = (total - 100) * PAGE  # below totalram, above what is free
    assert k.vmalloc(size) == 0
    if profile == "6.18":
        assert "vmalloc error: size " in k.log.lines[-1].text
        assert (
            ", failed to allocate pages, mode:0xcc2(GFP_KERNEL|__GFP_HIGHMEM)"
            in k.log.lines[-1].text
        )
    else:
        assert "vmalloc: allocation failure, allocated " in k.log.lines[-1].text
        assert f"of {size + PAGE} bytes" in k.log.lines[-1].text
    k.check()
    _all_freed(k)
    assert k.vmalloc(total * PAGE + PAGE) == 0
    if profile == "6.18":
        assert "exceeds total pages" in k.log.lines[-1].text


def test_nowarn_is_silent() -> None:
    k = Kernel(ram="64M")
    n = len(k.log.lines)
    assert (
        getattr(k, "__vmalloc")(k.phys.totalram_pages * PAGE + PAGE, GFP_KERNEL | __GFP_NOWARN) == 0
    )
    assert len(k.log.lines) == n


def test_huge_vmalloc() -> None:
    k = Kernel()
    a = k.vmalloc_huge(3 << 20)
    vm = k.find_vm_area(a)
    assert vm is not None
    assert a % (2 << 20) == 0
    assert vm.size == (4 << 20) + PAGE  # rounded up to 2 MiB, plus guard
    assert vm.flags == VM_ALLOC | VM_ALLOW_HUGE_VMAP and vm.page_order == 9
    assert vm.nr_pages == 1024
    w = k.pgtables.walk(a + 12345)
    assert w.page_size == 2 << 20
    k.write(a + (2 << 20) + 5, b"xyz")
    assert k.read(a + (2 << 20) + 5, 3) == b"xyz"
    k.vfree(a)
    _all_freed(k)


def test_huge_falls_back_to_small_pages() -> None:
    k = Kernel(ram="64M")
    # fragment: take every other page-block so no order-9 block remains free
    pages = k.alloc_pages(1 << 20, GFP_KERNEL | __GFP_NOWARN)  # everything
    keep = pages[::2]
    k.free_pages(pages[1::2])
    a = k.vmalloc_huge(2 << 20, __GFP_NOWARN | GFP_KERNEL)
    assert a
    vm = k.find_vm_area(a)
    assert vm is not None and vm.page_order == 0 and vm.size == (2 << 20) + PAGE
    k.vfree(a)
    k.free_pages(keep)
    _all_freed(k)


def test_vmap_and_data_through_two_mappings() -> None:
    k = Kernel()
    a = k.vmalloc(3 * PAGE)
    k.write(a + PAGE - 2, b"hello")  # crosses a page boundary
    vm = k.find_vm_area(a)
    assert vm is not None and vm.pages is not None
    m = k.vmap(vm.pages, 3, VM_MAP, caller="test_vmap+0x0/0x10")
    assert k.read(m + PAGE - 2, 5) == b"hello"
    pfn = k.vmalloc_to_page(a + PAGE)
    assert pfn == int(vm.pages[1]) == k.vmalloc_to_pfn(m + PAGE)
    assert k.phys.read(pfn, 0, 3) == b"llo"
    assert k.vread(a + PAGE - 2, 5) == b"hello"
    vmm = k.find_vm_area(m)
    assert vmm is not None and vmm.flags == VM_MAP and vmm.nr_pages == 0
    line = next(x for x in k.vmallocinfo().splitlines() if "test_vmap" in x)
    assert line.endswith(f"{4 * PAGE:7d} test_vmap+0x0/0x10 vmap")
    k.vunmap(m)
    k.vfree(a)
    _all_freed(k)


def test_vmap_put_pages() -> None:
    k = Kernel()
    pages = k.alloc_pages(2)
    m = k.vmap(pages, 2, VM_MAP | VM_MAP_PUT_PAGES)
    assert "pages=2 vmap N0=2" in k.vmallocinfo()
    k.check()
    k.vfree(m)  # frees the pages too
    _all_freed(k)


def test_guard_page_and_use_after_free_fault() -> None:
    k = Kernel()
    a = k.vmalloc(2 * PAGE, caller="drv_probe+0x10/0x80")
    with pytest.raises(PageFault) as e:
        k.read(a + 2 * PAGE, 1)
    msg = str(e.value)
    assert f"BUG: unable to handle page fault for address: {a + 2 * PAGE:016x}" in msg
    assert "guard page of vmalloc area" in msg and "drv_probe" in msg
    k.vfree(a)
    with pytest.raises(PageFault) as e:
        k.write(a, b"x")
    assert "use after vfree()" in str(e.value)
    assert k.vread(a, 4) == bytes(4)  # vread never faults
    k.vm_unmap_aliases()  # 6.18: the purge puts the area into a vmap-node pool
    with pytest.raises(PageFault) as e:
        k.read(a, 1)
    assert "(in a vmap-node pool): use after vfree()" in str(e.value)
    k.drop_caches(2)
    with pytest.raises(PageFault) as e:
        k.read(a, 1)
    assert "free vmalloc space" in str(e.value)


def test_get_vm_area_find_remove_free() -> None:
    k = Kernel()
    area = k.get_vm_area(3 * PAGE, VM_IOREMAP)
    assert area is not None
    # VM_IOREMAP: align 1 << get_count_order(12 KiB) = 16 KiB, size + guard
    assert area.addr % (4 * PAGE) == 0 and area.size == 4 * PAGE
    assert k.find_vm_area(area.addr + PAGE) is area
    got = k.remove_vm_area(area.addr)
    assert got is area and k.find_vm_area(area.addr) is None
    k.kfree(area.kaddr)
    b = k.get_vm_area_caller(PAGE, VM_MAP, "c+0x1/0x2")
    assert b is not None
    k.free_vm_area(b)
    c = getattr(k, "__get_vm_area_caller")(PAGE, VM_MAP, START + (1 << 32), START + (2 << 32), "d")
    assert c is not None and c.addr == START + (1 << 32)
    k.free_vm_area(c)
    _all_freed(k)


def test_ioremap_alignment_and_phys() -> None:
    k = Kernel()
    a = k.ioremap(0xFED00123, 0x400, caller="hpet_enable+0x0/0x1")
    assert a & 0xFFF == 0x123
    vm = k.find_vm_area(a)
    assert vm is not None and vm.phys_addr == 0xFED00000 and vm.flags == VM_IOREMAP
    assert k.vmalloc_to_pfn(a) == 0xFED00
    line = k.vmallocinfo().splitlines()[0]
    assert line.endswith("8192 hpet_enable+0x0/0x1 phys=0x00000000fed00000 ioremap")
    big = k.ioremap(0xC0000000, 1 << 20)
    assert big % (1 << 20) == 0  # 1 MiB ioremap is 1 MiB aligned
    k.iounmap(a)
    k.iounmap(big)
    k.iounmap(START + (5 << 30))
    assert k.log.lines[-1].text.startswith("iounmap: bad address")
    _all_freed(k)


def test_vmap_pfn() -> None:
    k = Kernel()
    # Device pfns: no struct page (above max_pfn), as vmap_pfn requires.
    dev = k.phys.max_pfn + 0x100
    a = k.vmap_pfn([dev, dev + 1])
    vm = k.find_vm_area(a)
    assert vm is not None and vm.flags == VM_IOREMAP and vm.phys_addr == 0
    assert k.vmalloc_to_pfn(a + PAGE) == dev + 1
    k.vunmap(a)
    _all_freed(k)


def test_kvmalloc_kvfree() -> None:
    k = Kernel()
    small = k.kvmalloc(100)
    assert not k.is_vmalloc_addr(small) and k.slab.ksize(small) == 128
    mid = k.kvmalloc(20000)  # > KMALLOC_MAX_CACHE_SIZE: pages from the page allocator
    assert not k.is_vmalloc_addr(mid)
    z = k.kvzalloc(PAGE)
    assert k.read(z, 16) == bytes(16)
    for x in (small, mid, z):
        k.kvfree(x)
    _all_freed(k)


def test_kvmalloc_falls_back_to_vmalloc() -> None:
    k = Kernel()
    n = len(k.log.lines)
    # 8 MiB needs an order-11 block: beyond MAX_PAGE_ORDER, kmalloc fails (quietly:
    # kvmalloc adds __GFP_NOWARN) and kvmalloc falls back to a huge-capable vmalloc
    a = k.kvmalloc(8 << 20, caller="kvmalloc_node_noprof+0x0/0x1")
    assert k.is_vmalloc_addr(a) and a % (2 << 20) == 0
    vm = k.find_vm_area(a)
    assert vm is not None and vm.flags & VM_ALLOW_HUGE_VMAP and vm.page_order == 9
    assert len(k.log.lines) == n
    k.kvfree(a)
    _all_freed(k)


def test_vrealloc() -> None:
    k = Kernel()
    a = k.vrealloc(0, 100)
    k.write(a, b"abc")
    assert k.vrealloc(a, 4000) == a  # grows within the page-rounded area
    vm = k.find_vm_area(a)
    assert vm is not None and vm.requested_size == 4000
    b = k.vrealloc(a, 3 * PAGE)
    assert b != a and k.read(b, 3) == b"abc"
    assert k.find_vm_area(a) is None
    assert k.vrealloc(b, 0) == 0
    with pytest.raises(ValueError):
        Kernel("5.4").vrealloc(0, 10)
    _all_freed(k)


def test_is_vmalloc_addr_and_meminfo() -> None:
    k = Kernel()
    assert k.is_vmalloc_addr(START) and not k.is_vmalloc_addr(START - 1)
    a = k.vmalloc(10 * PAGE)
    assert k.meminfo().splitlines()[1] == "VmallocUsed:          40 kB"
    k.vfree(a)


def test_kernel_construction_is_fast() -> None:
    import time

    t = time.perf_counter()
    for _ in range(20):
        Kernel()
    assert (time.perf_counter() - t) / 20 < 0.05
