"""The compiled whole operations against the layered Python path, step for step.

``_speedups.alloc_vmap_area_once``, ``find_unlink_vmap_area``,
``free_vmap_area_noflush`` and ``purge_vmap_node`` each replace a whole mechanism
method for the kernel's own policies and must return None, having changed nothing, for
every call they do not mirror. Here two models run
the same seeded operations in one process: model 0 with the whole operations switched
off (the mechanism's Python methods over the compiled tree pieces, which
``test_accel.py`` checks against pure Python), model 1 with them on. After every step
the results, the busy/free/lazy/pool contents, the counters and ``check()`` must agree.
The operations include the cases that must fall back: explain, tracepoint observers,
another placement or pool policy, failures (an exhausted range), misaligned pool heads,
``va_flags``, values past 64 bits and a 72-bit address space. The 4.19 list mechanism
(a subclass) must never reach them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from pyvmalloc import Kernel, _accel
from pyvmalloc.config import PAGE_SIZE, PROFILES, Machine
from pyvmalloc.printk import KernelLog
from pyvmalloc.rbtree import rb_inorder
from pyvmalloc.vmap import purge, space
from pyvmalloc.vmap.area import VaState, VmapArea
from pyvmalloc.vmap.placement import LowestMatch
from pyvmalloc.vmap.pools import NodePools
from pyvmalloc.vmap.space import VmapSpace

sp = _accel.speedups
needs_accel = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")


def _layered(fn: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``fn`` with the whole operations switched off."""
    with monkeypatch.context() as m:
        m.setattr(space, "_c_alloc_once", None)
        m.setattr(space, "_c_free_noflush", None)
        m.setattr(space, "_c_find_unlink", None)
        m.setattr(purge, "_c_purge_vmap_node", None)
        m.setattr(purge, "_c_begin_purge_nodes", None)
        return fn()


def _va(va: object) -> object:
    if isinstance(va, VmapArea):
        return (va.va_start, va.va_end, va.state, va.flags, va.vm, va.subtree_max_size)
    return va


def _state(s: VmapSpace) -> dict[str, Any]:
    return {
        "free": [
            (v.va_start, v.va_end, v.rb_red, v.subtree_max_size, v.state)
            for v in rb_inorder(s.free.root)
        ],
        "busy": [
            [(v.va_start, v.va_end, v.rb_red, v.flags, v.state, v.vm) for v in rb_inorder(n.busy)]
            for n in s.nodes
        ],
        "pools": [
            {i: [(v.va_start, v.state) for v in p] for i, p in n.pools.items()} for n in s.nodes
        ],
        "nr_purged": [n.nr_purged for n in s.nodes],
        "lazy": [(v.va_start, v.va_end, v.state, v.flags) for v in s.lazy],
        "stats": dataclasses.asdict(s.stats),
        "counters": (s.nr_busy, s.nr_free, s.vmap_lazy_nr, s.last_pool_hit, s.last_flush),
        "log": [(ln.level, ln.text) for ln in s.log.lines],
        "decision": dataclasses.asdict(s.last_decision) if s.last_decision else None,
    }


class _Odd(NodePools):
    """A pool policy the whole operations do not know (a subclass): the reference runs."""


def _alloc(s: VmapSpace, args: tuple[Any, ...], explain: bool, observe: bool, once: bool) -> object:
    size, align, lo, hi, cpu, flags, vm = args
    s.explain = explain
    seen: list[object] = []
    if observe:
        s.tp_alloc.append(seen.append)
    try:
        if once:
            got = s.alloc_vmap_area_once(size, align, lo, hi, cpu, flags, vm)
        else:
            got = s.alloc_vmap_area(
                size, align, lo, hi, cpu=cpu, gfp_nowarn=True, va_flags=flags, vm=vm
            )
    finally:
        s.explain = False
        if observe:
            s.tp_alloc.clear()
    return _va(got), [repr(e) for e in seen]


def _free(s: VmapSpace, addr: int, cpu: int, observe: bool, twice: bool) -> object:
    seen: list[object] = []
    if observe:
        s.tp_free.append(seen.append)
    va = s.find_unlink_vmap_area(addr)
    assert va is not None
    s.free_vmap_area_noflush(va, cpu=cpu)
    if twice:  # a second free of the same area: the reference WARNs
        s.free_vmap_area_noflush(va, cpu=cpu)
    if observe:
        s.tp_free.clear()
    return [repr(e) for e in seen]


def _other_op(
    rng: random.Random,
    r: float,
    cpu: int,
    live: list[int],
    s0: VmapSpace,
    s1: VmapSpace,
    monkeypatch: pytest.MonkeyPatch,
    where: tuple[int, int],
) -> None:
    """A free, a purge, the shrinker or the reclaim purge, on both models."""
    op: Callable[[VmapSpace], object]
    if r < 0.95:
        addr = live.pop(rng.randrange(len(live)))
        op = partial(
            _free, addr=addr, cpu=cpu, observe=rng.random() < 0.05, twice=rng.random() < 0.02
        )
    elif r < 0.98:
        limit = rng.choice([None, None, 1, 5])
        full = rng.random() < 0.2
        op = partial(VmapSpace.purge_vmap_area_lazy, limit=limit, full_pool_decay=full)
    elif r < 0.99:
        op = VmapSpace.vmap_node_shrink_scan
    else:
        op = partial(VmapSpace.reclaim_and_purge_vmap_areas, cpu=cpu)
    assert _layered(partial(op, s0), monkeypatch) == op(s1), where


def _ops(
    seed: int, spaces: list[VmapSpace], monkeypatch: pytest.MonkeyPatch, steps: int = 900
) -> None:
    rng = random.Random(seed)
    s0, s1 = spaces
    vs, ve = s0.vmalloc_start, s0.vmalloc_end
    live: list[int] = []
    events: list[list[object]] = [[], []]
    for i, s in enumerate(spaces):
        s.tp_purge.append(events[i].append)  # purge events: the node purge is unaffected
    for step in range(steps):
        r = rng.random()
        cpu = rng.randrange(2)
        op: Callable[[VmapSpace], object]
        if r < 0.5 or not live:
            size = PAGE_SIZE * rng.choice([1, 2, 2, 2, 3, 4, 8, 17, 256, 257])
            align = rng.choice([1, 1, 1, PAGE_SIZE, 1 << 13, 1 << 16, 1 << 21])
            lo, hi = vs, ve
            kind = rng.random()
            if kind < 0.04:  # a narrow range that fills up: -ENOENT / -ERANGE failures
                lo, hi = vs + (1 << 30), vs + (1 << 30) + 24 * PAGE_SIZE
            elif kind < 0.09:  # not the full range: no pool
                lo = vs + PAGE_SIZE * rng.randrange(1 << 20)
            elif kind < 0.11:  # past 64 bits: the reference's arithmetic
                lo, hi = vs + (1 << 64), ve + (1 << 64)
            elif kind < 0.13:  # the exact-range search length (vend - vstart == size)
                lo = vs + PAGE_SIZE * rng.randrange(1 << 20)
                hi = lo + size
            args = (size, align, lo, hi, cpu, rng.choice([0, 0, 0, 1, 3]), rng.choice([None, "vm"]))
            flags = (rng.random() < 0.3, rng.random() < 0.05, rng.random() < 0.3)
            op = partial(_alloc, args=args, explain=flags[0], observe=flags[1], once=flags[2])
            got = _layered(partial(op, s0), monkeypatch), op(s1)
            assert got[0] == got[1], (seed, step)
            res = got[0][0]  # type: ignore[index]
            if isinstance(res, tuple) and res[0] < (1 << 64):
                live.append(res[0])
        else:
            _other_op(rng, r, cpu, live, s0, s1, monkeypatch, (seed, step))

        a, b = _state(spaces[0]), _state(spaces[1])
        assert a == b, (seed, step)
        if step % 150 == 0:
            for s in spaces:
                s.check()
    assert [repr(e) for e in events[0]] == [repr(e) for e in events[1]]
    for s in spaces:
        s.check()


def _space(profile: str, machine: Machine | None = None, **kw: Any) -> VmapSpace:
    m = machine or Machine(cpus_online=2)
    return VmapSpace(m, PROFILES[profile], KernelLog(), **kw)


@needs_accel
@pytest.mark.parametrize(
    ("profile", "seed"), [("6.18", 1), ("6.18", 2), ("6.18", 3), ("5.4", 4), ("5.4", 5)]
)
def test_whole_operations_step_for_step(
    profile: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = NodePools() if profile == "6.18" else None
    from pyvmalloc.vmap.pools import NoPools

    spaces = [_space(profile, placement=LowestMatch(), pools=pools or NoPools()) for _ in range(2)]
    _ops(seed, spaces, monkeypatch)
    st = spaces[1].stats
    assert st.alloc_failures > 0 and st.purged_areas > 100 and st.fits[4] > 0
    assert st.pool_hits > 15 or profile == "5.4"


@needs_accel
@pytest.mark.parametrize(
    "variant", ["small-classes-drain", "odd-pools", "best-fit", "i386", "many-nodes"]
)
def test_whole_operations_other_setups(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other policies (the reference runs), other parameters and machines (C runs)."""
    from pyvmalloc.policies import BestFit

    machine = None
    placement: Any = LowestMatch()
    pools: Any = NodePools()
    if variant == "small-classes-drain":
        pools = NodePools(decay_keeps_small_classes=False, max_va_size_pages=4)
    elif variant == "odd-pools":
        pools = _Odd()
    elif variant == "best-fit":
        placement = BestFit()
    elif variant == "i386":
        machine = Machine(arch="i386", ram=1 << 30, cpus_online=2)
    elif variant == "many-nodes":
        machine = Machine(cpus_online=2, cpus_possible=8)
    spaces = [_space("6.18", machine, placement=placement, pools=pools) for _ in range(2)]
    _ops(17, spaces, monkeypatch, steps=500)


class _Wide(Machine):
    """A 72-bit machine (none exists): every compiled whole operation must decline."""

    @property
    def ulong_max(self) -> int:
        return (1 << 72) - 1

    @property
    def vmalloc_start(self) -> int:
        return 0xFFFF_C900_0000_0000 << 8

    @property
    def vmalloc_end(self) -> int:
        return (0xFFFF_E900_0000_0000 << 8) - 1


@needs_accel
def test_whole_operations_past_64_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    spaces = [_space("6.18", _Wide(), placement=LowestMatch(), pools=NodePools()) for _ in range(2)]
    s = spaces[1]
    assert sp is not None
    assert sp.alloc_vmap_area_once(s, 8192, 1, s.vmalloc_start, s.vmalloc_end, 0, 0, None) is None
    _ops(23, spaces, monkeypatch, steps=300)


@needs_accel
def test_declines_change_nothing() -> None:
    """Every None from a whole operation leaves the model exactly as it was."""
    assert sp is not None
    k = Kernel("6.18", cpus=2)
    s = k.vmap_space
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    va = s.alloc_vmap_area(2 * PAGE_SIZE, 1, vs, ve)
    assert isinstance(va, VmapArea)
    before = _state(s)
    # a linked area (the reference WARNs), an exhausted range, past 64 bits, bad args
    assert sp.free_vmap_area_noflush(s, va) is None
    assert sp.alloc_vmap_area_once(s, 1 << 40, 1, vs, vs + (1 << 30), 0, 0, None) is None
    assert sp.alloc_vmap_area_once(s, 8192, 1, vs + (1 << 64), ve, 0, 0, None) is None
    assert sp.alloc_vmap_area_once(s, 8192, 3, vs, ve, 0, 0, None) is None
    assert sp.alloc_vmap_area_once(s, 8192, 1, vs, ve, -1, 0, None) is None
    assert sp.alloc_vmap_area_once(s, 8192, 1, vs, ve, 0, -1, None) is None
    s.explain = 1  # not a bool: the reference decides what it means
    assert sp.alloc_vmap_area_once(s, 8192, 1, vs, ve, 0, 0, None) is None
    s.explain = False
    s.tp_alloc.append(lambda e: None)
    assert sp.alloc_vmap_area_once(s, 8192, 1, vs, ve, 0, 0, None) is None
    s.tp_alloc.clear()
    assert sp.find_unlink_vmap_area(s, va.va_end) is None  # not busy: the reference searches
    assert sp.find_unlink_vmap_area(s, 1 << 64) is None
    assert _state(s) == before
    # another type of space: never
    from pyvmalloc.vmap.list419 import ListVmapSpace

    k419 = Kernel("4.19", cpus=2)
    assert isinstance(k419.vmap_space, ListVmapSpace)
    s419 = k419.vmap_space
    assert sp.alloc_vmap_area_once(s419, 8192, 1, vs, ve, 0, 0, None) is None
    assert sp.free_vmap_area_noflush(s419, va) is None
    assert sp.purge_vmap_node(s419, s.nodes[0], [], False) is None
    assert sp.find_unlink_vmap_area(s419, va.va_start) is None


@needs_accel
def test_new_vmap_area_is_the_python_one() -> None:
    assert sp is not None
    a, b = VmapArea(4096, 8192), sp.new_vmap_area(4096, 8192)
    assert type(b) is VmapArea
    for name in (*VmapArea.__slots__, "rb_left", "rb_right", "rb_parent", "rb_red"):
        assert getattr(a, name) == getattr(b, name), name
    assert b.state == VaState.DETACHED


@needs_accel
def test_bench_pair_takes_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The allocator pair is served by the whole operations (no silent fallback)."""
    assert sp is not None
    node_purges: list[object] = []

    def recording(*args: object) -> object:
        assert sp is not None
        node_purges.append(sp.purge_vmap_node(*args))
        return node_purges[-1]

    monkeypatch.setattr(purge, "_c_purge_vmap_node", recording)
    k = Kernel("6.18", cpus=2)
    s = k.vmap_space
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    for i in range(12_000):
        va = sp.alloc_vmap_area_once(s, 2 * PAGE_SIZE, 1, vs, ve, i & 1, 0, None)
        assert isinstance(va, VmapArea), i
        got = s.find_unlink_vmap_area(va.va_start)
        past = sp.free_vmap_area_noflush(s, got)
        assert past in (True, False)
        if past:
            s._lazy_threshold_passed()
        if k.workqueue.pending:
            k.workqueue.run_pending()
    assert s.stats.pool_hits > 1000 and s.stats.purges > 0
    assert node_purges and all(r is True for r in node_purges)
    k.check()


@needs_accel
def test_enclose_addr_same_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """pvm_find_va_enclose_addr (percpu, replay's claim_range): compiled vs reference."""
    from pyvmalloc.vmap import freetree

    k = Kernel("6.18", cpus=2)
    rng = random.Random(5)
    addrs = [k.vmalloc(PAGE_SIZE * rng.randint(1, 40)) for _ in range(400)]
    for a in addrs[::3]:
        k.vfree(a)
    k.purge_vmap_area_lazy()
    tree = k.vmap_space.free
    blocks = list(tree)
    probes = [0, 1, (1 << 64) - 1] + [b.va_start for b in blocks] + [b.va_end for b in blocks]
    probes += [k.VMALLOC_START + rng.getrandbits(36) for _ in range(300)]
    with monkeypatch.context() as m:
        m.setattr(freetree, "_c_enclose", None)
        ref = [tree.pvm_find_va_enclose_addr(a) for a in [*probes, 1 << 64]]
    assert [tree.pvm_find_va_enclose_addr(a) for a in [*probes, 1 << 64]] == ref
    assert any(r is not None for r in ref) and ref[0] is None


@needs_accel
def test_a_rebound_free_root_is_never_used_stale() -> None:
    """Rebinding ``free.root`` (as a tree rebuilt from a readout might) sends the whole
    operations to the reference; they never search the tree the space was built with."""
    assert sp is not None
    from pyvmalloc.rbtree import RBRoot

    k = Kernel("6.18", cpus=2)
    s = k.vmap_space
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    old = s.free.root
    fresh = RBRoot()
    fresh.rb_node, old.rb_node = old.rb_node, None
    s.free.root = fresh
    # the cached root is now empty: a stale search would fail or place wrongly
    assert sp.alloc_vmap_area_once(s, 2 * PAGE_SIZE, 1, vs, ve, 0, 0, None) is None
    va = s.alloc_vmap_area(2 * PAGE_SIZE, 1, vs, ve)
    assert isinstance(va, VmapArea) and va.va_start == vs  # the lowest fit, by the reference
    k.check()
