"""``struct vmap_area`` and the small records around it.

This module holds the data the vmap allocator is made of, with no behaviour beyond
the augmented-tree callbacks:

* :class:`VmapArea` is ``struct vmap_area``: the half-open range
  ``[va_start, va_end)`` with its rb-tree links embedded, exactly like the kernel. An
  area is in exactly one place at a time, recorded in :attr:`VmapArea.state`: the free
  tree, a busy tree, a lazy list, a pool, or in transit (:class:`VaState`).
* the free tree's augment callbacks keep ``subtree_max_size`` — the largest free block
  in a subtree — exact (``RB_DECLARE_CALLBACKS_MAX`` in the kernel);
* :class:`VmapNode` is 6.x's ``struct vmap_node`` (5.4 has exactly one, implicit);
* :class:`Decision` says why an address was chosen (recorded only when explaining),
  :class:`VmapStats` counts what happened.

The mechanism that moves areas between those places is
:class:`pyvmalloc.vmap.space.VmapSpace`; where a new area goes is decided by a
placement policy (:mod:`pyvmalloc.vmap.placement`), what is recycled without a search
by a pool policy (:mod:`pyvmalloc.vmap.pools`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pyvmalloc.config import NUMA_NO_NODE
from pyvmalloc.errors import InvariantError
from pyvmalloc.rbtree import RBNode, RBRoot, rb_next

__all__ = [
    "FREE_AUGMENT",
    "NUMA_NO_NODE",
    "VMAP_BLOCK",
    "VMAP_FLAGS_MASK",
    "VMAP_RAM",
    "Decision",
    "FitType",
    "FreeAugment",
    "InvariantError",
    "PendingPurge",
    "VaState",
    "VmapArea",
    "VmapNode",
    "VmapStats",
    "areas_overlapping",
    "compute_subtree_max_size",
    "is_err",
    "propagate",
    "va_start_key",
]

#: ``va->flags`` bits (6.x): area made by vm_map_ram; a vmap block (with VMAP_RAM).
VMAP_RAM = 0x1
VMAP_BLOCK = 0x2
VMAP_FLAGS_MASK = 0x3


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
        # RBNode.__init__, inlined: one call fewer on every allocation.
        self.rb_parent = self.rb_left = self.rb_right = None
        self.rb_red = False
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


def compute_subtree_max_size(va: VmapArea) -> int:
    """``compute_subtree_max_size``: max of own size and the children's maxima."""
    m = va.va_end - va.va_start
    child = va.rb_left
    if child is not None and child.subtree_max_size > m:
        m = child.subtree_max_size
    child = va.rb_right
    if child is not None and child.subtree_max_size > m:
        m = child.subtree_max_size
    return int(m)


class FreeAugment:
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
        old.subtree_max_size = compute_subtree_max_size(old)


#: The free tree's callbacks, and its propagate step on its own (the hot path).
FREE_AUGMENT = FreeAugment()
propagate = FreeAugment.propagate


@dataclass(repr=False)
class VmapNode:
    """``struct vmap_node`` (6.x; 5.4 has exactly one, implicit).

    ``busy`` is this node's busy tree. ``pools[i]`` holds recycled areas of exactly
    ``i + 1`` pages (guard included), head at the left. Lazily freed areas are kept in
    the space-wide ``VmapSpace.lazy`` FIFO, tagged with their node; the kernel's
    per-node lazy trees are that FIFO filtered by node and sorted by address.
    """

    id: int
    busy: RBRoot = field(default_factory=RBRoot)
    pools: dict[int, deque[VmapArea]] = field(default_factory=dict)
    nr_purged: int = 0

    def pool_len(self) -> int:
        """Areas held in all of this node's pools."""
        return sum(len(p) for p in self.pools.values())

    def __repr__(self) -> str:
        busy = sum(1 for _ in self.busy)
        pools = ", ".join(
            f"{idx + 1} pages: {len(p)}" for idx, p in sorted(self.pools.items()) if p
        )
        return f"<vmap_node {self.id}: {busy} busy, pools {{{pools}}}, nr_purged {self.nr_purged}>"


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
        # one f-string, hex() for "#x" (the same text; built for every divergence)
        blk = self.block
        why = (
            f"tree: lowest match for length {hex(self.search_length)} in free block "
            f"{hex(blk[0])}-{hex(blk[1])} ({FitType.NAMES[self.fit]})"
        )
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
    #: Free-tree nodes a placement policy looked at (its search cost).
    search_visits: int = 0
    decayed_areas: int = 0
    retries: int = 0


def areas_overlapping(root: RBRoot, start: int, end: int) -> list[VmapArea]:
    """Areas of a tree keyed by address (free or busy) that overlap ``[start, end)``,
    ascending. O(log n + k)."""
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


def va_start_key(va: VmapArea) -> int:
    """Sort key: ``va_start``."""
    return va.va_start
