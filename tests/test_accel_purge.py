"""The replay purge twins (_speedups.c, "replay purge section") against the Python.

``begin_purge_nodes`` runs the 6.x part of ``LazyPurge.begin_purge`` (split the lazy
areas by node, decay each node's pools, coalesce and merge what leaves, mark the
nodes) in one call for the kernel's own pool policies, and must return None, having
changed nothing, for any call it does not mirror. Two models run the same seeded,
purge-heavy operations (many small areas, so that the pools fill and decay; purges of
the oldest few, full decays, the shrinker), model 0 with the twin off: after every
step the free tree (colours and ``subtree_max_size`` included), the pools, the lazy
list, the counters, the decay record a replay reads and ``check()`` must agree. A
replay of purge-heavy captures with and without the twin must give the same result
and beliefs.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc import _accel
from pyvmalloc.config import PAGE_SIZE, PROFILES, Machine
from pyvmalloc.printk import KernelLog
from pyvmalloc.rbtree import rb_inorder
from pyvmalloc.trace import beliefs
from pyvmalloc.trace.replay import Replayer, replay_capture
from pyvmalloc.vmap import purge
from pyvmalloc.vmap.area import PendingPurge, VmapArea
from pyvmalloc.vmap.placement import LowestMatch
from pyvmalloc.vmap.pools import NodePools
from pyvmalloc.vmap.space import VmapSpace

sp = _accel.speedups
needs_accel = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")
CAPTURES = Path(__file__).parent / "data" / "captures"


def _twins_off(m: pytest.MonkeyPatch) -> None:
    """The reference: every twin of the replay purge section switched off."""
    m.setattr(purge, "_c_begin_purge_nodes", None)
    m.setattr(purge, "_c_batch_without", None)
    m.setattr(beliefs, "_c_stamp", None)
    m.setattr(beliefs, "_c_insert_from", None)


def _state(s: VmapSpace) -> dict[str, Any]:
    return {
        "free": [
            (v.va_start, v.va_end, v.rb_red, v.subtree_max_size, v.state)
            for v in rb_inorder(s.free.root)
        ],
        "pools": [
            {i: [(v.va_start, v.va_end, v.state) for v in p] for i, p in n.pools.items()}
            for n in s.nodes
        ],
        "nr_purged": [n.nr_purged for n in s.nodes],
        "lazy": [(v.va_start, v.va_end, v.state, v.flags) for v in s.lazy],
        "in_purge": [
            (p.start, p.end, [(vn.id, [v.va_start for v in lst]) for vn, lst in p.marked])
            for p in s.in_purge
        ],
        "stats": dataclasses.asdict(s.stats),
        "counters": (s.nr_busy, s.nr_free, s.vmap_lazy_nr, s.last_flush),
        "decayed": s.pool_decayed,
    }


def _space(machine: Machine | None = None, pools: Any = None) -> VmapSpace:
    s = VmapSpace(
        machine or Machine(cpus_online=2),
        PROFILES["6.18"],
        KernelLog(),
        placement=LowestMatch(),
        pools=pools or NodePools(),
    )
    s.pool_decayed = []  # what a replay reads: recorded the same way by both
    return s


def _step(rng: random.Random, s: VmapSpace, live: list[int], pending: list[PendingPurge]) -> None:
    """One operation of the seeded sequence (the same on both models)."""
    r = rng.random()
    cpu = rng.randrange(2)
    if r < 0.05:  # a burst of one size, freed at once: side by side in one pool
        size = PAGE_SIZE * rng.choice([1, 2, 4])
        for _ in range(rng.randrange(8, 40)):
            va = s.alloc_vmap_area(size, 1, s.vmalloc_start, s.vmalloc_end, cpu=cpu)
            if not isinstance(va, int):
                s.free_vmap_area_noflush(s.find_unlink_vmap_area(va.va_start), cpu=cpu)  # type: ignore[arg-type]
    elif r < 0.5 or not live:
        size = PAGE_SIZE * rng.choice([1, 2, 2, 3, 4, 5, 8, 17])
        va = s.alloc_vmap_area(size, 1, s.vmalloc_start, s.vmalloc_end, cpu=cpu, gfp_nowarn=True)
        if not isinstance(va, int):
            live.append(va.va_start)
    elif r < 0.88:
        va = s.find_unlink_vmap_area(live.pop(rng.randrange(len(live))))
        assert va is not None
        s.free_vmap_area_noflush(va, cpu=cpu)
    elif r < 0.93 and not pending:  # the two phases apart, as a replay runs them
        full = rng.random() < 0.2
        pending.append(s.begin_purge(limit=rng.choice([None, 1, 3, 40]), full_pool_decay=full))
    elif r < 0.96 and pending:
        p = pending[0]
        if not s.purge_next_node(p):
            s.finish_purge(pending.pop())
    elif r < 0.99:
        s.purge_vmap_area_lazy(limit=rng.choice([None, 5]), full_pool_decay=rng.random() < 0.1)
    else:
        s.vmap_node_shrink_scan()


def _run(seed: int, steps: int, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> VmapSpace:
    spaces = [_space(**kw), _space(**kw)]
    rngs = [random.Random(seed), random.Random(seed)]
    live: list[list[int]] = [[], []]
    pending: list[list[PendingPurge]] = [[], []]
    for step in range(steps):
        with monkeypatch.context() as m:
            _twins_off(m)
            _step(rngs[0], spaces[0], live[0], pending[0])
        _step(rngs[1], spaces[1], live[1], pending[1])
        assert _state(spaces[0]) == _state(spaces[1]), (seed, step)
        if step % 200 == 0:
            for s in spaces:
                s.check()
    for s in spaces:
        s.check()
    return spaces[1]


@needs_accel
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_begin_purge_nodes_step_for_step(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"done": 0}
    twin = purge._c_begin_purge_nodes
    assert twin is not None

    def counting(*args: Any) -> Any:
        got = twin(*args)
        calls["done"] += got is True
        return got

    monkeypatch.setattr(purge, "_c_begin_purge_nodes", counting)
    s = _run(seed, 1500, monkeypatch)
    assert calls["done"] > 20  # the twin ran, not the reference
    assert s.stats.decayed_areas > 50 and s.stats.purged_areas > 300 and s.stats.pool_hits > 50


@needs_accel
@pytest.mark.parametrize("variant", ["small-classes-drain", "many-nodes", "odd-pools"])
def test_begin_purge_nodes_other_setups(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other decay rules and node counts (the twin runs), another policy (it declines)."""

    class Odd(NodePools):
        pass

    kw: dict[str, Any] = {}
    if variant == "small-classes-drain":
        kw["pools"] = NodePools(decay_keeps_small_classes=False, max_va_size_pages=4)
    elif variant == "many-nodes":
        kw["machine"] = Machine(cpus_online=2, cpus_possible=8)
    else:
        kw["pools"] = Odd()
    _run(7, 700, monkeypatch, **kw)


@needs_accel
def test_begin_purge_nodes_declines_change_nothing() -> None:
    """A replaced decay_va_pool_node, another policy: None, and nothing changed."""
    assert sp is not None
    s = _space()
    vas = [
        s.alloc_vmap_area(PAGE_SIZE * 2, 1, s.vmalloc_start, s.vmalloc_end, cpu=i % 2)
        for i in range(40)
    ]
    for va in vas:
        assert not isinstance(va, int)
        s.free_vmap_area_noflush(s.find_unlink_vmap_area(va.va_start), cpu=0)  # type: ignore[arg-type]
    s.purge_vmap_area_lazy()  # the pools fill
    for va in [
        s.alloc_vmap_area(PAGE_SIZE * 2, 1, s.vmalloc_start, s.vmalloc_end) for _ in range(8)
    ]:
        s.free_vmap_area_noflush(s.find_unlink_vmap_area(va.va_start), cpu=1)  # type: ignore[union-attr, arg-type]
    before = _state(s)
    pending = PendingPurge(s.ulong_max, 0, False, list(s.lazy))
    s.decay_va_pool_node = lambda vn, full: None  # type: ignore[method-assign]
    assert sp.begin_purge_nodes(s, pending, list(s.lazy), False) is None
    del s.decay_va_pool_node
    s2 = _space(pools=type("Other", (NodePools,), {})())
    assert sp.begin_purge_nodes(s2, pending, [], False) is None
    assert _state(s) == before and not pending.marked
    assert sp.begin_purge_nodes(s, pending, list(s.lazy), False) is True
    assert pending.marked and s.pool_decayed


@needs_accel
@pytest.mark.parametrize("name", ["storm-nodrop", "mix3-nodrop", "busy60-nodrop"])
def test_replay_with_and_without_the_twin(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A purge-heavy replay: the same result and beliefs either way."""

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        seen: dict[str, Any] = {}
        finish = Replayer.finish

        def finish_and_record(rp: Replayer) -> Any:
            for k, v in vars(rp.beliefs).items():
                if k not in ("space", "gen", "passed"):  # (the last two keyed by id())
                    seen[k] = repr(v)
            seen["model"] = _state(rp.space)
            return finish(rp)

        with monkeypatch.context() as m:
            m.setattr(Replayer, "finish", finish_and_record)
            res = replay_capture(CAPTURES / name, use_kstate=False)
        out = res.as_json()
        out.pop("seconds")
        out.pop("events_per_second", None)
        return out, seen

    got = run()
    with monkeypatch.context() as m:
        _twins_off(m)
        ref = run()
    assert got == ref


@needs_accel
def test_batch_without_and_stamp() -> None:
    """The batch filter keeps order and identity; the stamps are id() keyed."""
    assert sp is not None
    areas = [VmapArea(i * PAGE_SIZE, (i + 1) * PAGE_SIZE) for i in range(500)]
    rng = random.Random(5)
    done = rng.sample(areas, 200) + areas[:3]  # a repeat, as a set would hold once
    got = sp.batch_without(areas, done)
    ref = [va for va in areas if va not in set(done)]
    assert got is not None and all(a is b for a, b in zip(got, ref, strict=True))
    assert sp.batch_without(areas, [*done, 7]) is None  # not an area: the reference
    assert sp.batch_without([], []) == []
    gen = {id(areas[0]): 1}
    sp.stamp(gen, areas[:4], 9)
    assert gen == {id(va): 9 for va in areas[:4]}


def _pool_case(rng: random.Random) -> tuple[list[VmapArea], dict[int, int], list[VmapArea]]:
    """A pool (mostly newest purge first, descending, a few out of order), its stamps,
    and the areas to insert (mostly in the same order, as a refutation moves them)."""
    areas = [VmapArea(i * PAGE_SIZE, (i + 1) * PAGE_SIZE) for i in range(rng.randrange(1, 60))]
    gens = {id(va): rng.choice([0, 1, 2, 3, 3, 4]) for va in areas}
    areas.sort(key=lambda va: (gens[id(va)], va.va_start), reverse=True)
    for _ in range(rng.randrange(3)):  # out of order (a rotated head, a move)
        i, j = rng.randrange(len(areas)), rng.randrange(len(areas))
        areas[i], areas[j] = areas[j], areas[i]
    if rng.random() < 0.1:
        rng.shuffle(areas)
    k = rng.randrange(len(areas) + 1)
    new, pool = areas[:k], areas[k:]
    new.sort(key=lambda va: (gens[id(va)], va.va_start), reverse=rng.random() < 0.8)
    for va in new:
        if rng.random() < 0.2:
            del gens[id(va)]  # unstamped: 0
    return pool, gens, new


@pytest.mark.parametrize("compiled", [True, False])
def test_hinted_inserts_equal_inserts_from_the_head(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inserting one area after another with the hints (refute_pool_entries) puts each
    exactly where the scan from the head (the reference, and rhidden's compiled twin)
    puts it."""
    if not compiled:
        monkeypatch.setattr(beliefs, "_c_insert_from", None)
    elif beliefs._c_insert_from is None:
        pytest.skip("accelerator not in use")
    rng = random.Random(11)
    for _ in range(400):
        pool, gens, new = _pool_case(rng)
        b = beliefs.Beliefs.__new__(beliefs.Beliefs)
        b.gen = gens
        ref: deque[VmapArea] = deque(pool)
        got: deque[VmapArea] = deque(pool)
        hints: dict[int, tuple[int, VmapArea]] = {}
        for va in new:
            with monkeypatch.context() as m:
                m.setattr(beliefs, "_c_insert_by_purge_order", None)
                b._insert_by_purge_order(ref, va)
            b._insert_by_purge_order(got, va, hints)
            assert hints[id(got)][1] is va and got[hints[id(got)][0]] is va
        assert [id(va) for va in got] == [id(va) for va in ref]
