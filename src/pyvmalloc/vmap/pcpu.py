"""``pcpu_get_vm_areas``: congruent areas for the percpu allocator, from the top.

The percpu allocator needs one unit per CPU at the same distance apart in every
chunk, so ``pcpu_get_vm_areas`` asks for several areas at ``base + offsets[i]`` with
one common ``base``. It searches from the top of the vmalloc range downwards over the
free list (``pvm_find_va_enclose_addr``, ``pvm_determine_end_from_reverse``), moving
``base`` down until every area fits in a free block, then clips them all. No guard
pages. On failure the reclaim purge runs once and the search is retried.

On the live 6.18 machine its first 2 MiB chunk lands at 0xffffe8ffffc00000, which the
tests check.
"""

from __future__ import annotations

from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.errors import InvariantError
from pyvmalloc.rbtree import rb_prev
from pyvmalloc.vmap.area import VmapArea
from pyvmalloc.vmap.space import VmapSpace

__all__ = ["pcpu_free_vm_areas", "pcpu_get_vm_areas", "pvm_determine_end_from_reverse"]


def pvm_determine_end_from_reverse(
    space: VmapSpace, va: VmapArea | None, align: int
) -> tuple[int, VmapArea | None]:
    """``pvm_determine_end_from_reverse``: walk down the free list from ``va`` to the
    first block that still has room below ``min(block end, VMALLOC_END)`` aligned
    down; return that aligned end (0 if none) and the block."""
    vmalloc_end = space.vmalloc_end & ~(align - 1)
    while va is not None:
        addr = min(va.va_end & ~(align - 1), vmalloc_end)
        if va.va_start < addr:
            return addr, va
        va = rb_prev(va)
    return 0, None


def pcpu_get_vm_areas(
    space: VmapSpace, offsets: list[int], sizes: list[int], align: int, cpu: int = 0
) -> list[VmapArea] | None:
    """``pcpu_get_vm_areas``: ``len(offsets)`` areas at ``base + offsets[i]``.

    The percpu allocator needs its units congruent (the same distance apart on
    every CPU), so one common ``base`` is searched from the top of the vmalloc
    range downwards over the free list. No guard pages. On failure the reclaim
    purge runs once and the search is retried; then None.
    """
    if not space.tracks_free_space:
        raise NotImplementedError(
            "pcpu_get_vm_areas is not modelled for the 4.19 profile (use 5.4 or 6.18): its "
            "walk of the busy list from the top with vmap_area_pcpu_hole is not reproduced"
        )
    nr = len(offsets)
    umax = space.ulong_max
    if nr == 0 or nr != len(sizes):
        # the kernel takes nr_vms with the arrays and never checks them
        space.log.refuse(f"pcpu_get_vm_areas: {nr} offsets for {len(sizes)} sizes")
        return None
    if align <= 0 or align & (PAGE_SIZE - 1) or align & (align - 1):
        space.log.BUG("pcpu_get_vm_areas:align", f"pcpu_get_vm_areas: bad align {align:#x}")
        return None
    vmalloc_start = (space.vmalloc_start + align - 1) & ~(align - 1)
    vmalloc_end = space.vmalloc_end & ~(align - 1)
    last_area = 0
    for i in range(nr):
        start, size = offsets[i], sizes[i]
        if start & (align - 1):
            space.log.BUG(
                "pcpu_get_vm_areas:!IS_ALIGNED(offsets)",
                f"pcpu_get_vm_areas: offset {i} ({start:#x}) not aligned to {align:#x}",
            )
            return None
        if size & (align - 1):
            space.log.BUG(
                "pcpu_get_vm_areas:!IS_ALIGNED(sizes)",
                f"pcpu_get_vm_areas: size {i} ({size:#x}) not aligned to {align:#x}",
            )
            return None
        if size <= 0:
            space.log.refuse(f"pcpu_get_vm_areas: area {i} is empty (the kernel does not check)")
            return None
        if start > offsets[last_area]:
            last_area = i
        for j in range(i):
            if start < offsets[j] + sizes[j] and offsets[j] < start + size:
                space.log.BUG(
                    "pcpu_get_vm_areas:overlap", f"pcpu_get_vm_areas: areas {j} and {i} overlap"
                )
                return None
    last_end = offsets[last_area] + sizes[last_area]
    if vmalloc_end - vmalloc_start < last_end:
        space.log.WARN("pcpu_get_vm_areas: the areas span more than the vmalloc range")
        return None
    purged = False
    while True:
        base = _pcpu_find_base(space, offsets, sizes, align, last_area, vmalloc_start)
        if base is not None:
            break
        if purged:
            return None
        space.reclaim_and_purge_vmap_areas(cpu)
        purged = True
    vas: list[VmapArea] = []
    for i in range(nr):
        start = (base + offsets[i]) & umax
        block = space.free.pvm_find_va_enclose_addr(start)
        if block is None or space.free.va_clip(block, start, sizes[i]):
            raise InvariantError(f"pcpu_get_vm_areas: cannot clip {start:#x}")
        va = VmapArea(start, start + sizes[i])
        space.insert_vmap_area(va)
        space.stats.allocs += 1
        vas.append(va)
    return vas


def _pcpu_find_base(
    space: VmapSpace,
    offsets: list[int],
    sizes: list[int],
    align: int,
    last_area: int,
    vmalloc_start: int,
) -> int | None:
    nr = len(offsets)
    umax = space.ulong_max
    last_end = offsets[last_area] + sizes[last_area]
    area = term_area = last_area
    start = offsets[area]
    end = start + sizes[area]
    end_addr, va = pvm_determine_end_from_reverse(
        space, space.free.pvm_find_va_enclose_addr(space.vmalloc_end & ~(align - 1)), align
    )
    base = (end_addr - end) & umax
    while True:
        # Wrapped below the start of the range, or no block left: give up.
        if ((base + last_end) & umax) < vmalloc_start + last_end or va is None:
            return None
        if base + end > va.va_end:
            # The area does not fit under this block's end: move base down.
            end_addr, va = pvm_determine_end_from_reverse(space, va, align)
            base = (end_addr - end) & umax
            term_area = area
            continue
        if base + start < va.va_start:
            # The area starts below this block: try the previous block.
            end_addr, va = pvm_determine_end_from_reverse(space, rb_prev(va), align)
            base = (end_addr - end) & umax
            term_area = area
            continue
        # This area fits; on to the previous one, until back at the terminal one.
        area = (area + nr - 1) % nr
        if area == term_area:
            return base
        start = offsets[area]
        end = start + sizes[area]
        va = space.free.pvm_find_va_enclose_addr(base + end)


def pcpu_free_vm_areas(space: VmapSpace, vas: list[VmapArea], cpu: int = 0) -> None:
    """``pcpu_free_vm_areas``: free each area (lazily, like ``free_vm_area``)."""
    for va in vas:
        found = space.find_unlink_vmap_area(va.va_start)
        if found is None:
            space.log.WARN(f"pcpu_free_vm_areas: {va.va_start:#x} is not busy")
            continue
        space.free_vmap_area_noflush(found, cpu=cpu)
