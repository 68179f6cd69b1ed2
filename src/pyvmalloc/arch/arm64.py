"""arm64 layout: page size, VA_BITS, page-table levels, modules/BPF and vmalloc ranges.

Sources (Linux, ``arch/arm64/include/asm/memory.h``, ``pgtable.h``,
``pgtable-hwdef.h``), one rule set per era:

* **Page tables** (all eras): ``ARM64_HW_PGTABLE_LEVELS(va) = (va - 4) / (PAGE_SHIFT -
  3)`` and ``ARM64_HW_PGTABLE_LEVEL_SHIFT(n) = (PAGE_SHIFT - 3) * (4 - n) + 3``; 4K/39
  is 3 levels, 4K/48 4, 4K/52 5 (LPA2, v6.9+), 16K/47 3, 16K/48 and 16K/52 4, 64K/42
  2, 64K/48 and 64K/52 3. Folded levels take the shift of the level above
  (``PUD_SIZE`` is ``PGDIR_SIZE`` with fewer than 4 levels).
* **v4.19** (before the VA-space flip): ``VA_START = -(1 << VA_BITS)``, ``PAGE_OFFSET
  = -(1 << (VA_BITS - 1))`` (the linear map is the top half); the modules area
  (``MODULES_VSIZE`` 128 MiB) starts at ``VA_START`` (KASAN off); BPF JIT programs
  come from ``module_alloc``; ``VMALLOC_START = MODULES_END``, ``VMEMMAP_SIZE = 1 <<
  (VA_BITS - PAGE_SHIFT - 1 + STRUCT_PAGE_MAX_SHIFT)`` and ``VMALLOC_END = PAGE_OFFSET
  - PUD_SIZE - VMEMMAP_SIZE - SZ_64K``.
* **v5.4** (flipped in v5.4: the linear map is the bottom half): ``PAGE_OFFSET = -(1
  << VA_BITS)``, ``PAGE_END = -(1 << (VA_BITS_MIN - 1))``; above it the 128 MiB
  ``BPF_JIT_REGION`` and then the 128 MiB modules area; ``VMALLOC_START =
  MODULES_END``; ``VMEMMAP_SIZE = (PAGE_END - PAGE_OFFSET) >> (PAGE_SHIFT -
  STRUCT_PAGE_MAX_SHIFT)``; ``VMALLOC_END = -PUD_SIZE - VMEMMAP_SIZE - SZ_64K``.
  ``VA_BITS_MIN`` is 48 when ``VA_BITS`` is 52 (64K pages only, in v5.4).
* **v6.18**: the BPF region is gone since v5.16 (b89ddf4cca43, "arm64/bpf: Remove 128MB
  limit for BPF JIT programs"): BPF JIT programs come from the vmalloc range (v6.18:
  ``EXECMEM_BPF`` is ``[VMALLOC_START, VMALLOC_END)``). The modules area is 2 GiB at
  ``PAGE_END`` (v6.5, module VA range rework), the kernel image follows it
  (``KIMAGE_VADDR = MODULES_END``) and ``VMALLOC_START = MODULES_END``. Since v6.9
  (LPA2) ``VMEMMAP_END = -SZ_1G``, ``VMEMMAP_START = VMEMMAP_END - VMEMMAP_SIZE``,
  ``VMEMMAP_SIZE = (PAGE_END - PAGE_OFFSET) / PAGE_SIZE * sizeof(struct page)`` and
  ``VMALLOC_END = VMEMMAP_START - SZ_256M``; ``VA_BITS_MIN`` is 47 for 16K/52, 48
  for the other 52-bit configs.

KASAN is off and ``sizeof(struct page)`` is 64 (``STRUCT_PAGE_MAX_SHIFT`` 6). The
model's modules range is the whole modules area; v6.x's ``execmem_arch_setup()``
(``arch/arm64/kernel/module.c``) first uses a 128 MiB window of it near the kernel
(``module_direct_base``, placed by KASLR) and falls back to a 2 GiB window
(``module_plt_base``).
The kernel image's own vm areas at the bottom of the 6.x vmalloc range are not
modelled (they are in a board's vmallocinfo when it is given).

>>> from pyvmalloc.arch.arm64 import compute_layout
>>> lay = compute_layout(page_size=4096, va_bits=48, release="6.18")
>>> hex(lay["VMALLOC_START"]), hex(lay["VMALLOC_END"]), lay["PGTABLE_LEVELS"]
('0xffff800080000000', '0xfffffdffb0000000', 4)
"""

from __future__ import annotations

from pyvmalloc.arch.spec import MachineSpec as Machine

__all__ = ["VA_BITS_BY_PAGE_SIZE", "compute_layout", "layout", "pgtable_levels"]

M64 = (1 << 64) - 1
MiB = 1 << 20
GiB = 1 << 30
SZ_64K = 64 << 10
SZ_128M = 128 * MiB
STRUCT_PAGE_MAX_SHIFT = 6
STRUCT_PAGE_SIZE = 1 << STRUCT_PAGE_MAX_SHIFT

#: ``CONFIG_ARM64_VA_BITS`` choices per granule (arch/arm64/Kconfig).
VA_BITS_BY_PAGE_SIZE: dict[int, tuple[int, ...]] = {
    4096: (39, 48, 52),
    16384: (36, 47, 48, 52),
    65536: (42, 48, 52),
}

#: Which rule set applies for a profile name.
_ERAS = {"4.19": "4.19", "5.4": "5.4", "6.18": "6.18"}


def _neg(x: int) -> int:
    return -x & M64


def pgtable_levels(page_size: int, va_bits: int) -> int:
    """``ARM64_HW_PGTABLE_LEVELS(VA_BITS)`` = ``CONFIG_PGTABLE_LEVELS``."""
    page_shift = page_size.bit_length() - 1
    return (va_bits - 4) // (page_shift - 3)


def _level_shift(page_shift: int, n: int) -> int:
    return (page_shift - 3) * (4 - n) + 3


def compute_layout(
    *, page_size: int = 4096, va_bits: int = 48, release: str = "6.18"
) -> dict[str, int]:
    """The arm64 constants for one granule, ``VA_BITS`` and release.

    Works for every page size; :class:`~pyvmalloc.config.Machine` (the allocator model)
    only accepts 4 KiB pages.
    """
    if page_size not in VA_BITS_BY_PAGE_SIZE:
        raise ValueError(f"arm64 page size must be 4096, 16384 or 65536, not {page_size}")
    if va_bits not in VA_BITS_BY_PAGE_SIZE[page_size]:
        ok = ", ".join(map(str, VA_BITS_BY_PAGE_SIZE[page_size]))
        raise ValueError(f"VA_BITS={va_bits} is not offered with {page_size >> 10}K pages ({ok})")
    era = _ERAS.get(release)
    if era is None:
        raise ValueError(f"no arm64 layout rules for release {release!r} ({', '.join(_ERAS)})")
    if va_bits == 52 and page_size != 65536 and era != "6.18":
        raise ValueError("52-bit VA with 4K/16K pages (LPA2) needs v6.9+")
    if va_bits == 52 and era == "4.19":
        raise ValueError("v4.19 arm64 has no 52-bit kernel VA")
    page_shift = page_size.bit_length() - 1
    levels = pgtable_levels(page_size, va_bits)
    pgdir_shift = _level_shift(page_shift, 4 - levels)
    pud_shift = _level_shift(page_shift, 1) if levels > 3 else pgdir_shift
    pmd_shift = _level_shift(page_shift, 2) if levels > 2 else pgdir_shift
    if va_bits > 48:
        va_bits_min = 47 if page_size == 16384 else 48
    else:
        va_bits_min = va_bits
    out: dict[str, int] = {
        "PAGE_SIZE": page_size,
        "VA_BITS": va_bits,
        "VA_BITS_MIN": va_bits_min,
        "PGTABLE_LEVELS": levels,
        "PGDIR_SHIFT": pgdir_shift,
        "PUD_SHIFT": pud_shift,
        "PMD_SHIFT": pmd_shift,
        # generic IOREMAP_MAX_ORDER (7 + PAGE_SHIFT); arm64 maps huge ioremaps itself
        "IOREMAP_MAX_ORDER": 7 + page_shift,
    }
    if era == "4.19":
        va_start = _neg(1 << va_bits)
        page_offset = _neg(1 << (va_bits - 1))
        modules_vaddr = va_start
        modules_end = modules_vaddr + SZ_128M
        vmemmap_size = 1 << (va_bits - page_shift - 1 + STRUCT_PAGE_MAX_SHIFT)
        vmalloc_end = page_offset - (1 << pud_shift) - vmemmap_size - SZ_64K
        out.update(
            VA_START=va_start,
            PAGE_OFFSET=page_offset,
            BPF_JIT_REGION_START=0,
            BPF_JIT_REGION_END=0,
            VMEMMAP_START=page_offset - vmemmap_size,
        )
    elif era == "5.4":
        page_offset = _neg(1 << va_bits)
        page_end = _neg(1 << (va_bits_min - 1))
        bpf_start = page_end  # KASAN_SHADOW_END without KASAN
        modules_vaddr = bpf_start + SZ_128M
        modules_end = modules_vaddr + SZ_128M
        vmemmap_size = (page_end - page_offset) >> (page_shift - STRUCT_PAGE_MAX_SHIFT)
        vmalloc_end = _neg((1 << pud_shift) + vmemmap_size + SZ_64K)
        out.update(
            PAGE_OFFSET=page_offset,
            PAGE_END=page_end,
            BPF_JIT_REGION_START=bpf_start,
            BPF_JIT_REGION_END=bpf_start + SZ_128M,
            VMEMMAP_START=_neg(vmemmap_size + 2 * MiB),
        )
    else:
        page_offset = _neg(1 << va_bits)
        page_end = _neg(1 << (va_bits_min - 1))
        modules_vaddr = page_end
        modules_end = modules_vaddr + 2 * GiB
        vmemmap_size = ((page_end - page_offset) >> page_shift) * STRUCT_PAGE_SIZE
        vmemmap_end = _neg(GiB)
        vmemmap_start = vmemmap_end - vmemmap_size
        vmalloc_end = vmemmap_start - 256 * MiB
        out.update(
            PAGE_OFFSET=page_offset,
            PAGE_END=page_end,
            BPF_JIT_REGION_START=0,
            BPF_JIT_REGION_END=0,
            VMEMMAP_START=vmemmap_start,
            VMEMMAP_END=vmemmap_end,
            PCI_IO_START=vmemmap_end + 8 * MiB,
            FIXADDR_TOP=_neg(8 * MiB),
            KIMAGE_VADDR=modules_end,
        )
    out.update(
        MODULES_VADDR=modules_vaddr,
        MODULES_END=modules_end,
        VMALLOC_START=modules_end,
        VMALLOC_END=vmalloc_end,
        VMEMMAP_SIZE=vmemmap_size,
    )
    return out


def layout(machine: Machine) -> dict[str, int]:
    """The layout of an arm64 :class:`~pyvmalloc.config.Machine`."""
    return compute_layout(
        page_size=machine.page_size, va_bits=machine.va_bits, release=machine.kernel_release
    )
