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
matters for alignments above PAGE_SIZE).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyvmalloc.config import format_size
from pyvmalloc.trace.events import (
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    TraceEvent,
)
from pyvmalloc.trace.harness import Observer, TraceHarness, events_after_snapshot
from pyvmalloc.trace.parse import TraceParseResult, parse_trace
from pyvmalloc.trace.snapshot import VmallocInfo, lazy_runs, parse_vmallocinfo
from pyvmalloc.vmap.area import PendingPurge, VmapArea, is_err
from pyvmalloc.vmap.space import VmapSpace

#: Consecutive frees whose nr_lazy must differ from the model's to count as a drift.
DRIFT_RUN = 8

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

    @property
    def agreement(self) -> float:
        return self.allocs_matched / self.allocs_compared if self.allocs_compared else 1.0

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"] = self.agreement
        d["mismatches"] = [m.as_json() for m in self.mismatches]
        d["events_per_second"] = self.events / self.seconds if self.seconds else None
        return d


def load_capture(path: str | os.PathLike[str]) -> tuple[Path, Path, dict[str, Any]]:
    """Resolve a capture directory into (trace, snapshot, meta)."""
    d = Path(path)
    meta: dict[str, Any] = {}
    if (d / "meta.json").exists():
        meta = json.loads((d / "meta.json").read_text())
    for name in ("trace", "trace.gz"):
        if (d / name).exists():
            trace = d / name
            break
    else:
        raise ValueError(f"{d}: no trace or trace.gz in this capture directory")
    snap = d / "vmallocinfo"
    if not snap.exists():
        raise ValueError(f"{d}: no vmallocinfo snapshot in this capture directory")
    return trace, snap, meta


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
        placement: Any = None,
        pools: Any = None,
    ) -> None:
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
        #: Index of the event being applied, of the next purge event, and for each
        #: purge event the last event its worker's CPU traced before it.
        self._index = 0
        self._purge_index = -1
        self._worker_cpu_busy_until: dict[int, int] = {}
        self._seed(snapshot)

    # --- snapshot import ------------------------------------------------------------
    def _seed(self, info: VmallocInfo) -> None:
        busy, lazy = self.harness.seed_snapshot(info)
        self.result.snapshot_busy += busy
        self.result.snapshot_lazy += lazy

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
        try:
            self.harness.drive(self, events, observer=observer)
        finally:
            if self._bar is not None:
                self._bar.stop()

    def prepare(self, events: Sequence[TraceEvent]) -> None:
        """Look ahead: where the purge events are, and what their workers' CPUs did."""
        self._events = events
        purge_at = [i for i, e in enumerate(events) if isinstance(e, PurgeVmapAreaLazy)]
        # The purge worker runs on the CPU its event was traced on: whatever else that
        # CPU traced before the event ran before the worker started.
        self._worker_cpu_busy_until = {}
        prev = -1
        for j in purge_at:
            cpu = events[j].cpu
            last = max((k for k in range(prev + 1, j) if events[k].cpu == cpu), default=-1)
            self._worker_cpu_busy_until[j] = last
            prev = j
        self._purge_index = -1
        self._purge_at = purge_at
        self._nxt = 0

    def before(self, i: int, ev: TraceEvent) -> None:
        """Before event ``i``: the next purge's phases that have happened by now."""
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
        if (
            armed is not None
            and (ev.timestamp >= armed or isinstance(ev, (FreeVmapAreaNoflush, PurgeVmapAreaLazy)))
            and (
                self._index > self._worker_cpu_busy_until.get(self._purge_index, -1)
                or isinstance(ev, (FreeVmapAreaNoflush, PurgeVmapAreaLazy))
            )
        ):
            # Run the next purge's first phase (decay, detach) before this event: it
            # happened by now, or this event is a free the purge did not take.
            nxt = self._next_purge
            assert nxt is not None
            self._pending = self.harness.begin_purge(nxt.npurged)
            self._armed_at = None
            self._plan_node_finish(ev.timestamp if ev.timestamp < armed else armed, nxt)
        pending = self._pending
        if pending is not None and self._node_done_at:
            # Nodes whose refill the purge worker has finished by now, on the
            # assumption that its time between the two phases is spent in proportion
            # to the areas each node returns.
            while self._node_done_at and ev.timestamp >= self._node_done_at[0]:
                self._node_done_at.pop(0)
                self.space.purge_next_node(pending)

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

    def alloc(self, ev: AllocVmapArea) -> None:
        space = self.space
        res = self.result
        cpu = ev.cpu % self.cpus
        kernel_failed = bool(ev.failed)
        self._last_alloc_failed = kernel_failed
        res.allocs_compared += 1
        if kernel_failed:
            res.kernel_failures += 1
        va = self.harness.alloc(ev.size, ev.align, ev.vstart, ev.vend, cpu)
        model_ok = not is_err(va)
        if not model_ok:
            res.model_failures += 1
        if model_ok and not kernel_failed and va.va_start == ev.addr:  # type: ignore[union-attr]
            res.allocs_matched += 1
            return
        if not model_ok and kernel_failed:
            res.allocs_matched += 1
            return
        # A divergence: record it, undo the model's choice, adopt the kernel's.
        reason = str(space.last_decision) if space.last_decision else ""
        model_addr = va.va_start if model_ok else None  # type: ignore[union-attr]
        if model_ok:
            assert isinstance(va, VmapArea)
            self.harness.undo_alloc(va, space.last_pool_hit, cpu)
        where = "" if kernel_failed else space.locate(ev.addr)
        if len(res.mismatches) < self.keep_mismatches:
            res.mismatches.append(
                Mismatch(
                    line=ev.line,
                    kernel=None if kernel_failed else ev.addr,
                    model=model_addr,
                    size=ev.size,
                    align=ev.align,
                    cpu=ev.cpu,
                    vstart=ev.vstart,
                    vend=ev.vend,
                    model_reason=reason,
                    kernel_location=where,
                )
            )
        if not kernel_failed:
            notes = self.harness.adopt(ev, cpu)
            res.notes.extend(f"line {ev.line}: {n}" for n in notes[:3])

    def free(self, ev: FreeVmapAreaNoflush) -> None:
        space = self.space
        res = self.result
        res.frees += 1
        if not self.harness.free(ev.va_start, ev.cpu % self.cpus):
            res.frees_unknown += 1
            return
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
        ):
            # The purge starts after this free, and after its worker woke up.
            wake = (self._crossed_at or ev.timestamp) + self.worker_latency
            self._armed_at = max(ev.timestamp, wake)

    def purge(self, ev: PurgeVmapAreaLazy) -> None:
        self.result.purges += 1
        if not self.trace_driven:
            return  # older profiles purge on their own lazy threshold
        # A purge right after a failed allocation is the reclaim purge: pools are
        # fully decayed and not refilled.
        full = self._last_alloc_failed
        if self._pending is not None:
            self.space.finish_purge(self._pending)
            self._pending = None
            self._node_done_at = []
        else:
            self.harness.purge(ev.npurged, full)
        self._last_alloc_failed = False
        self._crossed_at = None

    def finish(self) -> ReplayResult:
        space = self.space
        if self._pending is not None:  # the trace ended inside a purge
            space.finish_purge(self._pending)
            self._pending = None
        res = self.result
        sizes = space.range_sizes(space.free_areas())
        res.end_free_blocks_in_range = len(sizes)
        res.end_largest_free_in_range = max(sizes, default=0)
        res.end_busy = space.nr_busy
        return res


def compare_end_snapshot(space: VmapSpace, info: VmallocInfo) -> dict[str, int]:
    """Compare the model's busy and lazily freed areas with a final vmallocinfo.

    Busy areas are compared as ranges; lazily freed areas as ranges and, with several
    vmap nodes, by the node whose list the kernel printed them on.
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
    }


def _events_after_snapshot(
    parsed: TraceParseResult, res: ReplayResult, info: VmallocInfo | None = None
) -> list[TraceEvent]:
    """The events the snapshot does not reflect yet (see :func:`events_after_snapshot`)."""
    out = events_after_snapshot(parsed, info)
    res.skipped_before_snapshot = out.skipped
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
) -> ReplayResult:
    """Replay ``trace`` from ``snapshot`` under ``profile``; return the comparison.

    With ``end_snapshot`` (a capture's ``vmallocinfo.end``) the replay stops where the
    end snapshot was read and compares the model's final state with it.
    ``placement``/``pools`` override the profile's policies (a name, ``module:Class``,
    a class or an instance); ``observer(index, event, harness)`` is called after each
    event.
    """
    meta = meta or {}
    if cpus is None:
        possible = meta.get("cpus_possible")
        cpus = len(possible) if isinstance(possible, list) and possible else 2
    info = parse_vmallocinfo(snapshot)
    parsed = parse_trace(trace)
    t0 = time.perf_counter()
    rp = Replayer(info, profile=profile, cpus=cpus, placement=placement, pools=pools)
    res = rp.result
    res.trace_lost_events = parsed.lost
    res.trace_incomplete = parsed.incomplete
    if "drop_caches" in meta:
        res.drop_caches = bool(meta["drop_caches"])
    events = _events_after_snapshot(parsed, res, info)
    end_info = parse_vmallocinfo(end_snapshot) if end_snapshot is not None else None
    end_mark = parsed.marker("end-snapshot-begin")
    if end_info is not None and end_mark is not None:
        events = [e for e in events if e.line < end_mark.line]
    rp.run(events, progress=progress, observer=observer)
    rp.finish()
    if end_info is not None and rp.profile.vmap_nodes:
        res.end_check = compare_end_snapshot(rp.space, end_info)
    res.seconds = time.perf_counter() - t0
    rp.kernel.check()
    return res


# ----------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------


def _resolve(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    trace = Path(args.trace)
    if trace.is_dir():
        t, s, meta = load_capture(trace)
        return t, Path(args.snapshot) if args.snapshot else s, meta
    if not args.snapshot:
        raise ValueError("--snapshot VMALLOCINFO is required unless TRACE is a capture dir")
    meta = {}
    if (trace.parent / "meta.json").exists():
        meta = json.loads((trace.parent / "meta.json").read_text())
    return trace, Path(args.snapshot), meta


def print_result(res: ReplayResult, show: int) -> None:
    """Print a replay's agreement, counts and first divergences."""
    from rich.console import Console
    from rich.table import Table

    c = Console()
    pct = 100 * res.agreement
    if res.allocs_compared:
        c.print(
            f"[bold]kernel {res.profile}[/], {res.cpus} CPUs: "
            f"{res.allocs_matched}/{res.allocs_compared} allocations agree "
            f"([bold]{pct:.2f} %[/])"
        )
    else:
        c.print(f"[bold]kernel {res.profile}[/]: the trace has no allocation to compare")
    t = Table(show_header=False)
    rows = [
        ("events replayed", res.events),
        ("events before the snapshot (skipped)", res.skipped_before_snapshot),
        ("snapshot: busy / lazily freed areas", f"{res.snapshot_busy} / {res.snapshot_lazy}"),
        ("frees (unknown address)", f"{res.frees} ({res.frees_unknown})"),
        ("purges", res.purges),
        ("failures kernel / model", f"{res.kernel_failures} / {res.model_failures}"),
        ("frees whose nr_lazy differs", res.lazy_drift),
        ("free blocks in the vmalloc range at the end", res.end_free_blocks_in_range),
        ("largest free block at the end (MiB)", f"{res.end_largest_free_in_range / 2**20:,.1f}"),
        ("replay speed (events/s)", f"{res.events / res.seconds:,.0f}" if res.seconds else "-"),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    c.print(t)
    if res.end_check is not None:
        e = res.end_check
        c.print(
            f"end state vs the kernel's end snapshot: busy {e['busy_agree']} agree "
            f"(+{e['busy_only_model']} model only, +{e['busy_only_kernel']} kernel only); "
            f"lazily freed {e['lazy_agree']} agree (+{e['lazy_only_model']} / "
            f"+{e['lazy_only_kernel']}), {e['lazy_node_differs']} on another node",
            highlight=False,
        )
    if res.trace_incomplete:
        c.print(f"[bold red]the trace lost events ({res.trace_lost_events}): expect divergence")
    if res.drop_caches is False:
        c.print(
            "[yellow]the capture did not drop caches before its snapshot: pool contents "
            "were invisible, so early pool hits cannot be predicted"
        )
    for m in res.mismatches[:show]:
        k = f"{m.kernel:#x}" if m.kernel is not None else "failed"
        md = f"{m.model:#x}" if m.model is not None else "failed"
        c.print(
            f"line {m.line}: size={m.size} align={m.align} cpu={m.cpu}: kernel {k}, "
            f"model {md}\n    model: {m.model_reason}\n    kernel's address was: "
            f"{m.kernel_location}",
            markup=False,
            highlight=False,
        )
    if len(res.mismatches) > show:
        c.print(f"... and {len(res.mismatches) - show} more divergences")


def _cmd_replay(args: argparse.Namespace) -> int:
    trace, snap, meta = _resolve(args)
    end = args.end_snapshot
    if (
        end is None
        and Path(args.trace).is_dir()
        and (Path(args.trace) / "vmallocinfo.end").exists()
    ):
        end = Path(args.trace) / "vmallocinfo.end"
    res = replay(
        trace,
        snap,
        profile=args.profile,
        cpus=args.cpus,
        progress=sys.stderr.isatty(),
        meta=meta,
        end_snapshot=end,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res.as_json(), indent=1))
    print_result(res, args.show)
    return 0


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
) -> CompareRow:
    """Replay the trace once, measuring what a policy developer needs over time."""
    from pyvmalloc.trace.harness import fragmentation

    row = CompareRow(label or profile, ReplayResult(profile=profile, cpus=0))
    row.min_largest_free = -1
    step = 1  # sample every step-th event; doubled (and thinned) as the trace goes on

    spent = 0.0  # time in the sampling itself, kept out of the replay's speed

    def observe(i: int, ev: TraceEvent, h: Any) -> None:
        nonlocal step, spent
        if i % step:
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
        if len(row.samples) >= 2 * samples:
            step *= 2
            row.samples = [smp for smp in row.samples if smp[0] % step == 0]
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
) -> list[CompareRow]:
    """Replay one trace under several profiles (and placement policies), one table.

    Each of ``policies`` (a registered name or ``module:Class``) adds a column: the
    trace under ``policy_profile`` with that placement policy.
    """
    from rich.console import Console
    from rich.table import Table

    rows = [compare_one(trace, snap, p, cpus=cpus, meta=meta) for p in profiles]
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
            )
        )
    if not show:
        return rows
    t = Table(title=f"one trace, several kernels and policies ({trace})")
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
    Console().print(t)
    return rows


def _cmd_compare(args: argparse.Namespace) -> int:
    trace, snap, meta = _resolve(args)
    results = compare(
        trace,
        snap,
        [p for p in args.profiles.split(",") if p],
        cpus=args.cpus,
        meta=meta,
        policies=args.policy,
        policy_profile=args.policy_profile,
    )
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_json() for r in results], indent=1))
    return 0


def register_cli(sub: Any) -> None:
    """Add the ``replay`` and ``compare`` subcommands."""
    for name, func, helptext in (
        ("replay", _cmd_replay, "replay a kernel trace from a vmallocinfo snapshot"),
        ("compare", _cmd_compare, "replay one trace under several kernel profiles"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("trace", metavar="TRACE", help="raw ftrace text, or a capture directory")
        p.add_argument("--snapshot", metavar="VMALLOCINFO", help="/proc/vmallocinfo snapshot")
        p.add_argument(
            "--cpus", type=int, default=None, help="CPUs (default: from the capture, else 2)"
        )
        p.add_argument("--json", metavar="OUT", help="write the result as JSON")
        if name == "replay":
            p.add_argument("--profile", default="6.18", help="kernel profile (default 6.18)")
            p.add_argument(
                "--end-snapshot",
                metavar="VMALLOCINFO",
                help="compare the final state with this (default: a capture's vmallocinfo.end)",
            )
            p.add_argument("--show", type=int, default=5, help="divergences to print")
        else:
            p.add_argument(
                "--profiles",
                default="4.19,5.4,6.18",
                help="comma-separated kernel profiles, one column each (default 4.19,5.4,6.18)",
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
