"""The vmap area allocator: kernel virtual address space for vmalloc, vmap, ioremap.

Invariant: the free tree, the busy trees, the lazily freed areas and the pooled areas
tile the whole address space ``[1, ULONG_MAX)`` with no overlap, and the free set is
maximally coalesced (no two free areas touch). :meth:`VmapSpace.check` verifies it.

The layout mirrors ``mm/vmalloc.c`` (v5.4 and v6.18):

* ``struct vmap_area`` is :class:`VmapArea`; it embeds its rb-tree links, exactly like
  the kernel, and is in exactly one place at a time: the free tree, a busy tree, a
  lazy list or a pool (:attr:`VmapArea.state` says which).
* The **free tree** is an augmented red-black tree keyed by address whose augmented
  value ``subtree_max_size`` is the largest free block in the subtree. It is the
  kernel's own tree (see :mod:`pyvmalloc.rbtree`), so its shape — and therefore every
  placement that depends on shape — matches the kernel's.
* **Busy trees**: one in 5.4; one per vmap node in 6.x, chosen by address
  (``(va_start / 64 KiB) mod nr_vmap_nodes``).
* **Lazy freeing**: freed areas wait, unusable, until a purge returns them to the free
  tree (and, in 6.x, to the per-node pools first).
* **Pools** (6.x): per node, per exact size (1..256 pages), LIFO lists of recycled
  areas that serve full-range requests from CPUs of that node without a tree search.

The kernel's list heads (``free_vmap_area_list``, busy lists) are not stored: the
neighbours they give are found on the descent that finds an insertion point, which
costs nothing extra and saves two pointers per area.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from pyvmalloc.printk import KernelLog
from pyvmalloc.rbtree import (
    RBNode,
    RBRoot,
    RBTreeError,
    rb_erase,
    rb_erase_augmented,
    rb_inorder,
    rb_insert_augmented,
    rb_insert_color,
    rb_link_node,
    rb_next,
    rb_prev,
    validate_rbtree,
)
from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy

if TYPE_CHECKING:
    from pyvmalloc.trace.events import TraceEvent

__all__ = [
    "NUMA_NO_NODE",
    "VMAP_BLOCK",
    "VMAP_RAM",
    "FitType",
    "InvariantError",
    "VaState",
    "VmapArea",
    "VmapNode",
    "VmapSpace",
    "is_err",
]

NUMA_NO_NODE = -1
#: ``va->flags`` bits (6.x): area made by vm_map_ram; a vmap block (with VMAP_RAM).
VMAP_RAM = 0x1
VMAP_BLOCK = 0x2
VMAP_FLAGS_MASK = 0x3


class InvariantError(AssertionError):
    """A model invariant is broken; the message says which and where."""


def is_err(value: object) -> bool:
    """``IS_ERR``: true for the negative errno values the allocator returns."""
    return isinstance(value, int) and value < 0


class VaState:
    """Where a :class:`VmapArea` currently lives (the kernel knows it from context)."""

    FREE = 0  # in the free tree
    BUSY = 1  # in a busy tree
    LAZY = 2  # lazily freed, waiting for a purge
    POOL = 3  # in a per-node pool (6.x)
    DETACHED = 4  # in no structure (being freed, or merged away)

    NAMES = ("free", "busy", "lazy", "pool", "detached")


class FitType:
    """How an allocation sits inside the free block it was carved from."""

    NOTHING_FIT = 0
    FL_FIT_TYPE = 1  # the whole block
    LE_FIT_TYPE = 2  # left edge
    RE_FIT_TYPE = 3  # right edge
    NE_FIT_TYPE = 4  # no edge: the block is split in two

    NAMES = ("NOTHING_FIT", "FL_FIT_TYPE", "LE_FIT_TYPE", "RE_FIT_TYPE", "NE_FIT_TYPE")


class VmapArea(RBNode):
    """``struct vmap_area``: the half-open range ``[va_start, va_end)``.

    ``subtree_max_size`` is meaningful in the free tree, ``vm`` (the owning
    ``vm_struct``) when busy, ``flags`` holds 6.x's VMAP_RAM/VMAP_BLOCK bits and the
    encoded allocating node ``(node + 1) << 8``.
    """

    __slots__ = ("flags", "state", "subtree_max_size", "va_end", "va_start", "vm")

    def __init__(self, va_start: int = 0, va_end: int = 0) -> None:
        super().__init__()
        self.va_start = va_start
        self.va_end = va_end
        self.subtree_max_size = 0
        self.vm: Any = None
        self.flags = 0
        self.state = VaState.DETACHED

    @property
    def size(self) -> int:
        """``va_size(va)``."""
        return self.va_end - self.va_start

    def __repr__(self) -> str:
        return (
            f"<vmap_area {self.va_start:#x}-{self.va_end:#x} {self.size} "
            f"{VaState.NAMES[self.state]}>"
        )


def _compute_max(va: VmapArea) -> int:
    """``compute_subtree_max_size``: max of own size and the children's maxima."""
    m = va.va_end - va.va_start
    child = va.rb_left
    if child is not None and child.subtree_max_size > m:
        m = child.subtree_max_size
    child = va.rb_right
    if child is not None and child.subtree_max_size > m:
        m = child.subtree_max_size
    return int(m)


class _FreeAugment:
    """``free_vmap_area_rb_augment_cb`` (RB_DECLARE_CALLBACKS_MAX on subtree_max_size)."""

    @staticmethod
    def propagate(node: Any, stop: Any) -> None:
        while node is not stop:
            m = node.va_end - node.va_start
            child = node.rb_left
            if child is not None and child.subtree_max_size > m:
                m = child.subtree_max_size
            child = node.rb_right
            if child is not None and child.subtree_max_size > m:
                m = child.subtree_max_size
            if node.subtree_max_size == m:
                break
            node.subtree_max_size = m
            node = node.rb_parent

    @staticmethod
    def copy(old: Any, new: Any) -> None:
        new.subtree_max_size = old.subtree_max_size

    @staticmethod
    def rotate(old: Any, new: Any) -> None:
        new.subtree_max_size = old.subtree_max_size
        old.subtree_max_size = _compute_max(old)


_AUGMENT = _FreeAugment()
_propagate = _FreeAugment.propagate


@dataclass
class VmapNode:
    """``struct vmap_node`` (6.x; 5.4 has exactly one, implicit).

    ``busy`` is this node's busy tree. ``pools[i]`` holds recycled areas of exactly
    ``i + 1`` pages (guard included), head at the left. Lazily freed areas are kept in
    the space-wide :attr:`VmapSpace.lazy` FIFO, tagged with their node; the kernel's
    per-node lazy trees are that FIFO filtered by node and sorted by address.
    """

    id: int
    busy: RBRoot = field(default_factory=RBRoot)
    pools: dict[int, deque[VmapArea]] = field(default_factory=dict)
    nr_purged: int = 0

    def pool_len(self) -> int:
        return sum(len(p) for p in self.pools.values())


@dataclass
class PendingPurge:
    """A purge between its two phases (lazy areas detached, pools not refilled yet)."""

    start: int
    end: int
    full_pool_decay: bool
    batch: list[VmapArea]
    marked: list[tuple[VmapNode, list[VmapArea]]] = field(default_factory=list)
    #: Areas purged by the nodes already processed.
    nr_purged: int = 0


@dataclass
class Decision:
    """Why the allocator chose an address (recorded only when ``explain`` is on)."""

    source: str  # "pool" or "tree" or "fail"
    node: int = -1
    pool_index: int = -1
    rotated: bool = False
    block: tuple[int, int] = (0, 0)
    fit: int = FitType.NOTHING_FIT
    search_length: int = 0
    error: int = 0

    def __str__(self) -> str:
        if self.source == "pool":
            return f"pool hit: node {self.node} pool[{self.pool_index}] head (LIFO)"
        if self.source == "fail":
            return f"failed: errno {-self.error}"
        why = f"tree: lowest match for length {self.search_length:#x}"
        why += f" in free block {self.block[0]:#x}-{self.block[1]:#x} ({FitType.NAMES[self.fit]})"
        if self.rotated:
            why += f"; node {self.node} pool[{self.pool_index}] head misaligned, rotated"
        return why


@dataclass
class VmapStats:
    allocs: int = 0
    alloc_failures: int = 0
    pool_hits: int = 0
    tree_allocs: int = 0
    fits: list[int] = field(default_factory=lambda: [0] * 5)
    lazy_frees: int = 0
    direct_frees: int = 0
    purges: int = 0
    purged_areas: int = 0
    decayed_areas: int = 0
    retries: int = 0


class VmapSpace:
    """The vmap area allocator of one model kernel (free tree, nodes, lazy list).

    All addresses are ``unsigned long`` values as Python ints. Allocation returns a
    :class:`VmapArea` or a negative errno (:func:`is_err`); the kernel's error values
    as *addresses* (what ``__alloc_vmap_area`` returns, what the tracepoint prints) are
    ``profile.error(errno, vend)``.
    """

    def __init__(
        self,
        machine: Machine,
        profile: KernelProfile,
        log: KernelLog,
        *,
        clock: Callable[[], float] | None = None,
        schedule_work: Callable[[str, Callable[[], None]], object] | None = None,
        purge_hook: Callable[[], None] | None = None,
    ) -> None:
        self.machine = machine
        self.profile = profile
        self.log = log
        self.ulong_max = machine.ulong_max
        self.vmalloc_start = machine.vmalloc_start
        self.vmalloc_end = machine.vmalloc_end
        self.nr_vmap_nodes = profile.nr_vmap_nodes(machine)
        self.vmap_zone_size = 16 * PAGE_SIZE if self.nr_vmap_nodes > 1 else 1
        self.nodes = [VmapNode(i) for i in range(self.nr_vmap_nodes)]
        self._vn_flags = [self.encode_vn_id(i) for i in range(self.nr_vmap_nodes)]
        self.free_root = RBRoot()
        self.nr_free = 0
        self.nr_busy = 0
        #: Lazily freed areas, oldest first (``vmap_purge_list``/per-node lazy trees).
        self.lazy: deque[VmapArea] = deque()
        #: Purges between their two phases (only a replay leaves one open).
        self.in_purge: list[PendingPurge] = []
        self.vmap_lazy_nr = 0
        self.lazy_max_pages = machine.lazy_max_pages()
        self.stats = VmapStats()
        #: The last flushed range ``(start, end)`` (``flush_tlb_kernel_range``).
        self.last_flush: tuple[int, int] | None = None
        self.explain = False
        self.last_decision: Decision | None = None
        #: Subscribers per event name; empty lists cost one truth test on the hot path.
        self.tp_alloc: list[Callable[[TraceEvent], None]] = []
        self.tp_free: list[Callable[[TraceEvent], None]] = []
        self.tp_purge: list[Callable[[TraceEvent], None]] = []
        self._clock = clock or (lambda: 0.0)
        #: How deferred work is queued (6.x drain_vmap_work); None = run at once.
        self._schedule_work = schedule_work
        #: Called before a reclaim purge (purge fragmented vmap blocks of all CPUs).
        self.purge_fragmented_hook = purge_hook
        #: Set by replay: never purge on our own (the trace says when the kernel did).
        self.auto_purge = True
        #: Number of allocation-failure reclaim purges that may run (replay sets 0).
        self.reclaim_on_failure = True
        self._check_rng = random.Random(0x5EED)
        self.vmap_init_free_space()

    # ------------------------------------------------------------------------------
    # Setup
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
                self._insert_free(VmapArea(vmap_start, start))
            vmap_start = end
        if vmap_end > vmap_start:
            self._insert_free(VmapArea(vmap_start, vmap_end))

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
        return (node_id + 1) << 8

    # ------------------------------------------------------------------------------
    # Free tree primitives
    # ------------------------------------------------------------------------------
    def _find_links(
        self, va: VmapArea, root: RBRoot, start: VmapArea | None = None
    ) -> tuple[VmapArea | None, bool, VmapArea | None, VmapArea | None] | None:
        """``find_va_links``: where ``va`` would be linked, plus its list neighbours.

        Returns ``(parent, left, prev, next)`` or None on overlap (after the kernel's
        warning). ``prev``/``next`` are what the kernel's address-sorted list would
        give: the last node the descent left to the right, and to the left.
        """
        node = start if start is not None else root.rb_node
        if node is None:
            return None, False, None, None
        va_start = va.va_start
        va_end = va.va_end
        prev = nxt = None
        while True:
            if va_end <= node.va_start:
                nxt = node
                child = node.rb_left
                if child is None:
                    return node, True, prev, nxt
            elif va_start >= node.va_end:
                prev = node
                child = node.rb_right
                if child is None:
                    return node, False, prev, nxt
            else:
                self._overlap(va, node)
                return None
            node = child

    def _overlap(self, va: VmapArea, other: VmapArea) -> None:
        text = (
            f"vmalloc bug: {va.va_start:#x}-{va.va_end:#x} overlaps with "
            f"{other.va_start:#x}-{other.va_end:#x}"
        )
        if self.profile.errno_errors:
            self.log.WARN(text)
        else:
            self.log.BUG(text)

    def _link_free(self, va: VmapArea, parent: VmapArea | None, left: bool) -> None:
        """``link_va_augment`` + ``augment_tree_propagate_from``."""
        va.subtree_max_size = 0
        rb_link_node(va, parent, left, self.free_root)
        rb_insert_augmented(va, self.free_root, _AUGMENT)
        va.subtree_max_size = 0
        va.state = VaState.FREE
        self.nr_free += 1
        _propagate(va, None)

    def _insert_free(self, va: VmapArea, start: VmapArea | None = None) -> None:
        """``insert_vmap_area_augment``: link a non-overlapping area into the free tree."""
        links = self._find_links(va, self.free_root, start)
        if links is None:
            return
        self._link_free(va, links[0], links[1])

    def _unlink_free(self, va: VmapArea) -> None:
        """``unlink_va_augment``."""
        rb_erase_augmented(va, self.free_root, _AUGMENT)
        va.rb_parent = va.rb_left = va.rb_right = None
        va.state = VaState.DETACHED
        self.nr_free -= 1

    def merge_or_add_vmap_area(self, va: VmapArea) -> VmapArea | None:
        """``merge_or_add_vmap_area_augment``: give ``va`` back to the free tree.

        Coalesces with the next and the previous free block when they touch. 5.4
        propagates after each step and extends ``prev`` before unlinking ``next``;
        since 5.6 ``next`` is unlinked first and one propagation runs at the end.
        """
        links = self._find_links(va, self.free_root)
        if links is None:
            return None
        parent, left, prev, nxt = links
        merged = False
        each_step = self.profile.merge_propagates_each_step
        if parent is not None:
            if nxt is not None and nxt.va_start == va.va_end:
                nxt.va_start = va.va_start
                if each_step:
                    _propagate(nxt, None)
                va.state = VaState.DETACHED  # kmem_cache_free(va)
                va = nxt
                merged = True
            if prev is not None and prev.va_end == va.va_start:
                if each_step:
                    prev.va_end = va.va_end
                    _propagate(prev, None)
                    if merged:
                        self._unlink_free(va)
                else:
                    if merged:
                        self._unlink_free(va)
                    prev.va_end = va.va_end
                va.state = VaState.DETACHED
                va = prev
                merged = True
        if not merged:
            va.subtree_max_size = 0
            rb_link_node(va, parent, left, self.free_root)
            rb_insert_augmented(va, self.free_root, _AUGMENT)
            va.subtree_max_size = 0
            va.state = VaState.FREE
            self.nr_free += 1
            _propagate(va, None)
        elif not each_step:
            _propagate(va, None)
        return va

    # ------------------------------------------------------------------------------
    # The search
    # ------------------------------------------------------------------------------
    def find_vmap_lowest_match(
        self, size: int, align: int, vstart: int, adjust_search_size: bool
    ) -> VmapArea | None:
        """``find_vmap_lowest_match``: the lowest free block that fits, or None.

        The descent prefers the left subtree when it has a block of at least the
        search length ``L`` and lies above ``vstart``; otherwise it checks the node,
        then the right subtree; when stuck it rolls back to the first ancestor whose
        right subtree can hold ``L`` (6.x shifts ``vstart`` past that ancestor so a
        searched subtree is never entered again).
        """
        shift_vstart = self.profile.rollback_shifts_vstart
        if not shift_vstart and not adjust_search_size and align > 1:
            # Without the v5.16 vstart shift, an exact length with a large alignment
            # can roll back into the same right subtree forever; 5.4 never searches so.
            raise ValueError("a search without vstart shift needs L = size + align - 1")
        node = self.free_root.rb_node
        length = size + align - 1 if adjust_search_size else size
        umax = self.ulong_max
        mask = ~(align - 1) & umax
        while node is not None:
            left = node.rb_left
            if left is not None and left.subtree_max_size >= length and vstart < node.va_start:
                node = left
                continue
            # is_within_this_va(node)
            s = node.va_start
            nva = ((s if s > vstart else vstart) + align - 1) & mask
            end = nva + size
            if end <= umax and nva >= vstart and end <= node.va_end:
                return node  # type: ignore[no-any-return]
            right = node.rb_right
            if right is not None and right.subtree_max_size >= length:
                node = right
                continue
            # Roll back to the first ancestor that fits or whose right subtree may.
            while True:
                node = node.rb_parent
                if node is None:
                    return None
                s = node.va_start
                nva = ((s if s > vstart else vstart) + align - 1) & mask
                end = nva + size
                if end <= umax and nva >= vstart and end <= node.va_end:
                    return node  # type: ignore[no-any-return]
                right = node.rb_right
                if right is not None and right.subtree_max_size >= length and vstart <= s:
                    if shift_vstart:
                        vstart = s + 1
                    node = right
                    break
        return None

    def find_vmap_lowest_linear_match(self, size: int, align: int, vstart: int) -> VmapArea | None:
        """``find_vmap_lowest_linear_match``: the first fitting block of the free list."""
        for va in rb_inorder(self.free_root):
            if _fits(va, size, align, vstart, self.ulong_max):
                return va  # type: ignore[no-any-return]
        return None

    def va_clip(self, va: VmapArea, nva_start_addr: int, size: int) -> int:
        """``va_clip`` (5.4: ``adjust_va_to_fit_type``): carve the allocation out of ``va``.

        Returns 0 or a negative errno. The NE split takes the per-CPU preloaded spare
        object in the kernel; the model always has one.
        """
        va_start = va.va_start
        va_end = va.va_end
        nva_end = nva_start_addr + size
        if nva_start_addr < va_start or nva_end > va_end:
            fit = FitType.NOTHING_FIT
        elif va_start == nva_start_addr:
            fit = FitType.FL_FIT_TYPE if va_end == nva_end else FitType.LE_FIT_TYPE
        elif va_end == nva_end:
            fit = FitType.RE_FIT_TYPE
        else:
            fit = FitType.NE_FIT_TYPE
        self.stats.fits[fit] += 1
        if self.explain and self.last_decision is not None:
            self.last_decision.fit = fit
            self.last_decision.block = (va_start, va_end)
        if fit == FitType.LE_FIT_TYPE:
            va.va_start = nva_end
            _propagate(va, None)
        elif fit == FitType.FL_FIT_TYPE:
            self._unlink_free(va)
        elif fit == FitType.RE_FIT_TYPE:
            va.va_end = nva_start_addr
            _propagate(va, None)
        elif fit == FitType.NE_FIT_TYPE:
            lva = VmapArea(va_start, nva_start_addr)
            va.va_start = nva_end
            _propagate(va, None)
            self._insert_free(lva, va)
        else:
            self.log.WARN(
                f"va_clip: NOTHING_FIT for {nva_start_addr:#x}+{size:#x} in "
                f"{va_start:#x}-{va_end:#x}"
            )
            return -EINVAL
        return 0

    def __alloc_vmap_area(self, size: int, align: int, vstart: int, vend: int) -> int:
        """``__alloc_vmap_area``: search the free tree and clip; address or error value."""
        profile = self.profile
        if profile.adjust_search_size:
            adjust = not (align <= PAGE_SIZE or vend - vstart == size)
        else:
            adjust = True
        if self.explain:
            self.last_decision = Decision(
                "tree", search_length=size + align - 1 if adjust else size
            )
        va = self.find_vmap_lowest_match(size, align, vstart, adjust)
        if va is None:
            return self._error(ENOENT, vend)
        s = va.va_start
        nva = ((s if s > vstart else vstart) + align - 1) & ~(align - 1) & self.ulong_max
        if nva + size > vend:
            if self.explain and self.last_decision is not None:
                self.last_decision.block = (va.va_start, va.va_end)
            return self._error(ERANGE, vend)
        ret = self.va_clip(va, nva, size)
        if ret:
            return self._error(-ret, vend)
        return nva

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
        range is exhausted even after purging (with the kernel's warning).
        """
        profile = self.profile
        if size <= 0 or size & (PAGE_SIZE - 1) or align <= 0 or align & (align - 1):
            text = f"alloc_vmap_area: invalid size {size:#x} or align {align:#x}"
            if profile.errno_errors:
                self.log.WARN(text)  # 6.x returns -EINVAL (no BUG)
            else:
                self.log.BUG(text)  # 5.4: BUG_ON(!size), offset_in_page, is_power_of_2
            return -EINVAL
        vn_id = 0
        va: VmapArea | None = None
        addr = self._error(EINVAL, vend)
        explain = self.explain
        if explain:
            self.last_decision = None
        if self.nr_vmap_nodes > 1 and vstart == self.vmalloc_start and vend == self.vmalloc_end:
            # node_alloc(): the pool of the CPU's node, head only.
            node_id = cpu % self.nr_vmap_nodes
            va = self._node_pool_del_va(self.nodes[node_id], size, align, vstart, vend)
            vn_id = self._vn_flags[node_id]
            if va is not None:
                addr = va.va_start
                self.stats.pool_hits += 1
        self.last_pool_hit = va is not None
        if va is None:
            va = VmapArea()
        purged = False
        while True:
            if self._is_error_addr(addr, vend):
                addr = self.__alloc_vmap_area(size, align, vstart, vend)
                if explain and self.last_decision is not None and self._rotated_pool is not None:
                    self.last_decision.rotated = True
                    self.last_decision.node, self.last_decision.pool_index = self._rotated_pool
            failed = self._is_error_addr(addr, vend)
            if self.tp_alloc:
                self._emit(
                    self.tp_alloc,
                    AllocVmapArea(
                        addr=addr,
                        size=size,
                        align=align,
                        vstart=vstart,
                        vend=vend,
                        failed=int(failed),
                        cpu=cpu,
                        timestamp=self._clock(),
                    ),
                )
            if not failed:
                break
            # overflow:
            if not purged and self.reclaim_on_failure:
                self.stats.retries += 1
                self.reclaim_and_purge_vmap_areas()
                purged = True
                continue
            # The vmap_notify_list chain frees nothing in the model.
            self.stats.alloc_failures += 1
            if explain:
                self.last_decision = Decision("fail", error=EBUSY)
            if not gfp_nowarn:
                self.log.warn(
                    profile.alloc_fail_warning.format(size=size, vstart=vstart, vend=vend)
                )
            return -EBUSY
        va.va_start = addr
        va.va_end = addr + size
        va.vm = vm
        # One shared int object per node keeps a busy area ~32 bytes smaller.
        va.flags = va_flags | vn_id if va_flags else vn_id
        self._busy_insert(va)
        self.stats.allocs += 1
        return va

    _rotated_pool: tuple[int, int] | None = None
    last_pool_hit = False

    def _node_pool_del_va(
        self, vn: VmapNode, size: int, align: int, vstart: int, vend: int
    ) -> VmapArea | None:
        """``node_pool_del_va``: take the head of the exact-size pool if aligned.

        A misaligned head is moved to the tail and nothing is returned: the pool is
        never scanned further.
        """
        self._rotated_pool = None
        idx = (size - 1) >> PAGE_SHIFT
        pool = vn.pools.get(idx)
        if not pool:
            return None
        va = pool[0]
        if va.va_start & (align - 1) == 0:
            if va.va_end - va.va_start != size or va.va_start < vstart or va.va_end > vend:
                self.log.WARN(f"node_pool_del_va: bad pooled area {va!r}")
                return None
            pool.popleft()
            va.state = VaState.DETACHED
            if self.explain:
                self.last_decision = Decision("pool", node=vn.id, pool_index=idx)
            return va
        pool.rotate(-1)
        self._rotated_pool = (vn.id, idx)
        return None

    # ------------------------------------------------------------------------------
    # Busy trees
    # ------------------------------------------------------------------------------
    def _busy_insert(self, va: VmapArea) -> None:
        """``insert_vmap_area`` into the busy tree of ``addr_to_node(va_start)``."""
        root = self.nodes[self.addr_to_node_id(va.va_start) if self.nr_vmap_nodes > 1 else 0].busy
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
                self._overlap(va, node)
                raise InvariantError(f"busy insert overlaps: {va!r} and {node!r}")
        rb_link_node(va, parent, left, root)
        rb_insert_color(va, root)
        va.state = VaState.BUSY
        self.nr_busy += 1

    def _busy_unlink(self, va: VmapArea, node_id: int) -> None:
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

    def find_vmap_area(self, addr: int) -> VmapArea | None:
        """``find_vmap_area``: the busy area containing ``addr`` (by containment)."""
        for i in self._node_search(addr):
            va = self._find_in(self.nodes[i].busy, addr)
            if va is not None:
                return va
        return None

    def find_unlink_vmap_area(self, addr: int) -> VmapArea | None:
        """``find_unlink_vmap_area``: find the busy area at ``addr`` and unlink it."""
        for i in self._node_search(addr):
            va = self._find_in(self.nodes[i].busy, addr)
            if va is not None:
                self._busy_unlink(va, i)
                return va
        return None

    def busy_areas(self) -> Iterator[VmapArea]:
        """Busy areas in the kernel's /proc/vmallocinfo order (per node, ascending)."""
        for vn in self.nodes:
            yield from rb_inorder(vn.busy)

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

    def free_areas(self) -> Iterator[VmapArea]:
        """Free blocks in address order (``free_vmap_area_list``)."""
        return rb_inorder(self.free_root)

    # ------------------------------------------------------------------------------
    # Freeing
    # ------------------------------------------------------------------------------
    def free_vmap_area(self, va: VmapArea) -> None:
        """``free_vmap_area``: unlink from its busy tree, merge into the free tree now."""
        if va.state == VaState.BUSY:
            self._busy_unlink(va, self._busy_node_of(va))
        va.vm = None
        self.stats.direct_frees += 1
        self.merge_or_add_vmap_area(va)

    def _busy_node_of(self, va: VmapArea) -> int:
        for i in self._node_search(va.va_start):
            if self._find_in(self.nodes[i].busy, va.va_start) is va:
                return i
        raise InvariantError(f"{va!r} is not in any busy tree")

    def free_vmap_area_noflush(self, va: VmapArea, *, cpu: int = 0) -> None:
        """``free_vmap_area_noflush``: lazily free an unlinked area.

        Adds its pages (guard included) to ``vmap_lazy_nr`` and queues it; when the
        total passes ``lazy_max_pages()`` a purge runs — synchronously in 5.4, from a
        work item in 6.x.
        """
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
            self._emit(
                self.tp_free,
                FreeVmapAreaNoflush(
                    va_start=va.va_start,
                    nr_lazy=nr_lazy,
                    nr_lazy_max=self.lazy_max_pages,
                    cpu=cpu,
                    timestamp=self._clock(),
                ),
            )
        if nr_lazy > self.lazy_max_pages and self.auto_purge:
            if self.profile.deferred_purge and self._schedule_work is not None:
                self._schedule_work("drain_vmap_work", self.drain_vmap_area_work)
            else:
                # 5.4 try_purge_vmap_area_lazy(): trylock succeeds in a 1-thread model.
                self.__purge_vmap_area_lazy(self.ulong_max, 0)

    def lazy_node_of(self, va: VmapArea) -> int:
        """The node whose lazy list holds ``va``: its allocating node, else by address."""
        vn_id = self.decode_vn_id(va.flags)
        if vn_id >= 0:
            return vn_id
        return self.addr_to_node_id(va.va_start) if self.nr_vmap_nodes > 1 else 0

    # ------------------------------------------------------------------------------
    # Purging
    # ------------------------------------------------------------------------------
    def drain_vmap_area_work(self) -> None:
        """``drain_vmap_area_work``: the 6.x worker behind the lazy threshold."""
        self.__purge_vmap_area_lazy(self.ulong_max, 0, full_pool_decay=False)

    def purge_vmap_area_lazy(
        self, *, limit: int | None = None, full_pool_decay: bool = False
    ) -> bool:
        """Purge lazily freed areas now (what the drain worker or 5.4's purge does).

        ``limit`` (replay only) purges just the ``limit`` oldest lazy areas: a real
        purge takes what was on the lazy lists when it started, and the trace's
        ``num_purged`` tells how many that was. ``full_pool_decay`` is the reclaim
        purge's mode (pools emptied, none refilled).
        """
        return self.__purge_vmap_area_lazy(
            self.ulong_max, 0, full_pool_decay=full_pool_decay, limit=limit
        )

    def reclaim_and_purge_vmap_areas(self) -> bool:
        """The allocation-failure purge: vmap blocks first, then a full-decay purge."""
        if self.purge_fragmented_hook is not None:
            self.purge_fragmented_hook()
        return self.__purge_vmap_area_lazy(self.ulong_max, 0, full_pool_decay=True)

    def __purge_vmap_area_lazy(
        self,
        start: int,
        end: int,
        *,
        full_pool_decay: bool = False,
        limit: int | None = None,
    ) -> bool:
        """``__purge_vmap_area_lazy``: return lazy areas (and decayed pools) to the tree."""
        pending = self.begin_purge(start, end, full_pool_decay=full_pool_decay, limit=limit)
        return self.finish_purge(pending)

    def begin_purge(
        self,
        start: int | None = None,
        end: int = 0,
        *,
        full_pool_decay: bool = False,
        limit: int | None = None,
    ) -> PendingPurge:
        """First phase of a purge: per node, decay the pools and detach the lazy list.

        On a real kernel this happens when the purge starts, well before its
        tracepoint; a replay runs the two phases apart (see :meth:`finish_purge`).
        """
        self.stats.purges += 1
        if start is None:
            start = self.ulong_max
        lazy = self.lazy
        if limit is None or limit >= len(lazy):
            batch = list(lazy)
            lazy.clear()
        else:
            batch = [lazy.popleft() for _ in range(limit)]
        pending = PendingPurge(start, end, full_pool_decay, batch)
        self.in_purge.append(pending)
        if not self.profile.vmap_nodes:
            return pending
        # 6.x: per node, ascending: decay pools, detach the lazy list.
        per_node: list[list[VmapArea]] = [[] for _ in self.nodes]
        for va in batch:
            per_node[self.lazy_node_of(va)].append(va)
        for vn in self.nodes:
            vn.nr_purged = 0
            self.decay_va_pool_node(vn, full_pool_decay)
            lst = per_node[vn.id]
            if lst:
                lst.sort(key=_va_start_key)
                if lst[0].va_start < pending.start:
                    pending.start = lst[0].va_start
                if lst[-1].va_end > pending.end:
                    pending.end = lst[-1].va_end
                pending.marked.append((vn, lst))
        return pending

    def purge_next_node(self, pending: PendingPurge) -> bool:
        """Second phase for the next marked node only (6.x); False when none is left.

        The kernel refills node 0's pools, then node 1's, ...; a replay lets other
        CPUs' allocations see a node's refill before the purge's event is written.
        """
        if not pending.marked:
            return False
        vn, lst = pending.marked.pop(0)
        done = set(map(id, lst))
        pending.batch = [va for va in pending.batch if id(va) not in done]
        self._purge_vmap_node(vn, lst, skip_populate=pending.full_pool_decay)
        pending.nr_purged += vn.nr_purged
        return True

    def finish_purge(self, pending: PendingPurge) -> bool:
        """Second phase: refill the pools, merge the rest, emit the tracepoint."""
        batch = pending.batch
        start, end = pending.start, pending.end
        self.in_purge.remove(pending)
        if not self.profile.vmap_nodes:
            # 5.4: llist_del_all() returns newest first; merge in that order.
            if not batch:
                return False
            for va in batch:
                if va.va_start < start:
                    start = va.va_start
                if va.va_end > end:
                    end = va.va_end
            self.last_flush = (start, end)
            for va in reversed(batch):
                self.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
                va.state = VaState.DETACHED
                self.merge_or_add_vmap_area(va)
            self.stats.purged_areas += len(batch)
            return True
        if pending.marked or pending.nr_purged:
            self.last_flush = (start, end)
        # Helpers (extra workers) change only timing, not the result: the model
        # processes the marked nodes in ascending order.
        while self.purge_next_node(pending):
            pass
        nr_purged_areas = pending.nr_purged
        self.stats.purged_areas += nr_purged_areas
        if self.tp_purge:
            self._emit(
                self.tp_purge,
                PurgeVmapAreaLazy(
                    start=start, end=end, npurged=nr_purged_areas, timestamp=self._clock()
                ),
            )
        return nr_purged_areas > 0

    def _purge_vmap_node(
        self, vn: VmapNode, purge_list: list[VmapArea], skip_populate: bool
    ) -> None:
        """``purge_vmap_node``: refill this node's pools, merge the rest (descending)."""
        local: list[VmapArea] = []
        nr_pages = 0
        max_idx = self.profile.max_va_size_pages
        for va in purge_list:
            size = va.va_end - va.va_start
            nr_pages += size >> PAGE_SHIFT
            vn.nr_purged += 1
            va.state = VaState.DETACHED
            if not skip_populate and self.decode_vn_id(va.flags) >= 0:
                idx = (size - 1) >> PAGE_SHIFT
                if idx < max_idx:
                    pool = vn.pools.get(idx)
                    if pool is None:
                        pool = vn.pools[idx] = deque()
                    pool.appendleft(va)  # list_add: at the head
                    va.state = VaState.POOL
                    continue
            local.append(va)
        self.vmap_lazy_nr -= nr_pages
        # list_add() onto the local list reverses it: merge in descending order.
        for va in reversed(local):
            self.merge_or_add_vmap_area(va)

    def decay_va_pool_node(self, vn: VmapNode, full_decay: bool) -> None:
        """``decay_va_pool_node``: return ~25 % (or all) of each pool to the free tree.

        From each class, ``len >> 2`` (or ``len``) areas are taken from the head
        (newest); they are coalesced among themselves and merged into the free tree in
        ascending address order. [6.16+] a class with fewer than 4 entries is kept.
        """
        decayed: list[VmapArea] = []
        for idx in sorted(vn.pools):
            pool = vn.pools[idx]
            if not pool:
                continue
            n = len(pool)
            if not full_decay:
                if n < 4 and not self.profile.decay_keeps_small_classes:
                    n = len(pool)  # the 6.9-6.15 underflow drained small classes
                else:
                    n >>= 2
            for _ in range(n):
                va = pool.popleft()
                va.state = VaState.DETACHED
                decayed.append(va)
        if not decayed:
            return
        self.stats.decayed_areas += len(decayed)
        # merge_or_add_vmap_area() into a private, non-augmented decay tree coalesces
        # neighbours; its list is then merged into the global tree ascending.
        decayed.sort(key=_va_start_key)
        coalesced: list[VmapArea] = [decayed[0]]
        for va in decayed[1:]:
            last = coalesced[-1]
            if last.va_end == va.va_start:
                last.va_end = va.va_end
            else:
                coalesced.append(va)
        for va in coalesced:
            self.merge_or_add_vmap_area(va)

    def vmap_node_shrink_count(self) -> int:
        """The "vmap-node" shrinker's count: areas held in all pools."""
        return sum(vn.pool_len() for vn in self.nodes)

    def vmap_node_shrink_scan(self) -> int:
        """The "vmap-node" shrinker's scan: fully decay every node's pools.

        This is what ``echo 2 > /proc/sys/vm/drop_caches`` triggers on a real kernel.
        Returns the number of areas released.
        """
        n = self.vmap_node_shrink_count()
        for vn in self.nodes:
            self.decay_va_pool_node(vn, True)
        return n

    # ------------------------------------------------------------------------------
    # pcpu_get_vm_areas: congruent areas from the top
    # ------------------------------------------------------------------------------
    def pvm_find_va_enclose_addr(self, addr: int) -> VmapArea | None:
        """The free block with the highest start at or below ``addr``."""
        node = self.free_root.rb_node
        va = None
        while node is not None:
            if node.va_start <= addr:
                va = node
                if node.va_end >= addr:
                    break
                node = node.rb_right
            else:
                node = node.rb_left
        return va

    def _pvm_end_from_reverse(self, va: VmapArea | None, align: int) -> tuple[int, VmapArea | None]:
        """``pvm_determine_end_from_reverse``: walk down the free list from ``va`` to the
        first block that still has room below ``min(block end, VMALLOC_END)`` aligned
        down; return that aligned end (0 if none) and the block."""
        vmalloc_end = self.vmalloc_end & ~(align - 1)
        while va is not None:
            addr = min(va.va_end & ~(align - 1), vmalloc_end)
            if va.va_start < addr:
                return addr, va
            va = rb_prev(va)
        return 0, None

    def pcpu_get_vm_areas(
        self, offsets: list[int], sizes: list[int], align: int, cpu: int = 0
    ) -> list[VmapArea] | None:
        """``pcpu_get_vm_areas``: ``len(offsets)`` areas at ``base + offsets[i]``.

        The percpu allocator needs its units congruent (the same distance apart on
        every CPU), so one common ``base`` is searched from the top of the vmalloc
        range downwards over the free list. No guard pages. On failure the reclaim
        purge runs once and the search is retried; then None.
        """
        nr = len(offsets)
        umax = self.ulong_max
        if nr == 0 or nr != len(sizes) or align <= 0 or align & (align - 1):
            self.log.WARN("pcpu_get_vm_areas: bad arguments")
            return None
        vmalloc_start = (self.vmalloc_start + align - 1) & ~(align - 1)
        vmalloc_end = self.vmalloc_end & ~(align - 1)
        last_area = 0
        for i in range(nr):
            start, size = offsets[i], sizes[i]
            if start & (align - 1) or size & (align - 1) or size <= 0:
                self.log.BUG(f"pcpu_get_vm_areas: area {i} not aligned to {align:#x}")
                return None
            if start > offsets[last_area]:
                last_area = i
            for j in range(i):
                if start < offsets[j] + sizes[j] and offsets[j] < start + size:
                    self.log.BUG(f"pcpu_get_vm_areas: areas {j} and {i} overlap")
                    return None
        last_end = offsets[last_area] + sizes[last_area]
        if vmalloc_end - vmalloc_start < last_end:
            self.log.WARN("pcpu_get_vm_areas: the areas span more than the vmalloc range")
            return None
        purged = False
        while True:
            base = self._pcpu_find_base(offsets, sizes, align, last_area, vmalloc_start)
            if base is not None:
                break
            if purged:
                return None
            self.reclaim_and_purge_vmap_areas()
            purged = True
        vas: list[VmapArea] = []
        for i in range(nr):
            start = (base + offsets[i]) & umax
            block = self.pvm_find_va_enclose_addr(start)
            if block is None or self.va_clip(block, start, sizes[i]):
                raise InvariantError(f"pcpu_get_vm_areas: cannot clip {start:#x}")
            va = VmapArea(start, start + sizes[i])
            self._busy_insert(va)
            self.stats.allocs += 1
            vas.append(va)
        return vas

    def _pcpu_find_base(
        self, offsets: list[int], sizes: list[int], align: int, last_area: int, vmalloc_start: int
    ) -> int | None:
        nr = len(offsets)
        umax = self.ulong_max
        last_end = offsets[last_area] + sizes[last_area]
        area = term_area = last_area
        start = offsets[area]
        end = start + sizes[area]
        end_addr, va = self._pvm_end_from_reverse(
            self.pvm_find_va_enclose_addr(self.vmalloc_end & ~(align - 1)), align
        )
        base = (end_addr - end) & umax
        while True:
            # Wrapped below the start of the range, or no block left: give up.
            if ((base + last_end) & umax) < vmalloc_start + last_end or va is None:
                return None
            if base + end > va.va_end:
                # The area does not fit under this block's end: move base down.
                end_addr, va = self._pvm_end_from_reverse(va, align)
                base = (end_addr - end) & umax
                term_area = area
                continue
            if base + start < va.va_start:
                # The area starts below this block: try the previous block.
                end_addr, va = self._pvm_end_from_reverse(rb_prev(va), align)
                base = (end_addr - end) & umax
                term_area = area
                continue
            # This area fits; on to the previous one, until back at the terminal one.
            area = (area + nr - 1) % nr
            if area == term_area:
                return base
            start = offsets[area]
            end = start + sizes[area]
            va = self.pvm_find_va_enclose_addr(base + end)

    def pcpu_free_vm_areas(self, vas: list[VmapArea], cpu: int = 0) -> None:
        """``pcpu_free_vm_areas``: free each area (lazily, like ``free_vm_area``)."""
        for va in vas:
            found = self.find_unlink_vmap_area(va.va_start)
            if found is None:
                self.log.WARN(f"pcpu_free_vm_areas: {va.va_start:#x} is not busy")
                continue
            self.free_vmap_area_noflush(found, cpu=cpu)

    # ------------------------------------------------------------------------------
    # Replay support: seeding from a snapshot, adopting the kernel's choices
    # ------------------------------------------------------------------------------
    def _overlapping(self, root: RBRoot, start: int, end: int) -> list[VmapArea]:
        """Areas of ``root`` (busy or free tree) that overlap ``[start, end)``."""
        node = root.rb_node
        cand = None
        while node is not None:
            if node.va_end > start:
                cand = node
                node = node.rb_left
            else:
                node = node.rb_right
        found = []
        while cand is not None and cand.va_start < end:
            found.append(cand)
            cand = rb_next(cand)
        return found

    def locate(self, addr: int) -> str:
        """Where ``addr`` lives in the model, in words (for replay diagnostics)."""
        for va in self._overlapping(self.free_root, addr, addr + 1):
            return f"free block {va.va_start:#x}-{va.va_end:#x}"
        for vn in self.nodes:
            for va in self._overlapping(vn.busy, addr, addr + 1):
                return f"busy {va.va_start:#x}-{va.va_end:#x} (node {vn.id})"
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

    def claim_range(self, start: int, end: int) -> list[str]:
        """Take ``[start, end)`` out of whatever holds it, leaving it unowned.

        Used when a replay adopts the kernel's address: a pooled area of exactly that
        range is simply unlinked; otherwise every busy, lazy or pooled area that
        overlaps is released to the free tree first (each is a divergence the model
        reports back), then the range is clipped out of its free block. Returns notes
        on what had to be released.
        """
        notes: list[str] = []
        # Fast path (every snapshot area, most adoptions): inside one free block.
        block = self.pvm_find_va_enclose_addr(start)
        if block is not None and block.va_start <= start and end <= block.va_end:
            if self.va_clip(block, start, end - start):
                raise InvariantError(f"cannot clip {start:#x}-{end:#x}")
            return notes
        for vn in self.nodes:
            for pool in vn.pools.values():
                for va in pool:
                    if va.va_start == start and va.va_end == end:
                        pool.remove(va)
                        va.state = VaState.DETACHED
                        return notes
        released: list[VmapArea] = []
        for vn in self.nodes:
            for va in self._overlapping(vn.busy, start, end):
                self._busy_unlink(va, vn.id)
                notes.append(f"model still had busy {va.va_start:#x}-{va.va_end:#x}")
                released.append(va)
        if any(va.va_start < end and start < va.va_end for va in self.lazy):
            keep: deque[VmapArea] = deque()
            for va in self.lazy:
                if va.va_start < end and start < va.va_end:
                    self.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
                    va.state = VaState.DETACHED
                    notes.append(f"model still had lazy {va.va_start:#x}-{va.va_end:#x}")
                    released.append(va)
                else:
                    keep.append(va)
            self.lazy = keep
        for pending in self.in_purge:
            hit = [va for va in pending.batch if va.va_start < end and start < va.va_end]
            for va in hit:
                pending.batch.remove(va)
                for _vn, lst in pending.marked:
                    if va in lst:
                        lst.remove(va)
                self.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
                va.state = VaState.DETACHED
                notes.append(f"model was purging {va.va_start:#x}-{va.va_end:#x}")
                released.append(va)
        for vn in self.nodes:
            for pool in vn.pools.values():
                hit = [va for va in pool if va.va_start < end and start < va.va_end]
                for va in hit:
                    pool.remove(va)
                    va.state = VaState.DETACHED
                    notes.append(f"model had pooled {va.va_start:#x}-{va.va_end:#x}")
                    released.append(va)
        for va in released:
            va.vm = None
            self.merge_or_add_vmap_area(va)
        blocks = self._overlapping(self.free_root, start, end)
        if len(blocks) != 1 or blocks[0].va_start > start or blocks[0].va_end < end:
            raise InvariantError(f"cannot claim {start:#x}-{end:#x}: not one free block")
        if self.va_clip(blocks[0], start, end - start):
            raise InvariantError(f"cannot clip {start:#x}-{end:#x}")
        return notes

    def seed_busy(self, start: int, end: int, *, flags: int = 0, vm: Any = None) -> VmapArea:
        """Make ``[start, end)`` a busy area (snapshot import or adopted address)."""
        self.claim_range(start, end)
        va = VmapArea(start, end)
        va.flags = flags
        va.vm = vm
        self._busy_insert(va)
        return va

    def seed_lazy(self, start: int, end: int, node_id: int) -> VmapArea:
        """Make ``[start, end)`` a lazily freed area waiting on ``node_id``'s list."""
        self.claim_range(start, end)
        va = VmapArea(start, end)
        va.flags = self.encode_vn_id(node_id) if self.nr_vmap_nodes > 1 else 0
        va.state = VaState.LAZY
        self.lazy.append(va)
        self.vmap_lazy_nr += (end - start) >> PAGE_SHIFT
        return va

    def undo_alloc(self, va: VmapArea, from_pool: bool, cpu: int) -> None:
        """Give back an allocation the replay rejects: to its pool head, or the tree."""
        self._busy_unlink(va, self._busy_node_of(va))
        va.vm = None
        if from_pool:
            node_id = cpu % self.nr_vmap_nodes
            idx = (va.va_end - va.va_start - 1) >> PAGE_SHIFT
            self.nodes[node_id].pools.setdefault(idx, deque()).appendleft(va)
            va.state = VaState.POOL
            self.stats.pool_hits -= 1
        else:
            self.merge_or_add_vmap_area(va)
        self.stats.allocs -= 1

    # ------------------------------------------------------------------------------
    # Tracepoints
    # ------------------------------------------------------------------------------
    def _emit(self, subscribers: list[Callable[[TraceEvent], None]], event: TraceEvent) -> None:
        for fn in subscribers:
            fn(event)

    # ------------------------------------------------------------------------------
    # Invariants
    # ------------------------------------------------------------------------------
    def pooled_areas(self) -> Iterator[tuple[int, int, VmapArea]]:
        for vn in self.nodes:
            for idx, pool in vn.pools.items():
                for va in pool:
                    yield vn.id, idx, va

    def check(self, *, lowest_match_samples: int = 4) -> None:
        """Verify every invariant of the allocator; raise :class:`InvariantError`.

        * the free tree is a valid red-black tree, ordered, with exact
          ``subtree_max_size`` values; each busy tree is valid and in its node;
        * free + busy + lazy + pooled areas tile ``[1, ULONG_MAX)`` with no overlap
          and no gap; no two free areas touch (maximal coalescing);
        * ``vmap_lazy_nr`` equals the pages of the lazy areas; pools hold only their
          exact size class;
        * the kernel's lowest-match self-check: with an exact search length the tree
          search equals a linear scan of the free list.
        """
        name = repr
        try:
            nfree = validate_rbtree(
                self.free_root,
                _va_start_key,
                augmented=_subtree_key,
                compute=_compute_max,
                name=name,
            )
        except RBTreeError as e:
            raise InvariantError(f"free tree: {e}") from None
        if nfree != self.nr_free:
            raise InvariantError(f"free tree has {nfree} nodes, counter says {self.nr_free}")
        pieces: list[tuple[int, int, str, VmapArea]] = []
        prev_end = None
        for va in rb_inorder(self.free_root):
            if va.state != VaState.FREE:
                raise InvariantError(f"{va!r} is in the free tree but marked otherwise")
            if va.va_start >= va.va_end:
                raise InvariantError(f"empty free area {va!r}")
            if prev_end is not None and prev_end == va.va_start:
                raise InvariantError(f"free areas not coalesced at {va.va_start:#x}")
            prev_end = va.va_end
            pieces.append((va.va_start, va.va_end, "free", va))
        nbusy = 0
        for vn in self.nodes:
            try:
                nbusy += validate_rbtree(vn.busy, _va_start_key, name=name)
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
        for node_id, idx, va in self.pooled_areas():
            if va.state != VaState.POOL:
                raise InvariantError(f"{va!r} is in pool {node_id}/{idx} but marked otherwise")
            if (va.size - 1) >> PAGE_SHIFT != idx:
                raise InvariantError(f"{va!r} is in pool class {idx} of node {node_id}")
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
        self._check_lowest_match(lowest_match_samples)

    def _check_lowest_match(self, samples: int) -> None:
        """``DEBUG_AUGMENT_LOWEST_MATCH_CHECK``: tree search == linear scan for L = size."""
        rng = self._check_rng
        top = self.free_root.rb_node
        if top is None:
            return
        biggest = top.subtree_max_size
        for _ in range(samples):
            pages = rng.randint(1, max(1, min(biggest >> PAGE_SHIFT, 1024)))
            size = pages << PAGE_SHIFT
            # 6.x checks with the request's alignment (L = size); 5.4 with align 1.
            align = 1 << rng.randint(0, 22) if self.profile.rollback_shifts_vstart else 1
            vstart = self.vmalloc_start + rng.getrandbits(32)
            t = self.find_vmap_lowest_match(size, align, vstart, False)
            linear = self.find_vmap_lowest_linear_match(size, align, vstart)
            if t is not linear:
                raise InvariantError(
                    f"not lowest: t: {t!r}, l: {linear!r}, v: {vstart:#x} "
                    f"(size {size:#x}, align {align:#x})"
                )


def _fits(va: VmapArea, size: int, align: int, vstart: int, umax: int) -> bool:
    """``is_within_this_va``: does ``[ALIGN(max(start, vstart)), +size)`` fit in ``va``?"""
    s = va.va_start
    nva = ((s if s > vstart else vstart) + align - 1) & ~(align - 1) & umax
    end = nva + size
    return end <= umax and nva >= vstart and end <= va.va_end


def _va_start_key(va: VmapArea) -> int:
    return va.va_start


def _subtree_key(va: VmapArea) -> int:
    return va.subtree_max_size
