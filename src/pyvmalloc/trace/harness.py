"""The trace harness: one model driven by a kernel trace, for replay and what-if.

A replay (:mod:`pyvmalloc.trace.replay`) and a what-if (:mod:`pyvmalloc.report.whatif`)
both start a model from a ``/proc/vmallocinfo`` snapshot and feed it a trace's
``vmalloc:`` events. They differ only in what they do with each event — a replay
compares the model's address with the kernel's and adopts the kernel's, a what-if
keeps the model's own — so everything else lives here, once:

* building the model: with trace-driven purges (profiles with the tracepoints, 6.x)
  the model never purges on its own — the drain work it queues is never run, and an
  allocation that fails is not retried after a reclaim purge — because the trace says
  when the kernel purged;
* seeding from a snapshot, and the snapshot markers (which events the snapshot
  already reflects);
* the surgery a replay needs to adopt the kernel's decisions: claiming a range out of
  whatever holds it, undoing the model's own choice, re-linking an area;
* the event loop, :meth:`TraceHarness.drive`, which hands each event to a
  :class:`TraceDriver`.

The allocator itself has no replay-only switches: the harness works through its
public mechanism API (``alloc_vmap_area_once``, ``insert_vmap_area``,
``unlink_vmap_area``, the free tree's ``va_clip``, the purge phases).
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import EBUSY, PAGE_SHIFT, KernelProfile, Machine, get_profile
from pyvmalloc.errors import InputError, InvariantError
from pyvmalloc.kernel import Kernel
from pyvmalloc.trace.events import (
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    TraceEvent,
)
from pyvmalloc.trace.kstate import KState
from pyvmalloc.trace.parse import TraceParseResult
from pyvmalloc.trace.snapshot import VmallocEntry, VmallocInfo, infer_lazy_nodes
from pyvmalloc.vmalloc import (
    VM_ALLOC,
    VM_DMA_COHERENT,
    VM_IOREMAP,
    VM_MAP,
    VM_SPARSE,
    VM_USERMAP,
    VmStruct,
)
from pyvmalloc.vmap.area import (
    VMAP_BLOCK,
    VMAP_RAM,
    Decision,
    PendingPurge,
    VaState,
    VmapArea,
    areas_overlapping,
)
from pyvmalloc.vmap.list419 import ListVmapSpace
from pyvmalloc.vmap.placement import PlacementPolicy
from pyvmalloc.vmap.pools import PoolPolicy
from pyvmalloc.vmap.space import VmapSpace

#: The compiled twin of :meth:`TraceHarness.seed_busy`'s usual case (None: the reference).
_c_seed_busy: Callable[[VmapSpace, int, int, int], VmapArea | None] | None = (
    _speedups.seed_busy if _speedups is not None else None
)
#: The compiled :meth:`TraceHarness.undo_alloc` of a tree allocation (_speedups.c,
#: "replay divergence"; None: the reference).
_c_undo_alloc: Callable[[VmapSpace, VmapArea], bool | None] | None = getattr(
    _speedups, "undo_alloc", None
)

#: claim_range's scans, compiled (_speedups.c, replay batch section): the areas of an
#: iterable that overlap a range, and the pooled areas of every node that do (with their
#: pool); None when they decline (the comprehensions below run).
_c_overlapping: Callable[[Any, int, int], list[VmapArea] | None] | None = getattr(
    _speedups, "overlapping", None
)
_c_pooled_overlapping: Callable[[Any, int, int], list[tuple[Any, VmapArea]] | None] | None = (
    getattr(_speedups, "pooled_overlapping", None)
)

__all__ = [
    "VM_FLAG_WORDS",
    "Fragmentation",
    "KStateSeed",
    "SnapshotEvents",
    "TraceDriver",
    "TraceHarness",
    "events_after_snapshot",
    "fragmentation",
    "vm_struct_of",
]

#: The vmallocinfo flag words and the vm_struct flags they print.
VM_FLAG_WORDS: dict[str, int] = {
    "ioremap": VM_IOREMAP,
    "sparse": VM_SPARSE,
    "vmalloc": VM_ALLOC,
    "vmap": VM_MAP,
    "user": VM_USERMAP,
    "dma-coherent": VM_DMA_COHERENT,
}


def vm_struct_of(e: VmallocEntry) -> VmStruct:
    """The ``vm_struct`` a snapshot line was printed from (its pages are not modelled:
    it keeps the ``pages=``, ``vpages`` and ``N<node>=`` it showed)."""
    flags = 0
    for word in e.flags:
        flags |= VM_FLAG_WORDS.get(word, 0)
    caller = e.caller
    if caller is not None and e.module is not None:
        caller = f"{caller} [{e.module}]"
    return VmStruct(
        addr=e.start,
        size=e.size,
        flags=flags,
        caller=caller,
        nr_pages=e.pages,
        phys_addr=e.phys or 0,
        vpages=e.vpages,
        numa_pages=tuple(sorted(e.numa.items())),
    )


@dataclass(frozen=True)
class Fragmentation:
    """Free space of the vmalloc range at one moment."""

    free_bytes: int
    largest_free: int
    free_blocks: int
    busy_bytes: int = 0
    lazy_bytes: int = 0

    @property
    def external(self) -> float:
        """External fragmentation: ``1 - largest free block / all free space``."""
        return 1 - self.largest_free / self.free_bytes if self.free_bytes else 0.0


def fragmentation(space: VmapSpace) -> Fragmentation:
    """Measure the free space of ``space``'s vmalloc range (pools count as used)."""
    sizes = space.range_sizes(space.free_areas())
    busy = sum(space.range_sizes(space.busy_areas()))
    lazy = sum(va.va_end - va.va_start for va in space.lazy)
    return Fragmentation(sum(sizes), max(sizes, default=0), len(sizes), busy, lazy)


class TraceDriver(Protocol):
    """What a harness user does with each event (see :meth:`TraceHarness.drive`)."""

    def prepare(self, events: Sequence[TraceEvent]) -> None:
        """Called once with all the events, before the first (look-ahead)."""

    def before(self, index: int, ev: TraceEvent) -> None:
        """Called before each event is applied."""

    def alloc(self, ev: AllocVmapArea) -> None: ...

    def free(self, ev: FreeVmapAreaNoflush) -> None: ...

    def purge(self, ev: PurgeVmapAreaLazy) -> None: ...


#: ``observer(index, event, harness)``: called after each event is applied.
Observer = Callable[[int, TraceEvent, "TraceHarness"], None]


@dataclass
class KStateSeed:
    """What :meth:`TraceHarness.seed_kstate` put in the model."""

    busy: int = 0
    lazy: int = 0
    pooled: int = 0
    free: int = 0
    #: Busy areas whose allocating node the readout did not give (a guess).
    guessed: list[VmapArea] = field(default_factory=list)


@dataclass
class SnapshotEvents:
    """The events a snapshot does not reflect yet, and what was left out."""

    events: list[TraceEvent]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def events_after_snapshot(parsed: TraceParseResult, info: VmallocInfo | None) -> SnapshotEvents:
    """The events the snapshot does not reflect yet.

    A capture marks the snapshot in the trace (``snapshot-begin``/``snapshot-end``).
    Without markers, the snapshot itself tells: an allocation whose exact range is
    busy in the snapshot, with no free of that address before it in the trace, was
    made before the snapshot was read; replay starts after the last such event.
    """
    end = parsed.marker("snapshot-end")
    begin = parsed.marker("snapshot-begin")
    events = parsed.events
    if end is None:
        if info is None:
            return SnapshotEvents(list(events))
        busy = {(e.start, e.end) for e in info.busy}
        freed: set[int] = set()
        sync = 0
        for i, ev in enumerate(events):
            if isinstance(ev, FreeVmapAreaNoflush):
                freed.add(ev.va_start)
            elif (
                isinstance(ev, AllocVmapArea)
                and not ev.failed
                and (ev.addr, ev.addr + ev.size) in busy
                and ev.addr not in freed
            ):
                sync = i + 1
        out = SnapshotEvents(list(events[sync:]), sync)
        if sync:
            out.notes.append(
                f"no snapshot markers: the first {sync} events are already reflected in "
                "the snapshot (their areas are busy in it) and were skipped"
            )
        return out
    keep = [e for e in events if e.line > end.line]
    out = SnapshotEvents(keep, len(events) - len(keep))
    if begin is not None:
        window = [e for e in events if begin.line < e.line < end.line]
        if window:
            out.notes.append(
                f"{len(window)} events fell between the snapshot markers; they may or "
                "may not be reflected in the snapshot and were skipped"
            )
    return out


class TraceHarness:
    """One model kernel, driven by a trace.

    ``trace_driven`` (default: the profile has the ``vmalloc`` tracepoints) means the
    trace's purge events decide when purges run; otherwise the model purges on its
    own lazy threshold, which is what comparing an older profile is about.
    """

    def __init__(
        self,
        profile: str | KernelProfile = "6.18",
        *,
        cpus: int = 2,
        machine: Machine | None = None,
        placement: str | PlacementPolicy | type | None = None,
        pools: str | PoolPolicy | type | None = None,
        trace_driven: bool | None = None,
    ) -> None:
        prof = get_profile(profile)
        self.trace_driven = prof.has_tracepoints if trace_driven is None else trace_driven
        self.kernel = Kernel(
            prof,
            cpus=cpus,
            # A capture of a bigger machine than CONFIG_NR_CPUS=256 had at least as many.
            nr_cpus=max(256, cpus),
            machine=machine,
            deferred_work="manual" if self.trace_driven else "auto",
            placement=placement,
            pools=pools,
        )
        self.profile = prof
        self.space = self.kernel.vmap_space
        self.machine = self.kernel.machine
        self.cpus = self.machine.cpus_online
        #: Events of the current :meth:`drive` (observers pace themselves by it).
        self.n_events = 0

    # --- seeding ----------------------------------------------------------------------
    def seed_snapshot(self, info: VmallocInfo) -> tuple[int, int]:
        """Busy and lazily freed areas where the snapshot has them; return the counts.

        A busy area in the vmalloc range was tagged by the kernel with the node of
        the CPU that allocated it, which the snapshot does not show: the model
        guesses the address-zone node. Lazy areas go to the node lists inferred from
        the snapshot's per-node ascending runs.
        """
        space = self.space
        n = space.nr_vmap_nodes
        vs, ve = space.vmalloc_start, space.vmalloc_end
        block = self.machine.vmap_block_size
        for e in info.busy:
            flags = 0
            if e.kind == "vm_map_ram":
                flags = VMAP_RAM | (VMAP_BLOCK if e.size == block else 0)
            if n > 1 and vs <= e.start and e.end <= ve:
                flags |= space.encode_vn_id(space.addr_to_node_id(e.start))
            va = self.seed_busy(e.start, e.end, flags=flags)
            if e.kind == "vm":
                va.vm = vm_struct_of(e)
        lazy = info.unpurged
        if lazy:
            nodes = infer_lazy_nodes(info, n) if n > 1 else [0] * len(lazy)
            for e, node in zip(lazy, nodes, strict=True):
                self.seed_lazy(e.start, e.end, node)
        return len(info.busy), len(lazy)

    def seed_kstate(self, ks: KState, info: VmallocInfo | None) -> KStateSeed:
        """Seed a fresh model from the kernel's own state (``kstate.json``).

        Busy areas get the flags the kernel gave them (``va->flags`` as read: the
        allocating CPU's node, ``encode_vn_id``, and VMAP_RAM/VMAP_BLOCK) when the
        readout has them, else the snapshot's guess (returned in ``guessed``); the
        flags decide, as in 6.18's ``free_vmap_area_noflush`` and ``purge_vmap_node``,
        whose lazy list a freed area joins and whose pool takes it. A busy area takes
        the ``vm_struct`` of the snapshot line with its range. Lazy areas go on their
        node's list in list order, pools keep their order, and the free tree takes
        exactly the kernel's shape and colours.

        Everything is checked before the model is touched: a readout of another
        machine (vmap nodes, or flags naming a node it does not have), a busy area off
        its address's node, or address space in
        none of the structures (an area in a purge in flight) is an
        :class:`InputError` and leaves the model as it was. The model must be fresh:
        ``vmap_init_free_space`` left one block ``[1, ULONG_MAX)`` (x86-64 has no early
        ``vmlist`` areas), which the kernel's first and last free nodes replace.
        """
        space = self.space
        if isinstance(space, ListVmapSpace):
            raise InputError("4.19 keeps no free tree to seed", path=ks.name)
        n = space.nr_vmap_nodes
        if ks.nr_vmap_nodes != n:
            raise InputError(
                f"read from a kernel with {ks.nr_vmap_nodes} vmap nodes; this model has {n}",
                path=ks.name,
            )
        fresh = list(space.free)
        if (
            space.nr_busy
            or space.lazy
            or len(fresh) != 1
            or any(vn.pool_len() for vn in space.nodes)
        ):
            raise InvariantError("seed_kstate: the model is not fresh")
        if (fresh[0].va_start, fresh[0].va_end) != (1, space.ulong_max):
            raise InvariantError(f"seed_kstate: the model starts with {fresh[0]!r}")
        pieces = [(fn.va_start, fn.va_end) for fn in ks.nodes]
        for vn in ks.vmap_nodes:
            for what, listed in (("busy", vn.busy), ("lazy", vn.lazy)):
                for j, (_s, _e, f) in enumerate(listed):
                    # encode_vn_id stores node + 1 from bit 8 (0: no node); a node this
                    # machine does not have cannot be the allocating node.
                    if f is not None and f >> 8 > n:
                        raise InputError(
                            f"vmap_nodes[{vn.id}].{what}[{j}][2] (flags): {f:#x} names vmap "
                            f"node {(f >> 8) - 1}; this model has {n} (0..{n - 1})",
                            path=ks.name,
                        )
            for s, e, _f in vn.busy:
                if n > 1 and space.addr_to_node_id(s) != vn.id:
                    raise InputError(
                        f"vmap_nodes[{vn.id}]: busy {s:#x}-{e:#x} belongs to node "
                        f"{space.addr_to_node_id(s)} (addr_to_node)",
                        path=ks.name,
                    )
                pieces.append((s, e))
            for s, e, f in vn.lazy:
                probe = VmapArea(s, e)
                probe.flags = f if f is not None else 0
                if n > 1 and f is not None and space.lazy_node_of(probe) != vn.id:
                    raise InputError(
                        f"vmap_nodes[{vn.id}]: lazy {s:#x}-{e:#x} has flags {f:#x}, which "
                        f"send it to node {space.lazy_node_of(probe)}'s list",
                        path=ks.name,
                    )
                pieces.append((s, e))
            pieces += [a for p in vn.pools for a in p.areas]
        pieces.sort()
        pos = 1
        for s, e in pieces:
            if s != pos:
                raise InputError(
                    f"{pos:#x}-{s:#x} is in none of the free tree, busy, lazy or pooled "
                    "areas (in a purge when it was read?)",
                    path=ks.name,
                )
            pos = e
        if pos != space.ulong_max:
            raise InputError(f"the address space ends at {pos:#x}, not ULONG_MAX", path=ks.name)
        # The checks passed: build.
        areas = space.free.seed_shape(
            [(fn.va_start, fn.va_end) for fn in ks.nodes],
            ks.root,
            [(fn.left, fn.right) for fn in ks.nodes],
            [fn.black for fn in ks.nodes],
        )
        for va, fn in zip(areas, ks.nodes, strict=True):
            if va.subtree_max_size != fn.subtree_max_size:  # parse_kstate checked it too
                raise InvariantError(f"subtree_max_size of {va!r} differs from the readout")
        lines = {(e.start, e.end): e for e in info.busy} if info is not None else {}
        block = self.machine.vmap_block_size
        out = KStateSeed(free=len(areas))
        for vn in ks.vmap_nodes:
            for s, e, f in vn.busy:
                line = lines.get((s, e))
                va = VmapArea(s, e)
                if f is not None:
                    va.flags = f
                else:
                    if line is not None and line.kind == "vm_map_ram":
                        va.flags = VMAP_RAM | (VMAP_BLOCK if e - s == block else 0)
                    if n > 1 and space.vmalloc_start <= s and e <= space.vmalloc_end:
                        va.flags |= space.encode_vn_id(vn.id)
                        out.guessed.append(va)
                space.insert_vmap_area(va)
                if line is not None and line.kind == "vm":
                    va.vm = vm_struct_of(line)
                out.busy += 1
            for s, e, f in vn.lazy:
                va = VmapArea(s, e)
                if f is not None:
                    va.flags = f
                elif n > 1 and (
                    space.vmalloc_start <= s < space.vmalloc_end
                    or space.addr_to_node_id(s) != vn.id
                ):
                    # Only a tagged area sits on a list other than its address's node's
                    # (free_vmap_area_noflush); outside the vmalloc range, an area on its
                    # address's list was a range-restricted request: untagged, not pooled.
                    va.flags = space.encode_vn_id(vn.id)
                va.state = VaState.LAZY
                space.lazy.append(va)
                space.vmap_lazy_nr += (e - s) >> PAGE_SHIFT
                out.lazy += 1
            for p in vn.pools:
                pool: deque[VmapArea] = deque()
                for s, e in p.areas:
                    va = VmapArea(s, e)
                    va.state = VaState.POOL
                    pool.append(va)
                space.nodes[vn.id].pools[p.pages - 1] = pool
                out.pooled += len(pool)
        space.check()
        return out

    def seed_busy(self, start: int, end: int, *, flags: int = 0) -> VmapArea:
        """Make ``[start, end)`` a busy area (snapshot import or an adopted address)."""
        return self._busy_at(start, end, flags)[0]

    def _busy_at(self, start: int, end: int, flags: int) -> tuple[VmapArea, list[str]]:
        """:meth:`claim_range`, then a busy area there with ``flags``; the claim's notes."""
        if _c_seed_busy is not None:  # inside one free block (the usual case): one call
            va = _c_seed_busy(self.space, start, end, flags)
            if va is not None:
                return va, []
        notes = self.claim_range(start, end)
        va = VmapArea(start, end)
        va.flags = flags
        self.space.insert_vmap_area(va)
        return va, notes

    def seed_lazy(self, start: int, end: int, node_id: int) -> VmapArea:
        """Make ``[start, end)`` a lazily freed area waiting on ``node_id``'s list."""
        space = self.space
        self.claim_range(start, end)
        va = VmapArea(start, end)
        if isinstance(space, ListVmapSpace):
            space.insert_vmap_area(va)  # 4.19: lazy areas stay in the busy tree
            space.nr_busy -= 1
        elif space.nr_vmap_nodes > 1:
            va.flags = space.encode_vn_id(node_id)
        va.state = VaState.LAZY
        space.lazy.append(va)
        space.vmap_lazy_nr += (end - start) >> PAGE_SHIFT
        return va

    # --- adopting the kernel's decisions ---------------------------------------------
    def claim_range(self, start: int, end: int) -> list[str]:
        """Take ``[start, end)`` out of whatever holds it, leaving it unowned.

        A pooled area of exactly that range is simply unlinked; otherwise every busy,
        lazy, purging or pooled area that overlaps is released to the free tree first
        (each is a divergence the caller reports), then the range is clipped out of
        its free block. Returns notes on what had to be released.
        """
        space = self.space
        if isinstance(space, ListVmapSpace):
            return self._claim_range_list(space, start, end)
        free = space.free
        notes: list[str] = []
        # Fast path (every snapshot area, most adoptions): inside one free block.
        block = free.pvm_find_va_enclose_addr(start)
        if block is not None and block.va_start <= start and end <= block.va_end:
            if free.va_clip(block, start, end - start):
                raise InvariantError(f"cannot clip {start:#x}-{end:#x}")
            return notes
        # A pooled area of exactly that range is in its size's class (VmapNode.pools[i]
        # holds areas of i + 1 pages).
        cls = (end - start - 1) >> PAGE_SHIFT
        scan = _c_overlapping
        for vn in space.nodes:
            pool = vn.pools.get(cls, ())
            hits = scan(pool, start, end) if scan is not None and pool else None
            for va in pool if hits is None else hits:
                if va.va_start == start and va.va_end == end:
                    vn.pools[cls].remove(va)
                    va.state = VaState.DETACHED
                    return notes
        released: list[VmapArea] = []
        for vn in space.nodes:
            for va in areas_overlapping(vn.busy, start, end):
                space.unlink_vmap_area(va, vn.id)
                notes.append(f"model still had busy {va.va_start:#x}-{va.va_end:#x}")
                released.append(va)
        lazy_hits = scan(space.lazy, start, end) if scan is not None else None
        if lazy_hits is None:
            lazy_hits = [va for va in space.lazy if va.va_start < end and start < va.va_end]
        if lazy_hits:
            keep: deque[VmapArea] = deque()
            for va in space.lazy:
                if va.va_start < end and start < va.va_end:
                    space.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
                    va.state = VaState.DETACHED
                    notes.append(f"model still had lazy {va.va_start:#x}-{va.va_end:#x}")
                    released.append(va)
                else:
                    keep.append(va)
            space.lazy = keep
        for pending in space.in_purge:
            hit = scan(pending.batch, start, end) if scan is not None else None
            if hit is None:
                hit = [va for va in pending.batch if va.va_start < end and start < va.va_end]
            for va in hit:
                pending.batch.remove(va)
                for _vn, lst in pending.marked:
                    if va in lst:
                        lst.remove(va)
                space.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
                va.state = VaState.DETACHED
                notes.append(f"model was purging {va.va_start:#x}-{va.va_end:#x}")
                released.append(va)
        pooled = (
            _c_pooled_overlapping(space.nodes, start, end)
            if _c_pooled_overlapping is not None
            else None
        )
        if pooled is None:
            pooled = [
                (pool, va)
                for vn in space.nodes
                for pool in vn.pools.values()
                for va in pool
                if va.va_start < end and start < va.va_end
            ]
        for pool, va in pooled:
            pool.remove(va)
            va.state = VaState.DETACHED
            notes.append(f"model had pooled {va.va_start:#x}-{va.va_end:#x}")
            released.append(va)
        for va in released:
            va.vm = None
            free.merge_or_add_vmap_area_augment(va)
        blocks = free.overlapping(start, end)
        if len(blocks) != 1 or blocks[0].va_start > start or blocks[0].va_end < end:
            raise InvariantError(f"cannot claim {start:#x}-{end:#x}: not one free block")
        if free.va_clip(blocks[0], start, end - start):
            raise InvariantError(f"cannot clip {start:#x}-{end:#x}")
        return notes

    @staticmethod
    def _claim_range_list(space: ListVmapSpace, start: int, end: int) -> list[str]:
        """4.19: erase whatever overlaps (there is no free tree to clip)."""
        notes: list[str] = []
        hits = space.tree_overlapping(start, end)
        lazy_hits = [va for va in hits if va.state == VaState.LAZY]
        if lazy_hits:
            drop = set(map(id, lazy_hits))
            space.lazy = deque(va for va in space.lazy if id(va) not in drop)
        for va in hits:
            kind = VaState.NAMES[va.state]
            if va.state == VaState.LAZY:
                space.vmap_lazy_nr -= (va.va_end - va.va_start) >> PAGE_SHIFT
            notes.append(f"model still had {kind} {va.va_start:#x}-{va.va_end:#x}")
            space.unlink_vmap_area(va)
            va.vm = None
        return notes

    def adopt(self, ev: AllocVmapArea, cpu: int) -> list[str]:
        """Give the kernel's address to a new busy area, as the kernel would tag it."""
        return self.adopt_area(ev.addr, ev.size, ev.vstart, ev.vend, cpu)[1]

    def adopt_area(
        self, addr: int, size: int, vstart: int, vend: int, cpu: int
    ) -> tuple[VmapArea, list[str]]:
        """:meth:`adopt` at ``addr`` for a request of ``size`` in ``[vstart, vend)``;
        return the new busy area and the notes of :meth:`claim_range`."""
        space = self.space
        flags = 0
        if space.nr_vmap_nodes > 1 and (
            vstart == space.vmalloc_start and vend == space.vmalloc_end
        ):
            flags = space.encode_vn_id(cpu % space.nr_vmap_nodes)
        va, notes = self._busy_at(addr, addr + size, flags)
        space.stats.allocs += 1
        return va, notes

    def undo_alloc(self, va: VmapArea, from_pool: bool, cpu: int) -> None:
        """Give back an allocation the replay rejects: to its pool head, or the tree."""
        space = self.space
        if isinstance(space, ListVmapSpace):
            space.unlink_vmap_area(va)  # the cache moves as on a free
            va.vm = None
            space.stats.allocs -= 1
            return
        if not from_pool and _c_undo_alloc is not None:  # the lines below, compiled
            done = _c_undo_alloc(space, va)
            if done is not None:
                if not done:
                    raise InvariantError(f"{va!r} is not the busy area at its start")
                return
        # Busy areas are disjoint: the one at va's start is va (one compiled call).
        if space.find_unlink_vmap_area(va.va_start) is not va:
            raise InvariantError(f"{va!r} is not the busy area at its start")
        va.vm = None
        if from_pool:
            space.pools.push_head(space.nodes[cpu % space.nr_vmap_nodes], va)
            space.stats.pool_hits -= 1
        else:
            space.free.merge_or_add_vmap_area_augment(va)
        space.stats.allocs -= 1

    # --- events -----------------------------------------------------------------------
    def alloc(self, size: int, align: int, vstart: int, vend: int, cpu: int) -> VmapArea | int:
        """The model's ``alloc_vmap_area`` for a traced request (no warning on failure).

        Trace-driven: one attempt — the kernel's retry after its reclaim purge is a
        separate event in the trace.
        """
        space = self.space
        if not self.trace_driven:
            return space.alloc_vmap_area(size, align, vstart, vend, cpu=cpu, gfp_nowarn=True)
        va = space.alloc_vmap_area_once(size, align, vstart, vend, cpu)
        if isinstance(va, int):
            space.stats.alloc_failures += 1
            if space.explain:
                space.last_decision = Decision("fail", error=EBUSY)
        return va

    def free(self, va_start: int, cpu: int) -> bool:
        """Lazily free the busy area that starts at ``va_start``; False if none does."""
        space = self.space
        va = space.find_unlink_vmap_area(va_start)
        if va is None or va.va_start != va_start:
            if va is not None:  # an interior address: put it back, it is not this area
                space.insert_vmap_area(va)
            return False
        space.free_vmap_area_noflush(va, cpu=cpu)
        return True

    def begin_purge(self, limit: int) -> PendingPurge:
        """A purge's first phase, taking the ``limit`` oldest lazy areas."""
        return self.space.begin_purge(limit=limit)

    def purge(self, limit: int | None, full: bool) -> None:
        """A whole purge of the ``limit`` oldest lazy areas (``full``: reclaim's)."""
        self.space.purge_vmap_area_lazy(limit=limit, full_pool_decay=full)

    def drive(
        self,
        driver: TraceDriver,
        events: Sequence[TraceEvent],
        *,
        observer: Observer | None = None,
        batch: Callable[[list[TraceEvent], int], int] | None = None,
    ) -> None:
        """Apply ``events`` in order through ``driver``; ``observer`` sees each result.

        ``n_events`` holds the number of events while they are driven. The model's
        areas live for the whole trace: they are kept out of the garbage collector's
        generations meanwhile (``gc.freeze``), so that its collections, triggered by
        the short-lived objects of each event, do not walk the whole model each time.

        ``batch(events, i)`` (ignored with an observer) applies the events from ``i``
        on exactly as ``driver`` would, as long as it can, and returns the index of the
        first one it leaves to ``driver``: a compiled twin of this loop for the common
        events (see :meth:`pyvmalloc.trace.replay.Replayer.run`).
        """
        if observer is not None:
            batch = None
        if batch is not None and not isinstance(events, list):
            events = list(events)
        self.n_events = len(events)
        driver.prepare(events)
        # One handler per event class (the parser's exact classes; a subclass takes
        # the isinstance route below).
        handlers: dict[type, Callable[[Any], None]] = {
            AllocVmapArea: driver.alloc,
            FreeVmapAreaNoflush: driver.free,
            PurgeVmapAreaLazy: driver.purge,
        }
        before = driver.before
        freeze = gc.get_freeze_count() == 0  # never unfreeze what a caller froze
        if freeze:
            gc.freeze()
        try:
            i, n = 0, len(events)
            while i < n:
                if batch is not None:
                    i = batch(events, i)  # type: ignore[arg-type]  # a list, see above
                    if i >= n:
                        break
                ev = events[i]
                before(i, ev)
                handler = handlers.get(ev.__class__)
                if handler is not None:
                    handler(ev)
                elif isinstance(ev, AllocVmapArea):
                    driver.alloc(ev)
                elif isinstance(ev, FreeVmapAreaNoflush):
                    driver.free(ev)
                elif isinstance(ev, PurgeVmapAreaLazy):
                    driver.purge(ev)
                if observer is not None:
                    observer(i, ev, self)
                i += 1
        finally:
            if freeze:
                gc.unfreeze()
