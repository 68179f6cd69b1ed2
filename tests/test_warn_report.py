"""The kernel's WARN report in the model's dmesg, per release.

On x86 (``__WARN_FLAGS`` defined) in 4.19, 5.4 and 6.18 alike:

* ``WARN(cond, fmt, ...)`` runs ``__warn_printk(fmt)`` (kernel/panic.c), which prints
  ``------------[ cut here ]------------`` and the message, then traps; the trap's
  ``report_bug()`` (lib/bug.c) calls ``__warn()``, which prints ``WARNING: CPU: %d PID:
  %d at %s:%d %pS`` (file and line of the site), the modules, registers and call trace,
  and ``print_oops_end_marker()``: ``---[ end trace %016llx ]---``;
* ``WARN_ON(cond)`` traps at once: no message. 4.19.1's ``report_bug()`` prints the
  cut-here line only for a BUG, so a 4.19 WARN_ON report starts at ``WARNING:``; 5.4.0
  and 6.18.2 print it for every trap that does not carry ``BUGFLAG_NO_CUT_HERE`` (the
  flag WARN() sets, having printed its own);
* the end-trace number is ``oops_id`` in 4.19.1 and 5.4.0 (random at boot, incremented
  before each report; the model's starts at 0) and ``0`` in 6.18.2.

The model prints the CPU of the API call, PID 0 (it has no tasks; its default comm
is swapper/0) and the site's source function without ``+0xOFF/0xSIZE``; it does not
print modules, registers or the call trace (see docs/vmalloc.md). Each expected line
below is written from those rules and the release's source line (quoted).
"""

from __future__ import annotations

import pytest

from pyvmalloc import Kernel, KernelWarning
from pyvmalloc.bugsites import WARN_REPORTS, WARN_SITES, warn_sites
from pyvmalloc.config import PROFILES
from pyvmalloc.printk import TAINT_WARN, KernelLog
from pyvmalloc.vmalloc import VM_FLUSH_RESET_PERMS, VM_MAP, VM_NO_GUARD

CUT = "------------[ cut here ]------------"
P = 4096


def _printed(k: Kernel) -> list[str]:
    """dmesg without the model's ``[ seq] `` prefix."""
    return [ln.split("] ", 1)[1] for ln in k.dmesg().split("\n")]


def _end(n: int) -> str:
    return f"---[ end trace {n:016x} ]---"


def test_every_profile_has_a_warn_table() -> None:
    for name, profile in PROFILES.items():
        assert warn_sites(profile.bug_lines) is WARN_SITES[name]
        assert profile.bug_lines in WARN_REPORTS
    with pytest.raises(ValueError, match=r"no WARN-site line numbers for kernel release '3\.10'"):
        warn_sites("3.10")


# vfree() of a page-aligned address with no area (what a double free prints):
#   v4.19.1 mm/vmalloc.c:1510 and v5.4.0 :2240, in __vunmap():
#     WARN(1, KERN_ERR "Trying to vfree() nonexistent vm area (%p)\n", addr);
#   v6.18 :3430 in vfree() (6.18.44's bug table; 6.18.2: 3422), the same WARN.
# 4.19/5.4 number the reports from oops_id (model: 1, 2, ...); 6.18 prints 0.
@pytest.mark.parametrize(
    ("profile", "line", "func", "ids"),
    [
        ("4.19", 1510, "__vunmap", (1, 2)),
        ("5.4", 2240, "__vunmap", (1, 2)),
        ("6.18", 3430, "vfree", (0, 0)),
    ],
)
def test_vfree_nonexistent_report(profile: str, line: int, func: str, ids: tuple[int, int]) -> None:
    k = Kernel(profile, cpus=2, ram="64M")
    a = k.vmalloc(P, cpu=1)
    k.vfree(a, cpu=1)
    k.vfree(a, cpu=1)  # double free
    k.vfree(a, cpu=0)
    msg = f"Trying to vfree() nonexistent vm area ({a:#x})"
    assert _printed(k) == [
        CUT,
        msg,
        f"WARNING: CPU: 1 PID: 0 at mm/vmalloc.c:{line} {func}",
        _end(ids[0]),
        CUT,
        msg,
        f"WARNING: CPU: 0 PID: 0 at mm/vmalloc.c:{line} {func}",
        _end(ids[1]),
    ]
    assert [ln.text for ln in k.log.lines] == [msg, msg]  # the message, as before
    assert k.log.tainted & TAINT_WARN


# vm_map_ram(pages, 0): vb_alloc(0) hits WARN_ON(size == 0), a bare WARN_ON:
#   v4.19.1 mm/vmalloc.c:970, v5.4.0 :1581, v6.18 :2829 (6.18.2: 2821; every 6.18.44
#   site past line 2243 sits 8 lines lower, as vb_free 2903 -> 2911 does).
# No message; 4.19 prints no cut-here line for a WARN_ON trap.
@pytest.mark.parametrize(
    ("profile", "line", "cut", "end"),
    [("4.19", 970, False, 1), ("5.4", 1581, True, 1), ("6.18", 2829, True, 0)],
)
def test_bare_warn_on_report(profile: str, line: int, cut: bool, end: int) -> None:
    k = Kernel(profile, cpus=2, ram="64M")
    assert k.vm_map_ram(k.alloc_pages(1), 0, cpu=1) == 0
    assert _printed(k) == [CUT] * cut + [
        f"WARNING: CPU: 1 PID: 0 at mm/vmalloc.c:{line} vb_alloc",
        "pyvmalloc: vb_alloc: WARN_ON(size == 0)",
        _end(end),
    ]


# 6.18 vm_unmap_ram(): if (WARN_ON_ONCE(!va)) return;  at :3015 (6.18.2: 3007).
# A WARN_ON_ONCE site reports the first time only (BUGFLAG_ONCE, then BUGFLAG_DONE).
def test_warn_on_once_reports_once() -> None:
    k = Kernel("6.18", ram="64M")
    k.vm_unmap_ram(k.VMALLOC_START, 1024)
    k.vm_unmap_ram(k.VMALLOC_START, 1024)
    assert _printed(k) == [
        CUT,
        "WARNING: CPU: 0 PID: 0 at mm/vmalloc.c:3015 vm_unmap_ram",
        "pyvmalloc: vm_unmap_ram: WARN_ON_ONCE(!va)",
        _end(0),
    ]


# An unaligned vunmap():
#   v6.18 remove_vm_area() :3295 (6.18.2: 3287)
#     if (WARN(!PAGE_ALIGNED(addr), "Trying to vfree() bad address (%p)\n", addr))
#   then vunmap() :3478 (6.18.44 bug table; 6.18.2: 3470)
#     WARN(1, KERN_ERR "Trying to vunmap() nonexistent vm area (%p)\n", addr);
#   v5.4.0 __vunmap() :2234, the same bad-address WARN, and nothing more.
def test_unaligned_vunmap_reports() -> None:
    k = Kernel("6.18", ram="64M")
    a = k.vmalloc(P)
    k.vunmap(a + 1)
    assert _printed(k) == [
        CUT,
        f"Trying to vfree() bad address ({a + 1:#x})",
        "WARNING: CPU: 0 PID: 0 at mm/vmalloc.c:3295 remove_vm_area",
        _end(0),
        CUT,
        f"Trying to vunmap() nonexistent vm area ({a + 1:#x})",
        "WARNING: CPU: 0 PID: 0 at mm/vmalloc.c:3478 vunmap",
        _end(0),
    ]
    k54 = Kernel("5.4", ram="64M")
    b = k54.vmalloc(P)
    k54.vunmap(b + 1)
    assert _printed(k54) == [
        CUT,
        f"Trying to vfree() bad address ({b + 1:#x})",
        "WARNING: CPU: 0 PID: 0 at mm/vmalloc.c:2234 __vunmap",
        _end(1),
    ]


# 6.18 vrealloc_node_align_noprof() :4152 (6.18.44 bug table; 6.18.2: 4144)
#   WARN(1, "Trying to vrealloc() nonexistent vm area (%p)\n", p);
def test_vrealloc_nonexistent_report() -> None:
    k = Kernel("6.18", cpus=2, ram="64M")
    a = k.vmalloc(P)
    k.vfree(a)
    assert k.vrealloc(a, 2 * P, cpu=1) == 0
    assert _printed(k)[-4:] == [
        CUT,
        f"Trying to vrealloc() nonexistent vm area ({a:#x})",
        "WARNING: CPU: 1 PID: 0 at mm/vmalloc.c:4152 vrealloc_node_align_noprof",
        _end(0),
    ]


def test_strict_mode_still_raises_the_message() -> None:
    k = Kernel("6.18", ram="64M", strict=True)
    a = k.vmalloc(P)
    k.vfree(a)
    with pytest.raises(KernelWarning, match=r"Trying to vfree\(\) nonexistent vm area"):
        k.vfree(a)


def test_warn_at_a_site_without_a_line_is_the_models_line() -> None:
    log = KernelLog(release="6.18")
    log.WARN("free_percpu: 0x1000 is not a percpu object")
    assert (
        str(log.lines[-1]) == "[     1] pyvmalloc: WARN: free_percpu: 0x1000 is not a percpu object"
    )
    log.WARN("vfree in 4.19 terms", "vunmap:nonexistent")  # a 6.18 site: a report
    assert "at mm/vmalloc.c:3478 vunmap" in str(log.lines[-1])
    old = KernelLog(release="4.19")
    old.WARN("no such WARN in 4.19", "vunmap:nonexistent")  # 4.19 has no such site
    assert str(old.lines[-1]) == "[     1] pyvmalloc: WARN: no such WARN in 4.19"
    assert log.tainted == old.tainted == TAINT_WARN  # add_taint(TAINT_WARN): bit 9


def test_warn_without_a_cpu_says_so() -> None:
    log = KernelLog(release="6.18")
    log.WARN("vmalloc bug: 0x1000-0x2000 overlaps with 0x1000-0x3000", "find_va_links:overlap")
    # v6.18 mm/vmalloc.c:1197 (6.18.44 bug table) in find_va_links():
    #   WARN(1, "vmalloc bug: 0x%lx-0x%lx overlaps with 0x%lx-0x%lx\n", ...)
    assert str(log.lines[-1]).split("\n")[2] == (
        "[     1] WARNING: CPU: ? PID: 0 at mm/vmalloc.c:1197 find_va_links"
    )


def _vrealloc_sizes(k: Kernel) -> None:
    p = k.vmalloc(2 * P)
    vm = k.find_vm_area(p)
    assert vm is not None
    vm.requested_size = 3 * P  # alloced_size < old_size
    k.vrealloc(p, 100)


def _vrealloc_align(k: Kernel) -> None:
    k.vmalloc(P)
    k.vrealloc(k.vmalloc(P), 100, align=1 << 20)  # 0x...2000 is not 1 MiB aligned


# Each site, triggered through the API; the expected WARNING line is the release's
# line (quoted) and the site's source function.
@pytest.mark.parametrize(
    ("profile", "trigger", "where"),
    [
        # v4.19.1 mm/vmalloc.c:1504 in __vunmap():
        #   if (WARN(!PAGE_ALIGNED(addr), "Trying to vfree() bad address (%p)\n", addr))
        ("4.19", lambda k: k.vfree(k.vmalloc(P) + 8), "mm/vmalloc.c:1504 __vunmap"),
        # v6.18 :4158, :4161 (6.18.44 bug table; 6.18.2: 4150, 4153), in
        # vrealloc_node_align_noprof(): WARN(alloced_size < old_size, "vrealloc() has
        # mismatched area vs requested sizes (%p)\n", p); WARN(!IS_ALIGNED(p, align),
        # "will not reallocate with a bigger alignment (0x%lx)\n", align)
        ("6.18", _vrealloc_sizes, "mm/vmalloc.c:4158 vrealloc_node_align_noprof"),
        ("6.18", _vrealloc_align, "mm/vmalloc.c:4161 vrealloc_node_align_noprof"),
        # v6.18 vmap() :3510 / :3517 (6.18.2: 3502 / 3509):
        #   if (WARN_ON_ONCE(flags & VM_FLUSH_RESET_PERMS))  /  (flags & VM_NO_GUARD)
        (
            "6.18",
            lambda k: k.vmap(k.alloc_pages(1), 1, flags=VM_MAP | VM_FLUSH_RESET_PERMS),
            "mm/vmalloc.c:3510 vmap",
        ),
        (
            "6.18",
            lambda k: k.vmap(k.alloc_pages(1), 1, flags=VM_MAP | VM_NO_GUARD),
            "mm/vmalloc.c:3517 vmap",
        ),
        # v6.18 vmap_pfn_apply() :3556 (6.18.2: 3548): if (WARN_ON_ONCE(pfn_valid(pfn)))
        ("6.18", lambda k: k.vmap_pfn([5]), "mm/vmalloc.c:3556 vmap_pfn_apply"),
        # v6.18 __vmalloc_node_range_noprof() :3838 (6.18.2: 3830): WARN_ON_ONCE(!size)
        ("6.18", lambda k: k.vmalloc(0), "mm/vmalloc.c:3838 __vmalloc_node_range_noprof"),
        # v6.18.2 mm/slub.c:7124 in __kvmalloc_node_noprof(), size > INT_MAX:
        #   WARN_ON_ONCE(!(flags & __GFP_NOWARN));
        ("6.18", lambda k: k.kvmalloc((1 << 31) + 1), "mm/slub.c:7124 __kvmalloc_node_noprof"),
        # __ioremap_caller(): WARN_ONCE(1, "ioremap on RAM at %pa - %pa\n", ...) at
        # arch/x86/mm/ioremap.c v4.19.1 :165, v5.4.0 :187, v6.18.2 :216; and after
        # "ioremap: invalid physical address %llx", WARN_ON_ONCE(1) at :155, :177, :206
        (
            "4.19",
            lambda k: k.ioremap(0x200000, 0x2000),
            "arch/x86/mm/ioremap.c:165 __ioremap_caller",
        ),
        (
            "5.4",
            lambda k: k.ioremap(0x200000, 0x2000),
            "arch/x86/mm/ioremap.c:187 __ioremap_caller",
        ),
        (
            "6.18",
            lambda k: k.ioremap(0x200000, 0x2000),
            "arch/x86/mm/ioremap.c:216 __ioremap_caller",
        ),
        ("4.19", lambda k: k.ioremap(-4096, 4096), "arch/x86/mm/ioremap.c:155 __ioremap_caller"),
        ("5.4", lambda k: k.ioremap(-4096, 4096), "arch/x86/mm/ioremap.c:177 __ioremap_caller"),
        ("6.18", lambda k: k.ioremap(-4096, 4096), "arch/x86/mm/ioremap.c:206 __ioremap_caller"),
    ],
)
def test_warn_site_lines(profile: str, trigger, where: str) -> None:
    k = Kernel(profile, ram="64M")
    trigger(k)
    warned = [ln for ln in _printed(k) if ln.startswith("WARNING:")]
    assert warned == [f"WARNING: CPU: 0 PID: 0 at {where}"]


# A PTE already set where a mapping goes: WARN_ON(!pte_none(...)) -> -EBUSY, in
#   v4.19.1 vmap_pte_range() mm/vmalloc.c:150 and v5.4.0 :153: if (WARN_ON(!pte_none(*pte)))
#   v6.18 vmap_pages_pte_range() :534 (before line 2243: as in 6.18.2)
#     if (WARN_ON(!pte_none(ptep_get(pte)))) {
# The page-table walk is reached without the API call's CPU: "?".
@pytest.mark.parametrize(
    ("profile", "cut", "where", "end"),
    [
        ("4.19", False, "mm/vmalloc.c:150 vmap_pte_range", 1),
        ("5.4", True, "mm/vmalloc.c:153 vmap_pte_range", 1),
        ("6.18", True, "mm/vmalloc.c:534 vmap_pages_pte_range", 0),
    ],
)
def test_busy_pte_report(profile: str, cut: bool, where: str, end: int) -> None:
    k = Kernel(profile, ram="64M")
    a = k.vmalloc(P)
    assert k.vm.pgt.map_pages(a, [k.alloc_pages(1)[0]], 0x163) == -16  # -EBUSY
    assert _printed(k) == [CUT] * cut + [
        f"WARNING: CPU: ? PID: 0 at {where}",
        f"pyvmalloc: vmap_pages_pte_range: PTE for {a:#x} is not none",
        _end(end),
    ]


# A block chosen for an allocation that does not hold the range (a corrupted free
# tree; the model's search never returns one, so the test hands it over):
#   v5.4.0 mm/vmalloc.c:1030 in __alloc_vmap_area():
#     if (WARN_ON_ONCE(type == NOTHING_FIT)) return vend;
#   v6.18.2 :1806 in va_alloc(), on va_clip()'s -EINVAL:
#     if (WARN_ON_ONCE(ret)) return ret;
# WARN_ON_ONCE: no message, cut here in both releases, one report per boot however
# often it fires; the allocation fails each time.
@pytest.mark.parametrize(
    ("profile", "where", "end"),
    [
        ("5.4", "mm/vmalloc.c:1030 __alloc_vmap_area", 1),
        ("6.18", "mm/vmalloc.c:1806 va_alloc", 0),
    ],
)
def test_nothing_fit_warns_once(
    profile: str, where: str, end: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = Kernel(profile, cpus=2)
    space = k.vmap_space
    block = next(iter(space.free))
    outside = block.va_end  # the first byte past the block
    monkeypatch.setattr(space, "_find", lambda *a: (block, outside))
    vstart, vend = block.va_start, block.va_end + (1 << 30)
    before = len(k.log.lines)
    for _ in range(3):
        addr = space._alloc_vmap_area(P, P, vstart, vend)
        assert space._is_error_addr(addr, vend)
    new = _printed(k)[-4:]
    assert len(k.log.lines) == before + 1
    assert new[0] == CUT
    assert new[1] == f"WARNING: CPU: ? PID: 0 at {where}"
    assert new[2].startswith("pyvmalloc: NOTHING_FIT: ")
    assert new[3] == _end(end)
    assert k.log.tainted & TAINT_WARN
    monkeypatch.undo()
    k.check()
