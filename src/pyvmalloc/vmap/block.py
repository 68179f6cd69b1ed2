"""Per-CPU vmap blocks: the small ``vm_map_ram`` path (mm/vmalloc.c).

A vmap block is one ``VMAP_BLOCK_SIZE`` area (``VMAP_BBMAP_BITS`` pages, naturally
aligned, no guard, no vm_struct; 6.x flags ``VMAP_RAM | VMAP_BLOCK``) carved by bump
allocation: ``vb_alloc`` hands out ``2^order`` pages at ``BITS - free`` and never
reuses freed space until the whole block is dirty; then ``free_vmap_block`` frees the
block's VA lazily. ``purge_fragmented_blocks`` recycles blocks with no live mapping
(``free + dirty == BITS``, not fully dirty), since v6.5 only while ``free <
VMAP_PURGE_THRESHOLD`` unless forced (``KernelProfile.vmap_block_purge_threshold``).

The blocks sit below the vmalloc layer: they are given the vmap area allocator, the
page tables and three steps of the vmalloc layer as callables (``alloc_vmap_area``,
the page mapper, ``free_unmap_vmap_area``), and the CPU each call runs on.

Simplified: one index of blocks keyed by ``addr_to_vb_idx`` (5.4's radix tree; 6.x's
per-CPU xarrays hashed by address give the same lookups); ``used_map`` is not kept
(only /proc/kcore reads need it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pyvmalloc.config import NUMA_NO_NODE, PAGE_SHIFT, PAGE_SIZE, KernelProfile, Machine
from pyvmalloc.errors import InvariantError
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.pgtable import PAGE_KERNEL, PageTables
from pyvmalloc.printk import KernelLog
from pyvmalloc.vmap.area import VMAP_BLOCK, VMAP_RAM, VmapArea
from pyvmalloc.vmap.space import VmapSpace

#: ``alloc_vmap_area(size, align, vstart, vend, node, gfp, vm, va_flags, *, cpu)``
AllocVmapArea = Callable[..., VmapArea | int]
#: ``vmap_pages_range(addr, end, prot, pages, page_shift)``: 0 or -errno
MapPages = Callable[[int, int, int, npt.NDArray[np.int64], int], int]
#: ``free_unmap_vmap_area(va, *, cpu)``
FreeUnmapVmapArea = Callable[..., None]

__all__ = ["VmapBlock", "VmapBlocks", "get_order"]


def get_order(size: int) -> int:
    """``get_order``: pages rounded up to a power of two, as an order."""
    return ((size - 1) >> PAGE_SHIFT).bit_length() if size > PAGE_SIZE else 0


@dataclass(eq=False)
class VmapBlock:
    """``struct vmap_block``."""

    va: VmapArea
    free: int
    dirty: int
    dirty_min: int
    dirty_max: int
    cpu: int
    on_free_list: bool = True
    live: dict[int, int] = field(default_factory=dict)  # page offset -> order (model)


class VmapBlocks:
    """All vmap blocks and the per-CPU ``vmap_block_queue`` free lists.

    ``alloc_vmap_area`` and ``free_unmap_vmap_area`` are the vmalloc layer's steps
    (``cpu=`` keyword), ``map_pages`` is ``vmap_pages_range``.
    """

    def __init__(
        self,
        machine: Machine,
        profile: KernelProfile,
        log: KernelLog,
        space: VmapSpace,
        pgtables: PageTables,
        *,
        alloc_vmap_area: AllocVmapArea,
        map_pages: MapPages,
        free_unmap_vmap_area: FreeUnmapVmapArea,
    ) -> None:
        m = machine
        self.log = log
        self.space = space
        self.pgt = pgtables
        self._alloc_vmap_area = alloc_vmap_area
        self._map_pages = map_pages
        self._free_unmap_vmap_area = free_unmap_vmap_area
        self.VMALLOC_START = m.vmalloc_start
        self.VMALLOC_END = m.vmalloc_end
        self.BITS = m.vmap_bbmap_bits
        self.BLOCK_SIZE = m.vmap_block_size
        self.MAX_ALLOC = m.vmap_max_alloc
        self.PURGE_THRESHOLD = self.BITS // 4
        self.base = m.vmalloc_start & ~(self.BLOCK_SIZE - 1)
        #: VMAP_RAM / VMAP_BLOCK flags on the areas (v6.3)
        self.ram_flags = profile.vmap_ram_flags
        self.unmap_ram_warn_once = profile.vm_unmap_ram_warn_once
        #: VMAP_PURGE_THRESHOLD and the per-block vm_unmap_aliases walk (v6.5)
        self.purge_threshold = profile.vmap_block_purge_threshold
        #: per-CPU ``vbq->free`` (blocks with free space, oldest first)
        self.vbq: list[list[VmapBlock]] = [[] for _ in range(m.cpus_possible)]
        #: ``vmap_blocks`` index: vb_idx -> block
        self.index: dict[int, VmapBlock] = {}
        #: large vm_map_ram areas (count > VMAP_MAX_ALLOC): va_start -> VA
        self.large: dict[int, VmapArea] = {}

    def addr_to_vb_idx(self, addr: int) -> int:
        return (addr - self.base) // self.BLOCK_SIZE

    # ------------------------------------------------------------------ alloc
    def new_vmap_block(self, order: int, *, cpu: int) -> int:
        """``new_vmap_block``: a naturally aligned block VA; the first ``2^order``
        pages are the caller's; the block goes to the tail of this CPU's list."""
        flags = VMAP_RAM | VMAP_BLOCK if self.ram_flags else 0
        va = self._alloc_vmap_area(
            self.BLOCK_SIZE,
            self.BLOCK_SIZE,
            self.VMALLOC_START,
            self.VMALLOC_END,
            NUMA_NO_NODE,
            GFP_KERNEL,
            None,
            flags,
            cpu=cpu,
        )
        if not isinstance(va, VmapArea):
            return 0
        vb = VmapBlock(va, self.BITS - (1 << order), 0, self.BITS, 0, cpu)
        vb.live[0] = order
        self.index[self.addr_to_vb_idx(va.va_start)] = vb
        self.vbq[cpu].append(vb)
        return va.va_start

    def vb_alloc(self, size: int, *, cpu: int) -> int:
        """``vb_alloc``: first block on this CPU's list with room, else a new one."""
        order = get_order(size)
        need = 1 << order
        lst = self.vbq[cpu]
        for vb in lst:
            if vb.free < need:
                continue
            off = self.BITS - vb.free
            vb.free -= need
            vb.live[off] = order
            if vb.free == 0:
                lst.remove(vb)
                vb.on_free_list = False
            return vb.va.va_start + (off << PAGE_SHIFT)
        return self.new_vmap_block(order, cpu=cpu)

    def vb_free(self, addr: int, size: int, *, cpu: int) -> bool:
        """``vb_free``: clear the PTEs, mark dirty; a fully dirty block is freed.

        No block there is ``BUG_ON(!vb)`` in 4.19 and 5.4; 6.18 has no check (it
        dereferences the NULL block), so the model refuses the call. A block that
        holds no mapping of that size there is not checked by any release (the
        kernel would corrupt the block's dirty count): the model's own refusal.
        """
        order = get_order(size)
        off = (addr & (self.BLOCK_SIZE - 1)) >> PAGE_SHIFT
        vb = self.index.get(self.addr_to_vb_idx(addr))
        if vb is None:
            self.log.BUG("vb_free:!vb", f"vb_free: no vmap block at {addr:#x} ({size} bytes)")
            return False
        if vb.live.get(off) != order:
            self.log.refuse(
                f"vb_free: the vmap block at {vb.va.va_start:#x} maps nothing of "
                f"{size} bytes at {addr:#x} (the kernel does not check)"
            )
            return False
        del vb.live[off]
        self.pgt.unmap(addr, size)
        vb.dirty_min = min(vb.dirty_min, off)
        vb.dirty_max = max(vb.dirty_max, off + (1 << order))
        vb.dirty += 1 << order
        if vb.dirty == self.BITS:
            if vb.free:
                self.log.BUG(
                    "vb_free:vb->free",
                    f"vb_free: fully dirty block {vb.va.va_start:#x} has free pages",
                )
            self.free_vmap_block(vb, cpu=cpu)
        return True

    def free_vmap_block(self, vb: VmapBlock, *, cpu: int) -> None:
        """``free_vmap_block``: drop from the index, unlink and lazily free the VA."""
        del self.index[self.addr_to_vb_idx(vb.va.va_start)]
        if vb.on_free_list:
            self.vbq[vb.cpu].remove(vb)
            vb.on_free_list = False
        space = self.space
        found = space.find_unlink_vmap_area(vb.va.va_start)
        if found is not vb.va:
            raise InvariantError(f"vmap block {vb.va!r} is not busy")
        space.free_vmap_area_noflush(vb.va, cpu=cpu)

    def _purge_fragmented_block(self, vb: VmapBlock, force: bool) -> bool:
        if not (vb.free + vb.dirty == self.BITS and vb.dirty != self.BITS):
            return False
        if self.purge_threshold and not (force or vb.free < self.PURGE_THRESHOLD):
            return False
        vb.free = 0
        vb.dirty = self.BITS
        vb.dirty_min = 0
        vb.dirty_max = self.BITS
        return True

    def purge_fragmented_blocks(self, cpu: int, force: bool = True, *, this_cpu: int = 0) -> int:
        """``purge_fragmented_blocks(cpu)``: recycle ``cpu``'s blocks that have no
        live mappings left (the work runs on ``this_cpu``); returns how many were
        freed."""
        purge = [vb for vb in list(self.vbq[cpu]) if self._purge_fragmented_block(vb, force)]
        for vb in purge:
            self.free_vmap_block(vb, cpu=this_cpu)
        return len(purge)

    def purge_fragmented_blocks_allcpus(self, this_cpu: int = 0) -> None:
        """``purge_fragmented_blocks_allcpus`` (the allocator's failure-purge hook),
        running on ``this_cpu``."""
        for cpu in range(len(self.vbq)):
            self.purge_fragmented_blocks(cpu, this_cpu=this_cpu)

    def vm_unmap_aliases(self, *, cpu: int) -> None:
        """``vm_unmap_aliases`` = ``_vm_unmap_aliases(ULONG_MAX, 0, 0)``.

        5.4: note the dirty range of blocks on the free lists, purge fragmented
        blocks of all CPUs, purge lazy areas. Since v6.5: visit every block, try a
        non-forced fragmented purge, else reset the dirty range of partly dirty
        blocks; free the purged blocks; purge lazy areas.
        """
        if self.purge_threshold:
            purge = []
            for vb in list(self.index.values()):
                if self._purge_fragmented_block(vb, False):
                    purge.append(vb)
                elif vb.dirty_max and vb.dirty != self.BITS:
                    vb.dirty_min = self.BITS
                    vb.dirty_max = 0
            for vb in purge:
                self.free_vmap_block(vb, cpu=cpu)
        else:
            self.purge_fragmented_blocks_allcpus(cpu)
        self.space.purge_vmap_area_lazy()

    # ---------------------------------------------------------- vm_map_ram
    def vm_map_ram(self, pages: npt.NDArray[np.int64], count: int, node: int, *, cpu: int) -> int:
        """``vm_map_ram``: see :mod:`pyvmalloc.vmap.block`."""
        if count <= 0:
            # count 0 is <= VMAP_MAX_ALLOC: vb_alloc(0) hits WARN_ON(size == 0)
            self.log.WARN("vb_alloc: WARN_ON(size == 0)", "vb_alloc:size==0", cpu=cpu)
            return 0
        size = count << PAGE_SHIFT
        if count <= self.MAX_ALLOC:
            addr = self.vb_alloc(size, cpu=cpu)
            if not addr:
                return 0
        else:
            va = self._alloc_vmap_area(
                size,
                PAGE_SIZE,
                self.VMALLOC_START,
                self.VMALLOC_END,
                node,
                GFP_KERNEL,
                None,
                VMAP_RAM if self.ram_flags else 0,
                cpu=cpu,
            )
            if not isinstance(va, VmapArea):
                return 0
            addr = va.va_start
            self.large[addr] = va
        prot = self.pgt.supported_pte_mask
        if self._map_pages(addr, addr + size, PAGE_KERNEL & prot, pages, PAGE_SHIFT):
            self.vm_unmap_ram(addr, count, cpu=cpu)
            return 0
        return addr

    def vm_unmap_ram(self, addr: int, count: int, *, cpu: int) -> bool:
        """``vm_unmap_ram``: BUG on bad arguments, ``vb_free`` or a lazy VA free.

        A large count with no area there is ``BUG_ON(!va)`` in 5.4 and
        ``WARN_ON_ONCE(!va)`` in 6.18 (``vm_unmap_ram_warn_once``). True if
        something was unmapped.
        """
        size = count << PAGE_SHIFT
        # the four BUG_ONs on the address, in the kernel's order
        site = (
            "vm_unmap_ram:!addr"
            if not addr
            else "vm_unmap_ram:addr<VMALLOC_START"
            if addr < self.VMALLOC_START
            else "vm_unmap_ram:addr>VMALLOC_END"
            if addr > self.VMALLOC_END
            else "vm_unmap_ram:!PAGE_ALIGNED(addr)"
            if addr & (PAGE_SIZE - 1)
            else ""
        )
        if site:
            self.log.BUG(site, f"vm_unmap_ram: bad address {addr:#x}")
            return False
        if count <= 0:
            # no release checks the count (0 reaches vb_free with get_order(0))
            self.log.refuse(f"vm_unmap_ram: count {count} (the kernel does not check)")
            return False
        if count <= self.MAX_ALLOC:
            return self.vb_free(addr, size, cpu=cpu)
        va = self.large.pop(addr, None)
        if va is None:
            if self.unmap_ram_warn_once:
                self.log.WARN_ONCE("vm_unmap_ram:!va", "vm_unmap_ram: WARN_ON_ONCE(!va)", cpu=cpu)
            else:
                self.log.BUG("vm_unmap_ram:!va", f"vm_unmap_ram: no vmap_area at {addr:#x}")
            return False
        self.space.find_unlink_vmap_area(addr)
        self._free_unmap_vmap_area(va, cpu=cpu)
        return True

    def check(self) -> None:
        for idx, vb in self.index.items():
            if self.addr_to_vb_idx(vb.va.va_start) != idx or vb.va.va_start & (self.BLOCK_SIZE - 1):
                raise InvariantError(f"vmap block {vb.va!r} misindexed or misaligned")
            if not 0 <= vb.free + vb.dirty <= self.BITS:
                raise InvariantError(f"vmap block {vb.va!r}: free {vb.free} dirty {vb.dirty}")
            if vb.on_free_list != (vb in self.vbq[vb.cpu]):
                raise InvariantError(f"vmap block {vb.va!r}: free-list flag out of sync")
            if vb.on_free_list and vb.free == 0:
                raise InvariantError(f"vmap block {vb.va!r} on a free list with no space")
