"""Where each release stops: the file and line of every ``BUG_ON()``/``BUG()`` the
model can reach, and the ``panic()`` texts, per kernel release (profile data).

When a ``BUG_ON(cond)`` fires, ``BUG()`` traps (``ud2`` on x86) and the trap
handler calls ``report_bug()`` (lib/bug.c), which prints
``kernel BUG at FILE:LINE!`` with the file and line that ``CONFIG_DEBUG_BUGVERBOSE``
recorded for the ``BUG_ON`` site; ``die()`` then prints the oops. A ``might_sleep()``
site (``CONFIG_DEBUG_ATOMIC_SLEEP`` only) prints ``BUG: sleeping function called
from invalid context at FILE:LINE`` (``__might_resched``, kernel/sched/core.c) and
goes on. A ``VM_BUG_ON``
is a ``BUG_ON`` only with ``CONFIG_DEBUG_VM`` (else it compiles to nothing);
``panic()`` prints ``Kernel panic - not syncing: TEXT`` (kernel/panic.c).

The line numbers were read from release sources (each site's test quotes the line):

* ``4.19``: linux-4.19.1 (tarball import, github chens37/linux-4.19.1 @ 36e37757a);
* ``5.4``: linux-5.4 (SUBLEVEL 0 tarball, github renxida/linux-5.4 @ 5b9e66fbc);
* ``6.18``: the kernel of this machine, 6.18.44 (``6.18.44-fc-v769``), read from the
  running kernel itself: its ``__bug_table`` (one ``struct bug_entry`` per BUG/WARN
  site, with the file and line ``report_bug()`` prints) through BPF, each entry's trap
  address mapped to its function with ``/proc/kallsyms``
  (:mod:`pyvmalloc.trace.bugtable`; ``python -m pyvmalloc.trace.bugtable`` lists
  them; tests/trace/test_bugtable.py's live test re-checks this table). Sites the bug
  table cannot show (``might_sleep``, ``panic``, a ``VM_BUG_ON`` compiled out here)
  keep the linux-6.18.2 reading (tarball, github gfunkmonk/linux-6.18.2 @ 57dc26c98).

mm/vmalloc.c is the same blob in 4.19.1 and 4.19.13 (a728fc49) and in 5.4.0 and
5.4.6 (a3c70e27). Later 6.18 stables move lines: past line 2243 every site of
6.18.44 sits 7 or 8 lines below its 6.18.2 line (6.18.2: vb_free 2903, vm_unmap_ram
2993-2996, __get_vm_area_node 3173, vunmap 3463, all +8 in 6.18.44; free_vm_area 4618,
pcpu_get_vm_areas 4728/4734/4735/4745, all +7), as 6.18.26 (KASAN release batching,
kasan_vrealloc) moved them; the sites before (alloc_vmap_area's entries at 1951 and
2094-2096) did not move.

A site a release does not have (the check was removed, or never existed there) is
absent from that release's table: the model's refusal there is its own, and
:meth:`pyvmalloc.printk.KernelLog.BUG` says so instead of inventing a kernel line.

The ``WARN*()`` sites the model reaches are in :data:`WARN_SITES` (file, line, source
function, macro) and how each release prints the report in :data:`WARN_REPORTS`
(:class:`WarnReport` quotes the differences); a WARN whose site a release's table
lacks is printed as the model's own line (:meth:`pyvmalloc.printk.KernelLog.WARN`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = [
    "BUG_SITES",
    "WARN_REPORTS",
    "WARN_SITES",
    "BugSite",
    "WarnReport",
    "WarnSite",
    "alloc_vmap_area_site",
    "bug_sites",
    "warn_report",
    "warn_sites",
]


@dataclass(frozen=True, slots=True)
class BugSite:
    """One place the kernel stops: a ``BUG_ON`` at ``file:line``, or a ``panic``."""

    file: str
    line: int
    #: ``panic()`` format (``%s`` filled by the caller) instead of a BUG_ON
    panic: str = ""
    #: the Kconfig option the check needs (``VM_BUG_ON``: ``CONFIG_DEBUG_VM``)
    config: str = ""

    def kernel_line(self, *args: str) -> str:
        """The line the kernel prints here."""
        if self.panic:
            return "Kernel panic - not syncing: " + (self.panic % args if args else self.panic)
        return f"kernel BUG at {self.file}:{self.line}!"


def _bug_on(file: str, line: int, config: str = "") -> BugSite:
    return BugSite(file, line, config=config)


_VM = "mm/vmalloc.c"
_GFP = "include/linux/gfp.h"
_SLEEP = "CONFIG_DEBUG_ATOMIC_SLEEP"
_PREALLOC = "Failed to pre-allocate %s pages for vmalloc area"

#: site name -> where the release stops. Site names are ``function:condition``.
BUG_SITES: Mapping[str, Mapping[str, BugSite]] = MappingProxyType(
    {
        "4.19": MappingProxyType(
            {
                "alloc_vmap_area:!size": _bug_on(_VM, 413),
                "alloc_vmap_area:offset_in_page(size)": _bug_on(_VM, 414),
                "alloc_vmap_area:!is_power_of_2(align)": _bug_on(_VM, 415),
                "alloc_vmap_area:!IS_ALIGNED(va_start)": _bug_on(_VM, 511),
                "alloc_vmap_area:va_start<vstart": _bug_on(_VM, 512),
                "alloc_vmap_area:va_end>vend": _bug_on(_VM, 513),
                "alloc_vmap_area:might_sleep": _bug_on(_VM, 417, _SLEEP),
                "__free_vmap_area:RB_EMPTY_NODE": _bug_on(_VM, 555),
                "vb_free:!vb": _bug_on(_VM, 1035),
                "vb_free:vb->free": _bug_on(_VM, 1051),
                "vm_unmap_ram:!addr": _bug_on(_VM, 1126),
                "vm_unmap_ram:addr<VMALLOC_START": _bug_on(_VM, 1127),
                "vm_unmap_ram:addr>VMALLOC_END": _bug_on(_VM, 1128),
                "vm_unmap_ram:!PAGE_ALIGNED(addr)": _bug_on(_VM, 1129),
                "vm_unmap_ram:!va": _bug_on(_VM, 1138),
                "__get_vm_area_node:in_interrupt()": _bug_on(_VM, 1380),
                "vunmap:in_interrupt()": _bug_on(_VM, 1608),
                "free_vm_area:ret!=area": _bug_on(_VM, 2353),
                "gfp_zone:GFP_ZONE_BAD": _bug_on(_GFP, 425, "CONFIG_DEBUG_VM"),
            }
        ),
        "5.4": MappingProxyType(
            {
                "find_va_links:overlap": _bug_on(_VM, 474),
                "alloc_vmap_area:!size": _bug_on(_VM, 1058),
                "alloc_vmap_area:offset_in_page(size)": _bug_on(_VM, 1059),
                "alloc_vmap_area:!is_power_of_2(align)": _bug_on(_VM, 1060),
                "alloc_vmap_area:might_sleep": _bug_on(_VM, 1065, _SLEEP),
                "vb_free:!vb": _bug_on(_VM, 1646),
                "vb_free:vb->free": _bug_on(_VM, 1662),
                "vm_unmap_ram:!addr": _bug_on(_VM, 1743),
                "vm_unmap_ram:addr<VMALLOC_START": _bug_on(_VM, 1744),
                "vm_unmap_ram:addr>VMALLOC_END": _bug_on(_VM, 1745),
                "vm_unmap_ram:!PAGE_ALIGNED(addr)": _bug_on(_VM, 1746),
                "vm_unmap_ram:!va": _bug_on(_VM, 1755),
                "__get_vm_area_node:in_interrupt()": _bug_on(_VM, 2047),
                "vunmap:in_interrupt()": _bug_on(_VM, 2350),
                "free_vm_area:ret!=area": _bug_on(_VM, 3116),
                "pcpu_get_vm_areas:align": _bug_on(_VM, 3226),
                "pcpu_get_vm_areas:!IS_ALIGNED(offsets)": _bug_on(_VM, 3232),
                "pcpu_get_vm_areas:!IS_ALIGNED(sizes)": _bug_on(_VM, 3233),
                "pcpu_get_vm_areas:overlap": _bug_on(_VM, 3243),
                "gfp_zone:GFP_ZONE_BAD": _bug_on(_GFP, 448, "CONFIG_DEBUG_VM"),
            }
        ),
        # 6.18.44 live __bug_table (all BUG, not BUGFLAG_WARNING), function holding the
        # ud2 in brackets where the site's own function is inlined into it.
        "6.18": MappingProxyType(
            {
                # __might_sleep(file, line) arguments, not a bug entry; between the live
                # entries at 1951 and 2094, which sit where 6.18.2 has them: 6.18.2's 2031
                "alloc_vmap_area:might_sleep": _bug_on(_VM, 2031, _SLEEP),
                "vb_free:vb->free": _bug_on(_VM, 2911),  # [vm_unmap_ram]; 6.18.2: 2903
                "vm_unmap_ram:!addr": _bug_on(_VM, 3001),  # 6.18.2: 2993
                "vm_unmap_ram:addr<VMALLOC_START": _bug_on(_VM, 3002),
                "vm_unmap_ram:addr>VMALLOC_END": _bug_on(_VM, 3003),
                "vm_unmap_ram:!PAGE_ALIGNED(addr)": _bug_on(_VM, 3004),
                "__get_vm_area_node:in_interrupt()": _bug_on(_VM, 3181),  # 6.18.2: 3173
                "vunmap:in_interrupt()": _bug_on(_VM, 3471),  # 6.18.2: 3463
                "free_vm_area:ret!=area": _bug_on(_VM, 4625),  # 6.18.2: 4618
                "pcpu_get_vm_areas:align": _bug_on(_VM, 4735),  # 6.18.2: 4728
                "pcpu_get_vm_areas:!IS_ALIGNED(offsets)": _bug_on(_VM, 4741),
                "pcpu_get_vm_areas:!IS_ALIGNED(sizes)": _bug_on(_VM, 4742),
                "pcpu_get_vm_areas:overlap": _bug_on(_VM, 4752),  # 6.18.2: 4745
                # VM_BUG_ON: CONFIG_DEBUG_VM is off here, so no live entry; 6.18.2 line
                "gfp_zone:GFP_ZONE_BAD": _bug_on(_GFP, 159, "CONFIG_DEBUG_VM"),
                # panic() has no bug entry (and prints no line); 6.18.2 line
                "preallocate_vmalloc_pages": BugSite(
                    "arch/x86/mm/init_64.c", 1367, panic=_PREALLOC
                ),
            }
        ),
    }
)


def bug_sites(release: str) -> Mapping[str, BugSite]:
    """The BUG sites of ``release`` ("4.19", "5.4", "6.18"), with a clear error."""
    try:
        return BUG_SITES[release]
    except KeyError:
        raise ValueError(
            f"no BUG-site line numbers for kernel release {release!r} "
            f"(known: {', '.join(BUG_SITES)})"
        ) from None


def alloc_vmap_area_site(size: int, align: int, page_size: int) -> str:
    """Which of ``alloc_vmap_area``'s three argument ``BUG_ON``\\ s fires first (4.19,
    5.4: ``!size``, then ``offset_in_page(size)``, then ``!is_power_of_2(align)``)."""
    if not size:
        return "alloc_vmap_area:!size"
    if size & (page_size - 1):
        return "alloc_vmap_area:offset_in_page(size)"
    return "alloc_vmap_area:!is_power_of_2(align)"


# --- WARN sites ------------------------------------------------------------------------

#: ``WARN(cond, fmt, ...)``/``WARN_ONCE`` print a message; ``WARN_ON(cond)``/
#: ``WARN_ON_ONCE`` print none (the model's description follows as its own line).
WarnMacro = Literal["WARN", "WARN_ONCE", "WARN_ON", "WARN_ON_ONCE"]


@dataclass(frozen=True, slots=True)
class WarnSite:
    """One ``WARN*()`` the model can reach: the file and line ``__warn()`` prints, the
    function the site is written in, and the macro (message or not, once or not)."""

    file: str
    line: int
    #: the source function holding the ``WARN``. The kernel prints ``%pS`` of the trap
    #: address instead: ``symbol+0xOFF/0xSIZE``, where the symbol is the function the
    #: compiler put the trap in (a caller when the site is inlined, or a ``.part.0``/
    #: ``.cold`` piece). Neither the offset nor the compiler's choice is known for a
    #: source tree, so the model prints this name alone.
    function: str
    macro: WarnMacro

    @property
    def has_message(self) -> bool:
        """``WARN``/``WARN_ONCE``: the format is printed (``__warn_printk``)."""
        return not self.macro.startswith("WARN_ON")


@dataclass(frozen=True, slots=True)
class WarnReport:
    """How a release prints a ``WARN`` on x86 (profile data).

    Common to 4.19, 5.4 and 6.18 (x86 defines ``__WARN_FLAGS``): ``WARN(cond, fmt)`` is
    ``__warn_printk(fmt)`` (kernel/panic.c: ``CUT_HERE``, then the message) and a
    ``ud2`` whose trap runs ``report_bug()`` (lib/bug.c), which calls ``__warn()``
    (kernel/panic.c): ``WARNING: CPU: %d PID: %d at %s:%d %pS``, ``print_modules()``,
    ``show_regs()`` (the CPU/Comm/Tainted and Hardware name lines, registers, call
    trace), then ``print_oops_end_marker()``: ``---[ end trace %016llx ]---``, and
    ``add_taint(TAINT_WARN)``. A ``*_ONCE`` site prints the first time only
    (``BUGFLAG_ONCE``/``BUGFLAG_DONE`` in the bug entry, or the ``__warned`` flag of
    ``WARN_ONCE``).
    """

    #: ``report_bug()`` prints ``CUT_HERE`` before a ``WARN_ON``'s ``__warn()``.
    #: 4.19.1: only on the BUG path (a WARN_ON trap prints no cut-here line);
    #: 5.4.0, 6.18.2: for every trap without ``BUGFLAG_NO_CUT_HERE``, the flag that
    #: ``WARN()`` sets because ``__warn_printk`` printed its own.
    warn_on_cut_here: bool
    #: ``print_oops_end_marker()``'s number: 4.19.1, 5.4.0: ``oops_id``, random at boot
    #: (``get_random_bytes`` in ``init_oops_id``, a late initcall) and incremented by
    #: each report before it is printed; 6.18.2: always 0 (``0ULL``). The model has no
    #: boot-time random number: its ``oops_id`` starts at 0 (so the first report prints
    #: 1), the increments are the kernel's.
    random_oops_id: bool


_IOREMAP = "arch/x86/mm/ioremap.c"


def _w(line: int, function: str, macro: WarnMacro, file: str = _VM) -> WarnSite:
    return WarnSite(file, line, function, macro)


#: release -> how its WARN report reads. Read in: 4.19.1 (chens37/linux-4.19.1 @
#: 36e37757a), 5.4.0 (renxida/linux-5.4 @ 5b9e66fbc), 6.18.2 (gfunkmonk/linux-6.18.2 @
#: 062668f4d): kernel/panic.c ``__warn``/``__warn_printk``/``warn_slowpath_fmt``/
#: ``print_oops_end_marker``, lib/bug.c ``report_bug``, include/asm-generic/bug.h.
WARN_REPORTS: Mapping[str, WarnReport] = MappingProxyType(
    {
        "4.19": WarnReport(warn_on_cut_here=False, random_oops_id=True),
        "5.4": WarnReport(warn_on_cut_here=True, random_oops_id=True),
        "6.18": WarnReport(warn_on_cut_here=True, random_oops_id=False),
    }
)

#: site name -> the release's ``WARN`` there. Site names are ``function:condition``, as
#: :data:`BUG_SITES`' (a ``WARN_ON_ONCE`` site's name is also its once-key). Lines as
#: :data:`BUG_SITES`: 4.19.1 and 5.4.0 read in the trees above; 6.18 mm/vmalloc.c lines
#: are 6.18.44's, checked against the live ``__bug_table`` where the last readout
#: listed them (vfree 3430, vunmap 3478, vrealloc 4152/4158/4161, find_va_links 1197)
#: and otherwise the 6.18.2 line moved by the rule in the module docstring (+8 past
#: line 2243 up to vrealloc); arch/x86/mm/ioremap.c and mm/slub.c keep 6.18.2's lines.
WARN_SITES: Mapping[str, Mapping[str, WarnSite]] = MappingProxyType(
    {
        "4.19": MappingProxyType(
            {
                # __vunmap serves vfree and vunmap alike
                "vfree:bad address": _w(1504, "__vunmap", "WARN"),
                "vfree:nonexistent": _w(1510, "__vunmap", "WARN"),
                "vmap_pte_range:!pte_none": _w(150, "vmap_pte_range", "WARN_ON"),
                "vb_alloc:size==0": _w(970, "vb_alloc", "WARN_ON"),
                "__ioremap_caller:phys_addr_valid": _w(
                    155, "__ioremap_caller", "WARN_ON_ONCE", _IOREMAP
                ),
                "__ioremap_caller:ram": _w(165, "__ioremap_caller", "WARN_ONCE", _IOREMAP),
            }
        ),
        "5.4": MappingProxyType(
            {
                "vfree:bad address": _w(2234, "__vunmap", "WARN"),
                "vfree:nonexistent": _w(2240, "__vunmap", "WARN"),
                "vmap_pte_range:!pte_none": _w(153, "vmap_pte_range", "WARN_ON"),
                "vb_alloc:size==0": _w(1581, "vb_alloc", "WARN_ON"),
                "__alloc_vmap_area:NOTHING_FIT": _w(1030, "__alloc_vmap_area", "WARN_ON_ONCE"),
                "__ioremap_caller:phys_addr_valid": _w(
                    177, "__ioremap_caller", "WARN_ON_ONCE", _IOREMAP
                ),
                "__ioremap_caller:ram": _w(187, "__ioremap_caller", "WARN_ONCE", _IOREMAP),
            }
        ),
        "6.18": MappingProxyType(
            {
                "find_va_links:overlap": _w(1197, "find_va_links", "WARN"),  # live
                # 6.18.2 line, before the first line 6.18.44 moves (2243)
                "__alloc_vmap_area:NOTHING_FIT": _w(1806, "va_alloc", "WARN_ON_ONCE"),
                "vmap_pte_range:!pte_none": _w(534, "vmap_pages_pte_range", "WARN_ON"),
                "vb_alloc:size==0": _w(2829, "vb_alloc", "WARN_ON"),  # 6.18.2: 2821
                "vm_unmap_ram:!va": _w(3015, "vm_unmap_ram", "WARN_ON_ONCE"),  # 3007
                "vfree:bad address": _w(3295, "remove_vm_area", "WARN"),  # 3287
                "vfree:nonexistent": _w(3430, "vfree", "WARN"),  # live; 6.18.2: 3422
                "vunmap:nonexistent": _w(3478, "vunmap", "WARN"),  # live; 3470
                "vmap:VM_FLUSH_RESET_PERMS": _w(3510, "vmap", "WARN_ON_ONCE"),  # 3502
                "vmap:VM_NO_GUARD": _w(3517, "vmap", "WARN_ON_ONCE"),  # 3509
                "vmap_pfn_apply:pfn_valid": _w(3556, "vmap_pfn_apply", "WARN_ON_ONCE"),
                "__vmalloc_node_range:!size": _w(
                    3838, "__vmalloc_node_range_noprof", "WARN_ON_ONCE"
                ),  # 3830
                # live; 6.18.2: 4144, 4150, 4153
                "vrealloc:nonexistent": _w(4152, "vrealloc_node_align_noprof", "WARN"),
                "vrealloc:sizes": _w(4158, "vrealloc_node_align_noprof", "WARN"),
                "vrealloc:align": _w(4161, "vrealloc_node_align_noprof", "WARN"),
                "__ioremap_caller:phys_addr_valid": _w(
                    206, "__ioremap_caller", "WARN_ON_ONCE", _IOREMAP
                ),
                "__ioremap_caller:ram": _w(216, "__ioremap_caller", "WARN_ONCE", _IOREMAP),
                "__kvmalloc_node_noprof:INT_MAX": _w(
                    7124, "__kvmalloc_node_noprof", "WARN_ON_ONCE", "mm/slub.c"
                ),
            }
        ),
    }
)


def warn_sites(release: str) -> Mapping[str, WarnSite]:
    """The WARN sites of ``release``, with a clear error."""
    try:
        return WARN_SITES[release]
    except KeyError:
        raise ValueError(
            f"no WARN-site line numbers for kernel release {release!r} "
            f"(known: {', '.join(WARN_SITES)})"
        ) from None


def warn_report(release: str) -> WarnReport:
    """How ``release`` prints a WARN, with a clear error."""
    try:
        return WARN_REPORTS[release]
    except KeyError:
        raise ValueError(
            f"no WARN report format for kernel release {release!r} "
            f"(known: {', '.join(WARN_REPORTS)})"
        ) from None
