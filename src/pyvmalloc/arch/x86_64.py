"""x86_64 layout (``arch/x86/include/asm/pgtable_64_types.h``, ``page_64_types.h``).

The defaults are the un-randomized ones: the live 6.18 machine boots without the
decompressor that would apply KASLR to ``vmalloc_base``.

>>> from pyvmalloc.config import Machine
>>> hex(Machine(paging_levels=5).vmalloc_start)
'0xffa0000000000000'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvmalloc.arch.spec import MachineSpec

PGDIR_SHIFT_4 = 39
PGDIR_SHIFT_5 = 48
P4D_SHIFT = 39
PUD_SHIFT = 30
PMD_SHIFT = 21

#: ``__START_KERNEL_map``: the kernel image mapping.
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: ``KERNEL_IMAGE_SIZE`` with CONFIG_RANDOMIZE_BASE (1 GiB); modules start above it.
KERNEL_IMAGE_SIZE = 1 << 30
MODULES_END = 0xFFFFFFFFFF000000


def layout(machine: MachineSpec) -> dict[str, int]:
    """VMALLOC_START/END, MODULES range and friends for 4- or 5-level paging."""
    if machine.paging_levels == 5:
        base, size_tb = 0xFFA0000000000000, 12800
        page_offset = 0xFF11000000000000
    else:
        base, size_tb = 0xFFFFC90000000000, 32
        page_offset = 0xFFFF888000000000
    return {
        "PAGE_OFFSET": page_offset,
        "VMALLOC_START": base,
        "VMALLOC_END": base + (size_tb << 40) - 1,
        "MODULES_VADDR": START_KERNEL_MAP + KERNEL_IMAGE_SIZE,
        "MODULES_END": MODULES_END,
        # IOREMAP_MAX_ORDER = PUD_SHIFT on x86_64: ioremap alignment capped at 1 GiB.
        "IOREMAP_MAX_ORDER": PUD_SHIFT,
        "PMD_SHIFT": PMD_SHIFT,
        "PUD_SHIFT": PUD_SHIFT,
        "PGDIR_SHIFT": PGDIR_SHIFT_5 if machine.paging_levels == 5 else PGDIR_SHIFT_4,
    }
