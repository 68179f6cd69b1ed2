"""The compiled scans of the divergence path (_speedups.c, "replay divergence")
against the Replayer's Python loops, on every bundled capture.

``event_table`` packs the events once; ``lock_order_next``, ``next_alloc_in``,
``untouched``, ``prev_of_task`` and ``last_alloc_at`` walk the packed copy where
:meth:`Replayer._lock_order_race`, :meth:`Replayer._late_lock_order`,
:meth:`Replayer._untouched`, :meth:`Replayer._cpu_before_at` and
:meth:`Replayer._head_moved_explains` walk the event objects. Each is compared with
the Python at every allocation of a capture (at most a few hundred, spread over it),
for the event's own range and wider ones, and with the table taken away;
``cpu_before`` stands in for :meth:`Replayer._cpu_before` the same way. During
replays, ``where_tree`` (:meth:`Replayer._where_tree`) and ``shrink_fit``
(:meth:`Replayer._fits_unpooled`) are compared with the Python on the model's state
at each divergence, and ``undo_alloc`` (:meth:`TraceHarness.undo_alloc`) on a
harness. The whole replay with and without them is compared by
tests/trace/test_replay_batch.py.
"""

from __future__ import annotations

import bisect
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.errors import InvariantError
from pyvmalloc.trace import harness as harness_mod
from pyvmalloc.trace import replay as replay_mod
from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy
from pyvmalloc.trace.harness import TraceHarness
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.replay import (
    MIGRATION_LOOKBACK,
    Replayer,
    load_capture,
)
from pyvmalloc.trace.snapshot import parse_vmallocinfo
from pyvmalloc.vmap.area import Decision, VmapArea

rd = replay_mod._rd
pytestmark = pytest.mark.skipif(rd is None, reason="needs the compiled accelerator")

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = sorted(d for d in (DATA / "captures").iterdir() if (d / "meta.json").exists())
SAMPLES = 300


def _replayer(cap: Path) -> tuple[Replayer, list[Any]]:
    trace, snap, _meta = load_capture(cap)
    rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
    events = replay_mod._events_after_snapshot(parse_trace(trace), rp.result)
    rp.prepare(events)
    return rp, events


def _python(rp: Replayer, f: Any) -> Any:
    """``f()`` with the Replayer's Python loops (no packed table)."""
    table, rp._table = rp._table, None
    try:
        return f()
    finally:
        rp._table = table


@pytest.mark.parametrize("cap", CAPTURES, ids=[c.name for c in CAPTURES])
def test_scans_equal_the_python(cap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rp, events = _replayer(cap)
    assert rp._table is not None
    # prepare()'s look-ahead, found while packing
    purge_at, busy = rp._purge_at, rp._worker_cpu_busy_until
    with monkeypatch.context() as m:
        m.setattr(replay_mod, "_rd", None)
        rp.prepare(events)
        assert rp._table is None
        assert (rp._purge_at, rp._worker_cpu_busy_until) == (purge_at, busy)
    rp.prepare(events)
    assert purge_at == [k for k, e in enumerate(events) if isinstance(e, PurgeVmapAreaLazy)]

    allocs = [k for k, e in enumerate(events) if isinstance(e, AllocVmapArea)]
    step = max(1, len(allocs) // SAMPLES)
    index = rp._indexes()
    compared = 0
    for i in allocs[::step]:
        ev = events[i]
        rp._index = i
        # _cpu_before(_at): the same task's previous event
        assert rp._cpu_before_at(i) == _python(rp, lambda: rp._cpu_before_at(i))  # noqa: B023
        assert rp._cpu_before(ev) == _python(rp, lambda: rp._cpu_before(ev))  # noqa: B023
        back = [
            k
            for k in range(i - 1, max(-1, i - 1 - MIGRATION_LOOKBACK), -1)
            if events[k].pid == ev.pid and events[k].task == ev.task
        ]
        assert rd.prev_of_task(rp._table, i, MIGRATION_LOOKBACK) == (back[0] if back else -1)
        if ev.failed:
            continue
        for start, size in ((ev.addr, ev.size), (max(0, ev.addr - 64 * ev.size), 129 * ev.size)):
            # _lock_order_race's window (the later search left out) ...
            with monkeypatch.context() as m:
                m.setattr(Replayer, "_late_lock_order", lambda self, ev, start, dec: "late")
                got = rp._lock_order_race(ev, start, size)
                assert got == _python(rp, lambda: rp._lock_order_race(ev, start, size))  # noqa: B023
            # ... and _late_lock_order's candidate (any consistent with coming first)
            lo = max(0, start - 256 * ev.size)
            for dec in (
                Decision("tree", search_length=size, block=(lo, start + size)),
                Decision("pool", node=0, pool_index=1),
            ):
                with monkeypatch.context() as m:
                    m.setattr(Replayer, "_order_explains", lambda self, first, then, dec: True)
                    got = rp._late_lock_order(ev, start, dec)
                    assert got == _python(rp, lambda: rp._late_lock_order(ev, start, dec))  # noqa: B023
            compared += 1
        # _untouched up to a later event (spread over the next few hundred)
        stop = min(len(events) - 1, i + 1 + (i * 7919) % 600)
        other = events[stop]
        who = (other.pid, other.task)
        for lo, hi in ((ev.addr, ev.addr + ev.size), (0, ev.addr + ev.size), (ev.addr, 2**64)):
            got = rp._untouched(i + 1, stop, lo, hi, who)
            assert got == _python(rp, lambda: rp._untouched(i + 1, stop, lo, hi, who))  # noqa: B023
        # _head_moved_explains' origin: the last allocation at an address, 4096 back
        at = index.get(ev.addr, [])
        n = bisect.bisect_left(at, i + 1)
        want = at[n - 1] if n else -1
        got = rd.last_alloc_at(rp._table, i + 1, ev.addr, 4096)
        assert got == (want if want >= 0 and i + 1 - want <= 4096 else -1)
    assert compared


def test_table_declines_other_events() -> None:
    """An event of another class (a subclass, a model event) or a field that is not
    a plain value: no table, the Python loops do it all."""

    class Mine(AllocVmapArea):
        __slots__ = ()

    base = dict(task="t", pid=1, cpu=0, timestamp=1.0)
    good = [
        AllocVmapArea(
            addr=0x1000, size=0x2000, align=1, vstart=0, vend=2**64 - 1, failed=0, **base
        ),
        FreeVmapAreaNoflush(va_start=0x1000, nr_lazy=2, nr_lazy_max=32, **base),
    ]
    assert rd.event_table(good) is not None
    assert (
        rd.event_table([*good, Mine(addr=0, size=1, align=1, vstart=0, vend=1, failed=0, **base)])
        is None
    )
    odd = dict(base, timestamp=1)  # an int timestamp
    assert (
        rd.event_table([FreeVmapAreaNoflush(va_start=1, nr_lazy=0, nr_lazy_max=1, **odd)]) is None
    )
    big = AllocVmapArea(addr=2**64, size=1, align=1, vstart=0, vend=1, failed=0, **base)
    assert rd.event_table([big]) is None
    failed = AllocVmapArea(addr=2**64, size=1, align=1, vstart=0, vend=1, failed=-12, **base)
    table, purge_at, busy = rd.event_table([failed])
    assert (purge_at, busy) == ([], {})
    # not the event the table holds at that position: the caller's loop decides
    assert rd.lock_order_next(table, 0, good[0], 0, 1, 64, 1e-3) == -2
    assert rd.untouched(table, 0, 0, 2**64, 1) is None
    with pytest.raises(IndexError):
        rd.prev_of_task(table, 5, 10)


def test_purge_look_ahead() -> None:
    """``busy_until`` of a purge: the last event its CPU traced since the previous
    purge event (computed by hand)."""
    h = dict(task="t", pid=1, timestamp=1.0)

    def free(cpu: int) -> FreeVmapAreaNoflush:
        return FreeVmapAreaNoflush(va_start=0x1000, nr_lazy=1, nr_lazy_max=2, cpu=cpu, **h)

    def purge(cpu: int) -> PurgeVmapAreaLazy:
        return PurgeVmapAreaLazy(start=0, end=1, npurged=1, cpu=cpu, **h)

    evs = [free(1), free(0), purge(1), free(0), purge(1), free(1), free(0), purge(0)]
    _table, purge_at, busy = rd.event_table(evs)
    assert purge_at == [2, 4, 7]
    assert busy == {2: 0, 4: -1, 7: 6}


@pytest.mark.parametrize("cap", CAPTURES[::3], ids=[c.name for c in CAPTURES[::3]])
def test_divergence_state_twins_equal_the_python(
    cap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``where_tree`` (:meth:`Replayer._where_tree`) at every divergence of a replay,
    at and around the kernel's address, and ``shrink_fit`` (the walk of
    :meth:`Replayer._fits_unpooled`) at every tenth, for the kernel's request and
    variants of it (other alignments, sizes, ranges), against the Python with the
    model's state then."""
    trace, snap, meta = load_capture(cap)
    rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
    rp._infer_pools = meta.get("drop_caches") is False and rp.trace_driven
    events = replay_mod._events_after_snapshot(parse_trace(trace), rp.result)
    explain = Replayer._explain
    outcomes: list[bool] = []
    kinds: list[str] = []
    calls = [0]

    def compare(self: Replayer, ev: AllocVmapArea, *args: Any) -> Any:
        calls[0] += 1
        # _where's tree lookups (where_tree) at and around the kernel's address
        if not ev.failed:
            for addr in (ev.addr, ev.addr + ev.size, max(0, ev.addr - 1), ev.addr + 1):
                got = _rd_where(self, addr)
                assert got is not None
                assert got == self._where_tree(addr)
                kinds.append(got[0] if got else "")
        if calls[0] % 10 == 0 and not ev.failed and rp.space.nr_vmap_nodes > 1:
            vs, ve = ev.vstart, ev.vend
            for v in (
                ev,
                dataclasses.replace(ev, align=4 * PAGE_SIZE),
                dataclasses.replace(ev, size=8 * ev.size),
                dataclasses.replace(ev, vstart=ev.addr, align=PAGE_SIZE),
                dataclasses.replace(ev, vstart=vs + (ve - vs) // 2),
            ):
                got = self._fits_unpooled(v)
                with monkeypatch.context() as m:
                    m.setattr(replay_mod, "_rd", None)
                    assert got == self._fits_unpooled(v)
                outcomes.append(got)
        return explain(self, ev, *args)

    monkeypatch.setattr(Replayer, "_explain", compare)
    rp.run(events)
    if rp.space.nr_vmap_nodes > 1 and calls[0] >= 10:
        assert outcomes
    assert not calls[0] or "free" in kinds


def _rd_where(rp: Replayer, addr: int) -> Any:
    b = rp.beliefs
    return rd.where_tree(rp.space, b.parked, b._parked_starts, addr)


def test_record_passes_the_mismatch_fields_in_order() -> None:
    """``Replayer._record`` builds each Mismatch positionally: the fields' order."""
    names = [f.name for f in dataclasses.fields(replay_mod.Mismatch)]
    assert names[:13] == [
        "line",
        "kernel",
        "model",
        "size",
        "align",
        "cpu",
        "vstart",
        "vend",
        "model_reason",
        "kernel_location",
        "cause_class",
        "cause",
        "cause_key",
    ]


@pytest.mark.parametrize("compiled", [True, False])
def test_undo_alloc(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``TraceHarness.undo_alloc`` of a tree allocation gives the range back (counted
    as one allocation less); an area that is not the busy one at its start is refused,
    compiled or not."""
    if not compiled:
        monkeypatch.setattr(harness_mod, "_c_undo_alloc", None)
    h = TraceHarness("6.18", cpus=2)
    space = h.space
    space.explain = True  # as the Replayer has it: the Decision says where it came from
    vs, ve = space.vmalloc_start, space.vmalloc_end
    free_before = [(va.va_start, va.va_end) for va in space.free_areas()]
    allocs = space.stats.allocs
    big = h.alloc(64 * PAGE_SIZE, PAGE_SIZE, vs, ve, 0)  # beyond the pools: from the tree
    assert isinstance(big, VmapArea)
    assert space.last_decision is not None and space.last_decision.source == "tree"
    h.undo_alloc(big, False, 0)
    assert [(va.va_start, va.va_end) for va in space.free_areas()] == free_before
    assert space.stats.allocs == allocs
    assert big.vm is None and space.find_vmap_area(big.va_start) is None
    other = h.alloc(64 * PAGE_SIZE, PAGE_SIZE, vs, ve, 0)
    assert isinstance(other, VmapArea)
    impostor = VmapArea(other.va_start, other.va_end)
    with pytest.raises(InvariantError, match="not the busy area at its start"):
        h.undo_alloc(impostor, False, 0)
