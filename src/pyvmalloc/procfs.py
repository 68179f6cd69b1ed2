"""``/proc/vmallocinfo``, the vmalloc lines of ``/proc/meminfo``, ``/proc/buddyinfo``.

vmallocinfo (``s_show`` in mm/vmalloc.c), one line per area::

    0x%pK-0x%pK %7ld[ %pS][ pages=%d][ phys=%pa][ ioremap][ sparse][ vmalloc][ vmap]
        [ user][ dma-coherent][ vpages][ N%u=%u ...]

``vm_map_ram`` lines for areas without a vm_struct and ``unpurged vm_area`` lines for
lazily freed ones. Ordering: 5.4 walks the one busy list in address order and, after
its last entry, the purge list newest first; 6.x walks each vmap node's busy list in
address order, then each node's lazy list in address order. ``VM_UNINITIALIZED``
areas are skipped in 6.16+ (``vmallocinfo_skips_uninitialized``), printed without the
NUMA part before.

``%pK`` depends on ``kptr_restrict``: the model prints real addresses (the value 1
with CAP_SYSLOG, as in the spec's live sample); ``kptr_restrict=2`` prints zeros. The
hashed pointers of ``kptr_restrict=0`` are random per boot and not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pyvmalloc.config import PAGE_SHIFT
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

if TYPE_CHECKING:
    from pyvmalloc.vmalloc import Vmalloc

__all__ = ["buddyinfo", "meminfo", "vmallocinfo", "vmallocinfo_line"]


def _pk(addr: int, kptr_restrict: int) -> str:
    return "0x" + ("0" * 16 if kptr_restrict >= 2 else f"{addr:016x}")


def vmallocinfo_line(vm: Vmalloc, v: VmStruct, *, numa: bool = True, kptr_restrict: int = 1) -> str:
    """One ``s_show`` line for the vm_struct ``v`` (no trailing newline)."""
    parts = [f"{_pk(v.addr, kptr_restrict)}-{_pk(v.addr + v.size, kptr_restrict)} {v.size:7d}"]
    if v.caller:
        parts.append(f" {v.caller}")
    if v.nr_pages:
        parts.append(f" pages={v.nr_pages}")
    if v.phys_addr:
        parts.append(f" phys=0x{v.phys_addr:016x}")
    f = v.flags
    if f & VM_IOREMAP:
        parts.append(" ioremap")
    if f & VM_SPARSE and vm.v6:
        parts.append(" sparse")
    if f & VM_ALLOC:
        parts.append(" vmalloc")
    if f & VM_MAP:
        parts.append(" vmap")
    if f & VM_USERMAP:
        parts.append(" user")
    if f & VM_DMA_COHERENT:
        parts.append(" dma-coherent")
    if v.pages_addr and vm.is_vmalloc_addr(v.pages_addr):
        parts.append(" vpages")
    if numa and not f & VM_UNINITIALIZED and v.pages is not None and v.nr_pages:
        step = 1 << v.page_order if vm.v6 else 1
        nids = vm.phys.node[v.pages[: v.nr_pages : step]]
        counts = np.bincount(nids, minlength=vm.phys.nr_nodes) * step
        for nid, c in enumerate(counts.tolist()):
            if c:
                parts.append(f" N{nid}={c}")
    return "".join(parts)


def _plain(va: VmapArea, what: str, kptr_restrict: int) -> str:
    return (
        f"{_pk(va.va_start, kptr_restrict)}-{_pk(va.va_end, kptr_restrict)} "
        f"{va.va_end - va.va_start:7d} {what}"
    )


def vmallocinfo(vm: Vmalloc, *, numa: bool = True, kptr_restrict: int = 1) -> str:
    """The whole ``/proc/vmallocinfo`` for the profile of ``vm``."""
    space = vm.space
    out: list[str] = []
    skip_uninit = vm.profile.vmallocinfo_skips_uninitialized
    busy_any = False
    for va in space.busy_areas():
        busy_any = True
        v: VmStruct | None = va.vm
        if v is None:
            if vm.v6 and not va.flags & VMAP_RAM:
                continue
            out.append(_plain(va, "vm_map_ram", kptr_restrict))
            continue
        if skip_uninit and v.flags & VM_UNINITIALIZED:
            continue
        out.append(vmallocinfo_line(vm, v, numa=numa, kptr_restrict=kptr_restrict))
    if vm.v6:
        per_node: list[list[VmapArea]] = [[] for _ in space.nodes]
        for va in space.lazy:
            per_node[space.lazy_node_of(va)].append(va)
        for lst in per_node:
            lst.sort(key=lambda a: a.va_start)
            out.extend(_plain(va, "unpurged vm_area", kptr_restrict) for va in lst)
    elif busy_any:
        out.extend(_plain(va, "unpurged vm_area", kptr_restrict) for va in reversed(space.lazy))
    return "".join(line + "\n" for line in out)


def _kb_line(label: str, kb: int) -> str:
    # show_val_kb(): the label carries its own padding, then the value right-aligned
    # in 8 columns (seq_put_decimal_ull_width) and " kB".
    return f"{label}{kb:8d} kB\n"


def meminfo(vm: Vmalloc) -> str:
    """The vmalloc lines of ``/proc/meminfo`` (``VmallocChunk`` is 0 since 4.4)."""
    total_kb = vm.machine.vmalloc_total >> 10
    used_kb = vm.nr_vmalloc_pages << (PAGE_SHIFT - 10)
    return (
        _kb_line("VmallocTotal:   ", total_kb)
        + _kb_line("VmallocUsed:    ", used_kb)
        + _kb_line("VmallocChunk:   ", 0)
    )


def buddyinfo(vm: Vmalloc) -> str:
    """``/proc/buddyinfo`` (delegated to the page allocator)."""
    return vm.phys.buddyinfo()
