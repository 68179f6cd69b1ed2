"""Pool policies: what a vmap node recycles without searching the free tree.

Since v6.9 a purge does not give every lazily freed area back to the free tree: it
keeps small ones in per-node pools of exact sizes, and a later full-range request of
the same size from a CPU of that node takes one straight from its pool — no tree
search, no lock on the free tree. A pool policy decides four things:

* ``node_alloc(vn, size, align, vstart, vend, why)`` — serve a request from node
  ``vn``'s pools, or return None to fall back to the placement policy;
* ``populate(vn, va)`` — at purge, keep ``va`` in ``vn``'s pools (True) or let it be
  merged into the free tree (False);
* ``decay(vn, full)`` — at purge, which pooled areas go back to the free tree (the
  mechanism coalesces and merges them);
* ``push_head(vn, va)`` — put an area the caller just took back where it was;

plus ``check(vn)``, the policy's own invariant. The pools themselves are stored on the
node (``vn.pools``: class index -> deque, head at the left), so a policy holds no
state and one instance can serve many models.

:class:`NoPools` is every kernel before v6.9; :class:`NodePools` is v6.9+'s design.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from pyvmalloc.config import PAGE_SHIFT
from pyvmalloc.errors import InvariantError
from pyvmalloc.vmap.area import Decision, VaState, VmapArea, VmapNode

__all__ = ["NoPools", "NodePools", "PoolPolicy"]


@runtime_checkable
class PoolPolicy(Protocol):
    """What vmap nodes recycle. See the module docstring."""

    #: A short name, shown by ``compare`` and ``profiles``.
    name: ClassVar[str]

    def node_alloc(
        self, vn: VmapNode, size: int, align: int, vstart: int, vend: int, why: Decision | None
    ) -> VmapArea | None:
        """A pooled area for this request (unlinked, state DETACHED), or None.

        Called only for full-range requests (``VMALLOC_START``..``VMALLOC_END``) on a
        model with more than one vmap node. When ``why`` is given (explaining), set
        ``why.source = "pool"`` and ``node``/``pool_index`` on a hit.
        """
        ...

    def populate(self, vn: VmapNode, va: VmapArea) -> bool:
        """At purge: keep the lazily freed ``va`` in ``vn``'s pools (state POOL)?"""
        ...

    def decay(self, vn: VmapNode, full: bool) -> list[VmapArea]:
        """At purge: unlink (state DETACHED) and return the areas that leave the pools.

        ``full`` empties them (reclaim, shrinker); otherwise the policy's decay rule.
        """
        ...

    def push_head(self, vn: VmapNode, va: VmapArea) -> None:
        """Put back an area just taken by :meth:`node_alloc` (replays undo a choice)."""
        ...

    def check(self, vn: VmapNode) -> None:
        """The policy's invariant on one node's pools."""
        ...


class NoPools:
    """No pools: every freed area goes back to the free tree (kernels before v6.9)."""

    name: ClassVar[str] = "none"

    def __repr__(self) -> str:
        return "NoPools()"

    def __eq__(self, other: object) -> bool:
        return type(other) is NoPools

    def __hash__(self) -> int:
        return hash(NoPools)

    def node_alloc(
        self, vn: VmapNode, size: int, align: int, vstart: int, vend: int, why: Decision | None
    ) -> VmapArea | None:
        return None

    def populate(self, vn: VmapNode, va: VmapArea) -> bool:
        return False

    def decay(self, vn: VmapNode, full: bool) -> list[VmapArea]:
        return []

    def push_head(self, vn: VmapNode, va: VmapArea) -> None:
        raise InvariantError(f"{va!r}: there are no pools to put it back into")

    def check(self, vn: VmapNode) -> None:
        if any(vn.pools.values()):
            raise InvariantError(f"vmap node {vn.id} holds pooled areas without a pool policy")


@dataclass(frozen=True)
class NodePools:
    """v6.9+: per-node pools of exact sizes, refilled at purge, decayed by a quarter.

    * ``pool[i]`` holds areas of exactly ``i + 1`` pages (guard included), for
      ``i < max_va_size_pages`` (``MAX_VA_SIZE_PAGES``, 256);
    * a request takes the **head** of its class if it is aligned; a misaligned head is
      moved to the tail and the request falls back to the tree (the pool is never
      scanned further);
    * a purge first decays every class by ``len >> 2`` areas from the head (all of
      them for reclaim and the shrinker) — since v6.16 a class with fewer than 4
      areas keeps them all (``decay_keeps_small_classes``; before, ``0 - 1`` wrapped and
      emptied it) — then pushes the purged areas at the head of their class.

    >>> NodePools().class_of(5 * 4096)
    4
    """

    max_va_size_pages: int = 256
    decay_keeps_small_classes: bool = True

    name: ClassVar[str] = "node-pools"

    @staticmethod
    def class_of(size: int) -> int:
        """The pool index of an area of ``size`` bytes: ``size / PAGE_SIZE - 1``."""
        return (size - 1) >> PAGE_SHIFT

    def node_alloc(
        self, vn: VmapNode, size: int, align: int, vstart: int, vend: int, why: Decision | None
    ) -> VmapArea | None:
        """``node_alloc`` / ``node_pool_del_va``: the aligned head of the exact class."""
        idx = (size - 1) >> PAGE_SHIFT
        pool = vn.pools.get(idx)
        if not pool:
            return None
        va = pool[0]
        if va.va_start & (align - 1) == 0:
            if va.va_end - va.va_start != size or va.va_start < vstart or va.va_end > vend:
                raise InvariantError(f"node_pool_del_va: bad pooled area {va!r} for {size:#x}")
            pool.popleft()
            va.state = VaState.DETACHED
            if why is not None:
                why.source = "pool"
                why.node = vn.id
                why.pool_index = idx
            return va
        pool.rotate(-1)
        if why is not None:
            why.rotated = True
            why.node = vn.id
            why.pool_index = idx
        return None

    def populate(self, vn: VmapNode, va: VmapArea) -> bool:
        """``node_pool_add_va``: push at the head of its class, if it has one."""
        idx = (va.va_end - va.va_start - 1) >> PAGE_SHIFT
        if idx >= self.max_va_size_pages:
            return False
        pool = vn.pools.get(idx)
        if pool is None:
            pool = vn.pools[idx] = deque()
        pool.appendleft(va)  # list_add: at the head
        va.state = VaState.POOL
        return True

    def decay(self, vn: VmapNode, full: bool) -> list[VmapArea]:
        """``decay_va_pool_node``: ``len >> 2`` (or all) areas from each class's head."""
        decayed: list[VmapArea] = []
        for idx in sorted(vn.pools):
            pool = vn.pools[idx]
            if not pool:
                continue
            n = len(pool)
            if not full:
                if n < 4 and not self.decay_keeps_small_classes:
                    n = len(pool)  # the 6.9-6.15 underflow drained small classes
                else:
                    n >>= 2
            for _ in range(n):
                va = pool.popleft()
                va.state = VaState.DETACHED
                decayed.append(va)
        return decayed

    def push_head(self, vn: VmapNode, va: VmapArea) -> None:
        vn.pools.setdefault((va.va_end - va.va_start - 1) >> PAGE_SHIFT, deque()).appendleft(va)
        va.state = VaState.POOL

    def check(self, vn: VmapNode) -> None:
        for idx, pool in vn.pools.items():
            if idx >= self.max_va_size_pages and pool:
                raise InvariantError(f"vmap node {vn.id} has a pool[{idx}] past the classes")
            for va in pool:
                if (va.va_end - va.va_start - 1) >> PAGE_SHIFT != idx:
                    raise InvariantError(f"{va!r} is in pool class {idx} of node {vn.id}")
