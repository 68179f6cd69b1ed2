"""i386 (32-bit x86, non-PAE, CONFIG_HIGHMEM) layout.

``arch/x86/include/asm/pgtable_32_areas.h`` builds the top of the address space
downwards from the fixmap::

    FIXADDR_TOP          = 0xfffff000            (__FIXADDR_TOP, no reservetop=)
    CPU_ENTRY_AREA_BASE  = (FIXADDR_TOT_START - PAGE_SIZE*(CPU_ENTRY_AREA_PAGES+1)) & PMD_MASK
    LDT_BASE_ADDR        = (CPU_ENTRY_AREA_BASE - PAGE_SIZE) & PMD_MASK
    PKMAP_BASE           = (LDT_BASE_ADDR - PAGE_SIZE) & PMD_MASK
    VMALLOC_END          = PKMAP_BASE - 2*PAGE_SIZE            (CONFIG_HIGHMEM)
    MAXMEM               = VMALLOC_END - PAGE_OFFSET - __VMALLOC_RESERVE

Non-PAE ``PMD_SIZE`` is 4 MiB (two-level paging: the PGD entry maps 4 MiB). The
fixmap and the CPU entry area depend on ``NR_CPUS`` and other options; for the small
configs 32-bit kernels ship with (NR_CPUS <= 8..32) both fit in the top 4 MiB, so
``CPU_ENTRY_AREA_BASE = 0xffc00000``, ``LDT_BASE_ADDR = 0xff800000``,
``PKMAP_BASE = 0xff400000`` and ``VMALLOC_END = 0xff3fe000``. The model assumes this.

``__VMALLOC_RESERVE`` is 128 MiB (arch/x86/mm/pgtable_32.c); ``vmalloc=<size>`` sets
it to ``size + VMALLOC_OFFSET``. With the defaults, ``MAXMEM = 0x373fe000`` (883.99
MiB: the "883MB LOWMEM available" of modern 32-bit boots). The classic 896 MiB
(``-PAGE_OFFSET - 128 MiB``) was the pre-2.6.28 formula that did not subtract the
pkmap/fixmap area; it is reported as ``CLASSIC_MAXMEM`` for reference only.

``high_memory = __va(max_low_pfn << PAGE_SHIFT)`` with ``max_low_pfn =
min(max_pfn, MAXMEM_PFN)``; ``VMALLOC_START = high_memory + VMALLOC_OFFSET`` (8 MiB
hole, no extra alignment). Modules live in the vmalloc range.

>>> from pyvmalloc.config import Machine
>>> m = Machine(arch="i386", ram="2G")
>>> hex(m.layout["MAXMEM"]), hex(m.vmalloc_start), hex(m.vmalloc_end)
('0x373fe000', '0xf7bfe000', '0xff3fe000')
>>> m.layout["LOWMEM_BYTES"] >> 20
883
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvmalloc.arch.spec import MachineSpec

PAGE_SIZE = 4096
PAGE_OFFSET = 0xC0000000
VMALLOC_OFFSET = 8 << 20
DEFAULT_VMALLOC_RESERVE = 128 << 20
PMD_SHIFT = 22  # 2-level paging: the PGD entry maps 4 MiB
PMD_SIZE = 1 << PMD_SHIFT
PMD_MASK = ~(PMD_SIZE - 1) & 0xFFFFFFFF
FIXADDR_TOP = 0xFFFFF000
#: Non-PAE: 1024 pkmap slots (one PTE page).
LAST_PKMAP = 1024
#: Model assumption: pages of the fixmap (FIX_KMAP slots for a few CPUs and friends).
FIXMAP_PAGES = 192
#: Model assumption: CPU entry area pages (NR_CPUS * sizeof(struct cpu_entry_area)).
CPU_ENTRY_AREA_PAGES = 64
#: Non-PAE paging cannot reach RAM above 4 GiB (MAX_NONPAE_PFN).
MAX_NONPAE_BYTES = 1 << 32


def vmalloc_reserve(machine: MachineSpec) -> int:
    """``__VMALLOC_RESERVE``: 128 MiB, or ``vmalloc=`` + ``VMALLOC_OFFSET``."""
    if machine.vmalloc_reserve:
        return machine.vmalloc_reserve + VMALLOC_OFFSET
    return DEFAULT_VMALLOC_RESERVE


def layout(machine: MachineSpec) -> dict[str, int]:
    fixaddr_tot_start = FIXADDR_TOP - FIXMAP_PAGES * PAGE_SIZE
    cpu_entry_area_base = (fixaddr_tot_start - PAGE_SIZE * (CPU_ENTRY_AREA_PAGES + 1)) & PMD_MASK
    ldt_base = (cpu_entry_area_base - PAGE_SIZE) & PMD_MASK
    pkmap_base = (ldt_base - PAGE_SIZE) & PMD_MASK
    vmalloc_end = pkmap_base - 2 * PAGE_SIZE
    reserve = vmalloc_reserve(machine)
    maxmem = vmalloc_end - PAGE_OFFSET - reserve
    if maxmem <= 0:
        raise ValueError(f"vmalloc= reserve {reserve:#x} leaves no lowmem")
    max_low_pfn = min(machine.ram, maxmem) // PAGE_SIZE
    lowmem = max_low_pfn * PAGE_SIZE
    high_memory = PAGE_OFFSET + lowmem
    vmalloc_start = high_memory + VMALLOC_OFFSET
    return {
        "PAGE_OFFSET": PAGE_OFFSET,
        "VMALLOC_START": vmalloc_start,
        "VMALLOC_END": vmalloc_end,
        "MODULES_VADDR": vmalloc_start,
        "MODULES_END": vmalloc_end,
        "IOREMAP_MAX_ORDER": PMD_SHIFT,
        "PMD_SHIFT": PMD_SHIFT,
        "PUD_SHIFT": PMD_SHIFT,
        "PGDIR_SHIFT": PMD_SHIFT,
        "LOWMEM_BYTES": lowmem,
        "MAX_LOW_PFN": max_low_pfn,
        "HIGH_MEMORY": high_memory,
        "MAXMEM": maxmem,
        "CLASSIC_MAXMEM": (1 << 32) - PAGE_OFFSET - DEFAULT_VMALLOC_RESERVE,
        "VMALLOC_RESERVE": reserve,
        "VMALLOC_OFFSET": VMALLOC_OFFSET,
        "PKMAP_BASE": pkmap_base,
        "LAST_PKMAP": LAST_PKMAP,
        "LDT_BASE_ADDR": ldt_base,
        "CPU_ENTRY_AREA_BASE": cpu_entry_area_base,
        "FIXADDR_TOP": FIXADDR_TOP,
        "FIXADDR_TOT_START": fixaddr_tot_start,
        "MAX_NONPAE_BYTES": MAX_NONPAE_BYTES,
    }
