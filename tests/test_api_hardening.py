"""Regression tests for issue 11 (corruption, API arguments, kernel semantics).

Each test is a reproducer from the issue. Expected values come from the kernel's
rules (mm/vmalloc.c and arch/x86/mm/ioremap.c of v5.4 and v6.18, mm/slub.c of
v6.18), worked out by hand in the comments, never from the model's own output.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyvmalloc import Kernel, KernelHang, KernelWarning
from pyvmalloc.errors import InvariantError
from pyvmalloc.gfp import __GFP_NOFAIL, __GFP_NOWARN, __GFP_ZERO, GFP_KERNEL
from pyvmalloc.vmalloc import get_vm_area_size

P = 4096
ULONG_MAX = (1 << 64) - 1
INT_MAX = (1 << 31) - 1
PROFILES = ["4.19", "5.4", "6.18"]


def _baseline(k: Kernel) -> tuple[int, int, int]:
    """Pages taken since boot (page tables aside: they are never freed), slab bytes,
    busy areas."""
    return (
        k.phys_pages_used() - k.pgtable_pages_added(),
        k.slab.slab_bytes,
        k.vmap_space.nr_busy,
    )


def _texts(k: Kernel) -> list[str]:
    return [line.text for line in k.log.lines]


# ----------------------------------------------------------------- corruption
@pytest.mark.parametrize("profile", PROFILES)
def test_strict_bad_align_leaks_nothing(profile: str) -> None:
    # __vmalloc_node(8192, 3, ...): align 3 is not a power of two. alloc_vmap_area
    # BUGs (4.19/5.4) or returns -EINVAL silently (6.18) after __get_vm_area_node has
    # kzalloc'ed the vm_struct; the failure path kfree()s it. 2000 calls: no slab
    # growth, and check() holds throughout.
    k = Kernel(profile, ram="64M", strict=True)
    k.vmalloc(P)  # build the layers
    before = _baseline(k)
    for _ in range(2000):
        if profile == "6.18":
            assert k.__vmalloc_node(8192, 3, GFP_KERNEL, -1) == 0
        else:
            with pytest.raises(KernelWarning, match="invalid size 0x3000 or align 0x3"):
                k.__vmalloc_node(8192, 3, GFP_KERNEL, -1)
    assert _baseline(k) == before
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_strict_nofail_page_failure_is_unwound(profile: str) -> None:
    # 13500 pages on a 64 MiB model (13568 pages in totalram, fewer free): the page
    # allocator cannot satisfy __GFP_NOFAIL and WARNs. In strict mode the raise comes
    # after __vmalloc_area_node's failure path has vfree()d everything.
    k = Kernel(profile, ram="64M", strict=True)
    k.vmalloc(P)
    before = _baseline(k)
    with pytest.raises(KernelWarning, match="__GFP_NOFAIL"):
        k.__vmalloc(13500 * P, GFP_KERNEL | __GFP_NOFAIL)
    k.run_deferred_work()
    used, _slab, busy = _baseline(k)
    assert (used, busy) == (before[0], before[2])
    assert k.nr_vmalloc_pages == 1  # the vmalloc(P) above
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_strict_vfree_after_bad_page_state_finishes_the_free(profile: str) -> None:
    k = Kernel(profile, ram="64M", strict=True)
    k.vmalloc(P)
    before = _baseline(k)
    a = k.vmalloc(3 * P)
    vm = k.find_vm_area(a)
    assert vm is not None and vm.pages is not None
    k.phys.free_pages(int(vm.pages[0]))  # behind vmalloc's back (no API, no WARN)
    with pytest.raises(KernelWarning, match="Bad page state"):
        k.vfree(a)
    # The other two pages, the vm_struct and the range were still freed.
    assert k.find_vm_area(a) is None and k.nr_vmalloc_pages == 1  # vmalloc(P) above
    assert _baseline(k)[0] == before[0]
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_free_pages_refuses_a_vmalloc_page(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    a = k.vmalloc(2 * P)
    vm = k.find_vm_area(a)
    assert vm is not None and vm.pages is not None
    pfn = int(vm.pages[0])
    k.free_pages([pfn])
    assert f"pfn {pfn:#x} was not handed out by alloc_pages()" in k.log.lines[-1].text
    assert k.vm.external_pages == 0
    got = k.alloc_pages(200)
    assert pfn not in got  # the page was not freed, so it cannot be handed out again
    k.free_pages(got)
    k.check()
    k.vfree(a)
    k.check()


def test_free_pages_refuses_a_page_vmap_still_maps() -> None:
    k = Kernel("6.18", ram="64M")
    pages = k.alloc_pages(2)
    a = k.vmap(pages)
    k.free_pages(pages)
    assert "still mapped by the vmap area" in k.log.lines[-1].text
    assert k.vm.external_pages == 2
    k.check()
    k.vunmap(a)
    k.free_pages(pages)
    assert k.vm.external_pages == 0
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_vstart_in_the_first_page_is_refused(profile: str) -> None:
    # The kernel's free space starts at address 1 (vmap_init_free_space), so align 1
    # from vstart 0 would hand out 0x1-0x2001 (5.4+) or 0 (4.19): no kernel caller
    # passes such a range; the model refuses it before changing anything.
    k = Kernel(profile, ram="64M")
    with pytest.raises(ValueError, match="vstart 0x0"):
        k.alloc_vmap_area(8192, 1, 0, 1 << 20)
    with pytest.raises(ValueError, match="vstart 0x0"):
        k.__vmalloc_node_range(8192, 1, 0, 1 << 20)
    with pytest.raises(ValueError, match="not page aligned"):
        k.alloc_vmap_area(8192, 1, k.VMALLOC_START + 1, k.VMALLOC_END)
    assert k.vmap_space.nr_busy == 0
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_negative_vstart_is_unsigned_and_fails(profile: str) -> None:
    # vstart -4096 is 0xfffffffffffff000 as unsigned long: above vend, so no block
    # fits; alloc_vmap_area purges, retries and gives up with -EBUSY and its text.
    k = Kernel(profile, ram="64M")
    assert k.alloc_vmap_area(8192, 1, -4096, 1 << 20) == -16
    want = k.profile.alloc_fail_warning.format(size=8192, vstart=ULONG_MAX - 4095, vend=1 << 20)
    assert k.log.lines[-1].text == want
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_vunmap_of_a_vmalloc_area_is_a_named_leak(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    a = k.vmalloc(2 * P)
    k.vunmap(a)  # the kernel frees the vm_struct and leaks the two pages silently
    with pytest.raises(InvariantError, match=f"leaked: VmStruct\\({a:#x}-"):
        k.check()


# ------------------------------------------------------------- API arguments
@pytest.mark.parametrize("profile", PROFILES)
def test_sizes_are_unsigned_long(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    assert k.vmalloc(-1) == 0
    # -1 is 18446744073709551615 bytes: more pages than totalram_pages().
    want = (
        "vmalloc error: size 18446744073709551615, exceeds total pages"
        if profile == "6.18"
        else "vmalloc: allocation failure: 18446744073709551615 bytes"
    )
    assert k.log.lines[-1].text.split(", mode:")[0].endswith(want)
    # kmalloc(-1): kmalloc_large of order 52 > MAX_PAGE_ORDER, WARN_ON_ONCE and NULL.
    assert k.kmalloc(-1) == 0
    assert "order 52 > MAX_PAGE_ORDER 10" in k.log.lines[-1].text
    k.check()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda k: k.vmalloc(8192.0), "size"),
        (lambda k: k.vmalloc("8192"), "size"),
        (lambda k: k.vmalloc(None), "size"),
        (lambda k: k.vmalloc(8192, cpu=1.0), "cpu"),
        (lambda k: k.kmalloc(1.5), "size"),
        (lambda k: k.vfree(1.0), "addr"),
        (lambda k: k.vmalloc_node(8192, 0.0), "node"),
        (lambda k: k.__vmalloc(8192, None), "gfp"),
        (lambda k: k.vmap([1.5]), "pages"),
    ],
)
def test_wrong_types_name_the_argument(call, name: str) -> None:
    k = Kernel("6.18", ram="64M")
    with pytest.raises(TypeError, match=name):
        call(k)
    k.check()


def test_numpy_integers_are_integers() -> None:
    k = Kernel("6.18", ram="64M")
    a = k.vmalloc(np.int64(8192), cpu=np.int64(1))
    assert a == k.VMALLOC_START
    k.vfree(np.uint64(a))
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_page_arrays_are_checked(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    pages = k.alloc_pages(1)
    with pytest.raises(ValueError, match="count 2 but pages has only 1"):
        k.vmap(pages, 2)
    with pytest.raises(ValueError, match="count 2 but pages has only 1"):
        k.vm_map_ram(pages, 2)
    with pytest.raises(ValueError, match="pfn -0x1"):
        k.vmap([-1])
    with pytest.raises(TypeError, match="pages"):
        k.vmap([1 << 64])
    beyond = k.phys.max_pfn + (1 << 40)  # would be truncated to 40 bits in a PTE
    with pytest.raises(ValueError, match="not a page of this machine"):
        k.vm_map_ram([beyond])
    assert k.vmap_space.nr_busy == 0
    k.free_pages(pages)
    k.check()


@pytest.mark.parametrize("profile", PROFILES)
def test_ioremap_ranges(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    # phys_addr -4096 is 0xfffffffffffff000 (resource_size_t): no wrap with 4096
    # bytes, but beyond x86_phys_bits: "ioremap: invalid physical address %llx" and
    # WARN_ON_ONCE(1).
    assert k.ioremap(-4096, 4096) == 0
    assert _texts(k)[-2:] == [
        "ioremap: invalid physical address fffffffffffff000",
        "__ioremap_caller: WARN_ON_ONCE(1)",
    ]
    # 8192 bytes from there wrap around: "Don't allow wraparound", NULL, silent.
    n = len(k.log.lines)
    assert k.ioremap(ULONG_MAX - 4095, 8192) == 0
    assert len(k.log.lines) == n
    # Beyond the physical address bits: the text again, the WARN only once.
    assert k.ioremap(1 << 60, 8192) == 0
    assert _texts(k)[-1] == "ioremap: invalid physical address 1000000000000000"
    assert k.vmap_space.nr_busy == 0
    assert "phys=0x-" not in k.vmallocinfo()
    k.check()


def test_nodes_must_exist() -> None:
    k = Kernel("6.18", ram="64M")
    for call in (
        lambda: k.vmalloc_node(8192, 5),
        lambda: k.vzalloc_node(8192, 1),
        lambda: k.__vmalloc_node(8192, 1, GFP_KERNEL, -2),
        lambda: k.vm_map_ram(k.alloc_pages(1), 1, 3),
    ):
        with pytest.raises(ValueError, match="does not exist"):
            call()
    assert k.vmalloc_node(8192, 0) and k.vmalloc_node(8192, -1)


def test_vm_map_ram_in_interrupt_context_may_sleep() -> None:
    # the might_sleep() it reaches is alloc_vmap_area's (new vmap block):
    # v6.18 mm/vmalloc.c:2031: might_sleep(); -- printed only with
    # CONFIG_DEBUG_ATOMIC_SLEEP (off on the 6.18 machine)
    k = Kernel("6.18", ram="64M")
    pages = k.alloc_pages(1)
    with k.interrupt_context():
        a = k.vm_map_ram(pages, 1)
    assert a and k.log.lines == []
    k.log.configs = frozenset({"CONFIG_DEBUG_ATOMIC_SLEEP"})
    with k.interrupt_context():
        b = k.vm_map_ram(pages, 1)  # the same vmap block has room: no alloc_vmap_area
    assert b and k.log.lines == []
    big = k.alloc_pages(65)  # > VMAP_MAX_ALLOC (64): a VA of its own
    with k.interrupt_context():
        c = k.vm_map_ram(big, 65)
    assert c and _texts(k) == [
        "BUG: sleeping function called from invalid context at mm/vmalloc.c:2031"
    ]
    assert k.log.lines[-1].level == "warn"  # it goes on: never raises
    k.vm_unmap_ram(c, 65)
    k.vm_unmap_ram(b, 1)
    k.free_pages(big)
    k.vm_unmap_ram(a, 1)
    k.free_pages(pages)
    k.check()


def test_kernel_arguments() -> None:
    with pytest.raises(ValueError, match="deferred_work"):
        Kernel(deferred_work="bogus")  # type: ignore[arg-type]


def test_ram_that_does_not_fit_says_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Kernel, "HOST_BYTES_PER_PAGE", 1 << 40)
    k = Kernel(ram="1T")
    with pytest.raises(MemoryError, match=r"at most about ram=.* fits"):
        k.vmalloc(P)


# ----------------------------------------------------------- kernel semantics
def test_vmap_pfn_of_a_valid_pfn_warns_once_and_fails() -> None:
    # vmap_pfn_apply: WARN_ON_ONCE(pfn_valid(pfn)) -> -EINVAL; vmap_pfn frees the
    # area and returns NULL.
    k = Kernel("6.18", ram="64M")
    dev = k.phys.max_pfn + 16
    assert k.vmap_pfn([dev, 5]) == 0
    assert _texts(k) == ["vmap_pfn_apply: WARN_ON_ONCE(pfn_valid(pfn))"]
    assert k.vmap_pfn([5]) == 0
    assert len(k.log.lines) == 1  # once per model
    assert k.vmap_space.nr_busy == 0
    k.check()
    assert Kernel("6.18", ram="64M").vmap_pfn([5]) == 0  # another model: fires again
    with pytest.raises(ValueError, match=r"does not exist in kernel 5\.4"):
        Kernel("5.4", ram="64M").vmap_pfn([dev])


def test_vrealloc_shrink_zeroes_only_when_asked() -> None:
    k = Kernel("6.18", ram="64M")
    p = k.vmalloc(8192)
    k.write(p, b"\xaa" * 8192)
    assert k.vrealloc(p, 4096) == p  # init_on_free/alloc off, no __GFP_ZERO
    assert k.read(p + 4096, 16) == b"\xaa" * 16
    assert k.vrealloc(p, 8192) == p
    assert k.vrealloc(p, 1000, GFP_KERNEL | __GFP_ZERO) == p
    assert k.read(p + 1000, 16) == bytes(16)
    k.vm.init_on_free = True
    k.write(p, b"\xbb" * 1000)
    assert k.vrealloc(p, 500) == p
    assert k.read(p + 500, 16) == bytes(16)


def test_vrealloc_mismatch_and_alignment_texts() -> None:
    k = Kernel("6.18", ram="64M")
    p = k.vmalloc(8192)
    vm = k.find_vm_area(p)
    assert vm is not None
    vm.requested_size = get_vm_area_size(vm) + 1
    assert k.vrealloc(p, 100) == 0
    assert _texts(k)[-1] == f"vrealloc() has mismatched area vs requested sizes ({p:#x})"
    vm.requested_size = 8192
    q = k.vmalloc(8192)  # 0x...4000: not 1 MiB aligned
    assert k.vrealloc(q, 100, align=1 << 20) == 0
    assert _texts(k)[-1] == "will not reallocate with a bigger alignment (0x100000)"


def test_nofail_vm_struct_retry_hangs_clearly() -> None:
    # 6.18: "vm_struct allocation failed. Retrying." and goto again; a 64 KiB range
    # cannot hold 1 MiB, ever: the model says so after unwinding.
    k = Kernel("6.18", ram="64M")
    start = k.VMALLOC_START
    with pytest.raises(KernelHang, match="retry forever"):
        k.__vmalloc_node_range(1 << 20, 1, start, start + (64 << 10), GFP_KERNEL | __GFP_NOFAIL)
    retry = [t for t in _texts(k) if "vm_struct allocation failed. Retrying." in t]
    assert len(retry) == 2
    assert "vmalloc error: size 1048576, vm_struct allocation failed. Retrying." in retry[0]
    assert k.vmap_space.nr_busy == 0
    k.check()
    # 5.4 has no retry loop: a plain failure.
    k54 = Kernel("5.4", ram="64M")
    s = k54.VMALLOC_START
    assert k54.__vmalloc_node_range(1 << 20, 1, s, s + (64 << 10), GFP_KERNEL | __GFP_NOFAIL) == 0


@pytest.mark.parametrize("profile", ["4.19", "5.4"])
def test_54_vmalloc_failure_prints_gfp_kernel(profile: str) -> None:
    # 5.4 vmalloc() passes GFP_KERNEL; the HIGHMEM bit is __vmalloc_area_node's
    # highmem_mask, used for the pages only: mode:0xcc0(GFP_KERNEL).
    k = Kernel(profile, ram="64M")
    assert k.vmalloc(13500 * P) == 0
    line = _texts(k)[-1]
    assert "vmalloc: allocation failure, allocated" in line
    assert "mode:0xcc0(GFP_KERNEL)," in line
    assert k.vmalloc(1 << 40) == 0
    assert "mode:0xcc0(GFP_KERNEL)," in _texts(k)[-1]


def test_618_unaligned_vunmap_texts() -> None:
    k = Kernel("6.18", ram="64M")
    a = k.vmalloc(P)
    k.vunmap(a + 1)
    assert _texts(k)[-2:] == [
        f"Trying to vfree() bad address ({a + 1:#x})",
        f"Trying to vunmap() nonexistent vm area ({a + 1:#x})",
    ]


def test_vm_unmap_ram_of_a_missing_area() -> None:
    k = Kernel("6.18", ram="64M")
    k.vm_unmap_ram(k.VMALLOC_START, 1024)  # > VMAP_MAX_ALLOC: find_unlink_vmap_area
    k.vm_unmap_ram(k.VMALLOC_START, 1024)
    assert _texts(k) == ["vm_unmap_ram: WARN_ON_ONCE(!va)"]
    assert k.log.lines[0].level == "WARN"
    k54 = Kernel("5.4", ram="64M")
    k54.vm_unmap_ram(k54.VMALLOC_START, 1024)
    assert k54.log.lines[-1].level == "BUG"


@pytest.mark.parametrize("profile", PROFILES)
def test_vm_map_ram_count_zero(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    assert k.vm_map_ram(k.alloc_pages(1), 0) == 0
    assert _texts(k)[-1] == "vb_alloc: WARN_ON(size == 0)"


def test_kvmalloc_above_int_max_is_a_bare_warn_on_once() -> None:
    k = Kernel("6.18", ram="64M")
    assert k.kvmalloc(INT_MAX + 1) == 0
    assert k.kvmalloc(INT_MAX + 1) == 0
    assert _texts(k) == ["__kvmalloc_node_noprof: WARN_ON_ONCE(!(flags & __GFP_NOWARN))"]
    k2 = Kernel("6.18", ram="64M")
    assert k2.kvmalloc(INT_MAX + 1, GFP_KERNEL | __GFP_NOWARN) == 0
    assert k2.log.lines == []


def test_iounmap_bad_address_is_printk_not_warn() -> None:
    k = Kernel("6.18", ram="64M", strict=True)
    k.iounmap(k.VMALLOC_START + (5 << 20))  # KERN_ERR + dump_stack: no raise
    assert k.log.lines[-1].level == "warn"
    assert k.log.lines[-1].text == f"iounmap: bad address {k.VMALLOC_START + (5 << 20):#x}"
    n = len(k.log.lines)
    k.iounmap(0x1000)  # at or below high_memory: ignored
    assert len(k.log.lines) == n


def test_allow_huge_below_pmd_size_aligns_to_page_size() -> None:
    # align = max(original_align, 1UL << shift) with shift PAGE_SHIFT below PMD_SIZE.
    k = Kernel("6.18", ram="64M")
    events: list = []
    k.trace_subscribe("alloc_vmap_area", events.append)
    assert k.vmalloc_huge(8192)
    assert events[-1].align == P and events[-1].size == 3 * P


def test_419_vmalloc_used_is_zero() -> None:
    for profile, used in (("4.19", 0), ("5.4", 8), ("6.18", 8)):
        k = Kernel(profile, ram="64M")
        k.vmalloc(2 * P)
        line = next(x for x in k.meminfo().splitlines() if x.startswith("VmallocUsed:"))
        assert line.split()[1] == str(used)


def test_kvmalloc_node_align() -> None:
    k = Kernel("6.18", ram="64M")
    k.vmalloc(P)
    # 8 MiB: kmalloc (order 11 > MAX_PAGE_ORDER) fails, the vmalloc fallback maps
    # huge (align 2 MiB) but kvmalloc_node_align's 4 MiB wins: max(4M, 2M).
    events: list = []
    k.trace_subscribe("alloc_vmap_area", events.append)
    a = k.kvmalloc_node(8 << 20, align=1 << 22)
    assert a == k.VMALLOC_START + (4 << 20)
    assert events[0].align == 1 << 22
    with pytest.raises(ValueError, match="no align argument"):
        Kernel("5.4", ram="64M").kvmalloc_node(1 << 20, align=1 << 16)


@pytest.mark.parametrize(("arch", "digits"), [("i386", 8), ("arm", 8), ("x86_64", 16)])
def test_vmallocinfo_widths(arch: str, digits: int) -> None:
    # %pK pads to 2 * sizeof(void *) digits; phys=%pa to 2 * sizeof(phys_addr_t).
    k = Kernel("6.18", arch=arch, ram="512M")
    k.ioremap(0xFE000000, P)
    line = k.vmallocinfo().splitlines()[0]
    start, end = line.split()[0].split("-")
    assert len(start) == len(end) == 2 + digits
    assert f"phys=0x{0xFE000000:0{digits}x} ioremap" in line


@pytest.mark.parametrize("profile", PROFILES)
def test_ioremap_of_system_ram_is_refused(profile: str) -> None:
    # __ioremap_caller: IORES_MAP_SYSTEM_RAM -> WARN_ONCE(1, "ioremap on RAM at %pa -
    # %pa\n", &phys_addr, &last_addr), NULL. The 64 MiB model's e820 RAM is
    # [0x1000, 0x9f000) and [0x100000, 0x4000000).
    k = Kernel(profile, ram="64M")
    assert k.ioremap(0x200000, 0x2000) == 0
    assert _texts(k) == ["ioremap on RAM at 0x0000000000200000 - 0x0000000000201fff"]
    assert k.ioremap(0x9E000, 0x1001) == 0  # the last byte's page is RAM-free, not the first
    assert len(k.log.lines) == 1  # WARN_ONCE
    assert k.ioremap(0x9F000, 0x2000)  # the hole below 1 MiB is not RAM
    assert k.ioremap(0xFE000000, 0x1000)
    k.check()


def test_warn_on_once_sites_fire_once_per_model() -> None:
    # 6.18 __vmalloc_node_range: WARN_ON_ONCE(!size) -- printed (and, strict, raised)
    # the first time only; the call fails every time.
    k = Kernel("6.18", ram="64M", strict=True)
    with pytest.raises(KernelWarning, match="WARN_ON_ONCE"):
        k.vmalloc(0)
    assert k.vmalloc(0) == 0
    assert _texts(k) == ["__vmalloc_node_range: WARN_ON_ONCE(!size)"]
    k.check()
    other = Kernel("6.18", ram="64M")
    assert other.vmalloc(0) == 0
    assert len(other.log.lines) == 1


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda k: k.find_vm_area(1.5), "addr"),
        (lambda k: k.find_vmap_area(1.5), "addr"),
        (lambda k: k.vmalloc_to_pfn(1.5), "addr"),
        (lambda k: k.vread(1.5, 8), "addr"),
        (lambda k: k.read(1.5, 8), "addr"),
        (lambda k: k.write(k.VMALLOC_START, 1.5), "data"),
        (lambda k: k.walk(None), "addr"),
        (lambda k: k.free_vmap_area_noflush(1.5), "va"),
        (lambda k: k.alloc_vmap_area(8192, va_flags=1.5), "va_flags"),
        (lambda k: k.kvzalloc(8192, 1.5), "gfp"),
        (lambda k: k.ioremap(0xFE000000, 4096, prot=1.5), "prot"),
    ],
)
def test_more_wrong_types_name_the_argument(call, name: str) -> None:
    k = Kernel("6.18", ram="64M")
    with pytest.raises(TypeError, match=name):
        call(k)
    k.check()


def test_host_budget_does_not_depend_on_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's host-memory refusals (ioremap's and Kernel(ram=...)'s) follow the
    host's total memory, a quarter of it, never what happens to be free: the same call
    gets the same answer on every run (the accelerated-vs-reference fuzz compares them)."""
    import os

    from pyvmalloc.args import host_budget, host_fits

    pages = {"SC_PHYS_PAGES": 1 << 20, "SC_PAGE_SIZE": 4096}  # a 4 GiB host
    for free in (1, 1 << 19, 1 << 20):  # none, half, all of it free
        pages["SC_AVPHYS_PAGES"] = free
        monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
        assert host_budget() == 1 << 30
        host_fits("this", 1 << 30)  # exactly the budget: taken
        with pytest.raises(MemoryError, match=r"at most 1024 MiB \(a quarter"):
            host_fits("this", (1 << 30) + 1)
        with pytest.raises(MemoryError, match=r"at most about ram=.* fits"):
            Kernel(ram="1T").vmalloc(P)  # 1 TiB of RAM: 5 GiB of page arrays
        assert Kernel(ram="64G").vmalloc(P)  # 320 MiB of page arrays
