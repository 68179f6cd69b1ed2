"""The kernel's own line where the model stops: ``kernel BUG at FILE:LINE!``.

``BUG_ON(cond)`` traps; ``report_bug()`` (lib/bug.c) prints ``kernel BUG at %s:%u!``
with the file and line of the BUG_ON site. Every expected line below was read in the
release's source (see :mod:`pyvmalloc.bugsites` for the trees); the comment quotes the
statement on that line. Where a release has no check, the model refuses the call in
its own words (level ``model``), never with an invented kernel line.
"""

from __future__ import annotations

import pytest

from pyvmalloc import Kernel, KernelWarning
from pyvmalloc.bugsites import BUG_SITES, bug_sites
from pyvmalloc.config import PROFILES
from pyvmalloc.gfp import __GFP_DMA, __GFP_DMA32, __GFP_HIGHMEM
from pyvmalloc.printk import KernelLog
from pyvmalloc.vmalloc import VM_IOREMAP

P = 4096


def _bugs(k: Kernel) -> list[str]:
    return [line.text for line in k.log.lines if line.level == "BUG"]


def _refusals(k: Kernel) -> list[str]:
    return [line.text for line in k.log.lines if line.level == "model"]


def test_every_profile_has_a_line_table() -> None:
    for name, profile in PROFILES.items():
        assert profile.bug_lines == name
        assert bug_sites(profile.bug_lines) is BUG_SITES[name]
    with pytest.raises(ValueError, match=r"no BUG-site line numbers for kernel release '3\.10'"):
        KernelLog(release="3.10")


# alloc_vmap_area's argument checks: three BUG_ONs in 4.19 and 5.4, -EINVAL in 6.18.
# v4.19 mm/vmalloc.c:413: BUG_ON(!size);  :414: BUG_ON(offset_in_page(size));
#   :415: BUG_ON(!is_power_of_2(align));
# v5.4 mm/vmalloc.c:1058: BUG_ON(!size);  :1059: BUG_ON(offset_in_page(size));
#   :1060: BUG_ON(!is_power_of_2(align));
@pytest.mark.parametrize(
    ("profile", "size", "align", "line"),
    [
        ("4.19", 0, 1, 413),
        ("4.19", P + 1, 1, 414),
        ("4.19", P, 3, 415),
        ("4.19", 0, 3, 413),  # the first BUG_ON that fires
        ("5.4", 0, 1, 1058),
        ("5.4", P + 1, 3, 1059),
        ("5.4", P, 0, 1060),
    ],
)
def test_alloc_vmap_area_bad_arguments(profile: str, size: int, align: int, line: int) -> None:
    k = Kernel(profile, cpus=2)
    assert k.alloc_vmap_area(size, align) < 0
    assert _bugs(k) == [f"kernel BUG at mm/vmalloc.c:{line}!"]
    why = f"alloc_vmap_area: invalid size {size:#x} or align {align:#x}"
    assert k.log.lines[-1].why == why
    # report_bug(): CUT_HERE, then "kernel BUG at %s:%u!"; the model's why after them
    assert [ln.split("] ", 1)[1] for ln in str(k.log.lines[-1]).splitlines()] == [
        "------------[ cut here ]------------",
        f"kernel BUG at mm/vmalloc.c:{line}!",
        f"pyvmalloc: {why}",
    ]
    k.check()
    strict = Kernel(profile, cpus=2, strict=True)
    with pytest.raises(KernelWarning) as e:
        strict.alloc_vmap_area(size, align)
    assert str(e.value) == f"kernel BUG at mm/vmalloc.c:{line}! ({why})"
    strict.check()


def test_alloc_vmap_area_bad_arguments_618_are_silent() -> None:
    # v6.18: if (unlikely(!size || offset_in_page(size) || !is_power_of_2(align)))
    #            return ERR_PTR(-EINVAL);
    k = Kernel("6.18", cpus=2)
    assert k.alloc_vmap_area(0, 1) < 0
    assert k.log.lines == []


# BUG_ON(in_interrupt()) in __get_vm_area_node:
# v4.19 mm/vmalloc.c:1380, v5.4 :2047, v6.18 :3181 — each "BUG_ON(in_interrupt());"
# (6.18: the live 6.18.44 bug table; 6.18.2 has it at 3173)
@pytest.mark.parametrize(("profile", "line"), [("4.19", 1380), ("5.4", 2047), ("6.18", 3181)])
def test_vmalloc_in_interrupt(profile: str, line: int) -> None:
    k = Kernel(profile, ram="64M")
    with k.interrupt_context():
        assert k.vmalloc(P) == 0
    assert _bugs(k) == [f"kernel BUG at mm/vmalloc.c:{line}!"]
    assert k.log.lines[-1].why == "vmalloc called in interrupt context"
    with k.interrupt_context():
        assert k.get_vm_area(P, VM_IOREMAP) is None
    assert _bugs(k)[-1] == f"kernel BUG at mm/vmalloc.c:{line}!"
    k.check()


# BUG_ON(in_interrupt()) in vunmap:
# v4.19 mm/vmalloc.c:1608, v5.4 :2350, v6.18 :3471 — each "BUG_ON(in_interrupt());"
# (6.18.44 live bug table; 6.18.2: 3463)
@pytest.mark.parametrize(("profile", "line"), [("4.19", 1608), ("5.4", 2350), ("6.18", 3471)])
def test_vunmap_in_interrupt(profile: str, line: int) -> None:
    k = Kernel(profile, ram="64M")
    pages = k.alloc_pages(1)
    addr = k.vmap(pages)
    with k.interrupt_context():
        k.vunmap(addr)
    assert _bugs(k) == [f"kernel BUG at mm/vmalloc.c:{line}!"]
    assert k.find_vm_area(addr) is not None  # the kernel stopped: nothing was unmapped
    k.vunmap(addr)
    k.free_pages(pages)
    k.check()


# free_vm_area: "BUG_ON(ret != area);" at v4.19 mm/vmalloc.c:2353, v5.4 :3116,
# v6.18 :4625 (6.18.44 live bug table; 6.18.2: 4618) — reached here by freeing the
# same area twice.
@pytest.mark.parametrize(("profile", "line"), [("4.19", 2353), ("5.4", 3116), ("6.18", 4625)])
def test_free_vm_area_twice(profile: str, line: int) -> None:
    k = Kernel(profile, ram="64M")
    area = k.get_vm_area(P, VM_IOREMAP)
    assert area is not None
    k.free_vm_area(area)
    k.free_vm_area(area)
    assert _bugs(k) == [f"kernel BUG at mm/vmalloc.c:{line}!"]
    k.check()


# vm_unmap_ram's address checks, in order (each line is the BUG_ON quoted):
#   v4.19 mm/vmalloc.c:1126 BUG_ON(!addr); 1127 BUG_ON(addr < VMALLOC_START);
#     1128 BUG_ON(addr > VMALLOC_END); 1129 BUG_ON(!PAGE_ALIGNED(addr));
#   v5.4 1743, 1744, 1745, 1746; v6.18 3001, 3002, 3003, 3004 (same four statements;
#   6.18.44 live bug table, 6.18.2 has them at 2993-2996)
VM_UNMAP_RAM_LINES = {"4.19": 1126, "5.4": 1743, "6.18": 3001}


@pytest.mark.parametrize("profile", ["4.19", "5.4", "6.18"])
def test_vm_unmap_ram_bad_address(profile: str) -> None:
    k = Kernel(profile, ram="64M")
    first = VM_UNMAP_RAM_LINES[profile]
    for addr, offset in [
        (0, 0),
        (k.VMALLOC_START - P, 1),
        (k.VMALLOC_END + 1, 2),
        (k.VMALLOC_START + 8, 3),
    ]:
        k.vm_unmap_ram(addr, 1)
        assert _bugs(k)[-1] == f"kernel BUG at mm/vmalloc.c:{first + offset}!"
    assert len(_bugs(k)) == 4
    k.check()


# A small count with no vmap block there: vb_free's "BUG_ON(!vb);" at v4.19
# mm/vmalloc.c:1035 and v5.4 :1646; v6.18's vb_free has no check (xa_load, then
# spin_lock(&vb->lock)): the model refuses in its own words.
@pytest.mark.parametrize(("profile", "line"), [("4.19", 1035), ("5.4", 1646), ("6.18", None)])
def test_vm_unmap_ram_without_a_block(profile: str, line: int | None) -> None:
    k = Kernel(profile, ram="64M")
    k.vm_unmap_ram(k.VMALLOC_START, 1)
    if line is None:
        assert _bugs(k) == []
        (text,) = _refusals(k)
        assert "no vmap block" in text and "no vb_free:!vb check in the 6.18 source" in text
        assert str(k.log.lines[-1]).split("] ", 1)[1].startswith("pyvmalloc: vb_free:")
    else:
        assert _bugs(k) == [f"kernel BUG at mm/vmalloc.c:{line}!"]
    k.check()


def test_vm_unmap_ram_wrong_size_in_a_block_is_the_models_refusal() -> None:
    k = Kernel("6.18", ram="64M")
    pages = k.alloc_pages(1)
    addr = k.vm_map_ram(pages, 1)
    k.vm_unmap_ram(addr, 2)  # no release checks the count against the mapping
    assert _bugs(k) == [] and "the kernel does not check" in _refusals(k)[0]
    k.vm_unmap_ram(addr, 1)
    k.free_pages(pages)
    k.check()


# A large count with no area: v4.19 mm/vmalloc.c:1138 and v5.4 :1755 "BUG_ON(!va);";
# v6.18 :3015 (6.18.2: 3007) "if (WARN_ON_ONCE(!va))" (a WARN, see test_api_hardening).
@pytest.mark.parametrize(("profile", "line"), [("4.19", 1138), ("5.4", 1755)])
def test_vm_unmap_ram_missing_area(profile: str, line: int) -> None:
    k = Kernel(profile, ram="64M")
    k.vm_unmap_ram(k.VMALLOC_START, 1024)
    assert _bugs(k) == [f"kernel BUG at mm/vmalloc.c:{line}!"]
    k.check()


# pcpu_get_vm_areas (5.4, 6.18; 4.19's is not modelled):
#   v5.4 mm/vmalloc.c:3226 BUG_ON(offset_in_page(align) || !is_power_of_2(align));
#     3232 BUG_ON(!IS_ALIGNED(offsets[area], align));
#     3233 BUG_ON(!IS_ALIGNED(sizes[area], align));
#     3243 BUG_ON(start2 < end && start < end2);
#   v6.18 mm/vmalloc.c:4735, 4741, 4742, 4752 (the same four statements; 6.18.44 live
#   bug table, 6.18.2 has them at 4728, 4734, 4735, 4745)
@pytest.mark.parametrize(
    ("profile", "lines"), [("5.4", (3226, 3232, 3233, 3243)), ("6.18", (4735, 4741, 4742, 4752))]
)
def test_pcpu_get_vm_areas_bad_arguments(profile: str, lines: tuple[int, ...]) -> None:
    k = Kernel(profile, ram="64M")
    calls = [
        ([0], [P], P // 2),  # align below a page: offset_in_page(align)
        ([P], [2 * P], 2 * P),  # offset not aligned
        ([0], [3 * P], 2 * P),  # size not aligned
        ([0, P], [2 * P, P], P),  # overlap
    ]
    for (offsets, sizes, align), line in zip(calls, lines, strict=True):
        assert k.pcpu_get_vm_areas(offsets, sizes, align) is None
        assert _bugs(k)[-1] == f"kernel BUG at mm/vmalloc.c:{line}!"
    k.check()


# gfp_zone: "VM_BUG_ON((GFP_ZONE_BAD >> bit) & 1);" at v4.19 include/linux/gfp.h:425,
# v5.4 :448, v6.18 :159 — a BUG only with CONFIG_DEBUG_VM (off on the 6.18 machine),
# else GFP_ZONE_TABLE's 0 (ZONE_DMA) for the bad combination.
@pytest.mark.parametrize(("profile", "line"), [("4.19", 425), ("5.4", 448), ("6.18", 159)])
def test_gfp_zone_bad_combination(profile: str, line: int) -> None:
    k = Kernel(profile, ram="64M")
    for bad in (__GFP_DMA | __GFP_HIGHMEM, __GFP_DMA32 | __GFP_HIGHMEM, __GFP_DMA | __GFP_DMA32):
        assert k.phys.gfp_zone(bad) == 0
    assert k.log.lines == []  # VM_BUG_ON is compiled out
    k.log.configs = frozenset({"CONFIG_DEBUG_VM"})
    k.phys.gfp_zone(__GFP_DMA32 | __GFP_HIGHMEM)
    assert _bugs(k) == [f"kernel BUG at include/linux/gfp.h:{line}!"]


def test_preallocate_vmalloc_pages_panics_in_618_only() -> None:
    # v6.18 arch/x86/mm/init_64.c:1367:
    #   panic("Failed to pre-allocate %s pages for vmalloc area\n", lvl);
    log = KernelLog(release="6.18")
    assert log.BUG("preallocate_vmalloc_pages", "no page for a pud table", "pud")
    assert log.lines[-1].text == (
        "Kernel panic - not syncing: Failed to pre-allocate pud pages for vmalloc area"
    )
    # 4.19 and 5.4 have no preallocate_vmalloc_pages (it arrived in v5.9)
    old = KernelLog(release="5.4")
    old.BUG("preallocate_vmalloc_pages", "no page for a pud table", "pud")
    assert old.lines[-1].level == "model" and "5.4 source" in old.lines[-1].text


def test_kvmalloc_in_interrupt_is_the_models_refusal() -> None:
    k = Kernel("6.18", ram="64M")
    with k.interrupt_context():
        assert k.kvmalloc(8 * P) == 0
    assert _bugs(k) == [] and _refusals(k) == [
        "kvmalloc: a blocking allocation in interrupt context"
    ]
    strict = Kernel("6.18", ram="64M", strict=True)
    with pytest.raises(KernelWarning, match=r"^pyvmalloc: kvmalloc"), strict.interrupt_context():
        strict.kvmalloc(8 * P)


def test_54_overlap_is_find_va_links_bug() -> None:
    # v5.4 mm/vmalloc.c:474: "BUG();" (find_va_links, overlapping sides); v6.18 WARNs
    # "vmalloc bug: 0x%lx-0x%lx overlaps with 0x%lx-0x%lx\n" instead.
    for release, want in [("5.4", "kernel BUG at mm/vmalloc.c:474!")]:
        log = KernelLog(release=release)
        log.BUG("find_va_links:overlap", "vmalloc bug: 0x1000-0x3000 overlaps with 0x2000-0x4000")
        assert log.lines[-1].text == want


def test_419_free_vmap_area_twice() -> None:
    # v4.19.1 mm/vmalloc.c:555: BUG_ON(RB_EMPTY_NODE(&va->rb_node)); (__free_vmap_area)
    k = Kernel("4.19", cpus=2)
    va = k.alloc_vmap_area(2 * P, P)
    assert not isinstance(va, int)
    k.free_vmap_area(va)
    k.free_vmap_area(va)
    assert _bugs(k) == ["kernel BUG at mm/vmalloc.c:555!"]
    k.check()


# alloc_vmap_area's "might_sleep();" (CONFIG_DEBUG_ATOMIC_SLEEP only): v4.19.1
# mm/vmalloc.c:417, v5.4 :1065, v6.18 :2031; __might_resched prints
# "BUG: sleeping function called from invalid context at %s:%d\n" and goes on.
@pytest.mark.parametrize(("profile", "line"), [("4.19", 417), ("5.4", 1065), ("6.18", 2031)])
def test_might_sleep_in_alloc_vmap_area(profile: str, line: int) -> None:
    k = Kernel(profile, ram="64M", strict=True)
    pages = k.alloc_pages(65)
    with k.interrupt_context():
        a = k.vm_map_ram(pages, 65)
    assert a and k.log.lines == []  # the config is off: nothing
    k.vm_unmap_ram(a, 65)
    k.log.configs = frozenset({"CONFIG_DEBUG_ATOMIC_SLEEP"})
    with k.interrupt_context():
        a = k.vm_map_ram(pages, 65)  # strict, yet no exception: the kernel goes on
    assert [ln.text for ln in k.log.lines] == [
        f"BUG: sleeping function called from invalid context at mm/vmalloc.c:{line}"
    ]
    k.vm_unmap_ram(a, 65)
    k.free_pages(pages)
    k.check()
