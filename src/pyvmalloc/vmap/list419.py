"""The vmap area allocator as it was before the 2019 rewrite (profile "4.19").

Until v5.2 ``mm/vmalloc.c`` kept no record of free space at all. Free space is simply
whatever lies between the areas of the one busy rb-tree (``vmap_area_root``, keyed
by address, mirrored by the address-sorted ``vmap_area_list``). An allocation walks
that list from a starting point until it meets a gap that is large enough:
first fit, O(n) in the number of areas below the answer. The augmented free tree of
v5.2 (:mod:`pyvmalloc.vmap.area`) exists to remove exactly this walk.

The rules reproduced here were read from v4.19 ``mm/vmalloc.c``
(``alloc_vmap_area``, ``__free_vmap_area``, ``free_vmap_area_noflush``,
``__purge_vmap_area_lazy``, ``remove_vm_area``):

**The search cache.** Four globals remember the last search: ``free_vmap_cache`` (a
node of the busy tree: the last area allocated, or where a free moved it),
``cached_hole_size`` (the largest gap the walk noticed below the cache),
``cached_vstart`` and ``cached_align`` (the last request's parameters).

1. The cache is dropped (and ``cached_hole_size`` reset to 0) when the request is
   more permissive than the cached one: ``size < cached_hole_size`` (the request
   may fit a hole below the cache), ``vstart < cached_vstart`` or
   ``align < cached_align``. Then ``cached_vstart``/``cached_align`` are set to the
   request's values, whatever happened.
2. Starting point with a cache: ``addr = ALIGN(cache.va_end, align)``; if that is
   below ``vstart`` the cache is dropped after all (``goto nocache``). Without a
   cache: ``addr = ALIGN(vstart, align)`` and a descent finds ``first``, the lowest
   area with ``va_end >= addr`` (stopping early at one that contains ``addr``); none
   means the space above ``addr`` is empty.
3. The walk: while ``addr + size > first.va_start`` (the request does not fit below
   ``first``) and ``addr + size <= vend``: note the gap below ``first`` in
   ``cached_hole_size`` if it is larger than the one already noted
   (``addr + cached_hole_size < first.va_start``), move ``addr`` to
   ``ALIGN(first.va_end, align)``, stop if ``first`` was the last area, else step to
   the next area of the list.
4. ``addr + size`` wrapping past ``ULONG_MAX`` (checked after each ``ALIGN``) and
   ``addr + size > vend`` at the end are failures ("overflow"): purge the lazy areas
   once and retry, then the purge notifiers, then the warning and ``-EBUSY``.
5. On success the new area is inserted and becomes ``free_vmap_cache``.
6. ``__free_vmap_area`` (direct frees and every purged area): if the freed area ends
   below ``cached_vstart`` the cache is dropped; else, if it starts at or below the
   cached area, the cache moves to the freed area's predecessor (``rb_prev``, may be
   NULL). ``cached_hole_size`` and ``cached_align`` are left alone.

**Lazy freeing.** ``remove_vm_area`` only flips the area's flags (``VM_VM_AREA`` off,
``VM_LAZY_FREE`` on); ``free_vmap_area_noflush`` adds its pages (guard included) to
``vmap_lazy_nr`` and pushes it on the ``vmap_purge_list`` llist. The area **stays in
the busy tree and list**: it keeps occupying its range and is walked over by every
search, until a purge ``__free_vmap_area``\\ s it. The purge runs synchronously in
the freeing call when ``nr_lazy > lazy_max_pages()`` (``try_purge_vmap_area_lazy``,
a trylock that always succeeds in a one-thread model), and on allocation failure
(``purge_vmap_area_lazy``, after purging fragmented vmap blocks). It takes the
whole llist (newest first) and frees the areas in that order.

No free tree, no pools, one node, no tracepoints (they arrived in v6.2).

Mechanism and policy: :class:`ListVmapSpace` is 4.19's mechanism (one busy tree that
also holds the lazily freed areas, no free tree, no pools) and :class:`ListWalk` its
placement policy, the walk above; its self-check is a brute-force first fit. The
space's methods keep the meaning of :class:`~pyvmalloc.vmap.space.VmapSpace`'s, so
the Kernel, the replay and the reports work unchanged:

* area states: ``BUSY`` (allocated, ``VM_VM_AREA``), ``LAZY`` (queued for purge,
  ``VM_LAZY_FREE``), ``DETACHED`` *while still in the tree* (between
  :meth:`ListVmapSpace.find_unlink_vmap_area` and
  :meth:`ListVmapSpace.free_vmap_area_noflush`: ``remove_vm_area``'s flag flip);
  all three occupy address space.
* :meth:`~ListVmapSpace.find_vmap_area` returns only ``BUSY`` areas, which is what
  every 4.19 caller ends up with after its ``va->flags & VM_VM_AREA`` test;
  :meth:`~ListVmapSpace.find_any_vmap_area` is the raw ``__find_vmap_area``.
* ``nr_busy`` counts ``BUSY`` areas, ``nr_tree`` every area in the tree, ``nr_free``
  the gaps of ``[1, ULONG_MAX)`` between them (:meth:`~ListVmapSpace.free_areas`
  yields them as synthetic ``FREE`` areas).
* ``walk_steps`` (total) and ``last_walk_steps`` count the list nodes the walk
  examined; ``cache_hits``/``cache_misses`` count searches that started from
  ``free_vmap_cache`` or from the descent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from pyvmalloc.bugsites import alloc_vmap_area_site
from pyvmalloc.config import EBUSY, EINVAL, PAGE_SHIFT, PAGE_SIZE, KernelProfile, Machine
from pyvmalloc.errors import InvariantError
from pyvmalloc.printk import KernelLog
from pyvmalloc.rbtree import (
    RBRoot,
    RBTreeError,
    rb_erase,
    rb_inorder,
    rb_insert_color,
    rb_link_node,
    rb_next,
    rb_prev,
    validate_rbtree,
)
from pyvmalloc.vmap.area import (
    Decision,
    PendingPurge,
    VaState,
    VmapArea,
    areas_overlapping,
    va_start_key,
)
from pyvmalloc.vmap.pools import PoolPolicy
from pyvmalloc.vmap.space import VmapSpace

__all__ = ["ListDecision", "ListVmapSpace", "ListWalk", "first_fit"]

_BUSY = VaState.BUSY
_LAZY = VaState.LAZY
_DETACHED = VaState.DETACHED


@dataclass
class ListDecision(Decision):
    """Why the 4.19 walk chose an address (recorded only when ``explain`` is on)."""

    cache_hit: bool = False
    start_addr: int = 0
    steps: int = 0
    hole: tuple[int, int] = (0, 0)

    def __str__(self) -> str:
        if self.source == "fail":
            return f"failed: errno {-self.error}"
        where = "free_vmap_cache" if self.cache_hit else "descent (no cache)"
        return (
            f"list walk from {where} at {self.start_addr:#x}: {self.steps} areas examined, "
            f"first fit in gap {self.hole[0]:#x}-{self.hole[1]:#x}"
        )


def first_fit(
    areas: list[tuple[int, int]], size: int, align: int, vstart: int, vend: int, umax: int
) -> int | None:
    """Brute-force first fit over the gaps between ascending ``areas``.

    The lowest ``ALIGN(x, align) >= vstart`` whose ``[addr, addr + size)`` touches no
    area and ends by ``vend`` (and does not wrap past ``umax``), or None.
    """
    mask = ~(align - 1) & umax
    lo = 0
    for start, end in [*areas, (umax + 1, umax + 1)]:
        addr = ((lo if lo > vstart else vstart) + align - 1) & mask
        if addr + size > umax or addr + size > vend:
            return None  # every later candidate is higher still
        if addr + size <= start:
            return addr
        if end > lo:
            lo = end
    return None


#: Everything ``ListWalk.search`` updates: a dry-run search saves and restores these.
_SEARCH_STATE = (
    "free_vmap_cache",
    "cached_hole_size",
    "cached_vstart",
    "cached_align",
    "walk_steps",
    "last_walk_steps",
    "cache_hits",
    "cache_misses",
    "_cache_hit",
    "_start_addr",
)


class ListVmapSpace(VmapSpace):
    """v4.19's vmap allocator: one busy tree, free space only between its areas."""

    tracks_free_space = False

    @property
    def nr_free(self) -> int:
        """Gaps of ``[1, ULONG_MAX)`` between the areas of the tree."""
        return self._nr_gaps

    @property
    def search_cost(self) -> int:
        """Busy-list nodes the walk examined, over all allocations."""
        return self.walk_steps

    def __init__(
        self,
        machine: Machine,
        profile: KernelProfile,
        log: KernelLog,
        *,
        placement: ListWalk,
        pools: PoolPolicy,
        clock: Callable[[], float] | None = None,
        schedule_work: Callable[[str, Callable[[], None]], object] | None = None,
        purge_fragmented: Callable[[int], object] | None = None,
    ) -> None:
        if pools.name != "none":
            raise ValueError(f"the 4.19 list walk has no vmap nodes for pools {pools!r}")
        self.placement_walk = placement
        #: Gaps of ``[1, ULONG_MAX)`` between the tree's areas.
        self._nr_gaps = 1
        #: ``free_vmap_cache``: a node of the busy tree, or None.
        self.free_vmap_cache: VmapArea | None = None
        self.cached_hole_size = 0
        self.cached_vstart = 0
        self.cached_align = 0
        #: ``vmap_area_pcpu_hole``: highest freed end inside the vmalloc range.
        self.vmap_area_pcpu_hole = 0
        #: Every area in the tree (busy, lazy, unlinked-pending).
        self.nr_tree = 0
        self.walk_steps = 0
        self.last_walk_steps = 0
        self.cache_hits = 0
        self.cache_misses = 0
        #: ``vmap_notify_list``: callbacks returning how many pages they freed.
        self.vmap_notify_list: list[Callable[[], int]] = []
        self._cache_hit = False
        self._start_addr = 0
        super().__init__(
            machine,
            profile,
            log,
            placement=placement,
            pools=pools,
            clock=clock,
            schedule_work=schedule_work,
            purge_fragmented=purge_fragmented,
        )
        self._root: RBRoot = self.nodes[0].busy
        self._check_rng = random.Random(0x419)

    # ------------------------------------------------------------------------------
    # Setup
    # ------------------------------------------------------------------------------
    def vmap_init_free_space(self, busy: list[tuple[int, int]] | None = None) -> None:
        """4.19 has no free tree: the space starts as one gap; ``busy`` become areas."""
        self._root = self.nodes[0].busy
        self._nr_gaps = 1 if self._root.rb_node is None else self._nr_gaps
        for start, end in busy or []:
            va = VmapArea(start, end)
            self.insert_vmap_area(va)

    # ------------------------------------------------------------------------------
    # Tree + list primitives (__insert_vmap_area, __free_vmap_area)
    # ------------------------------------------------------------------------------
    def _linked(self, va: VmapArea) -> bool:
        """``!RB_EMPTY_NODE``: is ``va`` in the busy tree?"""
        return va.rb_parent is not None or self._root.rb_node is va

    def _tree_insert(self, va: VmapArea) -> None:
        """``__insert_vmap_area``: link by address; count the gap it splits."""
        root = self._root
        node = root.rb_node
        va_start = va.va_start
        va_end = va.va_end
        parent = prev = nxt = None
        left = False
        while node is not None:
            parent = node
            if va_end <= node.va_start:
                left = True
                nxt = node
                node = node.rb_left
            elif va_start >= node.va_end:
                left = False
                prev = node
                node = node.rb_right
            else:
                self.free.complain_overlap(va, node)
                raise InvariantError(f"busy insert overlaps: {va!r} and {node!r}")
        rb_link_node(va, parent, left, root)
        rb_insert_color(va, root)
        self.nr_tree += 1
        lo = prev.va_end if prev is not None else 1
        hi = nxt.va_start if nxt is not None else self.ulong_max
        self._nr_gaps += (va_start > lo) + (hi > va_end) - (hi > lo)

    def _tree_erase(self, va: VmapArea) -> None:
        """``__free_vmap_area``: cache update, erase, gap accounting, pcpu hole."""
        prev = rb_prev(va)
        cache = self.free_vmap_cache
        if cache is not None:
            if va.va_end < self.cached_vstart:
                self.free_vmap_cache = None
            elif va.va_start <= cache.va_start:
                # cached_hole_size and cached_align deliberately stay as they are.
                self.free_vmap_cache = prev
        nxt = rb_next(va)
        rb_erase(va, self._root)
        va.rb_parent = va.rb_left = va.rb_right = None
        self.nr_tree -= 1
        lo = prev.va_end if prev is not None else 1
        hi = nxt.va_start if nxt is not None else self.ulong_max
        self._nr_gaps -= (va.va_start > lo) + (hi > va.va_end) - (hi > lo)
        if self.vmalloc_start < va.va_end <= self.vmalloc_end:
            self.vmap_area_pcpu_hole = max(self.vmap_area_pcpu_hole, va.va_end)

    def insert_vmap_area(self, va: VmapArea) -> None:
        """Insert ``va`` as a busy area (an area still in the tree is just re-marked)."""
        if self._linked(va) and self._find_in(self._root, va.va_start) is va:
            if va.state == _LAZY:
                raise InvariantError(f"{va!r} is lazily freed, cannot be made busy")
        else:
            self._tree_insert(va)
        if va.state != _BUSY:
            va.state = _BUSY
            self.nr_busy += 1

    def unlink_vmap_area(self, va: VmapArea, node_id: int = 0) -> None:
        """Take ``va`` out of the tree at once (``__free_vmap_area``)."""
        if va.state == _BUSY:
            self.nr_busy -= 1
        self._tree_erase(va)
        va.state = _DETACHED

    def alloc_vmap_area(
        self,
        size: int,
        align: int,
        vstart: int,
        vend: int,
        *,
        cpu: int = 0,
        gfp_nowarn: bool = False,
        va_flags: int = 0,
        vm: Any = None,
    ) -> VmapArea | int:
        """``alloc_vmap_area`` (4.19): walk, insert, cache; purge once on failure.

        Returns the busy area, ``-EINVAL`` after a ``BUG`` for bad arguments, or
        ``-EBUSY`` with the kernel's warning when the range is exhausted.
        """
        if size <= 0 or size & (PAGE_SIZE - 1) or align <= 0 or align & (align - 1):
            self.log.BUG(
                alloc_vmap_area_site(size, align, PAGE_SIZE),
                f"alloc_vmap_area: invalid size {size:#x} or align {align:#x}",
            )
            return -EINVAL
        self.last_pool_hit = False
        purged = False
        search = self.placement_walk.search
        while True:
            addr = search(self, size, align, vstart, vend)
            if addr >= 0:
                break
            # overflow:
            if not purged:
                self.stats.retries += 1
                self.reclaim_and_purge_vmap_areas(cpu)
                purged = True
                continue
            freed = 0
            for notifier in self.vmap_notify_list:
                freed += notifier()
            if freed > 0:
                purged = False
                continue
            self.stats.alloc_failures += 1
            if self.explain:
                self.last_decision = ListDecision("fail", error=EBUSY)
            if not gfp_nowarn:
                self.log.warn(
                    self.profile.alloc_fail_warning.format(size=size, vstart=vstart, vend=vend)
                )
            return -EBUSY
        if addr & (align - 1) or addr < vstart or addr + size > vend:
            # 4.19 has no "addr < vstart" check after the walk: an alignment that
            # wraps ALIGN() to 0 reaches BUG_ON(va->va_start < vstart) — the "kernel
            # BUG at mm/vmalloc.c" that test_vmalloc's align_shift test found in 2019.
            # The kernel stops there; the model logs it and refuses the call.
            # the three BUG_ONs after the walk, in the kernel's order
            if addr & (align - 1):
                site = "alloc_vmap_area:!IS_ALIGNED(va_start)"
            elif addr < vstart:
                site = "alloc_vmap_area:va_start<vstart"
            else:
                site = "alloc_vmap_area:va_end>vend"
            self.log.BUG(
                site,
                f"alloc_vmap_area: {addr:#x}+{size:#x} breaks align {align:#x} or range "
                f"{vstart:#x}-{vend:#x}",
            )
            return -EINVAL
        return self._insert_new(addr, size, va_flags, vm)

    def alloc_vmap_area_once(
        self,
        size: int,
        align: int,
        vstart: int,
        vend: int,
        cpu: int = 0,
        va_flags: int = 0,
        vm: Any = None,
    ) -> VmapArea | int:
        """One walk, no purge on failure (4.19 has no tracepoint to emit)."""
        self.last_pool_hit = False
        addr = self.placement_walk.search(self, size, align, vstart, vend)
        if addr < 0 or addr & (align - 1) or addr < vstart or addr + size > vend:
            return -EBUSY
        return self._insert_new(addr, size, va_flags, vm)

    def _insert_new(self, addr: int, size: int, va_flags: int, vm: Any) -> VmapArea:
        va = VmapArea(addr, addr + size)
        va.vm = vm
        va.flags = va_flags
        self._tree_insert(va)
        va.state = _BUSY
        self.nr_busy += 1
        self.free_vmap_cache = va
        self.stats.allocs += 1
        self.stats.tree_allocs += 1
        if self.explain:
            self.last_decision = self._explain(va, size)
        return va

    def _explain(self, va: VmapArea, size: int) -> ListDecision:
        prev = rb_prev(va)
        nxt = rb_next(va)
        hole = (
            prev.va_end if prev is not None else 1,
            nxt.va_start if nxt is not None else self.ulong_max,
        )
        return ListDecision(
            "list",
            search_length=size,
            block=hole,
            cache_hit=self._cache_hit,
            start_addr=self._start_addr,
            steps=self.last_walk_steps,
            hole=hole,
        )

    def first_fit_gap(self, size: int, align: int, vstart: int) -> VmapArea | None:
        """The first gap (as a synthetic free area) where a first fit would land."""
        addr = first_fit(
            [(v.va_start, v.va_end) for v in rb_inorder(self._root)],
            size,
            align,
            vstart,
            self.ulong_max,
            self.ulong_max,
        )
        if addr is None:
            return None
        for gap in self.free_areas():
            if gap.va_start <= addr < gap.va_end:
                return gap
        return None

    # ------------------------------------------------------------------------------
    # Lookups
    # ------------------------------------------------------------------------------
    def find_any_vmap_area(self, addr: int) -> VmapArea | None:
        """``__find_vmap_area``: any area of the tree containing ``addr`` (lazy too)."""
        return self._find_in(self._root, addr)

    def find_vmap_area(self, addr: int) -> VmapArea | None:
        """The busy (``VM_VM_AREA``) area containing ``addr``; lazy areas give None."""
        va = self._find_in(self._root, addr)
        return va if va is not None and va.state == _BUSY else None

    def find_unlink_vmap_area(self, addr: int) -> VmapArea | None:
        """``remove_vm_area``'s first half: mark the busy area at ``addr`` as leaving.

        4.19 does not unlink: the area stays in the tree (state ``DETACHED``, still
        occupying its range) until :meth:`free_vmap_area_noflush` queues it or
        :meth:`free_vmap_area` erases it. :meth:`insert_vmap_area` re-marks it busy.
        """
        va = self._find_in(self._root, addr)
        if va is None or va.state != _BUSY:
            return None
        va.state = _DETACHED
        self.nr_busy -= 1
        return va

    def busy_areas(self) -> Iterator[VmapArea]:
        """Busy areas in address order (``vmap_area_list`` without the lazy ones)."""
        for va in rb_inorder(self._root):
            if va.state == _BUSY:
                yield va

    def tree_areas(self) -> Iterator[VmapArea]:
        """Every area of ``vmap_area_list`` in address order: busy, lazy, unlinking."""
        return rb_inorder(self._root)

    def free_areas(self) -> Iterator[VmapArea]:
        """The gaps of ``[1, ULONG_MAX)`` between areas, as synthetic ``FREE`` areas."""
        lo = 1
        for va in rb_inorder(self._root):
            if va.va_start > lo:
                gap = VmapArea(lo, va.va_start)
                gap.state = VaState.FREE
                yield gap
            if va.va_end > lo:
                lo = va.va_end
        if self.ulong_max > lo:
            gap = VmapArea(lo, self.ulong_max)
            gap.state = VaState.FREE
            yield gap

    # ------------------------------------------------------------------------------
    # Freeing
    # ------------------------------------------------------------------------------
    def free_vmap_area(self, va: VmapArea) -> None:
        """``free_vmap_area``: ``__free_vmap_area`` at once (error paths, never lazy).

        An area not in the tree is ``BUG_ON(RB_EMPTY_NODE(&va->rb_node))``; a lazily
        freed one (still in 4.19's tree) is not checked by the kernel, which would
        free it twice: the model's own refusal."""
        if not self._linked(va):
            self.log.BUG(
                "__free_vmap_area:RB_EMPTY_NODE", f"free_vmap_area: {va!r} is not in the tree"
            )
            return
        if va.state == _LAZY:
            self.log.refuse(f"free_vmap_area: {va!r} is already lazily freed")
            return
        self.unlink_vmap_area(va)
        va.vm = None
        self.stats.direct_frees += 1

    def free_vmap_area_noflush(self, va: VmapArea, *, cpu: int = 0) -> None:
        """``free_vmap_area_noflush``: queue ``va`` for the purge; it keeps its range.

        Accepts a busy area or one marked by :meth:`find_unlink_vmap_area`. When
        ``vmap_lazy_nr`` passes ``lazy_max_pages()`` the purge runs right here.
        """
        state = va.state
        if (state != _BUSY and state != _DETACHED) or not self._linked(va):
            # 4.19's free_vmap_area_noflush checks nothing (it would queue the area
            # twice): the model's own refusal
            self.log.refuse(f"free_vmap_area_noflush: {va!r} is not an allocated area")
            return
        if state == _BUSY:
            self.nr_busy -= 1
        va.state = _LAZY
        va.vm = None
        nr_lazy = self.vmap_lazy_nr + ((va.va_end - va.va_start) >> PAGE_SHIFT)
        self.vmap_lazy_nr = nr_lazy
        self.lazy.append(va)
        self.stats.lazy_frees += 1
        if nr_lazy > self.lazy_max_pages:
            self._purge()  # try_purge_vmap_area_lazy()

    # ------------------------------------------------------------------------------
    # Purging
    # ------------------------------------------------------------------------------
    def _purge(self, limit: int | None = None) -> bool:
        return self.finish_purge(self.begin_purge(self.ulong_max, 0, limit=limit))

    def drain_vmap_area_work(self) -> None:
        """No worker in 4.19; kept for API parity: a plain purge."""
        self._purge()

    def purge_vmap_area_lazy(
        self, *, limit: int | None = None, full_pool_decay: bool = False
    ) -> bool:
        """``__purge_vmap_area_lazy(ULONG_MAX, 0)``; ``limit`` takes the oldest only."""
        return self._purge(limit)

    def reclaim_and_purge_vmap_areas(self, cpu: int = 0) -> bool:
        """``purge_vmap_area_lazy()``: fragmented vmap blocks first, then the purge."""
        if self._purge_fragmented is not None:
            self._purge_fragmented(cpu)
        return self._purge()

    def begin_purge(
        self,
        start: int | None = None,
        end: int = 0,
        *,
        full_pool_decay: bool = False,
        limit: int | None = None,
    ) -> PendingPurge:
        """``llist_del_all(&vmap_purge_list)``: take the lazy areas (oldest ``limit``)."""
        self.stats.purges += 1
        if start is None:
            start = self.ulong_max
        lazy = self.lazy
        if limit is None or limit >= len(lazy):
            batch = list(lazy)
            lazy.clear()
        else:
            batch = [lazy.popleft() for _ in range(limit)]
        return PendingPurge(start, end, full_pool_decay, batch)

    def finish_purge(self, pending: PendingPurge) -> bool:
        """Flush range, then ``__free_vmap_area`` each area, newest first."""
        batch = pending.batch
        if not batch:
            return False
        start, end = pending.start, pending.end
        for va in batch:
            if va.va_start < start:
                start = va.va_start
            if va.va_end > end:
                end = va.va_end
        self.last_flush = (start, end)
        erase = self._tree_erase
        for va in reversed(batch):
            erase(va)
            va.state = _DETACHED
            self.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
        self.stats.purged_areas += len(batch)
        return True

    def vmap_node_shrink_count(self) -> int:
        """No vmap-node pools before 6.9."""
        return 0

    def vmap_node_shrink_scan(self) -> int:
        return 0

    # ------------------------------------------------------------------------------
    # Where an address is
    # ------------------------------------------------------------------------------
    def tree_overlapping(self, start: int, end: int) -> list[VmapArea]:
        """Areas of the tree (busy, lazy or unlinking) that overlap ``[start, end)``."""
        return areas_overlapping(self._root, start, end)

    def locate(self, addr: int) -> str:
        """Where ``addr`` lives in the model, in words."""
        va = self._find_in(self._root, addr)
        if va is not None:
            what = {_BUSY: "busy", _LAZY: "lazy (unpurged)", _DETACHED: "being freed"}
            return f"{what.get(va.state, '?')} {va.va_start:#x}-{va.va_end:#x}"
        for gap in self.free_areas():
            if gap.va_start <= addr < gap.va_end:
                return f"free gap {gap.va_start:#x}-{gap.va_end:#x}"
        return "nowhere"

    # ------------------------------------------------------------------------------
    # Invariants
    # ------------------------------------------------------------------------------
    def check(self, *, lowest_match_samples: int = 4) -> None:
        """Verify the 4.19 allocator's invariants; raise :class:`InvariantError`.

        * the busy tree is a valid red-black tree ordered by address, its areas are
          non-empty, page aligned and do not overlap; counters (``nr_tree``,
          ``nr_busy``, ``nr_free`` = gaps of ``[1, ULONG_MAX)``) match;
        * every lazy area is in the tree, marked lazy, once; ``vmap_lazy_nr`` equals
          their pages; there is no free tree and there are no pools;
        * ``free_vmap_cache`` is None or a node of the tree;
        * first-fit self-check on random requests: with the cache empty the search
          equals a brute-force first fit over the gaps; with the current cache, when
          the request would use it, it equals the first fit from
          ``ALIGN(cache.va_end, align)``. What cannot be asserted: that the result
          is the lowest fit overall when the cache is used (the cache skips holes
          below it by design), nor anything about ``cached_hole_size`` except that
          it is a size (the kernel itself says it may be stale after frees).
        """
        root = self._root
        try:
            n = validate_rbtree(root, va_start_key, name=repr)
        except RBTreeError as e:
            raise InvariantError(f"busy tree: {e}") from None
        if n != self.nr_tree:
            raise InvariantError(f"busy tree has {n} nodes, nr_tree says {self.nr_tree}")
        if self.free_root.rb_node is not None:
            raise InvariantError("4.19 has no free tree, but it is not empty")
        if self.vmap_node_shrink_count() or any(vn.pools for vn in self.nodes):
            raise InvariantError("4.19 has no pools")
        areas: list[tuple[int, int]] = []
        nbusy = nlazy = gaps = 0
        lo = 1
        prev: VmapArea | None = None
        for va in rb_inorder(root):
            if va.state not in (_BUSY, _LAZY, _DETACHED):
                raise InvariantError(f"{va!r} is in the busy tree in a wrong state")
            if va.va_start >= va.va_end:
                raise InvariantError(f"empty area {va!r}")
            if va.va_start & (PAGE_SIZE - 1) or va.va_end & (PAGE_SIZE - 1):
                raise InvariantError(f"{va!r} is not page aligned")
            if prev is not None and prev.va_end > va.va_start:
                raise InvariantError(f"{prev!r} overlaps {va!r}")
            nbusy += va.state == _BUSY
            nlazy += va.state == _LAZY
            gaps += va.va_start > lo
            lo = max(lo, va.va_end)
            areas.append((va.va_start, va.va_end))
            prev = va
        gaps += self.ulong_max > lo
        if nbusy != self.nr_busy:
            raise InvariantError(f"{nbusy} busy areas in the tree, nr_busy says {self.nr_busy}")
        if gaps != self.nr_free:
            raise InvariantError(f"{gaps} gaps, nr_free says {self.nr_free}")
        if nlazy != len(self.lazy):
            raise InvariantError(f"{nlazy} lazy areas in the tree, {len(self.lazy)} queued")
        pages = 0
        for va in self.lazy:
            if va.state != _LAZY or self._find_in(root, va.va_start) is not va:
                raise InvariantError(f"queued lazy area {va!r} is not a lazy tree node")
            pages += (va.va_end - va.va_start) >> PAGE_SHIFT
        if pages != self.vmap_lazy_nr:
            raise InvariantError(f"vmap_lazy_nr is {self.vmap_lazy_nr}, lazy areas hold {pages}")
        cache = self.free_vmap_cache
        if cache is not None and self._find_in(root, cache.va_start) is not cache:
            raise InvariantError(f"free_vmap_cache {cache!r} is not in the busy tree")
        if self.cached_hole_size < 0 or self.cached_align & (self.cached_align - 1):
            raise InvariantError("cached_hole_size/cached_align out of range")
        self.placement_walk.check_first_fit(self, areas, lowest_match_samples)


class ListWalk:
    """4.19's placement: first fit by walking the busy list from ``free_vmap_cache``.

    It runs on :class:`ListVmapSpace` (the 4.19 mechanism, which keeps no free tree);
    the cache globals it reads and updates live there, as in the kernel. See the
    module docstring for the rules.
    """

    name: ClassVar[str] = "list-walk"
    #: The mechanism this policy needs: 4.19's busy list, not the free tree.
    mechanism: ClassVar[str] = "busy-list"

    def __repr__(self) -> str:
        return "ListWalk()"

    def __eq__(self, other: object) -> bool:
        return type(other) is ListWalk

    def __hash__(self) -> int:
        return hash(ListWalk)

    def find(self, tree: Any, size: int, align: int, vstart: int, vend: int) -> None:
        """The free-tree entry point of the protocol: 4.19 has no free tree."""
        raise InvariantError("ListWalk runs on the 4.19 busy list (ListVmapSpace), not a free tree")

    def check(self, tree: Any, *, samples: int, rng: random.Random, vstart: int) -> None:
        """See :meth:`check_first_fit` (run by :meth:`ListVmapSpace.check`)."""

    def search(self, space: ListVmapSpace, size: int, align: int, vstart: int, vend: int) -> int:
        """The search part of ``alloc_vmap_area``: an address, or -1 for "overflow".

        Updates the cache globals exactly like the kernel (the caller inserts the
        new area and points ``free_vmap_cache`` at it).
        """
        umax = space.ulong_max
        am1 = align - 1
        mask = umax & ~am1
        cache = space.free_vmap_cache
        if cache is not None and (
            size < space.cached_hole_size
            or vstart < space.cached_vstart
            or align < space.cached_align
        ):
            cache = None
        space.cached_vstart = vstart
        space.cached_align = align
        first: Any = None
        if cache is not None:
            addr = (cache.va_end + am1) & mask
            if addr < vstart:
                cache = None  # goto nocache
            else:
                first = cache
                chs = space.cached_hole_size
                space._cache_hit = True
                space.cache_hits += 1
                space._start_addr = addr
                if addr + size > umax:
                    space.last_walk_steps = 0
                    return -1
        if cache is None:
            space.free_vmap_cache = None
            chs = space.cached_hole_size = 0
            space._cache_hit = False
            space.cache_misses += 1
            addr = (vstart + am1) & mask
            space._start_addr = addr
            if addr + size > umax:
                space.last_walk_steps = 0
                return -1
            n = space._root.rb_node
            while n is not None:
                if n.va_end >= addr:
                    first = n
                    if n.va_start <= addr:
                        break
                    n = n.rb_left
                else:
                    n = n.rb_right
        steps = 0
        if first is not None:
            # The list walk, rb_next inlined: keep this loop free of calls.
            lim = umax - size  # addr + size wraps iff addr > lim
            while True:
                fs = first.va_start
                end = addr + size
                if end <= fs or end > vend:
                    break
                steps += 1
                if ((addr + chs) & umax) < fs:
                    chs = fs - addr
                addr = (first.va_end + am1) & mask
                if addr > lim:
                    space.cached_hole_size = chs
                    space.last_walk_steps = steps
                    space.walk_steps += steps
                    return -1
                n = first.rb_right
                if n is not None:
                    c = n.rb_left
                    while c is not None:
                        n = c
                        c = n.rb_left
                    first = n
                else:
                    n = first.rb_parent
                    while n is not None and first is n.rb_right:
                        first = n
                        n = n.rb_parent
                    if n is None:
                        break  # list_is_last: found
                    first = n
            space.cached_hole_size = chs
        space.last_walk_steps = steps
        space.walk_steps += steps
        if addr + size > vend:
            return -1
        return addr

    def _dry_search(
        self,
        space: ListVmapSpace,
        size: int,
        align: int,
        vstart: int,
        vend: int,
        *,
        empty_cache: bool,
    ) -> int:
        """Run :meth:`search` and put every cache global and counter back."""
        saved = [getattr(space, name) for name in _SEARCH_STATE]
        if empty_cache:
            space.free_vmap_cache = None
            space.cached_hole_size = 0
        try:
            return self.search(space, size, align, vstart, vend)
        finally:
            for name, value in zip(_SEARCH_STATE, saved, strict=True):
                setattr(space, name, value)

    def check_first_fit(
        self, space: ListVmapSpace, areas: list[tuple[int, int]], samples: int
    ) -> None:
        rng = space._check_rng
        umax = space.ulong_max
        vs, ve = space.vmalloc_start, space.vmalloc_end
        for _ in range(samples):
            size = rng.randint(1, 64) << PAGE_SHIFT
            align = 1 << rng.choice((0, 12, 12, 13, 14, 16, 22))
            vstart = vs if rng.random() < 0.5 else vs + (rng.randint(0, 1 << 12) << PAGE_SHIFT)
            vend = ve if rng.random() < 0.7 else vstart + (rng.randint(1, 1 << 12) << PAGE_SHIFT)
            got = self._dry_search(space, size, align, vstart, vend, empty_cache=True)
            want = first_fit(areas, size, align, vstart, vend, umax)
            if (None if got < 0 else got) != want:
                raise InvariantError(
                    f"no-cache search gave {got:#x}, first fit is {want!r} "
                    f"(size {size:#x}, align {align:#x}, range {vstart:#x}-{vend:#x})"
                )
            cache = space.free_vmap_cache
            if cache is None:
                continue
            if (
                size < space.cached_hole_size
                or vstart < space.cached_vstart
                or align < space.cached_align
            ):
                continue
            from_addr = (cache.va_end + align - 1) & ~(align - 1) & umax
            if from_addr < vstart:
                continue
            got = self._dry_search(space, size, align, vstart, vend, empty_cache=False)
            want = first_fit(areas, size, align, from_addr, vend, umax)
            if (None if got < 0 else got) != want:
                raise InvariantError(
                    f"cached search from {cache!r} gave {got:#x}, first fit above it is "
                    f"{want!r} (size {size:#x}, align {align:#x})"
                )
