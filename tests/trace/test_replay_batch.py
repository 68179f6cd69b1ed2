"""The compiled replay loop (``_speedups.replay_run``) against the reference handlers.

Every bundled capture is replayed twice in one process, as ``pyvmalloc replay DIR``
runs it (pool inference where the capture had no drop_caches, kstate.json where there
is one, and without it), once with the common events in compiled batches and once
with every event through ``Replayer.before/alloc/free/purge``. The whole result (every
counter, mismatch and cause) and the model's final state (the free tree node by node
with its colours and ``subtree_max_size``, busy areas with their flags, lazy list,
pools, counters, the last Decision, ``check()``) must be identical.

All bundled captures take about 10 s (the two paths together).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc._accel import ACCELERATED
from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.kernel import Kernel
from pyvmalloc.trace import beliefs as beliefs_mod
from pyvmalloc.trace import harness as harness_mod
from pyvmalloc.trace import replay as replay_mod
from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush
from pyvmalloc.trace.kstate import kstate_of
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.replay import Replayer, load_capture, replay, replay_capture
from pyvmalloc.trace.snapshot import parse_vmallocinfo
from pyvmalloc.vmap import purge as purge_mod

pytestmark = pytest.mark.skipif(
    not ACCELERATED or replay_mod._c_replay_run is None, reason="needs the compiled accelerator"
)

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = sorted(
    d
    for root in ("captures", "kstate")
    for d in (DATA / root).iterdir()
    if (d / "meta.json").exists()
)


def model_state(kernel: Kernel) -> dict[str, Any]:
    """Everything of the model's allocator a replay leaves behind, comparable."""
    kernel.check()
    space = kernel.vmap_space
    ks = kstate_of(kernel)
    return {
        "kstate": dataclasses.asdict(ks),
        "busy": [(va.va_start, va.va_end, va.flags, va.state) for va in space.busy_areas()],
        "lazy": [(va.va_start, va.va_end, va.flags, va.state) for va in space.lazy],
        "pools": [(n, i, va.va_start, va.va_end, va.state) for n, i, va in space.pooled_areas()],
        "counters": (space.nr_busy, space.nr_free, space.vmap_lazy_nr, space.last_pool_hit),
        "stats": dataclasses.asdict(space.stats),
        "decision": repr(space.last_decision),
        "work": [w.name for w in kernel.workqueue.pending],
    }


def beliefs_state(rp: Replayer) -> dict[str, Any]:
    """The replay's beliefs and loop state (the entries keyed by id() left out)."""
    out: dict[str, Any] = {}
    for k, v in vars(rp.beliefs).items():
        if k in ("space", "gen", "passed"):
            continue
        if k == "unknown_node":
            v = {s: (va.va_start, va.va_end, va.flags, va.state) for s, va in v.items()}
        elif k == "parked":
            v = {s: (va.va_start, va.va_end) for s, va in v.items()}
        out[k] = repr(v) if isinstance(v, set) else v
    for k in ("_drift_run", "_crossed_at", "_armed_at", "_last_alloc_failed", "_index"):
        out[k] = getattr(rp, k)
    out["_reordered"] = len(rp._reordered)  # ids of events applied early, not yet seen
    return out


#: The modules of the replay whose compiled twins the reference run turns off: every
#: ``_c_*`` name they hold (and replay's ``_rd``, the divergence scans), so that a twin
#: added later is covered without being listed here.
TWINNED = (replay_mod, beliefs_mod, harness_mod, purge_mod)


def twins_off(m: pytest.MonkeyPatch) -> list[str]:
    """Set every compiled twin of :data:`TWINNED` to None (undone by ``m``)."""
    off = []
    for mod in TWINNED:
        for name, value in list(vars(mod).items()):
            if (name.startswith("_c_") or name == "_rd") and value is not None:
                m.setattr(mod, name, None)
                off.append(f"{mod.__name__}.{name}")
    return off


def test_twins_off_covers_every_section() -> None:
    """The reference run turns off the batch, the divergence scans, the purge twins and
    the beliefs' walks (one of each section at least), and restores them."""
    m = pytest.MonkeyPatch()
    off = twins_off(m)
    try:
        assert replay_mod._c_replay_run is None and replay_mod._rd is None
        for name in (
            "pyvmalloc.trace.replay._c_replay_run",
            "pyvmalloc.trace.replay._rd",
            "pyvmalloc.trace.replay._c_adopt",
            "pyvmalloc.trace.beliefs._c_hidden_guess",
            "pyvmalloc.trace.beliefs._c_stamp",
            "pyvmalloc.trace.harness._c_undo_alloc",
            "pyvmalloc.vmap.purge._c_begin_purge_nodes",
        ):
            assert name in off
    finally:
        m.undo()
    assert replay_mod._c_replay_run is not None and replay_mod._rd is not None


def run_capture(
    cap: Path, monkeypatch: pytest.MonkeyPatch, *, batch: bool, kstate: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    states: list[dict[str, Any]] = []
    finish = Replayer.finish

    def finish_and_record(rp: Replayer) -> Any:
        states.append(beliefs_state(rp))
        return finish(rp)

    undo = pytest.MonkeyPatch()
    if not batch:  # the reference: no compiled loop, walk or twin of the replay
        twins_off(undo)
    monkeypatch.setattr(Replayer, "finish", finish_and_record)
    try:
        res = replay_capture(
            cap, use_kstate=kstate, on_kernel=lambda k: states.append(model_state(k))
        )
    finally:
        undo.undo()
        monkeypatch.setattr(Replayer, "finish", finish)
    out = res.as_json()
    out.pop("seconds")
    out.pop("events_per_second", None)
    beliefs, model = states
    return out, {"beliefs": beliefs, **model}


def _params() -> list[Any]:
    out = []
    for cap in CAPTURES:
        has_kstate = any(cap.glob("kstate.json*"))
        for kstate in (True, False) if has_kstate else (True,):
            out.append(
                pytest.param(cap, kstate, id=f"{cap.name}-{'kstate' if kstate else 'nokstate'}")
            )
    return out


@pytest.mark.parametrize(("cap", "kstate"), _params())
def test_batch_equals_reference(cap: Path, kstate: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    ref, ref_state = run_capture(cap, monkeypatch, batch=False, kstate=kstate)
    got, got_state = run_capture(cap, monkeypatch, batch=True, kstate=kstate)
    assert got == ref
    assert got_state == ref_state


def test_batch_takes_the_common_events() -> None:
    """On a capture the model predicts, nearly every event goes through the batch (so
    the comparison above compares two paths, not one path twice)."""
    cap = DATA / "captures" / "threads-stacks"
    trace, snap, _meta = load_capture(cap)
    rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
    events = replay_mod._events_after_snapshot(parse_trace(trace), rp.result)
    seen: list[int] = []
    run_c = replay_mod._c_replay_run
    assert run_c is not None

    def batch(evs: list[Any], i: int) -> int:
        j = run_c(rp, evs, i, 0)
        seen.append(j - i)
        return j

    rp.prepare(events)
    rp._bar = None
    rp.harness.drive(rp, events, batch=batch)
    handled = sum(seen)
    assert handled >= 0.95 * len(events)
    assert rp.result.events == len(events)
    assert rp.result.allocs_compared == sum(isinstance(e, AllocVmapArea) for e in events)
    assert rp.result.frees == sum(isinstance(e, FreeVmapAreaNoflush) for e in events)


def _replayer(name: str = "threads-stacks") -> tuple[Replayer, list[Any]]:
    trace, snap, _meta = load_capture(DATA / "captures" / name)
    rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
    events = replay_mod._events_after_snapshot(parse_trace(trace), rp.result)
    rp.prepare(events)
    rp._bar = None
    return rp, events


def test_batch_stops_at_the_progress_tick() -> None:
    """With ``every`` (the progress bar), an event whose index is a multiple of it goes
    through ``before()``, which ticks the bar."""
    rp, events = _replayer()
    run_c = replay_mod._c_replay_run
    assert run_c is not None
    stops: list[int] = []

    def batch(evs: list[Any], i: int) -> int:
        j = run_c(rp, evs, i, 100)
        stops.append(j)
        return j

    rp.harness.drive(rp, events, batch=batch)
    assert set(range(0, len(events), 100)) <= set(stops)
    assert rp.result.events == len(events)


def test_batch_leaves_everything_to_replaced_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subclass, a method replaced on the class or on an instance: the batch stands in
    for none of them."""
    run_c = replay_mod._c_replay_run
    assert run_c is not None

    class Sub(Replayer):
        pass

    rp, events = _replayer()
    rp.__class__ = Sub
    assert run_c(rp, events, 0, 0) == 0
    rp, events = _replayer()
    monkeypatch.setattr(replay_mod.Beliefs, "forget", lambda self, start: None)
    assert run_c(rp, events, 0, 0) == 0
    monkeypatch.undo()
    rp, events = _replayer()
    rp.harness.free = lambda va_start, cpu: False  # type: ignore[method-assign]
    assert run_c(rp, events, 0, 0) == 0
    rp, events = _replayer()
    rp.space.tp_alloc.append(lambda ev: None)  # an observer of the model's events
    assert run_c(rp, events, 0, 0) == 0
    assert rp.result.events == 0
    rp, events = _replayer()
    assert run_c(rp, events, 0, 0) > 100  # and unchanged, it takes them


def test_drive_with_an_observer_takes_every_event_through_the_driver() -> None:
    rp, events = _replayer()
    seen: list[int] = []
    rp.run(events, observer=lambda i, ev, h: seen.append(i))
    assert seen == list(range(len(events)))


def test_progress_bar_run_equals_the_plain_run() -> None:
    """With the progress bar (traces over 20,000 events) the batch stops at every tick;
    the result is the same."""
    cap = DATA / "captures" / "threads-long"
    trace, snap, meta = load_capture(cap)
    plain = replay(trace, snap, meta=meta).as_json()
    shown = replay(trace, snap, meta=meta, progress=True).as_json()
    for res in (plain, shown):
        res.pop("seconds")
        res.pop("events_per_second", None)
    assert plain["events"] > 20_000
    assert shown == plain


@pytest.mark.parametrize("name", ["bpfjit-busy-nodrop", "k-mixed2-nodrop", "dropmid2-nodrop"])
def test_pool_walk_twins_equal_the_comprehensions(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled pool walks of trace/beliefs.py (pool ranges, insertion in purge
    order) against its comprehensions, over whole replays."""
    from pyvmalloc.trace import beliefs

    cap = DATA / "captures" / name
    got, got_state = run_capture(cap, monkeypatch, batch=True, kstate=True)
    for twin in ("_c_pool_ranges", "_c_insert_by_purge_order"):
        assert getattr(beliefs, twin) is not None
        monkeypatch.setattr(beliefs, twin, None)
    ref, ref_state = run_capture(cap, monkeypatch, batch=True, kstate=True)
    assert got == ref
    assert got_state == ref_state


def test_insert_by_purge_order_twin() -> None:
    """Each position (generation, start) of a hand-built pool, compiled and reference."""
    from collections import deque

    from pyvmalloc import _speedups as sp
    from pyvmalloc.trace import beliefs
    from pyvmalloc.vmap.area import VmapArea

    pages = [(g, s) for g in (3, 2, 2, 1) for s in (9, 7, 4)]
    for g_new in (0, 1, 2, 3, 4):
        for s_new in (1, 5, 8, 10):
            pools = []
            for compiled in (True, False):
                areas = [VmapArea(s << 12, (s + 1) << 12) for _g, s in pages]
                gen = {id(va): g for va, (g, _s) in zip(areas, pages, strict=True)}
                new = VmapArea(s_new << 12, (s_new + 1) << 12)
                gen[id(new)] = g_new
                pool = deque(areas)
                if compiled:
                    sp.insert_by_purge_order(pool, new, gen)
                else:
                    b = beliefs.Beliefs.__new__(beliefs.Beliefs)
                    b.gen = gen
                    saved, beliefs._c_insert_by_purge_order = beliefs._c_insert_by_purge_order, None
                    try:
                        b._insert_by_purge_order(pool, new)
                    finally:
                        beliefs._c_insert_by_purge_order = saved
                pools.append([(gen[id(va)], va.va_start) for va in pool])
            assert pools[0] == pools[1]
            assert (g_new, s_new << 12) in pools[0]


@pytest.mark.parametrize("name", ["bpfjit-busy-nodrop", "mix3-nodrop", "k-seccomp-nodrop"])
def test_ranges_below_list_equals_the_generator(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_speedups.ranges_below`` (behind ``Beliefs.ranges_below_list``) yields what the
    reference generator does, at every free-block and parked-block edge and inside
    them, after a replay that left blocks parked (pool inference on)."""
    assert beliefs_mod._c_ranges_below is not None
    trace, snap, _meta = load_capture(DATA / "captures" / name)
    rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
    rp._infer_pools = rp.trace_driven
    rp.run(replay_mod._events_after_snapshot(parse_trace(trace), rp.result))
    b = rp.beliefs
    assert b.parked  # both kinds of range take part
    edges = {e for va in rp.space.free_areas() for e in (va.va_start, va.va_end)}
    edges |= {e for va in b.parked.values() for e in (va.va_start, va.va_end)}
    addrs = sorted({a + d for a in edges for d in (-1, 0, 1, 0x800)})
    for addr in [*addrs[:: max(1, len(addrs) // 400)], rp.space.vmalloc_end, 1 << 64]:
        for limit in (0, 1, 17, 65, 10_000):
            want = list(itertools.islice(b.ranges_below(addr), limit))
            assert b.ranges_below_list(addr, limit) == want, (hex(addr), limit)
            for first in (1, 8):
                chunks = list(b.ranges_below_chunks(addr, limit, first))
                assert [r for c in chunks for r in c] == want, (hex(addr), limit, first)
    monkeypatch.setattr(beliefs_mod, "_c_ranges_below", None)  # the reference: lazily
    addr = rp.space.vmalloc_end
    want = list(itertools.islice(b.ranges_below(addr), 65))
    assert [r for c in b.ranges_below_chunks(addr, 65, 8) for r in c] == want
    assert b.ranges_below_list(addr, 65) == want


def test_alloc_index_equals_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_speedups.alloc_index`` (behind ``Replayer._indexes``) maps every successful
    allocation's address to its positions as the Python loop does, over every capture
    (a failed allocation and a subclass of the event class left out)."""
    assert replay_mod._c_alloc_index is not None

    class Sub(AllocVmapArea):
        pass

    for cap in CAPTURES:
        trace, snap, _meta = load_capture(cap)
        rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
        events = replay_mod._events_after_snapshot(parse_trace(trace), rp.result)
        allocs = [e for e in events if isinstance(e, AllocVmapArea)]
        events += [dataclasses.replace(allocs[0], failed=-12)]
        events += [Sub(**{f.name: getattr(allocs[1], f.name) for f in dataclasses.fields(Sub)})]
        rp._events = events
        got = rp._indexes()
        monkeypatch.setattr(replay_mod, "_c_alloc_index", None)
        rp._index_of = None
        want = rp._indexes()
        monkeypatch.undo()
        assert got == want and list(got) == list(want)
        assert sum(map(len, got.values())) == sum(not e.failed for e in allocs)


@pytest.mark.parametrize("name", ["bpfjit-busy-nodrop", "threads-long-nodrop", "mix3-nodrop"])
def test_hidden_guess_twin_equals_the_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_speedups.hidden_guess`` (behind next_hidden_head / next_hidden_area) against the
    reference at every call of a replay with pool inference, hidden heads and parked
    blocks: the same guess (or none), and the twin itself answers nearly every call."""
    twin = beliefs_mod._c_hidden_guess
    assert twin is not None
    calls = {"twin": 0, "declined": 0}

    def both(b: Any, node: int, idx: int, size: int, align: int) -> Any:
        got = twin(b, node, idx, size, align)
        monkeypatch.setattr(beliefs_mod, "_c_hidden_guess", None)
        try:
            if align > PAGE_SIZE:
                want = beliefs_mod.next_hidden_head(b, node, idx, size, align)
            else:
                want = beliefs_mod.next_hidden_area(b, node, idx, size)
        finally:
            monkeypatch.setattr(beliefs_mod, "_c_hidden_guess", both)
        if got is NotImplemented:
            calls["declined"] += 1
        else:
            calls["twin"] += 1
            assert got == want, (node, idx, size, align)
        return want

    monkeypatch.setattr(beliefs_mod, "_c_hidden_guess", both)
    trace, snap, _meta = load_capture(DATA / "captures" / name)
    rp = Replayer(parse_vmallocinfo(snap), profile="6.18", cpus=2)
    rp._infer_pools = rp.trace_driven
    rp.run(replay_mod._events_after_snapshot(parse_trace(trace), rp.result))
    assert rp.result.hidden_pool_hits > 0
    assert calls["twin"] > 100
    assert calls["declined"] <= calls["twin"] // 100


@pytest.mark.parametrize("name", ["bpfjit-busy-nodrop", "threads-long-nodrop"])
def test_batch_takes_the_inferred_matches(name: str) -> None:
    """With pool inference, the allocations at a hidden pool head the model guessed right
    (parked blocks split or given back included) and the matched searches past an
    unreachable block go through the batch: the Python handlers, taking what the batch
    leaves, make next to none of them (so the batch test above compares these compiled
    paths too)."""
    rp, events = _replayer(name)
    rp._infer_pools = rp.trace_driven
    res = rp.result
    run_c = replay_mod._c_replay_run
    assert run_c is not None
    in_python = {"hits": 0, "searches": 0}
    last = (0, 0, 0)

    def counts() -> tuple[int, int, int]:
        unmatched = res.allocs_compared - res.allocs_matched
        return res.hidden_pool_hits, res.searches_skipping_unreachable, unmatched

    def batch(evs: list[Any], i: int) -> int:
        nonlocal last
        # what the Python handlers did with the event the batch last handed back
        hits, searches, unmatched = counts()
        if unmatched == last[2]:  # it matched
            in_python["hits"] += hits - last[0]
            in_python["searches"] += searches - last[1]
        j = run_c(rp, evs, i, 0)
        last = counts()
        return j

    rp.harness.drive(rp, events, batch=batch)
    assert res.hidden_pool_hits > 100
    assert res.searches_skipping_unreachable > 100
    assert in_python["hits"] <= res.hidden_pool_hits // 50
    assert in_python["searches"] <= res.searches_skipping_unreachable // 20
