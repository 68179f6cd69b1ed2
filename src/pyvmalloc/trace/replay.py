"""Replay a real kernel's vmalloc trace through the model and compare every address.

A replay starts a model from a ``/proc/vmallocinfo`` snapshot — busy areas where the
kernel had them, lazily freed areas on the node lists the snapshot shows — and applies
the trace's events in order:

* ``alloc_vmap_area``: the model allocates with the event's size, alignment, range and
  CPU, and its address is compared with the kernel's. After a mismatch the model adopts
  the kernel's address (its own choice is undone), so one divergence does not poison
  the rest.
* ``free_vmap_area_noflush``: the area at that address is freed lazily; the model's
  ``vmap_lazy_nr`` is compared with the event's ``nr_lazy``.
* ``purge_vmap_area_lazy``: the purge runs here, taking the ``num_purged`` oldest lazy
  areas. With trace-driven purges the model never purges on its own (profiles that have
  the tracepoints, i.e. 6.18); older profiles follow their own lazy threshold instead,
  which is the point of comparing them.

What a replay cannot know is listed in ``docs/replay.md``: pool contents at snapshot
time (invisible in vmallocinfo unless the capture dropped caches first), the allocating
CPU of areas that were busy before the snapshot, and the free tree's shape (which only
matters for alignments above PAGE_SIZE) — unless the capture read them from the kernel
(``kstate.json``, :mod:`pyvmalloc.trace.kstate`): then the model starts from those.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import os
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import ENOENT, ERANGE, PAGE_SHIFT, PAGE_SIZE, format_size
from pyvmalloc.rbtree import rb_next
from pyvmalloc.trace.beliefs import (
    EXACT_SCAN_BLOCKS,
    HIDDEN,
    HIDDEN_SCAN_BLOCKS,
    MAX_CLASS,
    RACE,
    RULE,
    Beliefs,
    Cause,
    next_hidden_area,
    next_hidden_head,
    pool_class,
)
from pyvmalloc.trace.capturedir import load_capture_dir, nr_cpus, read_meta
from pyvmalloc.trace.events import (
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    TraceEvent,
)
from pyvmalloc.trace.harness import Observer, TraceHarness, events_after_snapshot
from pyvmalloc.trace.kstate import KState, compare_kstate, kstate_of
from pyvmalloc.trace.parse import TraceParseResult, parse_trace
from pyvmalloc.trace.snapshot import VmallocInfo, lazy_runs, parse_vmallocinfo
from pyvmalloc.vmap.area import Decision, FitType, PendingPurge, VaState, VmapArea
from pyvmalloc.vmap.placement import find_vmap_lowest_match
from pyvmalloc.vmap.space import VmapSpace

if TYPE_CHECKING:
    from pyvmalloc.kernel import Kernel

#: The compiled loop for the common events (see :meth:`Replayer.run`); None: the
#: reference only.
_c_replay_run: Callable[[Any, list[TraceEvent], int, int], int] | None = (
    _speedups.replay_run if _speedups is not None else None
)
_c_alloc_index: Callable[[list[TraceEvent], type], dict[int, list[int]]] | None = getattr(
    _speedups, "alloc_index", None
)
#: The compiled scans of the divergence path over a packed copy of the events
#: (_speedups.c, "replay divergence"): each finds what its Python loop here finds.
_rd: Any = _speedups if hasattr(_speedups, "event_table") else None
#: The compiled twin of :meth:`Replayer._adopt` (None when the replay is not one it
#: mirrors: the method below runs).
_c_adopt: Callable[[Any, AllocVmapArea, int, int], VmapArea | None] | None = getattr(
    _speedups, "replay_adopt", None
)

#: Cause keys of facts a kstate.json readout holds (tree shape, pools at snapshot time).
KSTATE_FACTS = ("shape", "snapshot-", "pooled-node")
#: Consecutive frees whose nr_lazy must differ from the model's to count as a drift.
DRIFT_RUN = 8
#: Allocations this close to a purge's event cannot be ordered against its refill
#: (the trace clock is per CPU; a purge's nodes finish at unknown times before it).
RACE_SECONDS = 50e-6
#: How far ahead (events, seconds) an allocation of another task may have taken the
#: free-tree lock first: an event is traced when its allocation ends, and the task
#: may be preempted in between (0.7 ms seen on this machine).
REORDER_EVENTS = 64
REORDER_SECONDS = 1e-3
#: The same for a task rescheduled between the lock and its tracepoint: an allocation at
#: the model's address traced this much later (events, seconds) may still have come
#: first (2.7 ms seen in ``forkbomb``, 140 ms in ``seccomp``, 94 ms in ``mix3``), when
#: nothing traced in between touched its range (``Replayer._late_lock_order``).
PREEMPT_EVENTS = 1024
PREEMPT_SECONDS = 0.25
#: How many events back a task's previous vmalloc event is looked for (to see whether
#: it moved to another CPU since: then its allocation may have chosen its node there).
MIGRATION_LOOKBACK = 256
#: A task whose previous event is this much older (seconds) was off the CPU in between
#: (it slept or was preempted), like one traced with a reschedule pending. A heuristic:
#: KVM's VM creation traces its allocations microseconds apart; the trial on the old
#: CPU (which must reproduce the kernel's address) is the check. At 1 ms it also claims
#: hand-built traces whose single task alternates CPUs every millisecond.
MIGRATION_OFF_CPU = 2e-3
#: How many events back the allocation of a pool head is looked for.
HEAD_ORIGIN_LOOKBACK = 4096
#: Time ``decay_va_pool_node`` spends per decayed area before the node's decayed areas
#: reach the free tree (assumed; this machine: 0.12-0.22 us seen, see docs/replay.md).
DECAY_SECONDS_PER_AREA = 0.15e-6

__all__ = [
    "CompareRow",
    "Mismatch",
    "ReplayResult",
    "Replayer",
    "compare",
    "compare_one",
    "load_capture",
    "register_cli",
    "replay",
]


@dataclass
class Mismatch:
    """One allocation where the model and the kernel disagree."""

    line: int
    kernel: int | None  # None: the kernel failed
    model: int | None  # None: the model failed
    size: int
    align: int
    cpu: int
    vstart: int = 0
    vend: int = 0
    #: The model's reasoning for its own choice.
    model_reason: str = ""
    #: Where the kernel's address was in the model's state before adopting it.
    kernel_location: str = ""
    #: "rule difference", "hidden state" or "race" (docs/replay.md).
    cause_class: str = ""
    #: The fact behind it, in words, and a key naming the one cause.
    cause: str = ""
    cause_key: str = ""
    #: Later mismatches with the same cause (set on the first one only).
    cascade: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "kernel": self.kernel,
            "model": self.model,
            "size": self.size,
            "align": self.align,
            "cpu": self.cpu,
            "vstart": self.vstart,
            "vend": self.vend,
            "model_reason": self.model_reason,
            "kernel_location": self.kernel_location,
            "cause_class": self.cause_class,
            "cause": self.cause,
            "cause_key": self.cause_key,
            "cascade": self.cascade,
        }


@dataclass
class ReplayResult:
    """Counts and divergences of one replay."""

    profile: str
    cpus: int
    #: The placement and pool policies the model ran with.
    placement: str = ""
    pools: str = ""
    events: int = 0
    allocs_compared: int = 0
    allocs_matched: int = 0
    kernel_failures: int = 0
    model_failures: int = 0
    frees: int = 0
    frees_unknown: int = 0
    purges: int = 0
    #: Free events whose nr_lazy differed from the model's vmap_lazy_nr.
    lazy_drift: int = 0
    first_lazy_drift_line: int | None = None
    skipped_before_snapshot: int = 0
    snapshot_busy: int = 0
    snapshot_lazy: int = 0
    trace_lost_events: int = 0
    trace_incomplete: bool = False
    drop_caches: bool | None = None
    seconds: float = 0.0
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The model's final state against the kernel's end snapshot, when there is one:
    #: counts of busy / lazily freed areas only one side has, and lazy node differences.
    end_check: dict[str, int] | None = None
    #: Allocator state at the end of the replay (fragmentation view).
    end_free_blocks_in_range: int = 0
    end_largest_free_in_range: int = 0
    end_busy: int = 0
    #: Matches that rested on a guess about hidden state (excluded from the known part).
    allocs_matched_guessed: int = 0
    #: Mismatches explained by hidden state (excluded from the known part).
    hidden_state_mismatches: int = 0
    #: Model searches that skipped a block the kernel's search was seen not to reach.
    searches_skipping_unreachable: int = 0
    #: Allocations the model placed at an inferred head of a pool hidden at snapshot time.
    hidden_pool_hits: int = 0
    #: Allocations applied before an earlier-traced one of another CPU (lock order).
    reordered: int = 0
    #: Allocations whose task chose its vmap node on the CPU it ran on before the
    #: tracepoint's (rescheduled in between): one race each.
    migrated: int = 0
    #: Events between the snapshot markers: already in the snapshot / applied.
    window_reflected: int = 0
    window_applied: int = 0
    #: Guesses about hidden state the kernel's decisions refuted (and the model revised).
    revisions: int = 0
    #: One entry per cause: class, fact, first line, mismatches it cost.
    causes: list[dict[str, Any]] = field(default_factory=list)
    #: "kstate" (the kernel's own state, kstate.json) or "snapshot"; why not kstate.
    seed: str = "snapshot"
    seed_note: str = ""
    kstate_pooled: int = 0
    kstate_free_nodes: int = 0
    #: The model's free tree and pools against the kernel's kstate.end.json.
    end_kstate: dict[str, int] | None = None

    @property
    def agreement(self) -> float:
        return self.allocs_matched / self.allocs_compared if self.allocs_compared else 1.0

    @property
    def known_compared(self) -> int:
        """Allocations whose outcome did not depend on hidden state."""
        return self.allocs_compared - self.allocs_matched_guessed - self.hidden_state_mismatches

    @property
    def agreement_known(self) -> float:
        """Agreement on the part of the trace where the state was fully known."""
        n = self.known_compared
        return (self.allocs_matched - self.allocs_matched_guessed) / n if n else 1.0

    def summarize_causes(self) -> None:
        """Group mismatches by cause; the first of each carries the cascade length."""
        first: dict[str, Mismatch] = {}
        count: Counter[str] = Counter()
        for m in self.mismatches:
            count[m.cause_key] += 1
            first.setdefault(m.cause_key, m)
        self.causes = []
        for key, m in first.items():
            m.cascade = count[key] - 1
            self.causes.append(
                {
                    "key": key,
                    "class": m.cause_class,
                    "fact": m.cause,
                    "first_line": m.line,
                    "mismatches": count[key],
                }
            )

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"] = self.agreement
        d["agreement_known"] = self.agreement_known
        d["known_compared"] = self.known_compared
        d["mismatches"] = [m.as_json() for m in self.mismatches]
        d["events_per_second"] = self.events / self.seconds if self.seconds else None
        return d


def load_capture(path: str | os.PathLike[str]) -> tuple[Path, Path, dict[str, Any]]:
    """Resolve a capture directory into (trace, snapshot, meta), checked (InputError)."""
    cap = load_capture_dir(path)
    return cap.trace, cap.snapshot, cap.meta


class Replayer:
    """One model, seeded from a snapshot, fed a trace: a :class:`TraceDriver` that
    compares every allocation with the kernel's and adopts the kernel's address."""

    def __init__(
        self,
        snapshot: VmallocInfo,
        *,
        profile: str = "6.18",
        cpus: int = 2,
        keep_mismatches: int = 10_000,
        early_decay: bool = True,
        worker_latency: float = 20e-6,
        node_by_node: bool = True,
        decay_in_flight: bool = True,
        placement: Any = None,
        pools: Any = None,
        kstate: KState | None = None,
    ) -> None:
        #: What the model is seeded from: "kstate" (when ``kstate`` is usable) or "snapshot".
        self.seed = "snapshot"
        self._kstate = kstate
        self.harness = TraceHarness(profile, cpus=cpus, placement=placement, pools=pools)
        self.profile = self.harness.profile
        self.kernel = self.harness.kernel
        self.space = self.harness.space
        #: Purges follow the trace where the profile has the tracepoints (6.x).
        self.trace_driven = self.harness.trace_driven
        self.space.explain = True
        self.cpus = cpus
        #: Start a purge where num_purged shows it began (see :meth:`_free`).
        self.early_decay = early_decay
        #: Seconds between schedule_work() and the purge worker starting (assumed).
        self.worker_latency = worker_latency
        #: Let a purge's nodes finish one by one before its event (see _plan_node_finish).
        self.node_by_node = node_by_node
        #: (``decay_in_flight``) Hold a purge's decay out of the model's tree while the
        #: kernel's choices show it is not in the kernel's yet (see _decay_in_flight).
        self.keep_mismatches = keep_mismatches
        self.result = ReplayResult(profile=self.profile.name, cpus=cpus)
        self.result.placement = self.space.placement.name
        self.result.pools = self.space.pools.name
        self._last_alloc_failed = False
        #: The next purge event of the trace, and its first phase if already run.
        self._next_purge: PurgeVmapAreaLazy | None = None
        self._pending: PendingPurge | None = None
        #: Model time from which the next purge's first phase is due.
        self._armed_at: float | None = None
        #: Timestamp of the free that crossed lazy_max_pages (schedule_work).
        self._crossed_at: float | None = None
        #: Consecutive frees whose nr_lazy differed from the model's.
        self._drift_run = 0
        #: Times at which the open purge's next nodes finish their second phase.
        self._node_done_at: list[float] = []
        #: The open purge's nodes whose second phase the model has run.
        self._done_nodes: set[int] = set()
        #: Index of the event being applied, of the next purge event, and for each
        #: purge event the last event its worker's CPU traced before it.
        self._index = 0
        self._purge_index = -1
        #: (events, positions of the allocations at each address)
        self._index_of: tuple[Sequence[TraceEvent], dict[int, list[int]]] | None = None
        #: The compiled scans' packed copy of the events (None: the Python loops).
        self._table: object = None
        self._alloc_addrs: list[int] = []
        self._worker_cpu_busy_until: dict[int, int] = {}
        #: When the open purge began, and when the last one's event was written.
        self._purge_began_at: float | None = None
        self._last_purge_end: float | None = None
        #: The explicit unknowns, revised as kernel decisions contradict them.
        self.beliefs = Beliefs(self.space)
        #: Infer the pools' contents at snapshot time (set for captures without
        #: drop_caches, see :func:`replay`).
        self._infer_pools = False
        #: Later allocations already applied out of trace order (lock-order races).
        self._reordered: set[int] = set()
        #: The open purge's decayed areas ``(start, end, node)``, until its decay is
        #: known to be in the kernel's tree, and those held out of the model's tree
        #: while the kernel's decay was seen in flight (see :meth:`_explain`).
        self._watch_decay = decay_in_flight
        self._decayed: list[tuple[int, int, int]] = []
        self._held: list[VmapArea] = []
        self._held_until: list[tuple[float, list[VmapArea]]] = []
        self._seed(snapshot)

    # --- snapshot import ------------------------------------------------------------
    def _seed(self, info: VmallocInfo) -> None:
        if self._kstate is not None and self._seed_kstate(self._kstate, info):
            return
        busy, lazy = self.harness.seed_snapshot(info)
        self.result.snapshot_busy += busy
        self.result.snapshot_lazy += lazy
        space = self.space
        n = space.nr_vmap_nodes
        if n > 1:
            # The kernel tagged each busy area of the vmalloc range with its allocating
            # CPU's node; the snapshot does not show it: the address-zone node is a
            # guess. So is a lazy area's node when one ascending run may be two lists.
            vs, ve = space.vmalloc_start, space.vmalloc_end
            for va in space.busy_areas():
                if vs <= va.va_start and va.va_end <= ve:
                    self.beliefs.guess_node(va)
            if info.unpurged and len(lazy_runs(info)) < n:
                for va in space.lazy:
                    self.beliefs.guess_node(va)
        self.beliefs.remember_old_blocks()

    def _seed_kstate(self, ks: KState, info: VmallocInfo) -> bool:
        """Seed from the kernel's own state; False (reason in ``seed_note``) if unusable.

        The free tree's shape, the pools and each lazy area's node are then known, not
        guessed; only busy areas whose flags the readout lacks keep a guessed node."""
        from pyvmalloc.errors import InputError

        res = self.result
        why = ""
        if not ks.consistent:
            why = f"{ks.name}: every readout raced ({ks.attempts} attempts)"
        elif ks.taken != "after-snapshot":
            why = f"{ks.name}: taken {ks.taken}, not after the snapshot"
        else:
            try:
                seed = self.harness.seed_kstate(ks, info)
            except InputError as e:
                why = str(e)
        if why:
            res.seed_note = f"kstate not used: {why}"
            return False
        self.seed = res.seed = "kstate"
        res.snapshot_busy, res.snapshot_lazy = seed.busy, seed.lazy
        res.kstate_pooled, res.kstate_free_nodes = seed.pooled, seed.free
        for va in seed.guessed:
            self.beliefs.guess_node(va)
        return True

    # --- events -----------------------------------------------------------------------
    def run(
        self,
        events: Sequence[TraceEvent],
        progress: bool = False,
        observer: Observer | None = None,
    ) -> None:
        """Apply ``events`` in order, with the look-ahead purges need."""
        self._bar = None
        if progress and len(events) > 20_000:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(f"replay {self.profile.name}", total=len(events))
        batch = None
        if _c_replay_run is not None:
            # The common events (an allocation the model predicts, at its own choice, a
            # guessed hidden pool head or past an unreachable block; the free of a known
            # busy area) in compiled batches, the others through
            # before/alloc/free/purge below: the same steps either way (_speedups.c,
            # "replay batch"; keep the two in step). The bar ticks every 5000 events.
            run_c, every = _c_replay_run, 5000 if self._bar is not None else 0

            def batch(evs: list[TraceEvent], i: int) -> int:
                return run_c(self, evs, i, every)

        try:
            self.harness.drive(self, events, observer=observer, batch=batch)
        finally:
            if self._bar is not None:
                self._bar.stop()

    def prepare(self, events: Sequence[TraceEvent]) -> None:
        """Look ahead: where the purge events are, and what their workers' CPUs did."""
        self._events = events
        # The purge worker runs on the CPU its event was traced on: whatever else that
        # CPU traced since the previous purge event ran before the worker started (the
        # last such event, or -1). The compiled table finds them while packing.
        purge_at: list[int]
        packed = _rd.event_table(events) if _rd is not None and isinstance(events, list) else None
        if packed is not None:
            self._table, purge_at, self._worker_cpu_busy_until = packed
        else:
            self._table = None
            purge_at = [k for k, e in enumerate(events) if isinstance(e, PurgeVmapAreaLazy)]
            self._worker_cpu_busy_until = {}
            prev = -1
            for k in purge_at:
                cpu = events[k].cpu
                last = -1
                for j in range(k - 1, prev, -1):
                    if events[j].cpu == cpu:
                        last = j
                        break
                self._worker_cpu_busy_until[k] = last
                prev = k
        self._purge_at = purge_at
        # The next purge event at or after the first event (see before()).
        self._nxt = 0
        self._purge_index = purge_at[0] if purge_at else -1
        self._next_purge = events[purge_at[0]] if purge_at else None  # type: ignore[assignment]

    def before(self, i: int, ev: TraceEvent) -> None:
        """Before event ``i``: the next purge's phases that have happened by now."""
        if 0 <= self._purge_index < i:  # the next purge event is behind: the one after
            purge_at = self._purge_at
            j = self._nxt
            while j < len(purge_at) and purge_at[j] < i:
                j += 1
            self._nxt = j
            self._next_purge = self._events[purge_at[j]] if j < len(purge_at) else None  # type: ignore[assignment]
            self._purge_index = purge_at[j] if j < len(purge_at) else -1
        self._index = i
        if self._bar is not None and i % 5000 == 0:
            self._bar.update(self._task, completed=i)
        self.result.events += 1
        armed = self._armed_at
        if armed is not None:
            self._armed_before(ev, armed)
        if self._held_until:
            self._decay_reached_tree(ev.timestamp)
        pending = self._pending
        if pending is not None and self._node_done_at:
            # Nodes whose refill the purge worker has finished by now, on the
            # assumption that its time between the two phases is spent in proportion
            # to the areas each node returns.
            while self._node_done_at and ev.timestamp >= self._node_done_at[0]:
                self._node_done_at.pop(0)
                self._run_node(pending)

    def _run_node(self, pending: PendingPurge, i: int = 0) -> None:
        """Run the second phase (``purge_vmap_node``) of the open purge's ``i``-th
        marked node now."""
        if i:
            pending.marked.insert(0, pending.marked.pop(i))
        self._done_nodes.add(pending.marked[0][0].id)
        self._decay_reached_tree()
        before = self.beliefs.before_refill()
        self.space.purge_next_node(pending)
        self.beliefs.after_refill(before)

    def _nodes_done_by_nr_lazy(self, pending: PendingPurge, nr_lazy: int) -> bool:
        """A free's ``nr_lazy`` shows which nodes of the open purge are done.

        ``purge_vmap_node`` subtracts a node's purged pages from ``vmap_lazy_nr`` once
        its pools are refilled, just before the rest goes back to the tree; a free's
        ``nr_lazy`` is the counter right after its own pages were added. A counter
        that much lower than the model's says those nodes have finished: with a big
        backlog (``vmap_lazy_nr / lazy_max_pages() >= 2``) helper workers purge the
        first nodes on their own CPUs while the purging worker does the others, so a
        later node may finish first. The nodes whose pages come closest to the drop
        (within half of them: the node of an area older than the snapshot is a guess,
        so the model's split may be off) are run now; returns whether any was.
        """
        drop = self.space.vmap_lazy_nr - nr_lazy
        if drop <= 0 or not pending.marked:
            return False
        pages = [
            sum((va.va_end - va.va_start) >> PAGE_SHIFT for va in lst)
            for _vn, lst in pending.marked
        ]
        n = len(pages)
        best: tuple[int, ...] = ()
        best_off = -1
        for k in range(1, n + 1):
            for combo in itertools.combinations(range(n), k):
                total = sum(pages[i] for i in combo)
                off = abs(total - drop)
                if 2 * off < total and (best_off < 0 or off < best_off):
                    best, best_off = combo, off
        if not best:
            return False
        for j, i in enumerate(best):
            self._run_node(pending, i - j)
        if self._node_done_at:
            del self._node_done_at[: len(best)]
        return True

    def _armed_before(self, ev: TraceEvent, armed: float) -> None:
        """The next purge is due from model time ``armed``: run its first phase
        (decay, detach) before ``ev`` if it happened by now, or if ``ev`` is a free
        (or a purge) that the purge did not take."""
        if (ev.timestamp >= armed or isinstance(ev, (FreeVmapAreaNoflush, PurgeVmapAreaLazy))) and (
            self._index > self._worker_cpu_busy_until.get(self._purge_index, -1)
            or isinstance(ev, (FreeVmapAreaNoflush, PurgeVmapAreaLazy))
        ):
            nxt = self._next_purge
            assert nxt is not None
            self._begin_purge(nxt)
            self._purge_began_at = ev.timestamp if ev.timestamp < armed else armed
            self._armed_at = None
            self._plan_node_finish(ev.timestamp if ev.timestamp < armed else armed, nxt)

    def _plan_node_finish(self, t1: float, nxt: PurgeVmapAreaLazy) -> None:
        """When each node's second phase is done, between ``t1`` and the purge event."""
        pending = self._pending
        self._node_done_at = []
        if pending is None or len(pending.marked) < 2 or not self.node_by_node:
            return
        total = sum(len(lst) for _, lst in pending.marked)
        span = max(0.0, nxt.timestamp - t1)
        done = 0
        for _vn, lst in pending.marked[:-1]:  # the last node ends with the event
            done += len(lst)
            self._node_done_at.append(t1 + span * done / total)

    def _begin_purge(self, nxt: PurgeVmapAreaLazy) -> None:
        """Run the next purge's first phase, noting which pooled areas it decayed."""
        b = self.beliefs
        b.purge_seq += 1
        log = b.before_decay() if self._watch_decay else None
        self._pending = self.harness.begin_purge(nxt.npurged)
        self._done_nodes = set()
        self._decayed = b.after_decay(log) if log is not None else []
        self._held = []
        self._held_until = []

    def _decay_reached_tree(self, now: float | None = None) -> None:
        """The purge's decay is in the kernel's free tree by now (its refill, which
        comes after every node's decay, has begun, or its event came); with ``now``,
        only the nodes whose decay was due to end by then."""
        if now is not None:
            due = [held for t, held in self._held_until if t <= now]
            if not due:
                return
            self._held_until = [(t, held) for t, held in self._held_until if t > now]
            for held in due:
                self.beliefs.release(held)
            self._held = [va for _t, held in self._held_until for va in held]
            return
        if self._held:
            self.beliefs.release(self._held)
            self._held = []
            self._held_until = []
        self._decayed = []

    def alloc(self, ev: AllocVmapArea) -> None:
        if self._reordered and id(ev) in self._reordered:
            self._reordered.discard(id(ev))  # already applied before an earlier event
            return
        self._alloc_one(ev, reorder=True)

    def _lock_order_race(
        self, ev: AllocVmapArea, start: int, size: int, dec: Decision | None = None
    ) -> AllocVmapArea | None:
        """A later allocation of another task that took ``[start, start + size)``: the
        two took the free-tree lock in the other order. An event is traced at the end
        of ``alloc_vmap_area``, after the lock is dropped, so the other task (on another
        CPU, or preempted on this one) may trace later. Only the other task's next
        event qualifies (a task does one thing at a time: it may have been inside
        ``alloc_vmap_area`` since its previous event); soon after (``REORDER_*``) that
        is enough. Later (``PREEMPT_*``: a task rescheduled before its tracepoint) see
        :meth:`_late_lock_order`."""
        i = self._index
        if self._table is not None:
            j = _rd.lock_order_next(
                self._table, i, ev, start, size, REORDER_EVENTS, REORDER_SECONDS
            )
            if j >= 0:
                other = self._events[j]
                assert isinstance(other, AllocVmapArea)
                return other
            if j == -1:
                return self._late_lock_order(ev, start, dec)
        seen: set[tuple[int, str]] = {(ev.pid, ev.task)}
        t0, end = ev.timestamp, start + size
        for other in self._events[i + 1 : i + 1 + REORDER_EVENTS]:
            if other.timestamp - t0 > REORDER_SECONDS:
                break
            who = (other.pid, other.task)
            if who in seen:
                continue
            seen.add(who)  # only the next event of each other task
            if (
                isinstance(other, AllocVmapArea)
                and not other.failed
                and other.addr < end
                and start < other.addr + other.size
            ):
                return other
        return self._late_lock_order(ev, start, dec)

    def _late_lock_order(
        self, ev: AllocVmapArea, start: int, dec: Decision | None
    ) -> AllocVmapArea | None:
        """The next allocation at ``start``, traced up to ``PREEMPT_*`` later, when it
        is its task's next event and consistent with having come first: nothing traced
        in between touched its range, which the kernel held busy all along (no caller
        frees an area before the allocation returns it), and with it taken the model's
        search gives ``ev``'s address (:meth:`_order_explains`)."""
        if dec is None:
            return None
        i = self._index
        # the first later allocation starting in the model's block below ev's end
        lo = dec.block[0] if dec.source == "tree" else start
        j = -2
        if self._table is not None:
            j = _rd.next_alloc_in(self._table, i, lo, start, ev.size, PREEMPT_EVENTS)
        if j == -2:
            allocs = self._indexes()
            addrs = self._alloc_addrs
            j = -1
            for n in range(
                bisect.bisect_left(addrs, lo), bisect.bisect_left(addrs, start + ev.size)
            ):
                at = allocs[addrs[n]]
                k = bisect.bisect_right(at, i)
                if k < len(at) and (j < 0 or at[k] < j):
                    j = at[k]
        if j < 0 or j - i > PREEMPT_EVENTS:
            return None
        other = self._events[j]
        assert isinstance(other, AllocVmapArea)
        who = (other.pid, other.task)
        if (
            who == (ev.pid, ev.task)
            or other.timestamp - ev.timestamp > PREEMPT_SECONDS
            or other.addr + other.size <= start
        ):
            return None
        if self._untouched(i + 1, j, other.addr, other.addr + other.size, who) and (
            self._order_explains(other, ev, dec)
        ):
            return other
        return None

    def _indexes(self) -> dict[int, list[int]]:
        """Positions in the event list of the successful allocations at each address
        (built once, when a divergence first needs them)."""
        if self._index_of is None or self._index_of[0] is not self._events:
            events = self._events
            allocs: dict[int, list[int]]
            if _c_alloc_index is not None and isinstance(events, list):
                allocs = _c_alloc_index(events, AllocVmapArea)
            else:
                allocs = {}
                at = allocs.get
                for n in [n for n, e in enumerate(events) if e.__class__ is AllocVmapArea]:
                    e = events[n]
                    if not e.failed:  # type: ignore[attr-defined]
                        lst = at(e.addr)  # type: ignore[attr-defined]
                        if lst is None:
                            allocs[e.addr] = [n]  # type: ignore[attr-defined]
                        else:
                            lst.append(n)
            self._index_of = (events, allocs)
            self._alloc_addrs = sorted(allocs)
        return self._index_of[1]

    def _order_explains(
        self, first: AllocVmapArea, then: AllocVmapArea, dec: Decision | None
    ) -> bool:
        """Whether ``first`` taking its range explains ``then``'s address, given the
        model's decision ``dec`` for ``then`` (whose choice ``first`` overlaps): in a
        tree block, the lowest aligned fit left beside ``first``'s range (or, for a
        page-aligned request, the next long-enough block when none is left); from a
        pool, the entry after ``first``'s (same node). Computed, nothing applied."""
        if dec is None:
            return False
        if dec.source == "tree":
            bs, be = dec.block
            fs, fe = first.addr, first.addr + first.size
            if not (bs <= fs and fe <= be):
                return False
            mask = then.align - 1
            for lo, hi in ((bs, fs), (fe, be)):
                at = (max(lo, then.vstart) + mask) & ~mask
                if at + then.size <= min(hi, then.vend):
                    return at == then.addr
            if then.align > PAGE_SIZE or not dec.search_length:
                return False  # the next block on the descent path depends on the shape
            # Nothing of the block is left for it: the lowest long-enough block above
            # (those below were too short already).
            nxt = self._next_free_of_length(bs, dec.search_length)
            return nxt is not None and max(nxt.va_start, then.vstart) == then.addr
        if dec.source == "pool":
            space = self.space
            if first.cpu % space.nr_vmap_nodes != dec.node:
                return False
            pool = space.nodes[dec.node].pools.get(dec.pool_index)
            return (
                pool is not None
                and len(pool) > 1
                and pool[0].va_start == first.addr
                and pool[1].va_start == then.addr
            )
        return False

    def _untouched(self, first: int, stop: int, start: int, end: int, who: tuple[int, str]) -> bool:
        """Whether no event in ``events[first:stop]`` allocates in or frees inside
        ``[start, end)``, nor is one of task ``who`` (whose next event is at ``stop``)."""
        if self._table is not None:
            found = _rd.untouched(self._table, first, stop, start, end - start)
            if found is not None:
                return bool(found)
        pid, task = who
        for e in self._events[first:stop]:
            if e.pid == pid and e.task == task:
                return False
            if isinstance(e, AllocVmapArea):
                if not e.failed and e.addr < end and start < e.addr + e.size:
                    return False
            elif isinstance(e, FreeVmapAreaNoflush) and start <= e.va_start < end:
                return False
        return True

    def _alloc_one(self, ev: AllocVmapArea, reorder: bool = False) -> None:
        space = self.space
        res = self.result
        b = self.beliefs
        cpu = ev.cpu % self.cpus
        kernel_failed = ev.failed != 0
        self._last_alloc_failed = kernel_failed
        res.allocs_compared += 1
        if kernel_failed:
            res.kernel_failures += 1
        hidden: int | None = None
        va: VmapArea | int
        if self._infer_pools and b.hidden_head:
            hidden = self._hidden_guess(ev, cpu)
        if hidden is not None:
            va = self._adopt_at(hidden, ev, cpu)
            space.last_decision = Decision(
                "pool", node=cpu % space.nr_vmap_nodes, pool_index=pool_class(ev.size)
            )
        else:
            va = self.harness.alloc(ev.size, ev.align, ev.vstart, ev.vend, cpu)
        dec = space.last_decision
        # The model's results are a busy area or a negative errno.
        model_ok = not isinstance(va, int)
        tree = dec is not None and dec.source == "tree"
        if (
            model_ok and tree and (b.unreachable or dec.block[1] - dec.block[0] < dec.search_length)  # type: ignore[union-attr]
        ):
            length = dec.search_length  # type: ignore[union-attr]
            if b.is_unreachable(dec.block, length):  # type: ignore[union-attr]
                va = self._search_again(ev, va, cpu, length)  # type: ignore[arg-type]
                dec = space.last_decision
                model_ok = not isinstance(va, int)
                tree = dec is not None and dec.source == "tree"
        if not model_ok:
            res.model_failures += 1
        pool_hit = dec is not None and dec.source == "pool"
        if model_ok and not kernel_failed and va.va_start == ev.addr:  # type: ignore[union-attr]
            # The common case: the model predicted the kernel's address.
            res.allocs_matched += 1
            if hidden is not None:
                res.allocs_matched_guessed += 1
                res.hidden_pool_hits += 1
                b.saw_hidden_head((cpu % space.nr_vmap_nodes, pool_class(ev.size)), hidden)
            elif pool_hit:
                if b.unknown_node and not b.node_known(va):  # type: ignore[arg-type]
                    res.allocs_matched_guessed += 1
                    b.vote_node(va, dec.node, dec.node)  # type: ignore[arg-type, union-attr]
            elif tree and ev.align > PAGE_SIZE:
                assert dec is not None
                small = dec.block[1] - dec.block[0] < dec.search_length
                if small and self.seed != "kstate":  # kstate: the shape is known
                    res.allocs_matched_guessed += 1  # reachable only on the model's path
                b.saw_kernel_tree_choice(ev.addr, dec.search_length)
            b.forget(ev.addr)
            return
        if not model_ok and kernel_failed:
            res.allocs_matched += 1
            return
        # A divergence: undo the model's choice, find out why, revise, adopt.
        reason = str(dec) if dec else ""
        model_addr = va.va_start if model_ok else None  # type: ignore[union-attr]
        head: VmapArea | None = None
        if model_ok:
            assert isinstance(va, VmapArea)
            if pool_hit and hidden is None:
                head = va
            self.harness.undo_alloc(va, pool_hit and hidden is None, cpu)
        if reorder and model_addr is not None and not kernel_failed:
            other = self._lock_order_race(ev, model_addr, ev.size, dec)
            if other is not None:
                # Serve the other CPU first, as the kernel did, then this one again.
                res.allocs_compared -= 1
                res.reordered += 1
                self._reordered.add(id(other))
                self._alloc_one(other)
                self._alloc_one(ev)
                return
        if not kernel_failed and self._migration_explains(ev, cpu, model_addr, reason, pool_hit):
            return
        if head is not None and self._head_moved_explains(ev, cpu, head, reason):
            return
        loc = None if kernel_failed else self._where(ev.addr, ev.size)
        where = "" if loc is None else self._describe(loc)
        if hidden is not None:
            reason = f"inferred head of node {cpu % space.nr_vmap_nodes}'s pool at snapshot time"
            cause = self._explain_hidden(ev, cpu, hidden)
        else:
            cause = self._explain(ev, cpu, dec, head, model_addr, loc)
        if (
            self.seed == "kstate"
            and cause.kind == HIDDEN
            and str(cause.key[0]).startswith(KSTATE_FACTS)
        ):
            # The readout held this fact: the model's rules disagree with the kernel's.
            cause = Cause(RULE, f"{cause.fact}, although kstate.json gave it", cause.key)
        self._record(ev, model_addr, reason, where, cause)
        if not kernel_failed:
            self._adopt(ev, cpu)

    def _record(
        self, ev: AllocVmapArea, model_addr: int | None, reason: str, where: str, cause: Cause
    ) -> None:
        """Count one divergence and keep its record (up to ``keep_mismatches``)."""
        res = self.result
        if cause.kind == HIDDEN:
            res.hidden_state_mismatches += 1
        if len(res.mismatches) < self.keep_mismatches:
            # In the fields' order (by keyword it costs three times as much, and every
            # divergence makes one): line, kernel, model, size, align, cpu, vstart,
            # vend, model_reason, kernel_location, cause_class, cause, cause_key.
            res.mismatches.append(
                Mismatch(
                    ev.line,
                    None if ev.failed else ev.addr,
                    model_addr,
                    ev.size,
                    ev.align,
                    ev.cpu,
                    ev.vstart,
                    ev.vend,
                    reason,
                    where,
                    cause.kind,
                    cause.fact,
                    _key_str(cause.key),
                )
            )

    def _cpu_before(self, ev: AllocVmapArea) -> int | None:
        """The CPU of the same task's previous vmalloc event, when it differs from
        ``ev``'s and that event was traced with a reschedule pending (the second flag
        column, ``N``/``n``/``p``/``L``...) or ``MIGRATION_OFF_CPU`` before: the task
        was rescheduled onto another CPU in between."""
        events = self._events
        i = self._index
        if self._table is not None:  # the walk and the test below in one compiled call
            cpu = _rd.cpu_before(self._table, i, ev, MIGRATION_LOOKBACK, MIGRATION_OFF_CPU)
            if cpu != -2:
                return None if cpu < 0 else cpu % self.cpus
        if not (0 <= i < len(events)) or events[i] is not ev:
            return None  # not the event being replayed (a reordered one)
        return self._cpu_before_at(i)

    def _cpu_before_at(self, i: int) -> int | None:
        """:meth:`_cpu_before` for ``events[i]``."""
        events = self._events
        ev = events[i]
        if self._table is not None:
            j = _rd.prev_of_task(self._table, i, MIGRATION_LOOKBACK)
            found: Sequence[int] = [j] if j >= 0 else []
        else:
            found = range(i - 1, max(-1, i - 1 - MIGRATION_LOOKBACK), -1)
        for j in found:
            other = events[j]
            if other.pid == ev.pid and other.task == ev.task:
                if other.cpu == ev.cpu:
                    return None  # not moved
                flags = other.flags
                resched = len(flags) > 1 and flags[1] != "."
                slept = ev.timestamp - other.timestamp >= MIGRATION_OFF_CPU
                return other.cpu % self.cpus if resched or slept else None
        return None

    def _head_moved_explains(
        self, ev: AllocVmapArea, cpu: int, head: VmapArea, reason: str
    ) -> bool:
        """Whether the model's pool head was another node's: its own allocation (a tree
        allocation the model matched) was made by a task that had moved to another CPU
        (see :meth:`_migration_explains`), so ``va->flags`` holds the old CPU's node and
        its free and purge put it in that node's pool. When moving it there lets the
        model find the kernel's address, that was the case (one race)."""
        space = self.space
        nodes = space.nr_vmap_nodes
        dec = space.last_decision
        if nodes < 2 or not self._full_range(ev) or head.state != VaState.POOL:
            return False
        node = cpu % nodes
        idx = pool_class(ev.size)
        pool = space.nodes[node].pools.get(idx)
        if not pool or pool[0] is not head:
            return False
        events = self._events
        k = -2
        if self._table is not None:
            k = _rd.last_alloc_at(self._table, self._index, head.va_start, HEAD_ORIGIN_LOOKBACK)
        if k == -2:
            at = self._indexes().get(head.va_start, [])
            n = bisect.bisect_left(at, self._index)
            k = at[n - 1] if n else -1
        if k < 0 or self._index - k > HEAD_ORIGIN_LOOKBACK or events[k].cpu % nodes != node:
            return False
        before = self._cpu_before_at(k)
        if before is None or before % nodes == node:
            return False
        other = before % nodes
        pool.popleft()
        old_flags = head.flags
        head.flags = (head.flags & ~0xFF00) | space.encode_vn_id(other)
        dst = space.nodes[other].pools.setdefault(idx, deque())
        self.beliefs._insert_by_purge_order(dst, head)
        va = self.harness.alloc(ev.size, ev.align, ev.vstart, ev.vend, cpu)
        again = space.last_decision
        if not isinstance(va, int) and va.va_start == ev.addr:
            self.beliefs.forget(ev.addr)
            self.result.migrated += 1
            cause = Cause(
                RACE,
                f"{head.va_start:#x} was node {other}'s: its allocation (line {events[k].line}) "
                f"chose its vmap node on CPU {before} before the task moved",
                ("migrated", events[k].line),
            )
            self._record(ev, head.va_start, reason, f"not node {node}'s pool", cause)
            return True
        if not isinstance(va, int):
            self.harness.undo_alloc(va, again is not None and again.source == "pool", cpu)
        dst.remove(head)
        head.flags = old_flags
        pool.appendleft(head)
        space.last_decision = dec
        return False

    def _migration_explains(
        self, ev: AllocVmapArea, cpu: int, model_addr: int | None, reason: str, pooled: bool
    ) -> bool:
        """Whether the allocation chose its vmap node on the CPU the task ran on before.

        6.18 ``alloc_vmap_area`` takes the node from ``raw_smp_processor_id()`` in
        ``node_alloc`` (its pool, and the ``vn_id`` the area is tagged with) and writes
        the tracepoint at its end. A pool miss allocates the ``vmap_area`` with
        ``GFP_KERNEL`` before the tree search, so the task may be rescheduled onto
        another CPU in between: the event then shows the new CPU, while the pool tried
        and the node recorded in ``va->flags`` (whose lazy list and pool take the area
        when it is freed) are the old CPU's. When the model, placed on the previous
        event's CPU, finds the kernel's address, that is what happened: the area keeps
        that node (one race; nothing else is refuted). Only where a pool decides: when
        the model's own choice and the one on the old CPU both come from the tree, the
        node cannot change the address (and the first, given back, may have changed
        the tree's shape), so nothing is concluded.
        """
        space = self.space
        nodes = space.nr_vmap_nodes
        if nodes < 2 or not self._full_range(ev):
            return False
        before = self._cpu_before(ev)
        if before is None or before % nodes == cpu % nodes:
            return False
        va = self.harness.alloc(ev.size, ev.align, ev.vstart, ev.vend, before)
        dec = space.last_decision
        if isinstance(va, int):
            return False
        pool_hit = dec is not None and dec.source == "pool"
        if va.va_start != ev.addr or not (pooled or pool_hit):
            self.harness.undo_alloc(va, pool_hit, before)
            return False
        self.beliefs.forget(ev.addr)
        self.result.migrated += 1
        src = (
            f"node {before % nodes}'s pool"
            if pool_hit
            else f"the tree (node {before % nodes}'s pool had none)"
        )
        cause = Cause(
            RACE,
            f"the task moved from CPU {before} to CPU {ev.cpu % self.cpus} between choosing "
            f"its vmap node and its tracepoint: {src}",
            ("migrated", ev.line),
        )
        where = f"{'pool' if pool_hit else 'tree'} of CPU {before}'s node"
        self._record(ev, model_addr, reason, where, cause)
        return True

    def _tagged(self, ev: AllocVmapArea, cpu: int, addr: int) -> VmapArea:
        """A new busy area of ``ev``'s size at ``addr``, tagged with the CPU's node as
        ``alloc_vmap_area`` tags it (as :meth:`TraceHarness.adopt` does)."""
        space = self.space
        va = VmapArea(addr, addr + ev.size)
        if space.nr_vmap_nodes > 1 and self._full_range(ev):
            va.flags = space.encode_vn_id(cpu % space.nr_vmap_nodes)
        return va

    def _full_range(self, ev: AllocVmapArea) -> bool:
        return ev.vstart == self.space.vmalloc_start and ev.vend == self.space.vmalloc_end

    def _poolable(self, ev: AllocVmapArea) -> bool:
        space = self.space
        return (
            space.nr_vmap_nodes > 1
            and ev.vstart == space.vmalloc_start
            and ev.vend == space.vmalloc_end
            and pool_class(ev.size) < self.profile.max_va_size_pages
        )

    def _hidden_guess(self, ev: AllocVmapArea, cpu: int) -> int | None:
        """The model's guess when its own pool is empty but the kernel's may still hold
        areas pooled before the snapshot (no drop_caches)."""
        if not self._poolable(ev):
            return None
        space = self.space
        node = cpu % space.nr_vmap_nodes
        idx = pool_class(ev.size)
        if space.nodes[node].pools.get(idx):
            return None  # the model's own pool entries are newer: they come first
        if ev.align <= PAGE_SIZE:
            return next_hidden_area(self.beliefs, node, idx, ev.size)
        return next_hidden_head(self.beliefs, node, idx, ev.size, ev.align)

    @staticmethod
    def _at_bottom(ev: AllocVmapArea, block: object, addr: int | None = None) -> bool:
        """Whether the kernel's address (or ``addr``) is the aligned bottom of the
        model's free block: where a tree search puts it. An address inside a free
        range (to the model) is a pool entry the model could not see."""
        if not isinstance(block, tuple):
            return False
        at = ev.addr if addr is None else addr
        return bool(at == (max(block[0], ev.vstart) + ev.align - 1) & ~(ev.align - 1))

    def _tree_choice(self, ev: AllocVmapArea) -> int | None:
        """Where the model's tree search would put this allocation (no clipping)."""
        space = self.space
        adjust = not (ev.align <= PAGE_SIZE or ev.vend - ev.vstart == ev.size)
        blk = find_vmap_lowest_match(
            space.free, ev.size, ev.align, ev.vstart, adjust, self.profile.rollback_shifts_vstart
        )
        if blk is None:
            return None
        s = max(blk.va_start, ev.vstart)
        return (s + ev.align - 1) & ~(ev.align - 1)

    def _explain_hidden(self, ev: AllocVmapArea, cpu: int, guess: int) -> Cause:
        """The model guessed a hidden pool head; the kernel chose ``ev.addr``."""
        b = self.beliefs
        key = (cpu % self.space.nr_vmap_nodes, pool_class(ev.size))
        b.hidden_refuted.setdefault(key, set()).add(guess)
        b.revisions += 1
        kind, obj, _n, _p = self._where(ev.addr, ev.size)
        last = b.hidden_head.get(key) or 0
        # One purge's areas leave a pool in descending order: an address above the
        # last head, where a tree search would put it, is the tree's.
        if kind == "free" and (
            ev.addr == self._tree_choice(ev) or (ev.addr > last and self._at_bottom(ev, obj))
        ):
            b.hidden_head[key] = None  # the kernel's pool is used up: it searched the tree
            return Cause(
                HIDDEN,
                f"node {key[0]} pool[{key[1]}] at snapshot time: used up",
                ("snapshot-pool-end", key[0], key[1], ev.line),
            )
        if kind in ("free", "parked"):
            b.saw_hidden_head(key, ev.addr)
        return Cause(
            HIDDEN,
            f"{guess:#x} not next in node {key[0]} pool[{key[1]}] at snapshot time",
            ("snapshot-slot", guess),
        )

    def _adopt_at(self, addr: int, ev: AllocVmapArea, cpu: int) -> VmapArea:
        """Make the model's area of ``ev`` start at ``addr`` (a belief's choice), as if
        the kernel had printed that address; return the new busy area."""
        return self._adopt(ev, cpu, addr)

    def _adopt(self, ev: AllocVmapArea, cpu: int, addr: int | None = None) -> VmapArea:
        """Make the kernel's address (or ``addr``) busy in the model, tagged with the
        CPU's node; return the new busy area."""
        b = self.beliefs
        start = ev.addr if addr is None else addr
        if _c_adopt is not None:
            got = _c_adopt(self, ev, cpu, start)
            if got is not None:
                return got
        end = start + ev.size
        if self._held and any(va.va_start < end and start < va.va_end for va in self._held):
            self._decay_reached_tree()  # the kernel allocated in it: it is in its tree
        if b.parked:
            pk = b.parked_at(start)
            if (
                pk is not None
                and end <= pk.va_end
                and not self._at_bottom(ev, (pk.va_start, pk.va_end), start)
            ):
                # A pool entry inside a range the kernel's tree lacks: the rest of the
                # range stays out of the model's tree.
                b.split_parked(pk, start, end)
                va = self._tagged(ev, cpu, start)
                self.harness.space.insert_vmap_area(va)
                self.space.stats.allocs += 1
                b.forget(start)
                return va
            b.unpark_overlapping(start, end)
        va, notes = self.harness.adopt_area(start, ev.size, ev.vstart, ev.vend, cpu)
        if notes:
            self.result.notes.extend(f"line {ev.line}: {n}" for n in notes[:3])
        self.beliefs.forget(start)
        return va

    def _search_again(
        self, ev: AllocVmapArea, va: VmapArea, cpu: int, length: int
    ) -> VmapArea | int:
        """The model's search ended in a block the kernel's does not reach: search on."""
        space = self.space
        self.harness.undo_alloc(va, False, cpu)
        blk = self.beliefs.search_skipping(ev.size, ev.align, ev.vstart, length)
        if blk is None:
            space.last_decision = Decision("fail", error=ENOENT)
            return -ENOENT
        s = blk.va_start
        nva = ((s if s > ev.vstart else ev.vstart) + ev.align - 1) & ~(ev.align - 1)
        if nva + ev.size > ev.vend:
            space.last_decision = Decision("fail", error=ERANGE)
            return -ERANGE
        dec = Decision("tree", search_length=length, block=(blk.va_start, blk.va_end))
        dec.fit = _fit_type(blk.va_start, blk.va_end, nva, nva + ev.size)
        new = self._adopt_at(nva, ev, cpu)
        space.last_decision = dec
        self.result.searches_skipping_unreachable += 1
        return new

    def _explain(
        self,
        ev: AllocVmapArea,
        cpu: int,
        dec: Decision | None,
        head: VmapArea | None,
        model_addr: int | None,
        loc: tuple[str, object, int, int] | None = None,
    ) -> Cause:
        """Classify one divergence and revise the beliefs it refutes; ``loc`` is
        :meth:`_where` of the kernel's address, when the caller has it already."""
        space = self.space
        b = self.beliefs
        full_range = ev.vstart == space.vmalloc_start and ev.vend == space.vmalloc_end
        node = cpu % space.nr_vmap_nodes if full_range and space.nr_vmap_nodes > 1 else -1
        idx = pool_class(ev.size)
        if ev.failed or model_addr is None:
            return Cause(
                RULE, "the kernel failed and the model did not, or the reverse", ("fail", ev.line)
            )
        kind, obj, pnode, pos = loc if loc is not None else self._where(ev.addr, ev.size)
        decay = self._decay_in_flight(ev, dec, kind, obj, model_addr)
        if decay is not None:
            return decay
        if (
            self._infer_pools
            and ev.align <= PAGE_SIZE
            and self._poolable(ev)
            and node >= 0
            and kind in ("free", "parked")
            and isinstance(obj, tuple)
            and obj[1] - obj[0] == ev.size
            and (kind == "parked" or ev.addr < model_addr)
            and b.hidden_head.get((node, idx), 0) is not None
        ):
            # A free range of exactly this size, below the model's tree choice (or one
            # the kernel's tree lacks): one pooled area, this pool's head.
            b.saw_hidden_head((node, idx), ev.addr)
        was_parked = kind == "parked"
        if was_parked and not self._at_bottom(ev, obj):
            # Inside a range the kernel's tree lacks: a pool entry there.
            assert isinstance(obj, tuple)
            if self._infer_pools and self._poolable(ev) and node >= 0:
                b.saw_hidden_head((node, idx), ev.addr)
            return Cause(
                HIDDEN,
                f"{ev.addr:#x} pooled (at snapshot time) inside {obj[0]:#x}-{obj[1]:#x}",
                ("parked", obj[0], ev.addr),
            )
        if was_parked:
            # At its bottom, where a tree search ends: it was free after all.
            b.unpark_overlapping(ev.addr, ev.addr + ev.size)
            kind, obj, pnode, pos = self._where(ev.addr, ev.size)
        if kind == "purging" and isinstance(obj, VmapArea) and self._moved_to_done_node(obj):
            return Cause(
                HIDDEN,
                f"node of {obj.va_start:#x} (busy before the snapshot): purged with a "
                "node whose purge was done",
                ("node", obj.va_start),
            )
        if kind in ("lazy", "purging", "other", "pooled-other") and self._advance_purge(ev):
            # The kernel's purge was further on than the model assumed: now caught up.
            return Cause(
                RACE,
                "a purge in flight was further on in the kernel (its areas were already "
                "back in the tree)",
                ("purge", b.purge_seq),
            )
        if kind in ("lazy", "purging") or self._in_race_window(ev.timestamp):
            refill = self._refill_race(ev, node, idx)
            if refill is not None:
                return refill
            return Cause(
                RACE,
                "a purge in flight: its effects reached this CPU at another "
                "time than the model assumes",
                ("purge", b.purge_seq),
            )
        if (
            kind in ("pool", "pooled-other")
            and (pos != 0 or pnode != node)
            and self._shrinker_explains(ev)
        ):
            # Every pool had been emptied into the tree (the "vmap-node" shrinker:
            # drop_caches or memory pressure; no vmalloc event traces it).
            released = self.space.vmap_node_shrink_scan()
            b.revisions += 1
            return Cause(
                HIDDEN,
                f"the vmap-node shrinker had emptied every pool ({released} areas; "
                "drop_caches or memory pressure, not traced)",
                ("shrinker", ev.line),
            )
        if head is not None and node >= 0:
            # The model took its pool head; the kernel did not.
            pool = space.nodes[node].pools.get(idx, deque())
            if kind == "pool" and pnode == node:
                above = list(pool)[:pos]
            elif kind == "pool":
                above = [head]
            elif b.recycled.get(ev.addr) == ev.size:
                # An area of exactly this size, freed before: the kernel's pool head,
                # which the model had returned to the tree (a decay that took it).
                return Cause(
                    HIDDEN,
                    f"{ev.addr:#x} still in node {node}'s pool (the model had decayed it)",
                    ("decayed", ev.addr),
                )
            else:  # the kernel searched the tree: its pool was empty
                above = list(pool)
            unknown = [va for va in above if not b.node_known(va)]
            if (
                kind == "pool"
                and pnode != node
                and isinstance(obj, VmapArea)
                and not b.node_known(obj)
            ):
                unknown.insert(0, obj)
            # (the first time a known entry is passed over in its own pool, it stays)
            b.refute_pool_entries(node, idx, above, kind == "pool" and pnode == node)
            if unknown and unknown[0] is obj:
                b.vote_node(obj, pnode, node)  # the kernel took it from node's pool
            elif unknown and space.nr_vmap_nodes == 2:
                # Not in node's pool: then in the other one's (two nodes).
                b.vote_node(unknown[0], node, 1 - node)
            if unknown:
                u = unknown[0]
                return Cause(
                    HIDDEN,
                    f"node of {u.va_start:#x} (busy before the snapshot)",
                    ("node", u.va_start),
                )
            if self.result.drop_caches is False:
                return Cause(
                    HIDDEN,
                    f"node {node} pool[{idx}] at snapshot time (no drop_caches)",
                    ("snapshot-pool", node, idx),
                )
            return Cause(
                HIDDEN,
                f"node {node} pool[{idx}] length (decay count)",
                ("pool", node, idx, above[0].va_start if above else 0),
            )
        if kind == "pool":
            assert isinstance(obj, VmapArea)
            if not b.node_known(obj):
                if 0 <= node != pnode:
                    b.vote_node(obj, pnode, node)
                return Cause(
                    HIDDEN,
                    f"node of {obj.va_start:#x} (busy before the snapshot)",
                    ("node", obj.va_start),
                )
            if pnode == node:
                return Cause(HIDDEN, f"node {node} pool[{idx}] order", ("pool", node, idx, pos))
            # Known: from the trace (the allocating CPU) or, seeded from kstate.json,
            # from the readout's flags; only a snapshot seed leaves it a guess.
            return Cause(HIDDEN, f"node of pooled {obj.va_start:#x}", ("pooled-node", obj.va_start))
        if kind == "pooled-other":
            assert isinstance(obj, VmapArea)
            # The kernel's range overlaps an area the model still pools (another size):
            # the kernel had returned it to the tree (a decay the model did not make).
            return Cause(
                HIDDEN,
                f"node {pnode} pooled {obj.va_start:#x}-{obj.va_end:#x} was back in the "
                "kernel's tree",
                ("pool-decayed", obj.va_start),
            )
        if kind == "busy":
            return Cause(
                HIDDEN,
                f"{ev.addr:#x} busy in the model (a free the trace lacks)",
                ("busy", ev.addr),
            )
        if kind != "free" or dec is None or dec.source != "tree":
            return Cause(RULE, "unexplained", ("rule", ev.line))
        assert isinstance(obj, tuple)
        length = dec.search_length
        zb = dec.block
        if self._at_bottom(ev, obj) and (was_parked or b.unmark(obj)):
            return Cause(
                HIDDEN,
                f"{obj[0]:#x}-{obj[1]:#x} was believed off the kernel's path or not free",
                ("unmarked", obj[0], obj[1]),
            )
        if self._infer_pools and self._poolable(ev) and node >= 0 and not self._at_bottom(ev, obj):
            key = (node, idx)
            if b.hidden_head.get(key, 0) is not None and ev.addr not in b.hidden_refuted.get(
                key, ()
            ):
                # Free space to the model, not its choice: the kernel's pool head.
                b.saw_hidden_head(key, ev.addr)
                if ev.addr > model_addr and zb[1] - zb[0] >= length and zb != obj:
                    # The model's lowest fit, passed over: believed pooled too (a tree
                    # search would have taken it) until the kernel allocates at its
                    # bottom.
                    b.park(zb)
                b.revisions += 1
                return Cause(
                    HIDDEN,
                    f"{ev.addr:#x} in node {node}'s pool at snapshot time",
                    ("snapshot-head", node, idx, ev.addr),
                )
        if ev.align > PAGE_SIZE:
            b.saw_kernel_tree_choice(ev.addr, length)
        if ev.addr > model_addr:
            if zb[1] - zb[0] < length:
                b.mark_unreachable(zb, length)
                # The kernel's search returns the first fitting block on its path, and
                # every block of its path below that one was checked first: no fitting
                # block below the kernel's is on its path.
                b.mark_passed_over(ev.vstart, obj[0], ev.size, ev.align, length)
                return Cause(
                    HIDDEN,
                    f"tree shape: {zb[0]:#x}-{zb[1]:#x} off the kernel's descent path",
                    ("shape", zb[0], zb[1]),
                )
            if self.result.drop_caches is False:
                if zb != obj:
                    b.park(zb)
                    # At the bottom of a free block: a tree search, which returns the
                    # lowest block of the search length (align <= PAGE_SIZE: the
                    # lowest that fits). A pooled stack can sit there too: for a
                    # stack, only while this node's hidden pool is not known to hold
                    # any (no head seen, or used up).
                    if self._at_bottom(ev, obj) and (
                        ev.align <= PAGE_SIZE or (node >= 0 and not b.hidden_pool_seen((node, idx)))
                    ):
                        self._park_fitting_below(ev, length)
                return Cause(
                    HIDDEN,
                    f"{zb[0]:#x}-{zb[1]:#x} pooled at snapshot time",
                    ("snapshot-free", zb[0]),
                )
            if zb != obj:
                b.park(zb)  # until the kernel allocates in it
            return Cause(HIDDEN, f"{model_addr:#x} not free in the kernel", ("free", zb[0]))
        if obj[1] - obj[0] < length:
            # The kernel's path reached this block: every block between it and the
            # model's choice is below it in the kernel's tree, off the path.
            b.mark_passed_over(obj[1], zb[1], ev.size, ev.align, length)
            return Cause(
                HIDDEN,
                f"tree shape: {obj[0]:#x}-{obj[1]:#x} on the kernel's descent path",
                ("shape", obj[0], obj[1]),
            )
        return Cause(
            RULE, "the kernel chose a lower block the model's search skipped", ("rule", ev.line)
        )

    def _park_fitting_below(self, ev: AllocVmapArea, length: int, limit: int = 256) -> int:
        """The kernel took ``ev.addr`` from its tree, at the bottom of a free block:
        its search returns the lowest block of at least the search ``length`` (smaller
        ones only on its descent path), so no block of that length below it is in the
        kernel's tree. Park them (at most ``limit``, lowest first); returns how
        many."""
        blocks: list[tuple[int, int]] = []
        # Lowest first: those are the ones the model's searches would end in.
        blk = self.space.free.pvm_find_va_enclose_addr(ev.vstart)
        if blk is None or blk.va_end <= ev.vstart:
            blk = rb_next(blk) if blk is not None else self._first_free()
        while blk is not None and len(blocks) < limit and blk.va_end <= ev.addr:
            if blk.va_end - max(blk.va_start, ev.vstart) >= length:
                blocks.append((blk.va_start, blk.va_end))
            # The next block that can count: every later block starts above vstart, so
            # only its size matters. The shorter ones in between end lower than it, so
            # they would not have stopped the walk either.
            blk = self._next_free_of_length(blk.va_start, length)
        return sum(self.beliefs.park(block) for block in blocks)

    def _next_free_of_length(self, after: int, length: int) -> VmapArea | None:
        """The lowest free block of the model's tree that starts above ``after`` and
        is at least ``length`` bytes: O(log n), guided by ``subtree_max_size`` (the
        largest block of each subtree) as the kernel's own search is."""

        def lowest(node: VmapArea | None) -> VmapArea | None:
            if node is None or node.subtree_max_size < length:
                return None  # nothing here is long enough
            if node.va_start <= after:  # it and its left subtree start too low
                return lowest(node.rb_right)
            found = lowest(node.rb_left)
            if found is not None:
                return found
            if node.va_end - node.va_start >= length:
                return node
            return lowest(node.rb_right)

        return lowest(self.space.free_root.rb_node)

    def _shrinker_explains(self, ev: AllocVmapArea) -> bool:
        """Whether the kernel's address is where a tree search would end if every
        pooled area were back in the free tree: the lowest block of the search length
        (the exact lowest match) in the model's free space and pools together.

        ``vmap_node_shrink_scan`` (the "vmap-node" shrinker, run by ``drop_caches``
        and by memory pressure) fully decays every node's pools, and no vmalloc
        tracepoint says so. Not while a purge is in flight (its decay detaches pools
        too, see :meth:`_decay_in_flight`).
        """
        if not self.trace_driven or self._pending is not None:
            return False
        if self._in_race_window(ev.timestamp) or self.space.nr_vmap_nodes < 2:
            return False
        return self._fits_unpooled(ev)

    def _fits_unpooled(self, ev: AllocVmapArea) -> bool:
        """Whether the lowest fit of ``ev`` in the model's free blocks and pooled
        areas together (as if every pool were decayed) is at the kernel's address."""
        space = self.space
        length = ev.size + ev.align - 1 if ev.align > PAGE_SIZE else ev.size
        mask = ~(ev.align - 1) & space.ulong_max
        if _rd is not None:  # the same walk, compiled
            args = (ev.vstart, ev.vend, ev.size, ev.align, length, mask, ev.addr)
            fits = _rd.shrink_fit(space.free.root, space.nodes, *args)
            if fits is not None:
                return bool(fits)
        # The free blocks ascending (from the tree, lazily) merged with the pooled
        # areas (sorted): touching spans form one range; the first range the search
        # length fits in decides, so the walk stops there.
        pooled = [
            (va.va_start, va.va_end)
            for vn in space.nodes
            for pool in vn.pools.values()
            for va in pool
        ]
        pooled.sort()
        spans = heapq.merge(((va.va_start, va.va_end) for va in space.free_areas()), pooled)

        def decides(start: int, end: int) -> bool | None:
            lo = max(start, ev.vstart)
            if end - lo >= length:
                nva = (lo + ev.align - 1) & mask
                return bool(nva == ev.addr and nva + ev.size <= min(end, ev.vend))
            return None

        cur: list[int] | None = None
        for start, end in spans:
            if cur is not None and cur[1] == start:
                cur[1] = end
                continue
            if cur is not None:
                found = decides(cur[0], cur[1])
                if found is not None:
                    return found
            cur = [start, end]
        if cur is not None:
            found = decides(cur[0], cur[1])
            if found is not None:
                return found
        return False

    def _first_free(self) -> VmapArea | None:
        """The lowest free block of the model's tree."""
        node: VmapArea | None = self.space.free_root.rb_node
        while node is not None and node.rb_left is not None:
            node = node.rb_left
        return node

    def _refill_race(self, ev: AllocVmapArea, node: int, idx: int) -> Cause | None:
        """The kernel took an entry of this node's pool that the open (or just ended)
        purge pushed, below the model's head: the kernel's refill was in flight.

        ``purge_vmap_node`` pushes a node's areas onto the pool head one at a time, in
        ascending address order, while other CPUs allocate from it; each allocation
        meanwhile takes the area pushed last. Which one that is depends on that
        allocation's own timing against the refill, to within a few hundred
        nanoseconds: a race of its own, not a consequence of an earlier mismatch.
        """
        kind, obj, pnode, pos = self._where(ev.addr, ev.size)
        if kind == "purging" and self._advance_purge(ev):
            kind, obj, pnode, pos = self._where(ev.addr, ev.size)
        b = self.beliefs
        if (
            kind != "pool"
            or pnode != node
            or pos <= 0
            or not isinstance(obj, VmapArea)
            or b.gen.get(id(obj)) != b.purge_seq
        ):
            return None
        return Cause(
            RACE,
            f"pool refill in flight: node {node}'s pool[{idx}] held only the areas its "
            f"purge had pushed by then (ascending); the kernel took the last pushed, "
            f"{pos} below the model's head",
            ("refill", b.purge_seq, ev.line),
        )

    def _decay_in_flight(
        self,
        ev: AllocVmapArea,
        dec: Decision | None,
        kind: str,
        obj: object,
        model_addr: int,
    ) -> Cause | None:
        """A divergence explained by the open purge's decay, not yet in the kernel's
        free tree (or already, when the model held it back).

        ``decay_va_pool_node`` takes each node's decayed areas into a private tree
        and merges them into the global free tree after all of that node's pools, so
        the kernel's searches see them only some time after the purge began, and
        before its refill (which follows every node's decay). When the model's tree
        choice lies in a decayed area and the kernel's is higher, the kernel's tree
        lacked them: the model holds the decayed areas of that node and the nodes
        after it out of its tree, each node's until its decay is due to end
        (:data:`DECAY_SECONDS_PER_AREA`), the refill begins, or the kernel allocates
        in one.
        """
        seq = self.beliefs.purge_seq
        if (
            self._held
            and kind == "parked"
            and any(va.va_start <= ev.addr < va.va_end for va in self._held)
        ):
            self._decay_reached_tree()
            return Cause(
                RACE,
                "a purge's pool decay had reached the kernel's free tree by then",
                ("decay", seq),
            )
        if (
            not self._decayed
            or self._held
            or kind != "free"
            or dec is None
            or dec.source != "tree"
            or ev.addr <= model_addr
        ):
            return None
        block = dec.block
        first = next((r for r in self._decayed if r[0] < block[1] and block[0] < r[1]), None)
        if first is None:
            return None
        # Node by node, each node's decayed areas reach the tree when its decay ends,
        # assumed DECAY_SECONDS_PER_AREA per area decayed since the purge began.
        began = self._purge_began_at if self._purge_began_at is not None else ev.timestamp
        count = 0
        for node in sorted({r[2] for r in self._decayed}):
            mine = [r for r in self._decayed if r[2] == node]
            count += len(mine)
            done = began + count * DECAY_SECONDS_PER_AREA
            if node >= first[2] and done > ev.timestamp:
                held = self.beliefs.hold_decayed(mine)
                self._held.extend(held)
                self._held_until.append((done, held))
        if not self._held:
            return None
        return Cause(
            RACE,
            f"a purge's pool decay (node {first[2]}) had not reached the kernel's free tree yet",
            ("decay", seq),
        )

    def _advance_purge(self, ev: AllocVmapArea) -> bool:
        """Run the next purge's phases now, as far as needed for the kernel's address
        to be free (its first phase only if the model already waits for it)."""
        advanced = False
        nxt = self._next_purge
        if self._pending is None and nxt is not None and self._armed_at is not None:
            self._begin_purge(nxt)
            self._purge_began_at = ev.timestamp
            self._armed_at = None
            self._plan_node_finish(ev.timestamp, nxt)
            advanced = True
        pending = self._pending
        while pending is not None and pending.marked:
            if self._where(ev.addr, ev.size)[0] == "free":
                break
            self._run_node(pending, self._marked_index(pending, ev.addr))
            if self._node_done_at:
                self._node_done_at.pop(0)
            advanced = True
        return advanced and self._where(ev.addr, ev.size)[0] == "free"

    def _moved_to_done_node(self, va: VmapArea) -> bool:
        """The kernel allocated in ``va``, which the open purge still holds on the
        node the model guessed for it (busy before the snapshot), while another node's
        second phase is done: ``va`` was that node's, and went back with it. Returns
        it to the tree as that node's ``purge_vmap_node`` would have (the kernel had it
        in its tree), and says whether it did."""
        pending = self._pending
        b = self.beliefs
        if pending is None or not self._done_nodes or b.node_known(va):
            return False
        for vn, lst in pending.marked:
            if vn.id in self._done_nodes or va not in lst:
                continue
            done = next(iter(self._done_nodes))
            lst.remove(va)
            pending.batch.remove(va)
            self.space._purge_vmap_node(self.space.nodes[done], [va], skip_populate=True)
            b.revisions += 1
            b.vote_node(va, vn.id, done)
            return True
        return False

    @staticmethod
    def _marked_index(pending: PendingPurge, addr: int) -> int:
        """The open purge's marked node whose areas hold ``addr`` (0 if none does)."""
        for i, (_vn, lst) in enumerate(pending.marked):
            for va in lst:
                if va.va_start <= addr < va.va_end:
                    return i
        return 0

    def _in_race_window(self, t: float) -> bool:
        """Whether ``t`` lies within a purge the trace cannot order against (open, or
        ended within the clock resolution of the trace)."""
        if self._pending is not None:
            return True
        return self._last_purge_end is not None and abs(t - self._last_purge_end) <= RACE_SECONDS

    @staticmethod
    def _describe(loc: tuple[str, object, int, int]) -> str:
        """Where the model kept the kernel's address, in words."""
        kind, obj, node, pos = loc
        if isinstance(obj, tuple):
            return f"{kind} block {hex(obj[0])}-{hex(obj[1])}"  # hex(): "#x", cheaper
        if isinstance(obj, VmapArea):
            r = f"{hex(obj.va_start)}-{hex(obj.va_end)}"
            if kind == "pool":
                return f"pool node {node} class {pool_class(obj.va_end - obj.va_start)} position {pos} ({r})"
            if kind == "pooled-other":
                return f"inside pooled {r} (node {node})"
            return f"{'being purged' if kind == 'purging' else kind} {r}"
        return "nowhere"

    def _where_tree(self, addr: int) -> tuple[str, object, int, int] | bool:
        """:meth:`_where` in the free tree, the busy trees and the parked ranges
        (False: in none of them)."""
        space = self.space
        blk = space.free.pvm_find_va_enclose_addr(addr)
        if blk is not None and blk.va_start <= addr < blk.va_end:
            return "free", (blk.va_start, blk.va_end), -1, -1
        busy = space.find_vmap_area(addr)
        if busy is not None:
            return "busy", busy, -1, -1
        parked = self.beliefs.parked_at(addr) if self.beliefs.parked else None
        if parked is not None:
            return "parked", (parked.va_start, parked.va_end), -1, -1
        return False

    def _where(self, addr: int, size: int) -> tuple[str, object, int, int]:
        """Where the model keeps ``addr``: (kind, area or block, node, pool position).

        The structures are disjoint; the cheap lookups come first."""
        space = self.space
        b = self.beliefs
        found: tuple[str, object, int, int] | bool | None = None
        if _rd is not None:  # the trees and the parked ranges in one compiled call
            found = _rd.where_tree(space, b.parked, b._parked_starts, addr)
        if found is None:
            found = self._where_tree(addr)
        if isinstance(found, tuple):
            return found
        idx = pool_class(size)
        for vn in space.nodes:
            pool = vn.pools.get(idx)
            if pool:
                for i, va in enumerate(pool):
                    if va.va_start == addr:
                        return "pool", va, vn.id, i
        for va in space.lazy:
            if va.va_start <= addr < va.va_end:
                return "lazy", va, -1, -1
        for pending in space.in_purge:
            for va in pending.batch:
                if va.va_start <= addr < va.va_end:
                    return "purging", va, -1, -1
        end = addr + size
        for vn in space.nodes:
            for pool in vn.pools.values():
                for va in pool:
                    if va.va_start < end and addr < va.va_end:
                        return "pooled-other", va, vn.id, -1
        return "other", None, -1, -1

    def free(self, ev: FreeVmapAreaNoflush) -> None:
        space = self.space
        res = self.result
        res.frees += 1
        if not self.harness.free(ev.va_start, ev.cpu % self.cpus):
            res.frees_unknown += 1
            return
        lazy = space.lazy
        if lazy and lazy[-1].va_start == ev.va_start:  # the area just queued
            self.beliefs.recycled[ev.va_start] = lazy[-1].va_end - lazy[-1].va_start
        pending = self._pending
        if pending is not None and pending.marked and self.trace_driven:
            self._nodes_done_by_nr_lazy(pending, ev.nr_lazy)
        if self.trace_driven:
            # Frees racing on different CPUs may add to vmap_lazy_nr in another order
            # than their timestamps (the trace clock is per CPU), so a few show a
            # difference that the race cancels; an accounting error is permanent. Only
            # a difference that lasts DRIFT_RUN consecutive frees is a drift.
            if space.vmap_lazy_nr != ev.nr_lazy:
                self._drift_run += 1
                if self._drift_run >= DRIFT_RUN:
                    res.lazy_drift += 1
                    if res.first_lazy_drift_line is None:
                        res.first_lazy_drift_line = ev.line
            else:
                self._drift_run = 0
        # A purge detaches exactly the lazy areas present when it starts, and its
        # event's num_purged says how many: once this many are waiting, the next
        # purge has started (decayed the pools, detached the lists) even though its
        # event, written when it ends, comes later in the trace.
        if ev.nr_lazy > ev.nr_lazy_max and self._crossed_at is None:
            self._crossed_at = ev.timestamp  # schedule_work(drain_vmap_work) here
        nxt = self._next_purge
        if (
            self.trace_driven
            and self.early_decay
            and nxt is not None
            and self._pending is None
            and self._armed_at is None
            and len(space.lazy) == nxt.npurged
            and not self._reclaim_purge()
        ):
            # The purge starts after this free, and after its worker woke up.
            wake = (self._crossed_at or ev.timestamp) + self.worker_latency
            self._armed_at = max(ev.timestamp, wake)

    def _reclaim_purge(self) -> bool:
        """Whether the next purge is ``reclaim_and_purge_vmap_areas()``: the one
        ``alloc_vmap_area`` runs in the allocating task right after its failed
        tracepoint (pools fully decayed, none refilled). It starts there, not at a
        worker's wake-up, and the model runs it whole at its event."""
        i = self._purge_index
        if i <= 0:
            return False
        nxt = self._events[i]
        for j in range(i - 1, max(-1, i - 1 - REORDER_EVENTS), -1):
            prev = self._events[j]
            if prev.pid == nxt.pid and prev.task == nxt.task:
                return isinstance(prev, AllocVmapArea) and bool(prev.failed)
        return False

    def purge(self, ev: PurgeVmapAreaLazy) -> None:
        self.result.purges += 1
        if not self.trace_driven:
            return  # older profiles purge on their own lazy threshold
        # A purge right after a failed allocation is the reclaim purge: pools are
        # fully decayed and not refilled.
        full = self._last_alloc_failed or self._reclaim_purge()
        self._decay_reached_tree()
        self._decayed = []
        before = self.beliefs.before_refill()
        if self._pending is not None:
            self.space.finish_purge(self._pending)
            self._pending = None
            self._node_done_at = []
        else:
            self.beliefs.purge_seq += 1
            self._purge_began_at = ev.timestamp
            self.harness.purge(ev.npurged, full)
        self.beliefs.after_refill(before)
        self._last_purge_end = ev.timestamp
        self._last_alloc_failed = False
        self._crossed_at = None

    def resolve_window(self, window: Sequence[TraceEvent], what: str = "snapshot") -> None:
        """Events between ``snapshot-begin`` and ``snapshot-end``, checked one by one.

        The kernel prints vmallocinfo one vmap node at a time under that node's lock,
        busy areas first, then the lazy lists, so each of these events may or may not
        be in the file. An allocation whose range the snapshot shows busy is reflected;
        one it does not show happened after its node was printed and is applied. A free
        of an area the model has busy is applied (the snapshot printed it before the
        free); one the snapshot shows as lazily freed is reflected.
        """
        space = self.space
        res = self.result
        for ev in window:
            if isinstance(ev, AllocVmapArea):
                if ev.failed:
                    res.window_reflected += 1
                    continue
                va = space.find_vmap_area(ev.addr)
                if va is not None and va.va_start == ev.addr and va.va_end == ev.addr + ev.size:
                    res.window_reflected += 1
                    continue
                if va is not None:  # overlaps a busy area: cannot be applied
                    res.notes.append(f"line {ev.line}: window allocation overlaps {va!r}")
                    continue
                self._adopt(ev, ev.cpu % self.cpus)
                res.window_applied += 1
            elif isinstance(ev, FreeVmapAreaNoflush):
                va = space.find_vmap_area(ev.va_start)
                if va is not None and va.va_start == ev.va_start:
                    self.free(ev)
                    res.frees -= 1  # counted by the window, not the trace part
                    res.window_applied += 1
                else:
                    res.window_reflected += 1
            elif isinstance(ev, PurgeVmapAreaLazy):
                # A purge ending in the window began before it: its detached areas
                # were on no list the snapshot printed, so the snapshot reflects it.
                res.window_reflected += 1
        if window:
            res.notes.append(
                f"{len(window)} events fell between the {what} markers: "
                f"{res.window_reflected} already in the {what}, {res.window_applied} applied"
            )

    def finish(self) -> ReplayResult:
        space = self.space
        self.beliefs.unpark_all()
        if self._pending is not None:  # the trace ended inside a purge
            space.finish_purge(self._pending)
            self._pending = None
        res = self.result
        sizes = space.range_sizes(space.free_areas())
        res.end_free_blocks_in_range = len(sizes)
        res.end_largest_free_in_range = max(sizes, default=0)
        res.end_busy = space.nr_busy
        res.revisions = self.beliefs.revisions
        res.summarize_causes()
        return res


def compare_end_snapshot(
    space: VmapSpace, info: VmallocInfo, guessed: set[int] | None = None
) -> dict[str, int]:
    """Compare the model's busy and lazily freed areas with a final vmallocinfo.

    Busy areas are compared as ranges; lazily freed areas as ranges and, with several
    vmap nodes, by the node whose list the kernel printed them on. ``guessed`` holds
    the starts of areas whose node the model only guessed (busy before the snapshot):
    their node differences are counted apart, as ``lazy_node_differs_guessed``.
    """
    model_busy = {(va.va_start, va.va_end) for va in space.busy_areas()}
    kernel_busy = {(e.start, e.end) for e in info.busy}
    model_lazy = {(va.va_start, va.va_end): space.lazy_node_of(va) for va in space.lazy}
    for pending in space.in_purge:
        for va in pending.batch:
            model_lazy[(va.va_start, va.va_end)] = space.lazy_node_of(va)
    n = space.nr_vmap_nodes
    runs = lazy_runs(info) if info.unpurged else []
    # The kernel prints node 0's lazy list, then node 1's...: each ascending run is one
    # node, but an empty list leaves no trace, so with fewer runs than nodes any
    # increasing choice of nodes fits the file. Take the one closest to the model.
    best: dict[tuple[int, int], int] = {}
    best_diff = -1
    for choice in itertools.combinations(range(n), len(runs)) if len(runs) <= n else [()]:
        if not choice and runs:  # more runs than nodes: not a 6.x file of this machine
            choice = tuple(range(len(runs)))
        pairs = zip(runs, choice, strict=True)
        cand = {(e.start, e.end): node for run, node in pairs for e in run}
        diff = sum(model_lazy.get(r, node) != node for r, node in cand.items())
        if best_diff < 0 or diff < best_diff:
            best, best_diff = cand, diff
    kernel_lazy = best
    both = model_lazy.keys() & kernel_lazy.keys()
    return {
        "busy_agree": len(model_busy & kernel_busy),
        "busy_only_model": len(model_busy - kernel_busy),
        "busy_only_kernel": len(kernel_busy - model_busy),
        "lazy_agree": len(both),
        "lazy_only_model": len(model_lazy.keys() - kernel_lazy.keys()),
        "lazy_only_kernel": len(kernel_lazy.keys() - model_lazy.keys()),
        "lazy_node_differs": sum(model_lazy[r] != kernel_lazy[r] for r in both),
        "lazy_node_differs_guessed": sum(
            model_lazy[r] != kernel_lazy[r] for r in both if r[0] in (guessed or ())
        ),
    }


def _events_after_snapshot(
    parsed: TraceParseResult,
    res: ReplayResult,
    info: VmallocInfo | None = None,
    window: list[TraceEvent] | None = None,
) -> list[TraceEvent]:
    """The events the snapshot does not reflect yet (see :func:`events_after_snapshot`).

    With ``window``, the events between the snapshot markers go there, to be checked
    against the snapshot one by one (:meth:`Replayer.resolve_window`).
    """
    out = events_after_snapshot(parsed, info)
    res.skipped_before_snapshot = out.skipped
    begin, end = parsed.marker("snapshot-begin"), parsed.marker("snapshot-end")
    if window is not None and begin is not None and end is not None:
        window.extend(e for e in parsed.events if begin.line < e.line < end.line)
        res.skipped_before_snapshot -= len(window)
        res.notes.extend(n for n in out.notes if "between the snapshot markers" not in n)
    else:
        res.notes.extend(out.notes)
    return out.events


def replay(
    trace: str | os.PathLike[str] | Iterable[str],
    snapshot: str | os.PathLike[str],
    *,
    profile: str = "6.18",
    cpus: int | None = None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
    end_snapshot: str | os.PathLike[str] | None = None,
    placement: Any = None,
    pools: Any = None,
    observer: Observer | None = None,
    on_kernel: Callable[[Kernel], object] | None = None,
    kstate: KState | None = None,
    kstate_end: KState | None = None,
) -> ReplayResult:
    """Replay ``trace`` from ``snapshot`` under ``profile``; return the comparison.

    With ``end_snapshot`` (a capture's ``vmallocinfo.end``) the replay stops where the
    end snapshot was read and compares the model's final state with it.
    ``placement``/``pools`` override the profile's policies (a name, ``module:Class``,
    a class or an instance); ``observer(index, event, harness)`` is called after each
    event. ``on_kernel`` is called with the model's final :class:`Kernel` (for
    ``--vmallocinfo-out``).

    With ``kstate`` (a capture's ``kstate.json``, read after the snapshot between the
    trace's ``kstate-begin``/``kstate-end`` markers) the model is seeded from the
    kernel's own state instead: events before ``kstate-begin`` are reflected in it,
    those between the markers are checked against it one by one, the rest applied.
    With ``kstate_end`` the replay runs on to ``end-kstate-begin`` and compares the
    model's free tree and pools with it, node by node (``end_kstate``).
    """
    meta = meta or {}
    if cpus is None:
        possible = meta.get("cpus_possible")
        cpus = len(possible) if isinstance(possible, list) and possible else 2
    info = parse_vmallocinfo(snapshot)
    parsed = parse_trace(trace, cpus=nr_cpus(meta))  # an event's CPU must exist
    t0 = time.perf_counter()
    kb, ke = parsed.marker("kstate-begin"), parsed.marker("kstate-end")
    marked = kb is not None and ke is not None and kb.line < ke.line
    rp = Replayer(
        info,
        profile=profile,
        cpus=cpus,
        placement=placement,
        pools=pools,
        kstate=kstate if marked else None,
    )
    res = rp.result
    if kstate is not None and not marked:
        res.seed_note = "kstate not used: the trace has no kstate-begin/kstate-end markers"
    res.trace_lost_events = parsed.lost
    res.trace_incomplete = parsed.incomplete
    if "drop_caches" in meta:
        res.drop_caches = bool(meta["drop_caches"])
    # Hidden pools also after drop_caches: areas busy or lazy at snapshot time have a
    # guessed node, and a purge in the trace pools them on the kernel's node (docs/replay.md).
    rp._infer_pools = rp.trace_driven and rp.seed != "kstate"
    window: list[TraceEvent] = []
    if rp.seed == "kstate":
        assert kb is not None and ke is not None
        window = [e for e in parsed.events if kb.line < e.line < ke.line]
        events = [e for e in parsed.events if e.line > ke.line]
        res.skipped_before_snapshot = len(parsed.events) - len(events) - len(window)
    else:
        events = _events_after_snapshot(parsed, res, info, window)
    rp.resolve_window(window, "kstate" if rp.seed == "kstate" else "snapshot")
    end_info = parse_vmallocinfo(end_snapshot) if end_snapshot is not None else None
    end_mark = parsed.marker("end-snapshot-begin")
    if kstate_end is not None and (
        not kstate_end.consistent or kstate_end.taken != "after-end-snapshot"
    ):
        res.notes.append(
            f"{kstate_end.name} not compared: "
            + ("every readout raced" if not kstate_end.consistent else f"taken {kstate_end.taken}")
        )
        kstate_end = None
    ek = parsed.marker("end-kstate-begin") if kstate_end is not None else None
    rest: list[TraceEvent] = []
    if end_info is not None and end_mark is not None:
        rest = [e for e in events if e.line >= end_mark.line and (ek is None or e.line < ek.line)]
        events = [e for e in events if e.line < end_mark.line]
    elif ek is not None:
        events = [e for e in events if e.line < ek.line]
    rp.run(events, progress=progress, observer=observer)
    if ek is not None and kstate_end is not None:  # end snapshot first, then on to kstate.end
        if end_info is not None and rp.profile.vmap_nodes:
            res.end_check = compare_end_snapshot(rp.space, end_info, rp.beliefs.guessed_starts())
        rp.run(rest, observer=observer)
        rp.finish()
        if rp.profile.vmap_nodes:
            res.end_kstate = compare_kstate(kstate_of(rp.kernel), kstate_end)
    else:
        rp.finish()
        if end_info is not None and rp.profile.vmap_nodes:
            res.end_check = compare_end_snapshot(rp.space, end_info, rp.beliefs.guessed_starts())
        if kstate_end is not None:
            res.notes.append("kstate.end not compared: no end-kstate-begin marker in the trace")
    res.seconds = time.perf_counter() - t0
    rp.kernel.check()
    if on_kernel is not None:
        on_kernel(rp.kernel)
    return res


def replay_capture(
    path: str | os.PathLike[str],
    *,
    use_kstate: bool = True,
    end: bool = True,
    **kwargs: Any,
) -> ReplayResult:
    """Replay a capture directory as ``pyvmalloc replay DIR`` does: its trace from its
    snapshot with its meta, seeded from ``kstate.json`` when it has one (unless
    ``use_kstate`` is false), and with ``end`` compared at the end with its
    ``vmallocinfo.end`` and ``kstate.end.json`` when it has them. Other keywords go to
    :func:`replay`."""
    cap = load_capture_dir(path)
    kstate, kstate_end = cap.kstates() if use_kstate else (None, None)
    return replay(
        cap.trace,
        cap.snapshot,
        meta=cap.meta,
        end_snapshot=cap.end_snapshot if end else None,
        kstate=kstate,
        kstate_end=kstate_end if end else None,
        **kwargs,
    )


# ----------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------


def _kstates(args: argparse.Namespace) -> tuple[KState | None, KState | None]:
    """A capture directory's kstate files, checked; none with ``--no-kstate`` or an
    explicit ``--snapshot`` (the readout belongs to the capture's own snapshot)."""
    trace = Path(args.trace)
    if args.no_kstate or args.snapshot or not trace.is_dir():
        return None, None
    return load_capture_dir(trace).kstates()


def _resolve(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    trace = Path(args.trace)
    if not trace.exists():
        raise ValueError(f"{trace}: no such file or directory (TRACE: a capture or a trace)")
    if args.snapshot and not Path(args.snapshot).exists():
        raise ValueError(f"{args.snapshot}: no such file or directory (--snapshot)")
    if trace.is_dir():
        t, s, meta = load_capture(trace)
        return t, Path(args.snapshot) if args.snapshot else s, meta
    if not args.snapshot:
        raise ValueError(
            f"{trace} is a trace file: give its snapshot with --snapshot VMALLOCINFO "
            "(or pass the capture directory)"
        )
    meta = {}
    if (trace.parent / "meta.json").exists():
        meta = read_meta(trace.parent / "meta.json")
    return trace, Path(args.snapshot), meta


def print_result(res: ReplayResult, show: int) -> None:
    """Print a replay's agreement, counts and first divergences."""
    from rich.table import Table

    from pyvmalloc.cli_output import console

    c = console()
    pct = 100 * res.agreement
    if res.allocs_compared:
        c.print(
            f"[bold]kernel {res.profile}[/], {res.cpus} CPUs: "
            f"{res.allocs_matched}/{res.allocs_compared} allocations agree "
            f"([bold]{pct:.2f} %[/])"
        )
        kc = res.known_compared
        c.print(
            f"where the state was fully known: {res.allocs_matched - res.allocs_matched_guessed}"
            f"/{kc} ({100 * res.agreement_known:.2f} %); mismatches by class: "
            + (", ".join(f"{k} {v}" for k, v in Counter(
                m.cause_class for m in res.mismatches).most_common()) or "none")
        )  # fmt: skip
    else:
        c.print(f"[bold]kernel {res.profile}[/]: the trace has no allocation to compare")
    t = Table(show_header=False)
    ks = res.seed == "kstate"
    seed = (
        f"kstate.json (the kernel's free tree, {res.kstate_free_nodes} nodes in its shape; "
        f"pools, {res.kstate_pooled} areas; lazy lists)"
        if ks
        else "the snapshot" + (f" ({res.seed_note})" if res.seed_note else "")
    )
    rows = [
        ("seeded from", seed),
        ("events replayed", res.events),
        (
            f"events before the {'kstate' if ks else 'snapshot'} (skipped)",
            res.skipped_before_snapshot,
        ),
        (
            f"{'kstate' if ks else 'snapshot'}: busy / lazily freed areas",
            f"{res.snapshot_busy} / {res.snapshot_lazy}",
        ),
        ("frees (unknown address)", f"{res.frees} ({res.frees_unknown})"),
        ("purges", res.purges),
        ("failures kernel / model", f"{res.kernel_failures} / {res.model_failures}"),
        ("frees whose nr_lazy differs", res.lazy_drift),
        ("free blocks in the vmalloc range at the end", res.end_free_blocks_in_range),
        ("largest free block at the end", format_size(res.end_largest_free_in_range)),
        ("replay speed (events/s)", f"{res.events / res.seconds:,.0f}" if res.seconds else "-"),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    c.print(t, markup=False)
    if res.end_check is not None:
        e = res.end_check
        c.print(
            f"end state vs the kernel's end snapshot: busy {e['busy_agree']} agree "
            f"(+{e['busy_only_model']} model only, +{e['busy_only_kernel']} kernel only); "
            f"lazily freed {e['lazy_agree']} agree (+{e['lazy_only_model']} / "
            f"+{e['lazy_only_kernel']}), {e['lazy_node_differs']} on another node",
            markup=False,
        )
    if res.end_kstate is not None:
        e = res.end_kstate
        c.print(
            f"free tree vs the kernel's kstate.end: {e['free_agree']}/{e['free_nodes_kernel']} "
            f"nodes agree (range, parent, side, colour); {e['free_position_differs']} in "
            f"another position, {e['free_color_differs']} another colour, "
            f"+{e['free_only_model']} model only, +{e['free_only_kernel']} kernel only; "
            f"pools {e['pool_agree']} agree, {e['pool_moved']} elsewhere, "
            f"+{e['pool_only_model']} / +{e['pool_only_kernel']}",
            markup=False,
        )
    if res.trace_incomplete:
        c.print(f"[bold red]the trace lost events ({res.trace_lost_events}): expect divergence")
    if res.drop_caches is False and res.seed != "kstate":  # kstate.json holds the pools
        c.print(
            "[yellow]the capture did not drop caches before its snapshot: pool contents "
            "were invisible; the replay inferred them from the kernel's choices"
        )
    for note in [n for n in res.notes if not n.startswith("line ")][:3]:
        c.print(f"note: {note}", markup=False, highlight=False)
    for m in res.mismatches[:show]:
        k = f"{m.kernel:#x}" if m.kernel is not None else "failed"
        md = f"{m.model:#x}" if m.model is not None else "failed"
        c.print(
            f"line {m.line}: size={m.size} align={m.align} cpu={m.cpu}: kernel {k}, "
            f"model {md}\n    model: {m.model_reason}\n    kernel's address was: "
            f"{m.kernel_location}\n    {m.cause_class}: {m.cause}"
            + (f" (and {m.cascade} later mismatches)" if m.cascade else ""),
            markup=False,
        )
    if len(res.mismatches) > show:
        c.print(f"... and {len(res.mismatches) - show} more divergences")
    for n in res.notes[:5]:
        c.print(f"note: {n}", markup=False)


def _check_fail_under(results: Sequence[ReplayResult], pct: float | None) -> int:
    """Exit status for ``--fail-under PCT``: 1 when any agreement is below ``pct``."""
    if pct is None:
        return 0
    low = [r for r in results if 100 * r.agreement < pct]
    for r in low:
        print(
            f"pyvmalloc: agreement of kernel {r.profile} is {100 * r.agreement:.2f} %, "
            f"below --fail-under {pct:g} %",
            file=sys.stderr,
        )
    return 1 if low else 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable, write_json, write_output

    trace, snap, meta = _resolve(args)
    check_writable(args.json, "--json")
    check_writable(args.vmallocinfo_out, "--vmallocinfo-out")
    end = args.end_snapshot
    if end is not None and not Path(end).exists():
        raise ValueError(f"{end}: no such file or directory (--end-snapshot)")
    if (
        end is None
        and Path(args.trace).is_dir()
        and (Path(args.trace) / "vmallocinfo.end").exists()
    ):
        end = Path(args.trace) / "vmallocinfo.end"
    kernels: list[Kernel] = []
    ks, ks_end = _kstates(args)
    res = replay(
        trace,
        snap,
        profile=args.profile,
        cpus=args.cpus,
        progress=sys.stderr.isatty() and not args.no_progress,
        meta=meta,
        end_snapshot=end,
        on_kernel=kernels.append,
        kstate=ks,
        kstate_end=ks_end,
    )
    if args.vmallocinfo_out:
        text = kernels[0].vmallocinfo()
        if args.vmallocinfo_out == "-":
            sys.stdout.write(text)
        else:
            write_output(args.vmallocinfo_out, text)
    if args.json:
        write_json(res.as_json(), args.json)
    if args.json != "-" and args.vmallocinfo_out != "-":
        print_result(res, args.show)
    return _check_fail_under([res], args.fail_under)


@dataclass
class CompareRow:
    """One column of ``compare``: a profile (and policies) replayed on the trace."""

    label: str
    result: ReplayResult
    #: Peak of busy + lazily freed bytes in the vmalloc range.
    peak_used_bytes: int = 0
    #: The smallest "largest free block" and the most free blocks seen over time.
    min_largest_free: int = 0
    max_free_blocks: int = 0
    #: Free-space nodes (tree or list) examined per allocation.
    search_cost_per_alloc: float = 0.0
    #: ``(event index, used bytes, largest free block, free blocks)`` over time.
    samples: list[tuple[int, int, int, int]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "profile": self.result.profile,
            "placement": self.result.placement,
            "pools": self.result.pools,
            "agreement": self.result.agreement,
            "allocs_compared": self.result.allocs_compared,
            "allocs_matched": self.result.allocs_matched,
            "model_failures": self.result.model_failures,
            "kernel_failures": self.result.kernel_failures,
            "peak_used_bytes": self.peak_used_bytes,
            "min_largest_free": self.min_largest_free,
            "max_free_blocks": self.max_free_blocks,
            "end_largest_free": self.result.end_largest_free_in_range,
            "end_free_blocks": self.result.end_free_blocks_in_range,
            "search_cost_per_alloc": self.search_cost_per_alloc,
            "samples": [
                {"event": i, "used": u, "largest_free": lf, "free_blocks": fb}
                for i, u, lf, fb in self.samples
            ],
            "replay": self.result.as_json(),
        }


def compare_one(
    trace: Path,
    snap: Path,
    profile: str,
    *,
    cpus: int | None,
    meta: dict[str, Any],
    placement: Any = None,
    pools: Any = None,
    label: str | None = None,
    samples: int = 100,
    kstate: KState | None = None,
) -> CompareRow:
    """Replay the trace once, measuring what a policy developer needs over time."""
    from pyvmalloc.trace.harness import fragmentation

    row = CompareRow(label or profile, ReplayResult(profile=profile, cpus=0))
    row.min_largest_free = -1
    step = 0  # sample every step-th event (set from the trace's length at the first event)

    spent = 0.0  # time in the sampling itself, kept out of the replay's speed

    def observe(i: int, ev: TraceEvent, h: Any) -> None:
        nonlocal step, spent
        if not step:
            step = max(1, h.n_events // samples)
        if i % step and i != h.n_events - 1:
            return
        t0 = time.perf_counter()
        f = fragmentation(h.space)
        used = f.busy_bytes + f.lazy_bytes
        row.samples.append((i, used, f.largest_free, f.free_blocks))
        row.peak_used_bytes = max(row.peak_used_bytes, used)
        if row.min_largest_free < 0 or f.largest_free < row.min_largest_free:
            row.min_largest_free = f.largest_free
        row.max_free_blocks = max(row.max_free_blocks, f.free_blocks)
        row.search_cost_per_alloc = h.space.search_cost
        spent += time.perf_counter() - t0

    res = replay(
        trace,
        snap,
        profile=profile,
        cpus=cpus,
        meta=meta,
        placement=placement,
        pools=pools,
        observer=observe,
        kstate=kstate,
    )
    res.seconds = max(0.0, res.seconds - spent)
    row.result = res
    if row.min_largest_free < 0:
        row.min_largest_free = res.end_largest_free_in_range
    allocs = max(1, res.allocs_compared)
    row.search_cost_per_alloc = row.search_cost_per_alloc / allocs
    return row


def compare(
    trace: Path,
    snap: Path,
    profiles: Sequence[str],
    *,
    cpus: int | None,
    meta: dict[str, Any],
    policies: Sequence[str] = (),
    policy_profile: str = "6.18",
    show: bool = True,
    kstate: KState | None = None,
) -> list[CompareRow]:
    """Replay one trace under several profiles (and placement policies), one table.

    Each of ``policies`` (a registered name or ``module:Class``) adds a column: the
    trace under ``policy_profile`` with that placement policy.
    """
    from rich.table import Table
    from rich.text import Text

    from pyvmalloc.cli_output import console

    rows = [compare_one(trace, snap, p, cpus=cpus, meta=meta, kstate=kstate) for p in profiles]
    for spec in policies:
        rows.append(
            compare_one(
                trace,
                snap,
                policy_profile,
                cpus=cpus,
                meta=meta,
                placement=spec,
                label=f"{policy_profile} + {spec}",
                kstate=kstate,
            )
        )
    if not show:
        return rows
    t = Table(title=Text(f"one trace, several kernels and policies ({trace})"))
    columns: list[tuple[str, Callable[[CompareRow], str]]] = [
        ("model", lambda r: r.label),
        ("placement", lambda r: r.result.placement),
        ("pools", lambda r: r.result.pools),
        ("agreement", lambda r: f"{100 * r.result.agreement:.2f} %"),
        ("model failures", lambda r: str(r.result.model_failures)),
        ("peak use", lambda r: format_size(r.peak_used_bytes)),
        ("min largest free", lambda r: format_size(r.min_largest_free)),
        ("max free blocks", lambda r: str(r.max_free_blocks)),
        ("search nodes/alloc", lambda r: f"{r.search_cost_per_alloc:.1f}"),
        (
            "events/s",
            lambda r: f"{r.result.events / r.result.seconds:,.0f}" if r.result.seconds else "-",
        ),
    ]
    for name, _ in columns:
        t.add_column(name, justify="left" if name == "model" else "right")
    for r in rows:
        t.add_row(*(fn(r) for _, fn in columns))
    console().print(t, markup=False)
    return rows


def _cmd_compare(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable, write_json
    from pyvmalloc.config import PROFILES

    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown or not profiles:
        raise ValueError(
            f"--profiles {args.profiles!r}: unknown profile {', '.join(unknown) or '(none)'}; "
            f"known: {', '.join(PROFILES)}"
        )
    if len(set(profiles)) != len(profiles):  # the same column twice
        raise ValueError(f"--profiles {args.profiles!r}: a profile is listed twice")
    trace, snap, meta = _resolve(args)
    check_writable(args.json, "--json")
    results = compare(
        trace,
        snap,
        profiles,
        cpus=args.cpus,
        meta=meta,
        policies=args.policy,
        policy_profile=args.policy_profile,
        show=args.json != "-",
        kstate=_kstates(args)[0],
    )
    if args.json:
        write_json([r.as_json() for r in results], args.json)
    return _check_fail_under([r.result for r in results], args.fail_under)


def _percent(text: str) -> float:
    """``--fail-under PCT``: ASCII digits with an optional fraction and ``%`` (Python's
    float() would also take other scripts' digits, ``1_0``, ``nan``)."""
    if not re.fullmatch(r"[0-9]+(?:\.[0-9]*)?%?|\.[0-9]+%?", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}")
    v = float(text.rstrip("%"))
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"a percentage is 0..100, not {text}")
    return v


def register_cli(sub: Any) -> None:
    """Add the ``replay`` and ``compare`` subcommands."""
    from pyvmalloc.cli_output import add_json_argument, add_profile_argument
    from pyvmalloc.config import PROFILES

    for name, func, helptext in (
        ("replay", _cmd_replay, "replay a kernel trace from a vmallocinfo snapshot"),
        ("compare", _cmd_compare, "replay one trace under several kernel profiles"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument(
            "trace",
            metavar="TRACE",
            help="a capture directory (pyvmalloc capture), or a raw ftrace text file "
            "(.gz allowed) with --snapshot",
        )
        p.add_argument(
            "--snapshot",
            metavar="VMALLOCINFO",
            help="the /proc/vmallocinfo read at the trace's start (default: the capture's)",
        )
        p.add_argument(
            "--cpus", type=int, default=None, help="CPUs (default: from the capture, else 2)"
        )
        add_json_argument(p, "the result")
        p.add_argument(
            "--no-kstate",
            action="store_true",
            help="seed from the snapshot even when the capture holds kstate.json "
            "(the kernel's free tree, pools and lazy lists)",
        )
        p.add_argument(
            "--fail-under",
            metavar="PCT",
            type=_percent,
            help="exit with status 1 when the allocation agreement is below PCT percent (for CI)",
        )
        if name == "replay":
            add_profile_argument(p)
            p.add_argument(
                "--end-snapshot",
                metavar="VMALLOCINFO",
                help="compare the final state with this (default: a capture's vmallocinfo.end)",
            )
            p.add_argument(
                "--vmallocinfo-out",
                metavar="FILE",
                help="write the model's final /proc/vmallocinfo to FILE ('-': stdout), "
                "to diff with the capture's vmallocinfo.end",
            )
            p.add_argument("--show", type=int, default=5, help="divergences to print (default 5)")
            p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
        else:
            p.add_argument(
                "--profiles",
                default=",".join(PROFILES),
                help=f"comma-separated kernel profiles, one column each (default {','.join(PROFILES)})",
            )
            p.add_argument(
                "--policy",
                action="append",
                default=[],
                metavar="SPEC",
                help="add a column with this placement policy: a name (best-fit, "
                "lowest-match, list-walk) or module:Class; repeatable",
            )
            p.add_argument(
                "--policy-profile",
                default="6.18",
                choices=list(PROFILES),
                metavar="PROFILE",
                help="the kernel profile the --policy columns run under (default 6.18)",
            )
        p.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience
    parser = argparse.ArgumentParser(prog="pyvmalloc-replay")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def _key_str(key: tuple[object, ...]) -> str:
    """A cause key as text: addresses in hex."""
    parts = []  # one key per divergence: hex(k) is f"{k:#x}" for an int, at half the cost
    for k in key:
        if k.__class__ is int:
            parts.append(hex(k) if k > 0xFFFF else str(k))
        else:
            parts.append(f"{k:#x}" if isinstance(k, int) and k > 0xFFFF else str(k))
    return ":".join(parts)


def _fit_type(start: int, end: int, nva: int, nva_end: int) -> int:
    """How ``[nva, nva_end)`` sits in the free block ``[start, end)``."""
    if nva == start:
        return FitType.FL_FIT_TYPE if nva_end == end else FitType.LE_FIT_TYPE
    return FitType.RE_FIT_TYPE if nva_end == end else FitType.NE_FIT_TYPE


if _speedups is not None:
    from pyvmalloc.trace import beliefs as _beliefs_module

    # The classes and methods the compiled loop mirrors: it leaves every event to them
    # when any of these is replaced (a subclass, a patched method).
    _speedups.replay_run_init(
        Replayer,
        TraceHarness,
        VmapSpace,
        Beliefs,
        ReplayResult,
        PendingPurge,
        (
            (
                "before",
                "alloc",
                "_alloc_one",
                "_hidden_guess",
                "_poolable",
                "_adopt_at",
                "_adopt",
                "_search_again",
                "free",
            ),
            ("alloc", "free", "adopt_area", "_busy_at", "undo_alloc"),
            (
                "alloc_vmap_area_once",
                "find_unlink_vmap_area",
                "free_vmap_area_noflush",
                "insert_vmap_area",
                "_lazy_threshold_passed",
            ),
            (
                "forget",
                "is_unreachable",
                "passed_over",
                "saw_kernel_tree_choice",
                "node_known",
                "saw_hidden_head",
                "ranges_below",
                "ranges_below_list",
                "ranges_below_chunks",
                "range_is_free",
                "parked_at",
                "unpark_overlapping",
                "split_parked",
                "search_skipping",
                "vote_node",
            ),
        ),
        DRIFT_RUN,
        HIDDEN_SCAN_BLOCKS,
        EXACT_SCAN_BLOCKS,
        (
            (globals(), "next_hidden_head"),
            (globals(), "next_hidden_area"),
            (vars(_beliefs_module), "_adjacent_hidden_area"),
        ),
        MAX_CLASS,
    )
