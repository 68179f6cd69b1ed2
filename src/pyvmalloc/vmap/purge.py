"""Lazy freeing's second half: the purge (``__purge_vmap_area_lazy``) and the shrinker.

A freed vmap area is not reusable at once: its page-table entries may still be cached
in some CPU's TLB, so ``free_vmap_area_noflush`` only queues it. When the queued pages
pass ``lazy_max_pages()`` (``fls(num_online_cpus()) * 32 MiB``), one purge flushes the
TLB for the whole range they span and gives them all back. 5.4 purges synchronously in
the freeing call; 6.x from the ``drain_vmap_work`` work item.

A purge is two phases, as in the kernel, and the model keeps them apart so that a
replay can let other CPUs' events fall between them:

1. :meth:`LazyPurge.begin_purge` — per vmap node: decay its pools (the pool policy
   says which areas leave), detach its lazy list;
2. :meth:`LazyPurge.purge_next_node` / :meth:`LazyPurge.finish_purge` — node by node:
   offer each purged area to the node's pools (``populate``), merge the rest into the
   free tree (descending, as ``list_add`` reversed them), then the tracepoint.

This module is a mixin of :class:`pyvmalloc.vmap.space.VmapSpace`: it holds the purge's
code, the space holds the state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import PAGE_SHIFT, KernelProfile
from pyvmalloc.vmap.area import PendingPurge, VaState, VmapArea, VmapNode, VmapStats
from pyvmalloc.vmap.freetree import FreeTree
from pyvmalloc.vmap.pools import PoolPolicy
from pyvmalloc.vmap.tracepoints import PurgeVmapAreaLazy

if TYPE_CHECKING:
    from pyvmalloc.vmap.tracepoints import TraceEvent

__all__ = ["LazyPurge"]

#: ``_purge_vmap_node`` in one compiled call for the kernel's pool policies (None: the
#: call is not one it mirrors, nothing changed, the Python below runs).
_c_purge_vmap_node = _speedups.purge_vmap_node if _speedups is not None else None
#: The per-node part of ``begin_purge`` (split, decay, coalesce, merge, mark) in one
#: compiled call, on the same terms.
_c_begin_purge_nodes = _speedups.begin_purge_nodes if _speedups is not None else None
#: ``purge_next_node``'s filter of the batch, compiled (None: the comprehension).
_c_batch_without = _speedups.batch_without if _speedups is not None else None

#: Sort key ``va_start`` (the same order as ``va_start_key``, without a Python call).
_by_start = attrgetter("va_start")


class LazyPurge:
    """The purge half of the vmap allocator (mixed into ``VmapSpace``)."""

    # State the purge reads and writes; VmapSpace.__init__ sets all of it.
    profile: KernelProfile
    free: FreeTree
    pools: PoolPolicy
    nodes: list[VmapNode]
    vmap_zone_size: int
    stats: VmapStats
    lazy: deque[VmapArea]
    in_purge: list[PendingPurge]
    vmap_lazy_nr: int
    ulong_max: int
    last_flush: tuple[int, int] | None
    tp_purge: list[Callable[[TraceEvent], None]]
    _clock: Callable[[], float]
    _purge_fragmented: Callable[[int], object] | None
    #: What a purge moved into and out of the pools, for a caller that wants to know
    #: without walking every pool (a replay's beliefs): while a list, each area
    #: ``populate`` pooled is appended to ``pool_added`` and each area a decay took is
    #: appended to ``pool_decayed`` as ``(va_start, va_end, node)`` (its range before
    #: the decayed areas are coalesced). None: nothing is recorded.
    pool_added: list[VmapArea] | None = None
    pool_decayed: list[tuple[int, int, int]] | None = None

    def lazy_node_of(self, va: VmapArea) -> int:  # pragma: no cover - VmapSpace's
        raise NotImplementedError

    def decode_vn_id(self, flags: int) -> int:  # pragma: no cover - VmapSpace's
        raise NotImplementedError

    # --- entry points -----------------------------------------------------------------
    def drain_vmap_area_work(self) -> None:
        """``drain_vmap_area_work``: the 6.x worker behind the lazy threshold."""
        self._purge_vmap_area_lazy(self.ulong_max, 0, full_pool_decay=False)

    def purge_vmap_area_lazy(
        self, *, limit: int | None = None, full_pool_decay: bool = False
    ) -> bool:
        """Purge lazily freed areas now (what the drain worker or 5.4's purge does).

        ``limit`` purges just the ``limit`` oldest lazy areas: a real purge takes what
        was on the lazy lists when it started, and a trace's ``num_purged`` says how
        many that was. ``full_pool_decay`` is the reclaim purge's mode (pools emptied,
        none refilled). True if anything was purged.
        """
        return self._purge_vmap_area_lazy(
            self.ulong_max, 0, full_pool_decay=full_pool_decay, limit=limit
        )

    def reclaim_and_purge_vmap_areas(self, cpu: int = 0) -> bool:
        """The allocation-failure purge on ``cpu``: fragmented vmap blocks first, then
        a purge with full pool decay (``reclaim_and_purge_vmap_areas``, 6.x)."""
        if self._purge_fragmented is not None:
            self._purge_fragmented(cpu)
        return self._purge_vmap_area_lazy(self.ulong_max, 0, full_pool_decay=True)

    def _purge_vmap_area_lazy(
        self,
        start: int,
        end: int,
        *,
        full_pool_decay: bool = False,
        limit: int | None = None,
    ) -> bool:
        """``__purge_vmap_area_lazy(start, end, full_pool_decay)``: both phases."""
        pending = self.begin_purge(start, end, full_pool_decay=full_pool_decay, limit=limit)
        return self.finish_purge(pending)

    # --- phase 1 ----------------------------------------------------------------------
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
        if _c_begin_purge_nodes is not None and _c_begin_purge_nodes(
            self, pending, batch, full_pool_decay
        ):
            return pending
        per_node: list[list[VmapArea]] = [[] for _ in self.nodes]
        n = len(self.nodes)
        zone = self.vmap_zone_size
        for va in batch:
            # lazy_node_of(va), inlined: the allocating node, else the address's node
            vn_id = (va.flags >> 8) - 1
            if not 0 <= vn_id < n:
                vn_id = (va.va_start // zone) % n if n > 1 else 0
            per_node[vn_id].append(va)
        for vn in self.nodes:
            vn.nr_purged = 0
            self.decay_va_pool_node(vn, full_pool_decay)
            lst = per_node[vn.id]
            if lst:
                lst.sort(key=_by_start)
                if lst[0].va_start < pending.start:
                    pending.start = lst[0].va_start
                if lst[-1].va_end > pending.end:
                    pending.end = lst[-1].va_end
                pending.marked.append((vn, lst))
        return pending

    def decay_va_pool_node(self, vn: VmapNode, full_decay: bool) -> None:
        """``decay_va_pool_node``: the areas the pool policy lets go return to the tree.

        They are coalesced among themselves first (the kernel merges them into a
        private, non-augmented tree), then merged into the free tree ascending.
        """
        decayed = self.pools.decay(vn, full_decay)
        if not decayed:
            return
        log = self.pool_decayed
        if log is not None:
            node = vn.id
            log.extend([(va.va_start, va.va_end, node) for va in decayed])
        self.stats.decayed_areas += len(decayed)
        decayed.sort(key=_by_start)
        coalesced: list[VmapArea] = [decayed[0]]
        for va in decayed[1:]:
            last = coalesced[-1]
            if last.va_end == va.va_start:
                last.va_end = va.va_end
            else:
                coalesced.append(va)
        merge = self.free.merge_or_add_vmap_area_augment
        for va in coalesced:
            merge(va)

    # --- phase 2 ----------------------------------------------------------------------
    def purge_next_node(self, pending: PendingPurge) -> bool:
        """Second phase for the next marked node only (6.x); False when none is left.

        The kernel refills node 0's pools, then node 1's, ...; a replay lets other
        CPUs' allocations see a node's refill before the purge's event is written.
        """
        if not pending.marked:
            return False
        vn, lst = pending.marked.pop(0)
        rest = _c_batch_without(pending.batch, lst) if _c_batch_without is not None else None
        if rest is None:
            done = set(lst)  # areas hash by identity
            rest = [va for va in pending.batch if va not in done]
        pending.batch = rest
        self._purge_vmap_node(vn, lst, skip_populate=pending.full_pool_decay)
        pending.nr_purged += vn.nr_purged
        return True

    def finish_purge(self, pending: PendingPurge) -> bool:
        """Second phase: refill the pools, merge the rest, emit the tracepoint."""
        batch = pending.batch
        start, end = pending.start, pending.end
        self.in_purge.remove(pending)
        merge = self.free.merge_or_add_vmap_area_augment
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
            if _c_purge_vmap_node is None or not _c_purge_vmap_node(self, None, batch, True):
                for va in reversed(batch):
                    self.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
                    va.state = VaState.DETACHED
                    merge(va)
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
            event = PurgeVmapAreaLazy(
                start=start, end=end, npurged=nr_purged_areas, timestamp=self._clock()
            )
            for fn in self.tp_purge:
                fn(event)
        return nr_purged_areas > 0

    def _purge_vmap_node(
        self, vn: VmapNode, purge_list: list[VmapArea], skip_populate: bool
    ) -> None:
        """``purge_vmap_node``: refill this node's pools, merge the rest (descending)."""
        added = self.pool_added
        if _c_purge_vmap_node is not None and _c_purge_vmap_node(
            self, vn, purge_list, skip_populate
        ):
            if added is not None and not skip_populate:
                # the twin mirrors NodePools.populate, which marks what it pools
                pool = VaState.POOL
                added.extend([va for va in purge_list if va.state == pool])
            return
        local: list[VmapArea] = []
        nr_pages = 0
        populate = self.pools.populate
        n = len(self.nodes)
        detached = VaState.DETACHED
        for va in purge_list:
            nr_pages += (va.va_end - va.va_start) >> PAGE_SHIFT
            va.state = detached
            # Only areas tagged with their allocating node (decode_vn_id(flags) >= 0)
            # are offered to a pool.
            if not skip_populate and 0 <= (va.flags >> 8) - 1 < n and populate(vn, va):
                if added is not None:
                    added.append(va)
                continue
            local.append(va)
        vn.nr_purged += len(purge_list)
        self.vmap_lazy_nr -= nr_pages
        # list_add() onto the local list reverses it: merge in descending order.
        merge = self.free.merge_or_add_vmap_area_augment
        for va in reversed(local):
            merge(va)

    # --- the "vmap-node" shrinker ---------------------------------------------------------
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
