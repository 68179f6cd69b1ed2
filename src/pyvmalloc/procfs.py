"""``/proc/vmallocinfo`` and the vmalloc lines of ``/proc/meminfo``.

vmallocinfo (``s_show`` in mm/vmalloc.c), one line per area::

    0x%pK-0x%pK %7ld[ %pS][ pages=%d][ phys=%pa][ ioremap][ sparse][ vmalloc][ vmap]
        [ user][ dma-coherent][ vpages][ N%u=%u ...]

``vm_map_ram`` lines for areas without a vm_struct and ``unpurged vm_area`` lines for
lazily freed ones. Ordering: 5.4 walks the one busy list in address order and, after
its last entry, the purge list newest first; since v6.9 (``vmallocinfo_lazy_per_node``)
each vmap node's busy list in address order, then each node's lazy list in address
order. ``VM_UNINITIALIZED`` areas are skipped in 6.16+
(``vmallocinfo_skips_uninitialized``), printed without the NUMA part before. Which
flags have words and which vm-less areas print is in the profile too
(``has_vm_sparse``, ``vmap_ram_flags``).

The functions read plain objects: the profile, the vmap allocator's busy and lazy
areas, the page allocator's node map, and the vm_structs bound to the areas.

``%pK`` depends on ``kptr_restrict``: the model prints real addresses (the value 1
with CAP_SYSLOG, as in the spec's live sample); ``kptr_restrict=2`` prints zeros. The
hashed pointers of ``kptr_restrict=0`` are random per boot and not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pyvmalloc.config import PAGE_SHIFT, KernelProfile, Machine
from pyvmalloc.vmalloc import (
    VM_ALLOC,
    VM_DMA_COHERENT,
    VM_IOREMAP,
    VM_MAP,
    VM_SPARSE,
    VM_UNINITIALIZED,
    VM_USERMAP,
    VmStruct,
)
from pyvmalloc.vmap.area import VMAP_RAM, VmapArea
from pyvmalloc.vmap.space import VmapSpace

if TYPE_CHECKING:
    from pyvmalloc.phys import PhysicalMemory

__all__ = ["meminfo", "vmallocinfo", "vmallocinfo_line"]


def _pk(addr: int, kptr_restrict: int, digits: int = 16) -> str:
    """``0x%pK``: zero-padded to the pointer width (``2 * sizeof(void *)`` digits:
    16 on 64-bit, 8 on 32-bit machines)."""
    return "0x" + ("0" * digits if kptr_restrict >= 2 else f"{addr:0{digits}x}")


def phys_addr_digits(machine: Machine) -> int:
    """Hex digits of ``%pa`` (``phys_addr_t``): 16 on 64-bit and on 32-bit with
    LPAE/PAE (64-bit ``phys_addr_t``), 8 without."""
    return 16 if machine.bits_per_long == 64 or machine.lpae else 8


def vmallocinfo_line(
    profile: KernelProfile,
    machine: Machine,
    phys: PhysicalMemory,
    v: VmStruct,
    *,
    numa: bool = True,
    kptr_restrict: int = 1,
) -> str:
    """One ``s_show`` line for the vm_struct ``v`` (no trailing newline); ``phys``
    gives the NUMA node of each page (``N<node>=<pages>``)."""
    w = machine.bits_per_long // 4
    parts = [
        f"{_pk(v.addr, kptr_restrict, w)}-{_pk(v.addr + v.size, kptr_restrict, w)} {v.size:7d}"
    ]
    if v.caller:
        parts.append(f" {v.caller}")
    if v.nr_pages:
        parts.append(f" pages={v.nr_pages}")
    if v.phys_addr:
        parts.append(f" phys=0x{v.phys_addr:0{phys_addr_digits(machine)}x}")
    f = v.flags
    if f & VM_IOREMAP:
        parts.append(" ioremap")
    if f & VM_SPARSE and profile.has_vm_sparse:
        parts.append(" sparse")
    if f & VM_ALLOC:
        parts.append(" vmalloc")
    if f & VM_MAP:
        parts.append(" vmap")
    if f & VM_USERMAP:
        parts.append(" user")
    if f & VM_DMA_COHERENT:
        parts.append(" dma-coherent")
    if v.vpages or (v.pages_addr and machine.vmalloc_start <= v.pages_addr < machine.vmalloc_end):
        parts.append(" vpages")
    if numa and v.pages is None and v.numa_pages:
        parts.extend(f" N{nid}={c}" for nid, c in v.numa_pages)
    elif numa and not f & VM_UNINITIALIZED and v.pages is not None and v.nr_pages:
        # One count per 2^page_order pages (show_numa_info; page_order is 0 on
        # kernels without huge vmalloc).
        step = 1 << v.page_order
        nids = phys.node[v.pages[: v.nr_pages : step]]
        counts = np.bincount(nids, minlength=phys.nr_nodes) * step
        for nid, c in enumerate(counts.tolist()):
            if c:
                parts.append(f" N{nid}={c}")
    return "".join(parts)


def _plain(va: VmapArea, what: str, kptr_restrict: int, digits: int = 16) -> str:
    return (
        f"{_pk(va.va_start, kptr_restrict, digits)}-{_pk(va.va_end, kptr_restrict, digits)} "
        f"{va.va_end - va.va_start:7d} {what}"
    )


def vmallocinfo(
    profile: KernelProfile,
    machine: Machine,
    space: VmapSpace,
    phys: PhysicalMemory,
    *,
    numa: bool = True,
    kptr_restrict: int = 1,
) -> str:
    """The whole ``/proc/vmallocinfo`` of the areas in ``space``, as ``profile``
    prints it."""
    out: list[str] = []
    skip_uninit = profile.vmallocinfo_skips_uninitialized
    vm_map_ram_needs_flag = profile.vmap_ram_flags
    busy_any = False
    for va in space.busy_areas():
        busy_any = True
        v: VmStruct | None = va.vm
        if v is None:
            if vm_map_ram_needs_flag and not va.flags & VMAP_RAM:
                continue
            out.append(_plain(va, "vm_map_ram", kptr_restrict, machine.bits_per_long // 4))
            continue
        if skip_uninit and v.flags & VM_UNINITIALIZED:
            continue
        out.append(
            vmallocinfo_line(profile, machine, phys, v, numa=numa, kptr_restrict=kptr_restrict)
        )
    if profile.vmallocinfo_lazy_per_node:
        per_node: list[list[VmapArea]] = [[] for _ in space.nodes]
        for va in space.lazy:
            per_node[space.lazy_node_of(va)].append(va)
        for lst in per_node:
            lst.sort(key=lambda a: a.va_start)
            out.extend(
                _plain(va, "unpurged vm_area", kptr_restrict, machine.bits_per_long // 4)
                for va in lst
            )
    elif busy_any:
        out.extend(
            _plain(va, "unpurged vm_area", kptr_restrict, machine.bits_per_long // 4)
            for va in reversed(space.lazy)
        )
    return "".join(line + "\n" for line in out)


def _kb_line(label: str, kb: int) -> str:
    # show_val_kb(): the label carries its own padding, then the value right-aligned
    # in 8 columns (seq_put_decimal_ull_width) and " kB".
    return f"{label}{kb:8d} kB\n"


def meminfo(machine: Machine, nr_vmalloc_pages: int) -> str:
    """The vmalloc lines of ``/proc/meminfo`` (``VmallocChunk`` is 0 since 4.4)."""
    total_kb = machine.vmalloc_total >> 10
    used_kb = nr_vmalloc_pages << (PAGE_SHIFT - 10)
    return (
        _kb_line("VmallocTotal:   ", total_kb)
        + _kb_line("VmallocUsed:    ", used_kb)
        + _kb_line("VmallocChunk:   ", 0)
    )
