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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["BUG_SITES", "BugSite", "alloc_vmap_area_site", "bug_sites"]


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
