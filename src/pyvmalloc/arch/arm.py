"""32-bit ARM layout: the user/kernel split, lowmem, the vmalloc range, modules.

Sources (Linux, ``arch/arm``):

* ``Kconfig``: ``PAGE_OFFSET`` is ``0xC0000000`` (``VMSPLIT_3G``, the default),
  ``0xB0000000`` (``VMSPLIT_3G_OPT``, not with LPAE), ``0x80000000`` (``VMSPLIT_2G``)
  or ``0x40000000`` (``VMSPLIT_1G``).
* ``include/asm/pgtable.h``: ``VMALLOC_OFFSET`` is 8 MiB and
  ``VMALLOC_START = (high_memory + VMALLOC_OFFSET) & ~(VMALLOC_OFFSET - 1)``;
  ``VMALLOC_END`` is ``0xff800000`` in every release this project models (v4.19,
  v5.4, v6.18; kernels of the v3.x era ended it at ``0xff000000``). The range is
  exclusive: ``VmallocTotal`` is ``VMALLOC_END - VMALLOC_START``.
* ``include/asm/pgtable-2level.h``: Linux sees two levels, ``PGDIR_SHIFT`` =
  ``PMD_SHIFT`` = 21 (2048 PGD entries, each a pair of 1 MiB hardware sections) and
  512 PTEs per table. ``pgtable-3level.h`` (``CONFIG_ARM_LPAE``): ``PGDIR_SHIFT`` 30
  (4 entries), ``PMD_SHIFT`` 21, 512 PMDs and 512 PTEs per table. ``PMD_SIZE`` is 2 MiB
  either way.
* ``include/asm/memory.h``: ``MODULES_VADDR = PAGE_OFFSET - SZ_16M`` (``- SZ_8M``
  with ``CONFIG_THUMB2_KERNEL``); ``MODULES_END = PAGE_OFFSET - PMD_SIZE`` with
  ``CONFIG_HIGHMEM`` (the pkmap area takes the top 2 MiB, ``PKMAP_BASE =
  PAGE_OFFSET - PMD_SIZE``), ``PAGE_OFFSET`` without. ``IOREMAP_MAX_ORDER`` is 24 on
  UP non-LPAE kernels (16 MiB supersections), otherwise the generic
  ``7 + PAGE_SHIFT`` = 19.
* ``mm/mmu.c``, ``early_vmalloc()`` and ``adjust_lowmem_bounds()``; two eras:

  - v4.19 and v5.4 (``vmalloc_min``): the default is ``vmalloc_min = VMALLOC_END -
    240 MiB - VMALLOC_OFFSET``; ``vmalloc=SIZE`` (clamped to [16 MiB, ``VMALLOC_END -
    (PAGE_OFFSET + 32 MiB)``]) sets ``vmalloc_min = VMALLOC_END - SIZE``, so the
    8 MiB hole comes out of SIZE and the range is SIZE - 8 MiB (or less, after the
    8 MiB rounding).
  - v5.14 onward, so v6.18 (Russell King's 2021 series: f572f5cb3926 "ARM: change
    vmalloc_min to vmalloc_start", 4c1b7a761608 "ARM: change vmalloc_start to
    vmalloc_size", c01914efeaa9 "ARM: use MiB for vmalloc sizes"):
    ``vmalloc_size`` defaults to 240 MiB; ``vmalloc=SIZE`` is clamped to [16 MiB,
    ``VMALLOC_END - (PAGE_OFFSET + 32 MiB + VMALLOC_OFFSET)``] and the lowmem limit is
    ``VMALLOC_END - SIZE - VMALLOC_OFFSET``, so the range is exactly SIZE.

  Lowmem is the RAM (one bank from ``PHYS_OFFSET``) below that limit:
  ``arm_lowmem_limit = min(limit, end of RAM)``, ``high_memory = __va(arm_lowmem_limit
  - 1) + 1``. The rest is highmem (``CONFIG_HIGHMEM``) or dropped ("Ignoring RAM at
  ...").
* ``kernel/module.c`` (v4.19, v5.4) / ``mm/init.c``'s execmem setup (v6.10+, so
  v6.18): ``module_alloc`` asks ``[MODULES_VADDR, MODULES_END)`` first and, with
  ``CONFIG_ARM_MODULE_PLTS``, falls back to ``[VMALLOC_START, VMALLOC_END)``; without
  PLTs a module that does not fit the 14 MiB window fails to load.

>>> from pyvmalloc.config import Machine
>>> m = Machine(arch="arm", ram="1G")
>>> hex(m.vmalloc_start), hex(m.vmalloc_end), m.vmalloc_total >> 20
('0xf0800000', '0xff800000', 240)
>>> m.layout["LOWMEM_BYTES"] >> 20, m.layout["HIGHMEM_BYTES"] >> 20
(768, 256)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pyvmalloc.arch.spec import MachineSpec as Machine


class _Zone(Protocol):
    name: str
    managed: int


class _Node(Protocol):
    @property
    def zones(self) -> Iterable[_Zone]: ...


class MemoryLayout(Protocol):
    """What :func:`meminfo_lines` reads of ``pyvmalloc.phys.layout.MemoryLayout``."""

    @property
    def nodes(self) -> Iterable[_Node]: ...


__all__ = [
    "PAGE_OFFSETS",
    "VMALLOC_END",
    "VMALLOC_OFFSET",
    "early_vmalloc",
    "layout",
    "meminfo_lines",
]

MiB = 1 << 20
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
VMALLOC_OFFSET = 8 * MiB
VMALLOC_END = 0xFF800000
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
SZ_16M = 16 * MiB
SZ_32M = 32 * MiB
#: Default ``vmalloc=``: 240 MiB of vmalloc range in both eras.
DEFAULT_VMALLOC_SIZE = 240 * MiB
#: ``CONFIG_PAGE_OFFSET`` per ``CONFIG_VMSPLIT_*`` (arch/arm/Kconfig).
PAGE_OFFSETS = {"3G": 0xC0000000, "3G_OPT": 0xB0000000, "2G": 0x80000000, "1G": 0x40000000}

#: Releases whose early_vmalloc() uses ``vmalloc_min`` (the vmalloc= range includes the
#: 8 MiB hole); later ones use the exact ``vmalloc_size`` (v5.14+).
_VMALLOC_MIN_ERA = ("4.19", "5.4")


def early_vmalloc(machine: Machine) -> tuple[int, list[str]]:
    """The effective ``vmalloc=`` size and the warnings ``early_vmalloc`` prints.

    Returns the size the kernel uses (the default 240 MiB when the option is absent)
    after clamping it to the era's bounds.
    """
    page_offset = PAGE_OFFSETS[machine.vmsplit]
    old = machine.kernel_release in _VMALLOC_MIN_ERA
    size = machine.vmalloc_reserve
    warnings: list[str] = []
    if not size:
        return DEFAULT_VMALLOC_SIZE, warnings
    unit = "MB" if old else "MiB"
    if size < SZ_16M:
        size = SZ_16M
        small = "vmalloc area too small" if old else "vmalloc area is too small"
        warnings.append(f"{small}, limiting to {size >> 20}{unit}")
    vmalloc_max = VMALLOC_END - (page_offset + SZ_32M + (0 if old else VMALLOC_OFFSET))
    if size > vmalloc_max:
        size = vmalloc_max
        warnings.append(f"vmalloc area is too big, limiting to {size >> 20}{unit}")
    return size, warnings


def layout(machine: Machine) -> dict[str, int]:
    """The constants of a 32-bit ARM machine (see the module docstring for the rules)."""
    if machine.vmsplit not in PAGE_OFFSETS:
        raise ValueError(f"unknown VMSPLIT {machine.vmsplit!r}; known: {', '.join(PAGE_OFFSETS)}")
    if machine.lpae and machine.vmsplit == "3G_OPT":
        raise ValueError("VMSPLIT_3G_OPT depends on !ARM_LPAE")
    page_offset = PAGE_OFFSETS[machine.vmsplit]
    size, _ = early_vmalloc(machine)
    if machine.kernel_release in _VMALLOC_MIN_ERA:
        vmalloc_min = VMALLOC_END - size - (0 if machine.vmalloc_reserve else VMALLOC_OFFSET)
    else:
        vmalloc_min = VMALLOC_END - size - VMALLOC_OFFSET
    phys_offset = machine.phys_offset
    # adjust_lowmem_bounds(): the physical address vmalloc_min stands for, capped by RAM.
    vmalloc_limit = vmalloc_min - page_offset + phys_offset
    ram_end = phys_offset + machine.ram
    lowmem_limit = min(vmalloc_limit, ram_end)
    lowmem = lowmem_limit - phys_offset
    high_memory = page_offset + lowmem
    vmalloc_start = (high_memory + VMALLOC_OFFSET) & ~(VMALLOC_OFFSET - 1)
    highmem = ram_end - lowmem_limit if machine.highmem else 0
    modules_vaddr = page_offset - (8 * MiB if machine.thumb2 else SZ_16M)
    modules_end = page_offset - PMD_SIZE if machine.highmem else page_offset
    if machine.lpae:
        pgdir_shift, pud_shift = 30, 30
    else:
        pgdir_shift, pud_shift = PMD_SHIFT, PMD_SHIFT
    ioremap_max_order = 24 if not machine.smp and not machine.lpae else 7 + PAGE_SHIFT
    return {
        "PAGE_OFFSET": page_offset,
        "PHYS_OFFSET": phys_offset,
        "VMALLOC_START": vmalloc_start,
        "VMALLOC_END": VMALLOC_END,
        "VMALLOC_OFFSET": VMALLOC_OFFSET,
        "VMALLOC_SIZE": size,
        "VMALLOC_MIN": vmalloc_min,
        "MODULES_VADDR": modules_vaddr,
        "MODULES_END": modules_end,
        "TASK_SIZE": page_offset - SZ_16M,
        "PKMAP_BASE": page_offset - PMD_SIZE,
        "ARM_LOWMEM_LIMIT": lowmem_limit,
        "HIGH_MEMORY": high_memory,
        "LOWMEM_BYTES": lowmem,
        "HIGHMEM_BYTES": highmem,
        "IGNORED_RAM_BYTES": ram_end - lowmem_limit - highmem,
        "MAX_LOW_PFN": lowmem >> PAGE_SHIFT,
        "IOREMAP_MAX_ORDER": ioremap_max_order,
        "PMD_SHIFT": PMD_SHIFT,
        "PUD_SHIFT": pud_shift,
        "PGDIR_SHIFT": pgdir_shift,
        # module_alloc()'s fallback into the vmalloc range (CONFIG_ARM_MODULE_PLTS)
        "MODULES_FALLBACK_START": vmalloc_start if machine.module_plts else 0,
        "MODULES_FALLBACK_END": VMALLOC_END if machine.module_plts else 0,
    }


def meminfo_lines(machine: Machine, memory: MemoryLayout | None = None) -> dict[str, int]:
    """``/proc/meminfo`` values (kB) this layout decides.

    ``VmallocTotal`` is ``VMALLOC_END - VMALLOC_START``. ``LowTotal``/``HighTotal``
    (``CONFIG_HIGHMEM``) are ``totalram_pages - totalhigh_pages`` and
    ``totalhigh_pages``: managed pages, after the kernel's own reservations. With the
    boot memory layout (:func:`pyvmalloc.phys.layout.build_layout`) they are its
    managed counts; without it, the RAM on each side of the lowmem limit (an upper
    bound).
    """
    lay = machine.layout
    low, high = lay["LOWMEM_BYTES"], lay["HIGHMEM_BYTES"]
    if memory is not None:
        zones = [z for node in memory.nodes for z in node.zones]
        high = sum(z.managed for z in zones if z.name == "HighMem") * PAGE_SIZE
        low = sum(z.managed for z in zones if z.name != "HighMem") * PAGE_SIZE
    return {
        "VmallocTotal": (lay["VMALLOC_END"] - lay["VMALLOC_START"]) >> 10,
        "LowTotal": low >> 10,
        "HighTotal": high >> 10,
    }
