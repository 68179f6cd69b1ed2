"""The compiled test_vmalloc harness (``_speedups.tv_loops``) against the Python worker.

``Worker.loops_compiled`` runs whole loops of fix_size_alloc_test, full_fit_alloc_test
and long_busy_list_alloc_test in C for a lone worker. Two models run the same
parameters in one process, one with ``test_vmalloc._c_loops`` set to None (the case's
Python loop, the reference) and one with it on; every summary, printed line, model
clock, charged-call count, RCU grace period, /proc view, the kernel log, the page
columns, the pcp lists, the page contents (the bytes the cases stored) and ``check()``
must agree. The mix covers all three profiles, the other cases around them, cost
models and RCU intervals, several workers (no compiled calls), replaced methods
(translate, write, k.vmalloc: the Python function is called, or the Python loop runs),
allocations that fail inside the loop (the C whole vmalloc's own failure and an
injected one at either allocation of long_busy_list) and an exception from a store.
``test_pure_process_matches`` compares the command line with a ``PYVMALLOC_PURE=1``
process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest

from pyvmalloc import Kernel, _accel
from pyvmalloc.pgtable import PageFault
from pyvmalloc.workloads import test_vmalloc as tv
from pyvmalloc.workloads.test_vmalloc import CostModel, TestVmallocParams, mode_params

needs_accel = pytest.mark.skipif(
    _accel.speedups is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}"
)


class _Counted:
    """Counts the compiled calls and the loops they ran."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls = self.loops = 0

    def __call__(self, *a: Any) -> Any:
        r = self.fn(*a)
        self.calls += 1
        self.loops += r[0]
        return r


def _state(k: Kernel) -> tuple[object, ...]:
    pm = k.phys
    return (
        k.vmallocinfo(),
        k.meminfo(),
        k.buddyinfo(),
        k.dmesg(),
        dict(k.vm.stats),
        k.vm.nr_vmalloc_pages,
        k.slab.slabinfo(),
        [list(z.pcp) for z in pm.zones],
        pm.flags.tobytes(),
        pm.order.tobytes(),
        pm.refcount.tobytes(),
        pm.owner.tobytes(),
        sorted((pfn, bytes(buf)) for pfn, buf in pm._data.items()),
        asdict(k.vmap_space.stats),
    )


def _result(r: tv.TestVmallocRun, runner: tv._Runner) -> tuple[object, ...]:
    return (
        r.lines,
        r.summaries,
        r.took,
        r.steps,
        r.rcu_grace_periods,
        r.kernel_bugs,
        [(w.clock, w.steps, w.start, w.stop) for w in runner.workers],
        (runner.seen_purged, runner.seen_walk, runner.rcu._calls, runner.rcu.freed),
    )


def _run(
    profile: str,
    params: TestVmallocParams,
    compiled: bool,
    monkeypatch: pytest.MonkeyPatch,
    *,
    cost: CostModel | None = None,
    cpus: int = 1,
    ram: str = "4G",
    setup: Callable[[Kernel, tv._Runner], None] | None = None,
) -> tuple[object, int]:
    """Run ``params`` on a fresh model: (everything observable, compiled loops run)."""
    counted = _Counted(tv._c_loops) if compiled and tv._c_loops is not None else None
    k = Kernel(profile, cpus=cpus, ram=ram)
    with monkeypatch.context() as m:
        m.setattr(tv, "_c_loops", counted)
        r = tv._Runner(k, params, 7, cost)
        if setup is not None:
            setup(k, r)
        try:
            out: object = _result(r.run(None), r)
            r.finish()
        except Exception as e:  # the same exception, at the same point
            out = ("raised", type(e).__name__, str(e), _result_partial(r))
    k.check()
    return (out, _state(k)), (counted.loops if counted else 0)


def _result_partial(r: tv._Runner) -> object:
    return [(w.clock, w.steps) for w in r.workers], r.seen_purged, r.rcu._calls


def _both(profile: str, params: TestVmallocParams, mp: pytest.MonkeyPatch, **kw: Any) -> int:
    ref, n0 = _run(profile, params, False, mp, **kw)
    fast, n1 = _run(profile, params, True, mp, **kw)
    assert n0 == 0
    assert fast == ref
    return n1


def _params(profile: str, mask: int, loops: int, *extra: str, repeat: int = 1) -> TestVmallocParams:
    p = mode_params("performance", profile, 1, [f"test_loop_count={loops}", *extra])
    p.run_test_mask = mask
    p.test_repeat_count = repeat
    return p


@needs_accel
@pytest.mark.parametrize(
    ("profile", "mask", "extra", "repeat", "cpus"),
    [
        ("6.18", 7, (), 2, 2),  # the performance mode, two CPUs
        ("6.18", 0x77F, ("rcu_gp_interval=7",), 1, 1),  # all cases but pcpu; GP every 7 calls
        ("6.18", 1, ("nr_pages=3",), 3, 1),
        ("5.4", 5, ("single_cpu_test=1",), 1, 1),
        ("4.19", 3, ("single_cpu_test=1",), 1, 1),  # the list allocator's walk charges
    ],
)
def test_compiled_loops_match_the_python_worker(
    profile: str,
    mask: int,
    extra: tuple[str, ...],
    repeat: int,
    cpus: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loops = 3000 if mask == 1 else 300
    p = _params(profile, mask, loops, *extra, repeat=repeat)
    n = _both(profile, p, monkeypatch, cpus=cpus)
    cases = bin(mask & 7).count("1")
    assert n == cases * repeat * loops  # every loop of the three cases ran compiled


@needs_accel
def test_a_cost_model_and_repeats() -> None:
    with pytest.MonkeyPatch.context() as mp:
        cost = CostModel(call_ns=7, page_ns=3, write_ns=11, walk_ns=0, tree_level_ns=5)
        assert _both("6.18", _params("6.18", 5, 200, repeat=2), mp, cost=cost) == 2 * 2 * 200


@needs_accel
@pytest.mark.parametrize("profile", ["6.18", "5.4"])
def test_several_workers_run_the_python_loop(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = ("nr_threads=2",) if profile == "6.18" else ("single_cpu_test=0",)
    assert _both(profile, _params(profile, 1, 500, *extra), monkeypatch, cpus=2) == 0


@needs_accel
def test_a_replaced_worker_method_runs_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    orig = tv.Worker.write
    monkeypatch.setattr(tv.Worker, "write", lambda w, a, b: orig(w, a, b))
    assert _both("6.18", _params("6.18", 1, 300), monkeypatch) == 0


@needs_accel
def test_replaced_layer_methods_are_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """k.vmalloc/k.vfree, translate and phys.write replaced on the instances: the C loop
    calls them (and no compiled vmalloc/vfree, PTE read or byte store of its own)."""
    calls: dict[str, int] = {}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def w(*a: Any, **kw: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **kw)

        return w

    def setup(k: Kernel, r: tv._Runner) -> None:
        calls.clear()
        k.vmalloc = wrap("vmalloc", k.vmalloc)  # type: ignore[method-assign]
        k.vfree = wrap("vfree", k.vfree)  # type: ignore[method-assign]
        k.pgtables.translate = wrap("translate", k.pgtables.translate)  # type: ignore[method-assign]
        k.phys.write = wrap("write", k.phys.write)  # type: ignore[method-assign]

    loops = 150
    ref, _ = _run("6.18", _params("6.18", 5, loops), False, monkeypatch, setup=setup)
    ref_calls = dict(calls)
    fast, n = _run("6.18", _params("6.18", 5, loops), True, monkeypatch, setup=setup)
    assert fast == ref and calls == ref_calls and n == 2 * loops
    assert calls["translate"] == loops + 2 * loops  # one per store


def _inject_vmalloc_failure(at: int) -> Callable[[Kernel, tv._Runner], None]:
    """k.vmalloc returns 0 at its ``at``-th call (counted from the long_busy_list loop)."""

    def setup(k: Kernel, r: tv._Runner) -> None:
        real = k.vmalloc
        seen = [0]

        def vmalloc(size: int, cpu: int = 0, caller: str | None = None) -> int:
            seen[0] += 1
            return 0 if seen[0] == 15001 + at else real(size, cpu, caller)

        k.vmalloc = vmalloc  # type: ignore[assignment]

    return setup


@needs_accel
@pytest.mark.parametrize("at", [1, 2, 1001, 1002])  # p1 or p2 of long_busy_list fails
def test_an_injected_failure_inside_the_loop(at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _params("6.18", 4, 1500)
    n = _both("6.18", p, monkeypatch, setup=_inject_vmalloc_failure(at))
    assert n == (at - 1) // 2
    ref, _ = _run("6.18", p, False, monkeypatch, setup=_inject_vmalloc_failure(at))
    assert "Summary: long_busy_list_alloc_test passed: 0 failed: 1" in str(ref)


@needs_accel
@pytest.mark.parametrize("leave", [40, 150])
def test_running_out_of_pages_inside_the_loop(leave: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the 20th grace period (the loops are running) all but ``leave`` free pages are
    taken: the compiled whole vmalloc's own failure (warn_alloc) ends the loop."""

    def setup(k: Kernel, r: tv._Runner) -> None:
        rcu = r.rcu
        gp = rcu._complete_gp

        def hog_then_gp() -> None:
            if rcu.gp_seq == 20:
                k.alloc_pages(max(0, k.phys.nr_free_pages() - leave))
            gp()

        rcu._complete_gp = hog_then_gp  # type: ignore[method-assign]

    p = _params("6.18", 5, 4000, "rcu_gp_interval=100")
    _both("6.18", p, monkeypatch, ram="192M", setup=setup)
    ref, _ = _run("6.18", p, False, monkeypatch, ram="192M", setup=setup)
    assert "Summary: fix_size_alloc_test passed: 0 failed: 1" in str(ref)
    assert "vmalloc error: size 4096, vm_struct allocation failed" in str(ref)


@needs_accel
def test_an_exception_from_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """translate raises PageFault at its 500th call: the same exception, clocks and state."""

    def setup(k: Kernel, r: tv._Runner) -> None:
        real = k.pgtables.translate
        seen = [0]

        def translate(addr: int, write: bool = False) -> int:
            seen[0] += 1
            if seen[0] == 500:
                raise PageFault(addr, "PTE", "injected")
            return real(addr, write)

        k.pgtables.translate = translate  # type: ignore[method-assign]

    ref, _ = _run("6.18", _params("6.18", 1, 1000), False, monkeypatch, setup=setup)
    assert "raised" in ref[0]  # type: ignore[operator]
    assert _both("6.18", _params("6.18", 1, 1000), monkeypatch, setup=setup) == 0


@needs_accel
def test_the_stored_bytes_are_read_back() -> None:
    """Each area reads back the case's byte (through the page tables) when it is freed."""
    k = Kernel("6.18", cpus=1)
    r = tv._Runner(k, _params("6.18", 2, 10), 1, None)
    w = r.workers[0]
    seen: list[bytes] = []
    real_vfree = k.vfree

    def vfree(addr: int, cpu: int = 0) -> None:
        seen.append(k.read(addr, 1))
        real_vfree(addr, cpu)

    k.vfree = vfree  # type: ignore[method-assign]
    g = w.loops_compiled(3, (100 * 4096, 4096), (100, 1), (0x5A, 0xA5))
    with pytest.raises(StopIteration) as stop:
        while True:
            next(g)
    assert stop.value.value == (3, -1, ())
    assert seen == [b"\x5a", b"\xa5"] * 3
    assert w.steps == 12


def test_pure_process_matches(fresh_python: Callable[..., str]) -> None:
    """The command line's JSON (wall time aside) under PYVMALLOC_PURE=1 and accelerated."""
    args = ("-m", "pyvmalloc", "test-vmalloc", "performance", "--loops", "150",
            "test_repeat_count=1", "--no-progress", "--json", "-")  # fmt: skip
    out = [json.loads(fresh_python(*args, pure=pure)) for pure in (True, False)]
    for o in out:
        o.pop("wall_seconds")
    assert out[0] == out[1]
    assert [s["passed"] for s in out[0]["summaries"]] == [1, 1, 1]


def test_the_reference_runs_without_the_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tv, "_c_loops", None)
    k = Kernel("6.18", cpus=2)
    r = tv._Runner(k, replace(_params("6.18", 1, 50)), 1, None)
    assert r.workers[0]._compiled_args() is None
    out = r.run(None)
    assert out.ok and out.steps == 2 * 50
