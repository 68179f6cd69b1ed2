"""``free_vmap_area_root``: the augmented red-black tree of free address space (v5.2+).

Invariant: the tree holds the free blocks of ``[1, ULONG_MAX)`` ordered by address,
no two of them touch (every free is merged with its neighbours), and each node's
``subtree_max_size`` is the size of the largest block in its subtree. That last value
is what lets a search skip a whole subtree that cannot hold a request.

This module is the kernel's set of free-tree helpers, as methods of one object:

* ``find_va_links`` — where an area would be linked, plus its list neighbours;
* ``insert_vmap_area_augment`` / ``unlink_va_augment`` — link, unlink, propagate;
* ``merge_or_add_vmap_area_augment`` — give an area back, coalescing with neighbours;
* ``va_clip`` (5.4: ``adjust_va_to_fit_type``) — carve an allocation out of a block;
* ``pvm_find_va_enclose_addr`` — the block at or below an address (percpu, replay).

It does not decide *which* block an allocation takes: that is a placement policy's
job (:mod:`pyvmalloc.vmap.placement`), which reads this tree and returns a block and an
address for :meth:`FreeTree.va_clip`.

The kernel's ``free_vmap_area_list`` is not stored: the neighbours it gives fall out
of the descent that finds an insertion point, which costs nothing extra and saves two
pointers per area.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import EINVAL, KernelProfile
from pyvmalloc.errors import InvariantError
from pyvmalloc.printk import KernelLog
from pyvmalloc.rbtree import (
    RBRoot,
    RBTreeError,
    rb_build,
    rb_erase_augmented,
    rb_inorder,
    rb_insert_augmented,
    rb_link_node,
    validate_rbtree,
)
from pyvmalloc.vmap.area import (
    FREE_AUGMENT,
    Decision,
    FitType,
    VaState,
    VmapArea,
    VmapStats,
    areas_overlapping,
    compute_subtree_max_size,
    propagate,
    va_start_key,
)

__all__ = ["FreeTree", "overlap_text"]

#: The reference ``propagate`` (vmap/area.py); the compiled twin replaces it when present.
py_propagate = propagate
_c_find_va_links = _c_merge_or_add = _c_va_clip = _c_enclose = None
if _speedups is not None:
    _speedups.init_vmap_area(VmapArea, FREE_AUGMENT, VaState.FREE, VaState.DETACHED)
    propagate = _speedups.propagate
    _c_find_va_links = _speedups.find_va_links
    _c_merge_or_add = _speedups.merge_or_add
    _c_va_clip = _speedups.va_clip
    _c_enclose = _speedups.pvm_find_va_enclose_addr


def overlap_text(va: VmapArea, other: VmapArea) -> str:
    """The kernel's complaint when an area would overlap one already linked."""
    return (
        f"vmalloc bug: {va.va_start:#x}-{va.va_end:#x} overlaps with "
        f"{other.va_start:#x}-{other.va_end:#x}"
    )


def _top_down(root: RBRoot) -> list[VmapArea]:
    """The nodes, each before its descendants (reversed: children before parents)."""
    out: list[VmapArea] = []
    stack = [root.rb_node] if root.rb_node is not None else []
    while stack:
        va = stack.pop()
        out.append(va)
        stack.extend(c for c in (va.rb_left, va.rb_right) if c is not None)
    return out


def _subtree_key(va: VmapArea) -> int:
    return va.subtree_max_size


class FreeTree:
    """The free blocks of one vmap space (``free_vmap_area_root``).

    ``ulong_max`` bounds the address space; ``profile`` decides the merge order;
    ``stats`` counts fit types; ``why`` (set by the allocator while explaining)
    receives the block and fit type of the next clip.
    """

    def __init__(
        self, ulong_max: int, profile: KernelProfile, log: KernelLog, stats: VmapStats
    ) -> None:
        self.root = RBRoot()
        self.nr_free = 0
        self.ulong_max = ulong_max
        self.profile = profile
        self.log = log
        self.stats = stats
        self.why: Decision | None = None
        self._each_step = profile.merge_propagates_each_step

    def __iter__(self) -> Iterator[VmapArea]:
        """Free blocks in address order (``free_vmap_area_list``). O(n)."""
        return rb_inorder(self.root)

    def __len__(self) -> int:
        return self.nr_free

    def __repr__(self) -> str:
        top = self.root.rb_node
        biggest = top.subtree_max_size if top is not None else 0
        return (
            f"<free_vmap_area_root: {self.nr_free} free blocks, largest {biggest:#x} "
            f"({biggest} bytes)>"
        )

    # --- linking ----------------------------------------------------------------------
    def find_va_links(
        self, va: VmapArea, start: VmapArea | None = None
    ) -> tuple[VmapArea | None, bool, VmapArea | None, VmapArea | None] | None:
        """``find_va_links``: where ``va`` would be linked, plus its list neighbours.

        Returns ``(parent, left, prev, next)`` or None on overlap (after the kernel's
        warning). ``prev``/``next`` are what the kernel's address-sorted list would
        give: the last node the descent left to the right, and to the left. O(log n).
        """
        node = start if start is not None else self.root.rb_node
        if node is None:
            return None, False, None, None
        if _c_find_va_links is not None:
            try:
                found = _c_find_va_links(node, va.va_start, va.va_end)
            except OverflowError:  # a value past 64 bits: the reference below
                found = None
            if found.__class__ is tuple:
                return found  # type: ignore[no-any-return,unused-ignore]
            if found is not None:
                self.complain_overlap(va, found)
                return None
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
                self.complain_overlap(va, node)
                return None
            node = child

    def complain_overlap(self, va: VmapArea, other: VmapArea) -> None:
        """6.x WARNs ``vmalloc bug: ... overlaps with ...`` and refuses the insert;
        5.4 hits the bare ``BUG()`` in ``find_va_links`` (the model logs the kernel's
        line, then the overlap, and refuses the insert)."""
        if self.profile.errno_errors:
            self.log.WARN(overlap_text(va, other), "find_va_links:overlap")
        else:
            self.log.BUG("find_va_links:overlap", overlap_text(va, other))

    def link(self, va: VmapArea, parent: VmapArea | None, left: bool) -> None:
        """``link_va_augment`` + ``augment_tree_propagate_from``."""
        va.subtree_max_size = 0
        rb_link_node(va, parent, left, self.root)
        rb_insert_augmented(va, self.root, FREE_AUGMENT)
        va.subtree_max_size = 0
        va.state = VaState.FREE
        self.nr_free += 1
        propagate(va, None)

    def insert_vmap_area_augment(self, va: VmapArea, start: VmapArea | None = None) -> None:
        """Link a non-overlapping area into the tree (``start``: where to descend from)."""
        links = self.find_va_links(va, start)
        if links is None:
            return
        self.link(va, links[0], links[1])

    def unlink_va_augment(self, va: VmapArea) -> None:
        """``unlink_va_augment``: take a block out of the tree. O(log n)."""
        rb_erase_augmented(va, self.root, FREE_AUGMENT)
        va.rb_parent = va.rb_left = va.rb_right = None
        va.state = VaState.DETACHED
        self.nr_free -= 1

    def merge_or_add_vmap_area_augment(self, va: VmapArea) -> VmapArea | None:
        """Give ``va`` back to the free tree; return the block that now holds it.

        Coalesces with the next and the previous free block when they touch. 5.4
        propagates after each step and extends ``prev`` before unlinking ``next``;
        since 5.6 ``next`` is unlinked first and one propagation runs at the end.
        O(log n).
        """
        if _c_merge_or_add is not None:
            try:
                block, change = _c_merge_or_add(self.root, va, self._each_step)
            except OverflowError:  # a value past 64 bits: the reference below
                pass
            else:
                if block is None:
                    self.complain_overlap(va, change)
                    return None
                self.nr_free += change
                return block  # type: ignore[no-any-return]
        links = self.find_va_links(va)
        if links is None:
            return None
        parent, left, prev, nxt = links
        merged = False
        each_step = self._each_step
        if parent is not None:
            if nxt is not None and nxt.va_start == va.va_end:
                nxt.va_start = va.va_start
                if each_step:
                    propagate(nxt, None)
                va.state = VaState.DETACHED  # kmem_cache_free(va)
                va = nxt
                merged = True
            if prev is not None and prev.va_end == va.va_start:
                if each_step:
                    prev.va_end = va.va_end
                    propagate(prev, None)
                    if merged:
                        self.unlink_va_augment(va)
                else:
                    if merged:
                        self.unlink_va_augment(va)
                    prev.va_end = va.va_end
                va.state = VaState.DETACHED
                va = prev
                merged = True
        if not merged:
            self.link(va, parent, left)
        elif not each_step:
            propagate(va, None)
        return va

    def seed_shape(
        self,
        blocks: Sequence[tuple[int, int]],
        top: int | None,
        children: Sequence[tuple[int | None, int | None]],
        black: Sequence[bool],
    ) -> list[VmapArea]:
        """Replace the whole tree by ``blocks`` (address order) in exactly the given
        shape and colours (a kernel readout), not by inserting; return the blocks.

        ``subtree_max_size`` is computed bottom-up, then the tree is checked
        (:meth:`check`): an invalid shape raises :class:`InvariantError` and leaves the
        tree as it was.
        """
        areas = [VmapArea(s, e) for s, e in blocks]
        # The same root object keeps its identity: the accelerator holds on to it.
        old = self.root.rb_node, self.nr_free
        self.root.rb_node = None
        try:
            rb_build(self.root, areas, top, children, black)
            for va in reversed(_top_down(self.root)):
                va.subtree_max_size = compute_subtree_max_size(va)
                va.state = VaState.FREE
            self.nr_free = len(areas)
            self.check()
        except (RBTreeError, InvariantError) as e:
            self.root.rb_node, self.nr_free = old  # the tree as it was
            raise InvariantError(
                str(e) if isinstance(e, InvariantError) else f"free tree: {e}"
            ) from None
        return areas

    # --- carving ----------------------------------------------------------------------
    def va_clip(self, va: VmapArea, nva_start_addr: int, size: int) -> int:
        """``va_clip`` (5.4: ``adjust_va_to_fit_type``): carve ``[nva, nva+size)`` out.

        Returns 0 or a negative errno (``-EINVAL`` for a range the block does not hold,
        NOTHING_FIT; the kernel's callers ``WARN_ON_ONCE`` on it, not ``va_clip``). The
        NE split takes the per-CPU preloaded spare object in the kernel; the model
        always has one. O(log n).
        """
        if _c_va_clip is not None and self.why is None:
            try:
                change = _c_va_clip(self.root, va, nva_start_addr, size, self.stats.fits)
            except OverflowError:  # a value past 64 bits: the reference below
                change = None
            if change.__class__ is int:
                self.nr_free += change
                return 0
            if change is not None:  # the NE split's left part overlaps a block
                self.complain_overlap(*change)
                return 0
            # None: NOTHING_FIT (nothing was changed) — the reference warns
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
        why = self.why
        if why is not None:
            why.fit = fit
            why.block = (va_start, va_end)
        if fit == FitType.LE_FIT_TYPE:
            va.va_start = nva_end
            propagate(va, None)
        elif fit == FitType.FL_FIT_TYPE:
            self.unlink_va_augment(va)
        elif fit == FitType.RE_FIT_TYPE:
            va.va_end = nva_start_addr
            propagate(va, None)
        elif fit == FitType.NE_FIT_TYPE:
            lva = VmapArea(va_start, nva_start_addr)
            va.va_start = nva_end
            propagate(va, None)
            self.insert_vmap_area_augment(lva, va)
        else:
            return -EINVAL  # the caller warns (va_alloc / __alloc_vmap_area)
        return 0

    # --- lookups ----------------------------------------------------------------------
    def pvm_find_va_enclose_addr(self, addr: int) -> VmapArea | None:
        """The free block with the highest start at or below ``addr``. O(log n)."""
        if _c_enclose is not None:
            try:
                return _c_enclose(self.root, addr)  # type: ignore[no-any-return]
            except OverflowError:  # a value past 64 bits: the reference below
                pass
        node = self.root.rb_node
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

    def overlapping(self, start: int, end: int) -> list[VmapArea]:
        """Free blocks that overlap ``[start, end)``, ascending. O(log n + k)."""
        return areas_overlapping(self.root, start, end)

    @property
    def largest(self) -> int:
        """``subtree_max_size`` of the root: the largest free block, anywhere. O(1)."""
        top = self.root.rb_node
        return int(top.subtree_max_size) if top is not None else 0

    # --- invariants -------------------------------------------------------------------
    def check(self) -> list[VmapArea]:
        """Verify the tree; return its blocks in address order.

        A valid red-black tree ordered by address, exact ``subtree_max_size`` values,
        the counter right, every node marked free and non-empty, no two blocks touching.
        """
        try:
            nfree = validate_rbtree(
                self.root,
                va_start_key,
                augmented=_subtree_key,
                compute=compute_subtree_max_size,
                name=repr,
            )
        except RBTreeError as e:
            raise InvariantError(f"free tree: {e}") from None
        if nfree != self.nr_free:
            raise InvariantError(f"free tree has {nfree} nodes, counter says {self.nr_free}")
        blocks: list[VmapArea] = []
        prev_end = None
        for va in rb_inorder(self.root):
            if va.state != VaState.FREE:
                raise InvariantError(f"{va!r} is in the free tree but marked otherwise")
            if va.va_start >= va.va_end:
                raise InvariantError(f"empty free area {va!r}")
            if prev_end is not None and prev_end == va.va_start:
                raise InvariantError(f"free areas not coalesced at {va.va_start:#x}")
            prev_end = va.va_end
            blocks.append(va)
        return blocks
