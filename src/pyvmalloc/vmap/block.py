"""Per-CPU vmap blocks: the small ``vm_map_ram`` path (mm/vmalloc.c).

A vmap block is one ``VMAP_BLOCK_SIZE`` area (``VMAP_BBMAP_BITS`` pages, naturally
aligned, no guard, no vm_struct; 6.x flags ``VMAP_RAM | VMAP_BLOCK``) carved by bump
allocation: ``vb_alloc`` hands out ``2^order`` pages at ``BITS - free`` and never
reuses freed space until the whole block is dirty; then ``free_vmap_block`` frees the
block's VA lazily. ``purge_fragmented_blocks`` recycles blocks with no live mapping
(``free + dirty == BITS``, not fully dirty), 6.x only while ``free <
VMAP_PURGE_THRESHOLD`` unless forced.

Simplified: one index of blocks keyed by ``addr_to_vb_idx`` (5.4's radix tree; 6.x's
per-CPU xarrays hashed by address give the same lookups); ``used_map`` is not kept
(only /proc/kcore reads need it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pyvmalloc.config import PAGE_SHIFT, PAGE_SIZE
from pyvmalloc.gfp import GFP_KERNEL
from pyvmalloc.vmap.area import VMAP_BLOCK, VMAP_RAM, InvariantError, VmapArea

if TYPE_CHECKING:
    from pyvmalloc.vmalloc import Vmalloc

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
    """All vmap blocks and the per-CPU ``vmap_block_queue`` free lists."""

    def __init__(self, vm: Vmalloc) -> None:
        self.vm = vm
        m = vm.machine
        self.BITS = m.vmap_bbmap_bits
        self.BLOCK_SIZE = m.vmap_block_size
        self.MAX_ALLOC = m.vmap_max_alloc
        self.PURGE_THRESHOLD = self.BITS // 4
        self.base = vm.VMALLOC_START & ~(self.BLOCK_SIZE - 1)
        self.v6 = vm.v6
        #: per-CPU ``vbq->free`` (blocks with free space, oldest first)
        self.vbq: list[list[VmapBlock]] = [[] for _ in range(m.cpus_possible)]
        #: ``vmap_blocks`` index: vb_idx -> block
        self.index: dict[int, VmapBlock] = {}
        #: large vm_map_ram areas (count > VMAP_MAX_ALLOC): va_start -> VA
        self.large: dict[int, VmapArea] = {}

    def addr_to_vb_idx(self, addr: int) -> int:
        return (addr - self.base) // self.BLOCK_SIZE

    # ------------------------------------------------------------------ alloc
    def new_vmap_block(self, order: int) -> int:
        """``new_vmap_block``: a naturally aligned block VA; the first ``2^order``
        pages are the caller's; the block goes to the tail of this CPU's list."""
        vm = self.vm
        flags = VMAP_RAM | VMAP_BLOCK if self.v6 else 0
        va = vm.alloc_vmap_area(
            self.BLOCK_SIZE,
            self.BLOCK_SIZE,
            vm.VMALLOC_START,
            vm.VMALLOC_END,
            -1,
            GFP_KERNEL,
            None,
            flags,
        )
        if not isinstance(va, VmapArea):
            return 0
        vb = VmapBlock(va, self.BITS - (1 << order), 0, self.BITS, 0, vm.cpu)
        vb.live[0] = order
        self.index[self.addr_to_vb_idx(va.va_start)] = vb
        self.vbq[vm.cpu].append(vb)
        return va.va_start

    def vb_alloc(self, size: int) -> int:
        """``vb_alloc``: first block on this CPU's list with room, else a new one."""
        order = get_order(size)
        need = 1 << order
        lst = self.vbq[self.vm.cpu]
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
        return self.new_vmap_block(order)

    def vb_free(self, addr: int, size: int) -> None:
        """``vb_free``: clear the PTEs, mark dirty; a fully dirty block is freed."""
        order = get_order(size)
        off = (addr & (self.BLOCK_SIZE - 1)) >> PAGE_SHIFT
        vb = self.index.get(self.addr_to_vb_idx(addr))
        if vb is None or vb.live.get(off) != order:
            self.vm.log.BUG(f"vb_free: no vmap block mapping at {addr:#x} ({size} bytes)")
            return
        del vb.live[off]
        self.vm.pgt.unmap(addr, size)
        vb.dirty_min = min(vb.dirty_min, off)
        vb.dirty_max = max(vb.dirty_max, off + (1 << order))
        vb.dirty += 1 << order
        if vb.dirty == self.BITS:
            if vb.free:
                self.vm.log.BUG("vb_free: BUG_ON(vb->free)")
            self.free_vmap_block(vb)

    def free_vmap_block(self, vb: VmapBlock) -> None:
        """``free_vmap_block``: drop from the index, unlink and lazily free the VA."""
        del self.index[self.addr_to_vb_idx(vb.va.va_start)]
        if vb.on_free_list:
            self.vbq[vb.cpu].remove(vb)
            vb.on_free_list = False
        space = self.vm.space
        found = space.find_unlink_vmap_area(vb.va.va_start)
        if found is not vb.va:
            raise InvariantError(f"vmap block {vb.va!r} is not busy")
        space.free_vmap_area_noflush(vb.va, cpu=self.vm.cpu)

    def _purge_fragmented_block(self, vb: VmapBlock, force: bool) -> bool:
        if not (vb.free + vb.dirty == self.BITS and vb.dirty != self.BITS):
            return False
        if self.v6 and not (force or vb.free < self.PURGE_THRESHOLD):
            return False
        vb.free = 0
        vb.dirty = self.BITS
        vb.dirty_min = 0
        vb.dirty_max = self.BITS
        return True

    def purge_fragmented_blocks(self, cpu: int, force: bool = True) -> int:
        """``purge_fragmented_blocks(cpu)``: recycle this CPU's blocks that have no
        live mappings left; returns how many were freed."""
        purge = [vb for vb in list(self.vbq[cpu]) if self._purge_fragmented_block(vb, force)]
        for vb in purge:
            self.free_vmap_block(vb)
        return len(purge)

    def purge_fragmented_blocks_allcpus(self) -> None:
        """``purge_fragmented_blocks_allcpus`` (the VmapSpace failure-purge hook)."""
        for cpu in range(len(self.vbq)):
            self.purge_fragmented_blocks(cpu)

    def vm_unmap_aliases(self) -> None:
        """``vm_unmap_aliases`` = ``_vm_unmap_aliases(ULONG_MAX, 0, 0)``.

        5.4: note the dirty range of blocks on the free lists, purge fragmented
        blocks of all CPUs, purge lazy areas. 6.x: visit every block, try a
        non-forced fragmented purge, else reset the dirty range of partly dirty
        blocks; free the purged blocks; purge lazy areas.
        """
        if self.v6:
            purge = []
            for vb in list(self.index.values()):
                if self._purge_fragmented_block(vb, False):
                    purge.append(vb)
                elif vb.dirty_max and vb.dirty != self.BITS:
                    vb.dirty_min = self.BITS
                    vb.dirty_max = 0
            for vb in purge:
                self.free_vmap_block(vb)
        else:
            self.purge_fragmented_blocks_allcpus()
        self.vm.space.purge_vmap_area_lazy()

    # ---------------------------------------------------------- vm_map_ram
    def vm_map_ram(self, pages: npt.NDArray[np.int64], count: int, node: int) -> int:
        """``vm_map_ram``: see :mod:`pyvmalloc.vmap.block`."""
        vm = self.vm
        if count <= 0:
            return 0
        size = count << PAGE_SHIFT
        if count <= self.MAX_ALLOC:
            addr = self.vb_alloc(size)
            if not addr:
                return 0
        else:
            va = vm.alloc_vmap_area(
                size,
                PAGE_SIZE,
                vm.VMALLOC_START,
                vm.VMALLOC_END,
                node,
                GFP_KERNEL,
                None,
                VMAP_RAM if self.v6 else 0,
            )
            if not isinstance(va, VmapArea):
                return 0
            addr = va.va_start
            self.large[addr] = va
        prot = vm.pgt.supported_pte_mask
        from pyvmalloc.pgtable import PAGE_KERNEL

        if vm.vmap_pages_range(addr, addr + size, PAGE_KERNEL & prot, pages, PAGE_SHIFT):
            self.vm_unmap_ram(addr, count)
            return 0
        return addr

    def vm_unmap_ram(self, addr: int, count: int) -> None:
        """``vm_unmap_ram``: BUG on bad arguments, ``vb_free`` or a lazy VA free."""
        vm = self.vm
        size = count << PAGE_SHIFT
        if not addr or addr & (PAGE_SIZE - 1) or count <= 0:
            vm.log.BUG(f"vm_unmap_ram: bad address {addr:#x} or count {count}")
            return
        if count <= self.MAX_ALLOC:
            self.vb_free(addr, size)
            return
        va = self.large.pop(addr, None)
        if va is None:
            vm.log.BUG(f"vm_unmap_ram: BUG_ON(!va) for {addr:#x}")
            return
        vm.space.find_unlink_vmap_area(addr)
        vm.free_unmap_vmap_area(va)

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
