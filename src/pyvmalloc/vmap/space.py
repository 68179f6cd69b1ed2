"""The vmap area allocator's mechanism: kernel virtual address space for vmalloc,
vmap, ioremap and friends.

Invariant: the free tree, the busy trees, the lazily freed areas, the pooled areas and
the areas of a purge in progress tile the whole address space ``[1, ULONG_MAX)`` with
no overlap and no gap, and the free set is maximally coalesced (no two free blocks
touch). :meth:`VmapSpace.check` verifies it — under any placement or pool policy.

The layout mirrors ``mm/vmalloc.c`` (v5.4 and v6.18), one concern per module:

* :mod:`~pyvmalloc.vmap.area` — ``struct vmap_area``, ``struct vmap_node``;
* :mod:`~pyvmalloc.vmap.freetree` — ``free_vmap_area_root``, the augmented free tree;
* :mod:`~pyvmalloc.vmap.placement` — *which* free block an allocation takes (the
  kernel's lowest match; other policies plug in here);
* :mod:`~pyvmalloc.vmap.pools` — what 6.x's vmap nodes recycle without a search;
* :mod:`~pyvmalloc.vmap.purge` — lazy freeing's purge and the shrinker;
* :mod:`~pyvmalloc.vmap.pcpu` — ``pcpu_get_vm_areas``;
* this module — the rest: ``alloc_vmap_area``, the busy trees (one per vmap node in
  6.x, chosen by address: ``(va_start / 64 KiB) mod nr_vmap_nodes``), lookups, lazy
  freeing and the whole-allocator check.

An allocation (``alloc_vmap_area``): a full-range request from a CPU first asks the
pool policy for an area of its node (6.x ``node_alloc``); otherwise the placement
policy picks a block and an address, the mechanism checks the range and clips the
block (``va_clip``). The new area goes into the busy tree of its address's node.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.bugsites import alloc_vmap_area_site
from pyvmalloc.config import (
    EBUSY,
    EINVAL,
    ENOENT,
    ERANGE,
    PAGE_SHIFT,
    PAGE_SIZE,
    KernelProfile,
    Machine,
)
from pyvmalloc.errors import InvariantError
from pyvmalloc.printk import KernelLog
from pyvmalloc.rbtree import (
    RBRoot,
    RBTreeError,
    rb_erase,
    rb_inorder,
    rb_insert_color,
    rb_link_node,
    validate_rbtree,
)
from pyvmalloc.vmap.area import (
    Decision,
    PendingPurge,
    VaState,
    VmapArea,
    VmapNode,
    VmapStats,
    va_start_key,
)
from pyvmalloc.vmap.freetree import FreeTree
from pyvmalloc.vmap.placement import LowestMatch, PlacementPolicy
from pyvmalloc.vmap.pools import NodePools, NoPools, PoolPolicy
from pyvmalloc.vmap.purge import LazyPurge
from pyvmalloc.vmap.tracepoints import AllocVmapArea, FreeVmapAreaNoflush, TraceEvent

__all__ = ["VmapSpace"]

_c_busy_insert = _speedups.busy_insert if _speedups is not None else None
_c_busy_unlink = _speedups.busy_unlink if _speedups is not None else None
# Whole operations in one compiled call, for the kernel's own policies; each returns
# None, having changed nothing, for any call it does not mirror exactly (then the
# Python below, the reference, runs).
_c_alloc_once = _speedups.alloc_vmap_area_once if _speedups is not None else None
_c_free_noflush = _speedups.free_vmap_area_noflush if _speedups is not None else None
_c_find_unlink = _speedups.find_unlink_vmap_area if _speedups is not None else None


class VmapSpace(LazyPurge):
    """The vmap area allocator of one model kernel (free tree, nodes, lazy list).

    All addresses are ``unsigned long`` values as Python ints. Allocation returns a
    :class:`VmapArea` or a negative errno (:func:`~pyvmalloc.vmap.area.is_err`).

    Parameters
    ----------
    placement, pools:
        The policies (:mod:`~pyvmalloc.vmap.placement`, :mod:`~pyvmalloc.vmap.pools`).
    clock:
        Model time in seconds, stamped on tracepoint events.
    schedule_work:
        How the 6.x drain work is queued (``schedule_work(name, func)``); None runs
        the purge at once, as 5.4 does.
    purge_fragmented:
        Called with the allocating CPU before the allocation-failure purge: the
        vm_map_ram layer purges its fragmented vmap blocks of all CPUs there.
    """

    #: This mechanism keeps a record of free space (the free tree); 4.19's did not.
    tracks_free_space = True

    def __init__(
        self,
        machine: Machine,
        profile: KernelProfile,
        log: KernelLog,
        *,
        placement: PlacementPolicy,
        pools: PoolPolicy,
        clock: Callable[[], float] | None = None,
        schedule_work: Callable[[str, Callable[[], None]], object] | None = None,
        purge_fragmented: Callable[[int], object] | None = None,
    ) -> None:
        self.machine = machine
        self.profile = profile
        self.log = log
        self.placement = placement
        self.pools = pools
        self.ulong_max = machine.ulong_max
        self.vmalloc_start = machine.vmalloc_start
        self.vmalloc_end = machine.vmalloc_end
        self.nr_vmap_nodes = profile.nr_vmap_nodes(machine)
        self.vmap_zone_size = 16 * PAGE_SIZE if self.nr_vmap_nodes > 1 else 1
        self.nodes = [VmapNode(i) for i in range(self.nr_vmap_nodes)]
        self._vn_flags = [self.encode_vn_id(i) for i in range(self.nr_vmap_nodes)]
        self.nr_busy = 0
        self.stats = VmapStats()
        #: ``free_vmap_area_root`` and its helpers.
        self.free = FreeTree(machine.ulong_max, profile, log, self.stats)
        #: Lazily freed areas, oldest first (``vmap_purge_list``/per-node lazy trees).
        self.lazy: deque[VmapArea] = deque()
        #: Purges between their two phases (only a replay leaves one open).
        self.in_purge: list[PendingPurge] = []
        self.vmap_lazy_nr = 0
        self.lazy_max_pages = machine.lazy_max_pages()
        #: The last flushed range ``(start, end)`` (``flush_tlb_kernel_range``).
        self.last_flush: tuple[int, int] | None = None
        self.explain = False
        self.last_decision: Decision | None = None
        #: Did the last allocation come from a pool?
        self.last_pool_hit = False
        #: Subscribers per event name; empty lists cost one truth test on the hot path.
        self.tp_alloc: list[Callable[[TraceEvent], None]] = []
        self.tp_free: list[Callable[[TraceEvent], None]] = []
        self.tp_purge: list[Callable[[TraceEvent], None]] = []
        self._clock: Callable[[], float] = clock or (lambda: 0.0)
        self._schedule_work = schedule_work
        self._purge_fragmented = purge_fragmented
        self._find = placement.find
        self._check_rng = random.Random(0x5EED)
        # Values the hot paths read once per call, computed once here.
        self._multi_node = self.nr_vmap_nodes > 1
        self._errno_errors = profile.errno_errors
        self._err_min = self.ulong_max - 4095  # IS_ERR_VALUE: the top 4095 values
        self.vmap_init_free_space()
        #: What the compiled whole operations read and never change (see _speedups.c).
        self._c_consts = (
            self.free,
            self.free.root,
            self.stats,
            tuple(vn.busy for vn in self.nodes),
            tuple(vn.pools for vn in self.nodes),
            tuple(self.nodes),
            tuple(self._vn_flags),
            self.vmalloc_start,
            self.vmalloc_end,
            self.ulong_max,
            self.vmap_zone_size,
            bool(profile.errno_errors),
            bool(profile.adjust_search_size),
            bool(profile.rollback_shifts_vstart),
            bool(profile.merge_propagates_each_step),
            self.lazy_max_pages,
            vars(self.free),
            vars(self.stats),
        )

    def __repr__(self) -> str:
        return (
            f"<VmapSpace {self.profile.name} placement={self.placement!r} "
            f"pools={self.pools!r}: {self.nr_busy} busy, {self.nr_free} free blocks, "
            f"{len(self.lazy)} lazy ({self.vmap_lazy_nr} pages), "
            f"{sum(vn.pool_len() for vn in self.nodes)} pooled, "
            f"{self.nr_vmap_nodes} vmap nodes>"
        )

    # ------------------------------------------------------------------------------
    # Setup and the free tree
    # ------------------------------------------------------------------------------
    def vmap_init_free_space(self, busy: list[tuple[int, int]] | None = None) -> None:
        """``vmap_init_free_space``: free areas for every gap of ``[1, ULONG_MAX)``.

        ``busy`` are early areas (``vmlist``) already in place, ascending. On x86_64
        there are none, so the free tree starts as the single node ``[1, ULONG_MAX)``.
        """
        vmap_start = 1
        vmap_end = self.machine.ulong_max
        for start, end in busy or []:
            if start > vmap_start:
                self.free.insert_vmap_area_augment(VmapArea(vmap_start, start))
            vmap_start = end
        if vmap_end > vmap_start:
            self.free.insert_vmap_area_augment(VmapArea(vmap_start, vmap_end))

    @property
    def search_cost(self) -> int:
        """Free-space nodes the placement policy examined, over all allocations."""
        return self.stats.search_visits

    @property
    def free_root(self) -> RBRoot:
        """``free_vmap_area_root``."""
        return self.free.root

    @property
    def nr_free(self) -> int:
        """Free blocks in the whole address space."""
        return self.free.nr_free

    def free_areas(self) -> Iterator[VmapArea]:
        """Free blocks in address order (``free_vmap_area_list``). O(n)."""
        return iter(self.free)

    def merge_or_add_vmap_area(self, va: VmapArea) -> VmapArea | None:
        """``merge_or_add_vmap_area_augment``: give ``va`` back to the free tree."""
        return self.free.merge_or_add_vmap_area_augment(va)

    def va_clip(self, va: VmapArea, nva_start_addr: int, size: int) -> int:
        """``va_clip``: carve ``[nva_start_addr, +size)`` out of the free block ``va``."""
        return self.free.va_clip(va, nva_start_addr, size)

    def range_sizes(self, areas: Iterable[VmapArea]) -> list[int]:
        """Sizes of ``areas`` clipped to the vmalloc range (those outside are dropped).

        ``range_sizes(free_areas())`` is the free space a vmalloc can still use.
        """
        vs, ve = self.vmalloc_start, self.vmalloc_end
        return [
            min(va.va_end, ve) - max(va.va_start, vs)
            for va in areas
            if va.va_end > vs and va.va_start < ve
        ]

    # ------------------------------------------------------------------------------
    # Node helpers
    # ------------------------------------------------------------------------------
    def addr_to_node_id(self, addr: int) -> int:
        """``addr_to_node_id``: busy node of an address, ``(addr / 64 KiB) mod N``."""
        return (addr // self.vmap_zone_size) % self.nr_vmap_nodes

    def decode_vn_id(self, flags: int) -> int:
        """``decode_vn_id``: the allocating node recorded in ``va->flags``, or -1."""
        vn_id = (flags >> 8) - 1
        return vn_id if 0 <= vn_id < self.nr_vmap_nodes else -1

    @staticmethod
    def encode_vn_id(node_id: int) -> int:
        """``encode_vn_id``: ``(node + 1) << 8``, kept in ``va->flags``."""
        return (node_id + 1) << 8

    def lazy_node_of(self, va: VmapArea) -> int:
        """The node whose lazy list holds ``va``: its allocating node, else by address."""
        vn_id = self.decode_vn_id(va.flags)
        if vn_id >= 0:
            return vn_id
        return self.addr_to_node_id(va.va_start) if self.nr_vmap_nodes > 1 else 0

    # ------------------------------------------------------------------------------
    # alloc_vmap_area
    # ------------------------------------------------------------------------------
    def _error(self, errno: int, vend: int) -> int:
        """The error *address*: ``-errno`` as unsigned long (6.16+), else ``vend``."""
        return self.ulong_max + 1 - errno if self.profile.errno_errors else vend

    def _is_error_addr(self, addr: int, vend: int) -> bool:
        if self.profile.errno_errors:
            return addr > self.ulong_max - 4095  # IS_ERR_VALUE: the top 4095 values
        return addr == vend

    def _alloc_vmap_area(self, size: int, align: int, vstart: int, vend: int) -> int:
        """``__alloc_vmap_area``: let the placement policy choose, check, clip.

        Returns the address, or an error address (:meth:`_error`): ``-ENOENT`` when
        no block fits, ``-ERANGE`` when the chosen address ends past ``vend``.
        """
        found = self._find(self.free, size, align, vstart, vend)
        if found is None:
            return self._error(ENOENT, vend)
        va, nva = found
        if nva + size > vend:
            why = self.free.why
            if why is not None:
                why.block = (va.va_start, va.va_end)
            return self._error(ERANGE, vend)
        ret = self.free.va_clip(va, nva, size)
        if ret:
            # WARN_ON_ONCE: 6.x va_alloc() on va_clip's error, 5.4 __alloc_vmap_area()
            # on NOTHING_FIT before adjust_va_to_fit_type(); once per boot
            self.log.WARN_ONCE(
                "__alloc_vmap_area:NOTHING_FIT",
                f"NOTHING_FIT: {nva:#x}+{size:#x} is not inside {va.va_start:#x}-{va.va_end:#x}",
            )
            return self._error(-ret, vend)
        return nva

    def check_range(self, vstart: int, vend: int) -> None:
        """Refuse a range no kernel caller passes (a :class:`ValueError`).

        Every caller of ``alloc_vmap_area`` (``VMALLOC_START``/``END``, the modules
        range, BPF, KASAN, per-arch ranges) passes page-aligned bounds above the
        first page (the end may be unaligned: x86_64's ``VMALLOC_END`` is
        ``0xffffe8ffffffffff``, an inclusive bound). Below ``PAGE_SIZE`` the kernel's free space starts at address 1
        (``vmap_init_free_space``: ``vmap_start = 1``, v5.2+), so ``align=1`` would
        hand out a non-page-aligned area (4.19 would return 0, which its callers read
        as NULL and leak). An unaligned or sub-page start is therefore the caller's
        bug, refused before the model changes; a negative bound is an ``unsigned
        long`` (wrapped by the caller) and an empty or inverted range just fails
        the allocation, as the kernel's arithmetic does.
        """
        if vstart & (PAGE_SIZE - 1):
            raise ValueError(
                f"vstart {vstart:#x} is not page aligned (every kernel caller passes a "
                "page-aligned start)"
            )
        if vstart < PAGE_SIZE:
            raise ValueError(
                f"vstart {vstart:#x} is in the first page: the kernel's free space starts "
                "at address 1 there, so no kernel caller passes it"
            )

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
        """``alloc_vmap_area``: allocate ``size`` bytes of address space.

        ``size`` already includes any guard page. Returns the busy area, or a negative
        errno: ``-EINVAL`` for bad arguments (a ``BUG`` in 5.4), ``-EBUSY`` when the
        range is exhausted even after the reclaim purge (with the kernel's warning).
        O(log n) with the kernel's policies.
        """
        if _c_alloc_once is not None:  # the usual case in one compiled call (it declines
            # bad arguments, which the reference below refuses)
            fast = _c_alloc_once(self, size, align, vstart, vend, cpu, va_flags, vm)
            if fast is not None:
                return fast  # type: ignore[no-any-return]
        if size <= 0 or size & (PAGE_SIZE - 1) or align <= 0 or align & (align - 1):
            # v6.18: ``if (unlikely(!size || offset_in_page(size) ||
            # !is_power_of_2(align))) return ERR_PTR(-EINVAL);`` with no message;
            # v5.4 (and 4.19): three BUG_ONs.
            if not self.profile.errno_errors:
                self.log.BUG(
                    alloc_vmap_area_site(size, align, PAGE_SIZE),
                    f"alloc_vmap_area: invalid size {size:#x} or align {align:#x}",
                )
            return -EINVAL
        va = self.alloc_vmap_area_once(size, align, vstart, vend, cpu, va_flags, vm)
        if va.__class__ is not int:
            return va
        # overflow: purge once and retry; the vmap_notify_list frees nothing here.
        self.stats.retries += 1
        self.reclaim_and_purge_vmap_areas(cpu)
        va = self.alloc_vmap_area_once(size, align, vstart, vend, cpu, va_flags, vm)
        if va.__class__ is not int:
            return va
        self.stats.alloc_failures += 1
        if self.explain:
            self.last_decision = Decision("fail", error=EBUSY)
        if not gfp_nowarn:
            self.log.warn(
                self.profile.alloc_fail_warning.format(size=size, vstart=vstart, vend=vend)
            )
        return -EBUSY

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
        """One pass of ``alloc_vmap_area``'s retry loop, without the purge on failure.

        6.x ``node_alloc`` (the pool of the CPU's node, for full-range requests), else
        ``__alloc_vmap_area``; the ``alloc_vmap_area`` tracepoint; on success the
        area is linked into its busy tree. Returns the area or ``-EBUSY``. The
        arguments must already be valid (``alloc_vmap_area`` checks them).
        """
        if _c_alloc_once is not None:  # the usual case in one compiled call
            fast = _c_alloc_once(self, size, align, vstart, vend, cpu, va_flags, vm)
            if fast is not None:
                return fast  # type: ignore[no-any-return]
        vn_id = 0
        va: VmapArea | None = None
        why = None
        if self.explain:
            why = Decision("tree")
            self.free.why = why
        if self._multi_node and vstart == self.vmalloc_start and vend == self.vmalloc_end:
            node_id = cpu % self.nr_vmap_nodes
            vn_id = self._vn_flags[node_id]
            va = self.pools.node_alloc(self.nodes[node_id], size, align, vstart, vend, why)
        if va is not None:
            addr = va.va_start
            self.stats.pool_hits += 1
            self.last_pool_hit = True
        else:
            self.last_pool_hit = False
            addr = self._alloc_vmap_area(size, align, vstart, vend)
        if why is not None:
            self.free.why = None
            self.last_decision = why
        # _is_error_addr(addr, vend), inlined
        failed = addr > self._err_min if self._errno_errors else addr == vend
        if self.tp_alloc:
            event = AllocVmapArea(
                addr=addr,
                size=size,
                align=align,
                vstart=vstart,
                vend=vend,
                failed=int(failed),
                cpu=cpu,
                timestamp=self._clock(),
            )
            for fn in self.tp_alloc:
                fn(event)
        if failed:
            return -EBUSY
        if va is None:
            va = VmapArea(addr, addr + size)
        va.vm = vm
        # One shared int object per node keeps a busy area ~32 bytes smaller.
        va.flags = va_flags | vn_id if va_flags else vn_id
        self.insert_vmap_area(va)
        self.stats.allocs += 1
        return va

    # ------------------------------------------------------------------------------
    # Busy trees
    # ------------------------------------------------------------------------------
    def insert_vmap_area(self, va: VmapArea) -> None:
        """``insert_vmap_area`` into the busy tree of ``addr_to_node(va_start)``."""
        # addr_to_node_id(va_start), inlined
        n = self.nr_vmap_nodes
        root = self.nodes[(va.va_start // self.vmap_zone_size) % n if n > 1 else 0].busy
        if _c_busy_insert is not None:
            try:
                other = _c_busy_insert(root, va)
            except OverflowError:  # a value past 64 bits: the reference below
                pass
            else:
                if other is not None:
                    self.free.complain_overlap(va, other)
                    raise InvariantError(f"busy insert overlaps: {va!r} and {other!r}")
                va.state = VaState.BUSY
                self.nr_busy += 1
                return
        node = root.rb_node
        va_start = va.va_start
        va_end = va.va_end
        parent = None
        left = False
        while node is not None:
            parent = node
            if va_end <= node.va_start:
                left = True
                node = node.rb_left
            elif va_start >= node.va_end:
                left = False
                node = node.rb_right
            else:
                self.free.complain_overlap(va, node)
                raise InvariantError(f"busy insert overlaps: {va!r} and {node!r}")
        rb_link_node(va, parent, left, root)
        rb_insert_color(va, root)
        va.state = VaState.BUSY
        self.nr_busy += 1

    def unlink_vmap_area(self, va: VmapArea, node_id: int) -> None:
        """``unlink_va``: take a busy area out of node ``node_id``'s busy tree."""
        rb_erase(va, self.nodes[node_id].busy)
        va.rb_parent = va.rb_left = va.rb_right = None
        va.state = VaState.DETACHED
        self.nr_busy -= 1

    def _node_search(self, addr: int) -> Iterator[int]:
        n = self.nr_vmap_nodes
        i = j = self.addr_to_node_id(addr) if n > 1 else 0
        step = self.profile.node_lookup_step % n if n > 1 else 0
        while True:
            yield i
            if n == 1:
                return
            i = (i + step) % n
            if i == j:
                return

    def _find_in(self, root: RBRoot, addr: int) -> VmapArea | None:
        node = root.rb_node
        while node is not None:
            if addr < node.va_start:
                node = node.rb_left
            elif addr >= node.va_end:
                node = node.rb_right
            else:
                return node  # type: ignore[no-any-return]
        return None

    if _speedups is not None:
        _find_in = staticmethod(_speedups.busy_find)  # type: ignore[assignment,unused-ignore]

    def find_vmap_area(self, addr: int) -> VmapArea | None:
        """``find_vmap_area``: the busy area containing ``addr``. O(N log n) worst case.

        6.x looks in the address's node first, then the others (stepping -1 since
        v6.16, +1 before).
        """
        for i in self._node_search(addr):
            va = self._find_in(self.nodes[i].busy, addr)
            if va is not None:
                return va
        return None

    def find_unlink_vmap_area(self, addr: int) -> VmapArea | None:
        """``find_unlink_vmap_area``: find the busy area at ``addr`` and unlink it."""
        if _c_find_unlink is not None:  # the usual case in one compiled call
            found = _c_find_unlink(self, addr)
            if found is not None:
                return found  # type: ignore[no-any-return]
        # The usual case first: the area is in its address's node (the search's start).
        n = self.nr_vmap_nodes
        root = self.nodes[(addr // self.vmap_zone_size) % n if n > 1 else 0].busy
        if _c_busy_unlink is not None:
            try:
                va = _c_busy_unlink(root, addr)  # find + rb_erase + clear the links
            except OverflowError:  # a value past 64 bits: the reference below
                pass
            else:
                if va is not None:
                    va.state = VaState.DETACHED
                    self.nr_busy -= 1
                    return va  # type: ignore[no-any-return]
                return self._find_unlink_elsewhere(addr)
        va = self._find_in(root, addr)
        if va is not None:
            # unlink_vmap_area(va, i), inlined
            rb_erase(va, root)
            va.rb_parent = va.rb_left = va.rb_right = None
            va.state = VaState.DETACHED
            self.nr_busy -= 1
            return va
        return self._find_unlink_elsewhere(addr)

    def _find_unlink_elsewhere(self, addr: int) -> VmapArea | None:
        """The rest of find_unlink_vmap_area's node search (the address's node missed)."""
        for i in self._node_search(addr):
            va = self._find_in(self.nodes[i].busy, addr)
            if va is not None:
                self.unlink_vmap_area(va, i)
                return va
        return None

    def busy_node_of(self, va: VmapArea) -> int:
        """The node whose busy tree holds ``va``."""
        for i in self._node_search(va.va_start):
            if self._find_in(self.nodes[i].busy, va.va_start) is va:
                return i
        raise InvariantError(f"{va!r} is not in any busy tree")

    def busy_areas(self) -> Iterator[VmapArea]:
        """Busy areas in the kernel's /proc/vmallocinfo order (per node, ascending)."""
        for vn in self.nodes:
            yield from rb_inorder(vn.busy)

    def pooled_areas(self) -> Iterator[tuple[int, int, VmapArea]]:
        """``(node, class, area)`` for every pooled area, each pool head first."""
        for vn in self.nodes:
            for idx, pool in vn.pools.items():
                for va in pool:
                    yield vn.id, idx, va

    # ------------------------------------------------------------------------------
    # Freeing
    # ------------------------------------------------------------------------------
    def free_vmap_area(self, va: VmapArea) -> None:
        """``free_vmap_area``: unlink from its busy tree, merge into the free tree now.

        A freed area freed again while its range is one free block gets the free
        tree's overlap WARN, as in the kernel. A lazily freed or pooled one, or one
        whose range was handed out again since (a use after free in the kernel), would
        be merged twice: the model's own refusal."""
        state = va.state
        if state == VaState.LAZY or state == VaState.POOL:
            self.log.refuse(f"free_vmap_area: {va!r} is already freed")
            return
        if state == VaState.DETACHED:
            block = self.free.pvm_find_va_enclose_addr(va.va_start)
            if block is None or block.va_end < va.va_end:
                self.log.refuse(f"free_vmap_area: {va!r} was freed and its range reused since")
                return
        if state == VaState.BUSY:
            self.unlink_vmap_area(va, self.busy_node_of(va))
        va.vm = None
        self.stats.direct_frees += 1
        self.free.merge_or_add_vmap_area_augment(va)

    def free_vmap_area_noflush(self, va: VmapArea, *, cpu: int = 0) -> None:
        """``free_vmap_area_noflush``: lazily free an unlinked area.

        Adds its pages (guard included) to ``vmap_lazy_nr`` and queues it; when the
        total passes ``lazy_max_pages()`` a purge runs — synchronously in 5.4, from a
        work item in 6.x.
        """
        if _c_free_noflush is not None:  # the usual case in one compiled call
            past = _c_free_noflush(self, va)
            if past is not None:
                if past:
                    self._lazy_threshold_passed()
                return
        if va.state != VaState.DETACHED:
            self.log.WARN(f"free_vmap_area_noflush: {va!r} is still linked")
            return
        nr_lazy = self.vmap_lazy_nr + ((va.va_end - va.va_start) >> PAGE_SHIFT)
        self.vmap_lazy_nr = nr_lazy
        va.state = VaState.LAZY
        va.vm = None
        self.lazy.append(va)
        self.stats.lazy_frees += 1
        if self.tp_free:
            event = FreeVmapAreaNoflush(
                va_start=va.va_start,
                nr_lazy=nr_lazy,
                nr_lazy_max=self.lazy_max_pages,
                cpu=cpu,
                timestamp=self._clock(),
            )
            for fn in self.tp_free:
                fn(event)
        if nr_lazy > self.lazy_max_pages:
            self._lazy_threshold_passed()

    def _lazy_threshold_passed(self) -> None:
        """``vmap_lazy_nr`` passed ``lazy_max_pages()``: start the purge."""
        if self.profile.deferred_purge and self._schedule_work is not None:
            self._schedule_work("drain_vmap_work", self.drain_vmap_area_work)
        else:
            # 5.4 try_purge_vmap_area_lazy(): trylock succeeds in a 1-thread model.
            self._purge_vmap_area_lazy(self.ulong_max, 0)

    # ------------------------------------------------------------------------------
    # Where an address is
    # ------------------------------------------------------------------------------
    def locate(self, addr: int) -> str:
        """Where ``addr`` lives in the model, in words (for diagnostics)."""
        for va in self.free.overlapping(addr, addr + 1):
            return f"free block {va.va_start:#x}-{va.va_end:#x}"
        for vn in self.nodes:
            busy = self._find_in(vn.busy, addr)
            if busy is not None:
                return f"busy {busy.va_start:#x}-{busy.va_end:#x} (node {vn.id})"
        for va in self.lazy:
            if va.va_start <= addr < va.va_end:
                return f"lazy {va.va_start:#x}-{va.va_end:#x} (node {self.lazy_node_of(va)})"
        for pending in self.in_purge:
            for va in pending.batch:
                if va.va_start <= addr < va.va_end:
                    return f"being purged {va.va_start:#x}-{va.va_end:#x}"
        for node_id, idx, va in self.pooled_areas():
            if va.va_start <= addr < va.va_end:
                pos = list(self.nodes[node_id].pools[idx]).index(va)
                return f"pool node {node_id} class {idx} position {pos} ({va.va_start:#x})"
        return "nowhere"

    # ------------------------------------------------------------------------------
    # Invariants
    # ------------------------------------------------------------------------------
    def check(self, *, lowest_match_samples: int = 4) -> None:
        """Verify every invariant of the allocator; raise :class:`InvariantError`.

        * the free tree is a valid red-black tree, ordered, with exact
          ``subtree_max_size`` values, maximally coalesced; each busy tree is valid
          and in its node;
        * free + busy + lazy + pooled + purging areas tile ``[1, ULONG_MAX)`` with no
          overlap and no gap, page aligned;
        * ``vmap_lazy_nr`` equals the pages of the lazy areas;
        * the pool policy's and the placement policy's own checks (for the kernel's
          lowest match: ``lowest_match_samples`` random requests for which the tree
          search must equal a linear scan).
        """
        pieces: list[tuple[int, int, str, VmapArea]] = [
            (va.va_start, va.va_end, "free", va) for va in self.free.check()
        ]
        nbusy = 0
        for vn in self.nodes:
            try:
                nbusy += validate_rbtree(vn.busy, va_start_key, name=repr)
            except RBTreeError as e:
                raise InvariantError(f"busy tree of node {vn.id}: {e}") from None
            for va in rb_inorder(vn.busy):
                if va.state != VaState.BUSY:
                    raise InvariantError(f"{va!r} is in a busy tree but marked otherwise")
                if self.nr_vmap_nodes > 1 and self.addr_to_node_id(va.va_start) != vn.id:
                    raise InvariantError(f"{va!r} is in busy node {vn.id}, not its address node")
                pieces.append((va.va_start, va.va_end, "busy", va))
        if nbusy != self.nr_busy:
            raise InvariantError(f"busy trees hold {nbusy} areas, counter says {self.nr_busy}")
        lazy_pages = 0
        for pending in self.in_purge:
            for va in pending.batch:
                lazy_pages += va.size >> PAGE_SHIFT
                pieces.append((va.va_start, va.va_end, "purging", va))
        for va in self.lazy:
            if va.state != VaState.LAZY:
                raise InvariantError(f"{va!r} is on the lazy list but marked otherwise")
            lazy_pages += va.size >> PAGE_SHIFT
            pieces.append((va.va_start, va.va_end, "lazy", va))
        if lazy_pages != self.vmap_lazy_nr:
            raise InvariantError(
                f"vmap_lazy_nr is {self.vmap_lazy_nr}, lazy areas hold {lazy_pages} pages"
            )
        for vn in self.nodes:
            self.pools.check(vn)
        for node_id, idx, va in self.pooled_areas():
            if va.state != VaState.POOL:
                raise InvariantError(f"{va!r} is in pool {node_id}/{idx} but marked otherwise")
            pieces.append((va.va_start, va.va_end, "pool", va))
        pieces.sort(key=lambda p: p[0])
        pos = 1
        for start, end, kind, va in pieces:
            if start != pos:
                what = "overlaps" if start < pos else "leaves a gap before"
                raise InvariantError(f"{kind} {va!r} {what} {pos:#x}")
            if start & (PAGE_SIZE - 1) and start != 1:
                raise InvariantError(f"{kind} {va!r} is not page aligned")
            pos = end
        if pos != self.machine.ulong_max:
            raise InvariantError(f"address space ends at {pos:#x}, not ULONG_MAX")
        self.placement.check(
            self.free,
            samples=lowest_match_samples,
            rng=self._check_rng,
            vstart=self.vmalloc_start,
        )


if _speedups is not None:
    _speedups.init_space(
        VmapSpace,
        LowestMatch,
        NodePools,
        NoPools,
        deque,
        Decision,
        VaState.BUSY,
        VaState.LAZY,
        VaState.POOL,
    )
