"""Placement policies: which free block a new vmap area is carved from.

A placement policy looks at the free tree (:class:`~pyvmalloc.vmap.freetree.FreeTree`)
and answers one question: for a request of ``size`` bytes aligned to ``align`` inside
``[vstart, vend)``, which free block, and which address in it? The mechanism
(:class:`~pyvmalloc.vmap.space.VmapSpace`) does everything else — checks the address
against ``vend``, clips the block, links the busy area, emits the tracepoint — so a
policy is a few dozen lines and cannot break the allocator's bookkeeping:
``VmapSpace.check()`` holds under any policy. A policy also brings its own self-check,
which ``check()`` runs after the mechanism's.

The protocol::

    class PlacementPolicy(Protocol):
        name: str
        def find(self, tree, size, align, vstart, vend) -> tuple[VmapArea, int] | None
        def check(self, tree, *, samples, rng, vstart) -> None

Policies are stateless (the state is the tree), so one instance can serve many
models. This module holds the kernel's policy, :class:`LowestMatch`; the 4.19 list walk
is :class:`pyvmalloc.vmap.list419.ListWalk`; a worked example of a new one is
:class:`pyvmalloc.policies.BestFit` (see ``docs/policy.md``).
"""

from __future__ import annotations

import random
from typing import ClassVar, Protocol, runtime_checkable

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.errors import InvariantError
from pyvmalloc.rbtree import rb_inorder
from pyvmalloc.vmap.area import VmapArea
from pyvmalloc.vmap.freetree import FreeTree

__all__ = [
    "LowestMatch",
    "PlacementPolicy",
    "find_vmap_lowest_linear_match",
    "find_vmap_lowest_match",
    "is_within_this_va",
]


@runtime_checkable
class PlacementPolicy(Protocol):
    """Where a new area goes. See the module docstring."""

    #: A short name, shown by ``compare`` and ``profiles``.
    name: ClassVar[str]

    def find(
        self, tree: FreeTree, size: int, align: int, vstart: int, vend: int
    ) -> tuple[VmapArea, int] | None:
        """The free block to carve from and the (aligned) start address, or None.

        The address must be ``align``-aligned, at or above ``vstart``, and
        ``[addr, addr + size)`` must lie inside the block; ``vend`` is checked by the
        mechanism (an address past it fails the request with ``-ERANGE``). Add the
        number of tree nodes examined to ``tree.stats.search_visits``; when
        ``tree.why`` is set (explaining), fill its ``search_length``.
        """
        ...

    def check(self, tree: FreeTree, *, samples: int, rng: random.Random, vstart: int) -> None:
        """The policy's own invariant, on ``samples`` random requests; raise
        :class:`~pyvmalloc.errors.InvariantError` naming the request that breaks it."""
        ...


def is_within_this_va(va: VmapArea, size: int, align: int, vstart: int, umax: int) -> bool:
    """``is_within_this_va``: does ``[ALIGN(max(start, vstart)), +size)`` fit in ``va``?"""
    s = va.va_start
    nva = ((s if s > vstart else vstart) + align - 1) & ~(align - 1) & umax
    end = nva + size
    return end <= umax and nva >= vstart and end <= va.va_end


def find_vmap_lowest_match(
    tree: FreeTree,
    size: int,
    align: int,
    vstart: int,
    adjust_search_size: bool,
    shift_vstart: bool,
) -> VmapArea | None:
    """``find_vmap_lowest_match``: the lowest free block that fits, or None. O(log n).

    The descent prefers the left subtree when it has a block of at least the search
    length ``L`` and lies above ``vstart``; otherwise it checks the node, then the
    right subtree; when stuck it rolls back to the first ancestor whose right subtree
    can hold ``L``. With ``shift_vstart`` (v5.16+) the roll-back moves ``vstart`` past
    that ancestor, so a searched subtree is never entered again.

    ``L`` is ``size + align - 1`` when ``adjust_search_size`` (the request could land
    anywhere in a block of that size), else ``size``: then a block of exactly ``L``
    that is badly aligned is found and rejected, and the search may miss a lower hole
    off its path — the shape of the tree decides.
    """
    if not shift_vstart and not adjust_search_size and align > 1:
        # Without the v5.16 vstart shift, an exact length with a large alignment
        # can roll back into the same right subtree forever; 5.4 never searches so.
        raise ValueError("a search without vstart shift needs L = size + align - 1")
    node = tree.root.rb_node
    length = size + align - 1 if adjust_search_size else size
    umax = tree.ulong_max
    mask = ~(align - 1) & umax
    visits = 0
    while node is not None:
        visits += 1
        left = node.rb_left
        if left is not None and left.subtree_max_size >= length and vstart < node.va_start:
            node = left
            continue
        # is_within_this_va(node), inlined
        s = node.va_start
        nva = ((s if s > vstart else vstart) + align - 1) & mask
        end = nva + size
        if end <= umax and nva >= vstart and end <= node.va_end:
            tree.stats.search_visits += visits
            return node  # type: ignore[no-any-return]
        right = node.rb_right
        if right is not None and right.subtree_max_size >= length:
            node = right
            continue
        # Roll back to the first ancestor that fits or whose right subtree may.
        while True:
            node = node.rb_parent
            if node is None:
                tree.stats.search_visits += visits
                return None
            visits += 1
            s = node.va_start
            nva = ((s if s > vstart else vstart) + align - 1) & mask
            end = nva + size
            if end <= umax and nva >= vstart and end <= node.va_end:
                tree.stats.search_visits += visits
                return node  # type: ignore[no-any-return]
            right = node.rb_right
            if right is not None and right.subtree_max_size >= length and vstart <= s:
                if shift_vstart:
                    vstart = s + 1
                node = right
                break
    tree.stats.search_visits += visits
    return None


#: The reference search, kept under its own name (differential tests, values past 64 bits).
py_find_vmap_lowest_match = find_vmap_lowest_match
if _speedups is not None:
    _speedups.init_lowest_match(py_find_vmap_lowest_match)
    find_vmap_lowest_match = _speedups.find_vmap_lowest_match


def find_vmap_lowest_linear_match(
    tree: FreeTree, size: int, align: int, vstart: int
) -> VmapArea | None:
    """``find_vmap_lowest_linear_match``: the first fitting block of the list. O(n)."""
    umax = tree.ulong_max
    for va in rb_inorder(tree.root):
        if is_within_this_va(va, size, align, vstart, umax):
            return va  # type: ignore[no-any-return]
    return None


class LowestMatch:
    """The kernel's placement since v5.2: the lowest free block that fits.

    The search rules are the profile's: ``adjust_search_size`` (v5.18: inflate the
    search length only for align > PAGE_SIZE on a non-exact range; before, always)
    and ``rollback_shifts_vstart`` (v5.16). Its self-check is the kernel's
    ``DEBUG_AUGMENT_LOWEST_MATCH_CHECK``: whenever the search length is exact, the
    tree search returns the same block as a linear scan of the free list.

    >>> from pyvmalloc import Kernel
    >>> k = Kernel("6.18", placement=LowestMatch())
    >>> hex(k.alloc_vmap_area(8192, 1, k.VMALLOC_START, k.VMALLOC_END).va_start)
    '0xffffc90000000000'
    """

    name: ClassVar[str] = "lowest-match"

    def __repr__(self) -> str:
        return "LowestMatch()"

    def __eq__(self, other: object) -> bool:
        return type(other) is LowestMatch

    def __hash__(self) -> int:
        return hash(LowestMatch)

    def find(
        self, tree: FreeTree, size: int, align: int, vstart: int, vend: int
    ) -> tuple[VmapArea, int] | None:
        profile = tree.profile
        if profile.adjust_search_size:
            adjust = not (align <= PAGE_SIZE or vend - vstart == size)
        else:
            adjust = True
        why = tree.why
        if why is not None:
            why.search_length = size + align - 1 if adjust else size
        va = find_vmap_lowest_match(
            tree, size, align, vstart, adjust, profile.rollback_shifts_vstart
        )
        if va is None:
            return None
        s = va.va_start
        return va, ((s if s > vstart else vstart) + align - 1) & ~(align - 1) & tree.ulong_max

    def check(self, tree: FreeTree, *, samples: int, rng: random.Random, vstart: int) -> None:
        top = tree.root.rb_node
        if top is None:
            return
        biggest = top.subtree_max_size
        shift = tree.profile.rollback_shifts_vstart
        visits = tree.stats.search_visits  # a check is not search cost
        for _ in range(samples):
            pages = rng.randint(1, max(1, min(biggest // PAGE_SIZE, 1024)))
            size = pages * PAGE_SIZE
            # 6.x checks with the request's alignment (L = size); 5.4 with align 1.
            align = 1 << rng.randint(0, 22) if shift else 1
            v = vstart + rng.getrandbits(32)
            t = find_vmap_lowest_match(tree, size, align, v, False, shift)
            linear = find_vmap_lowest_linear_match(tree, size, align, v)
            if t is not linear:
                raise InvariantError(
                    f"not lowest: t: {t!r}, l: {linear!r}, v: {v:#x} "
                    f"(size {size:#x}, align {align:#x})"
                )
        tree.stats.search_visits = visits
