"""The compiled new-slab and empty-slab paths against the slab allocator's methods.

``_speedups.c``'s test-vmalloc section (order 0) and bulk pages section (orders 1..3)
let the whole vmalloc/vfree make a slab (kmalloc with no partial slab) and destroy it
(kfree of its last object) without
calling ``SlabAllocator.kmalloc``/``kfree``. Two models run the same seeded vmalloc,
vzalloc, vfree and store mixes in one process, both with the whole operations on:
model 0 with ``slab._c_slab_pages`` False (the methods run), model 1 with it True.
After every step the results, the /proc views, the kernel log, the slab caches down
to each slab's free list, the pcp lists and the page columns must agree, and
``check()`` must pass. The ``PYVMALLOC_PURE=1`` comparison of a whole ``test-vmalloc``
run (stdout and JSON) is at the end.
"""

# Each step builds its operation as a closure and runs it in the same iteration:
# ruff: noqa: B023, E731
from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pyvmalloc import Kernel, _accel, slab
from pyvmalloc.gfp import __GFP_ZERO, GFP_KERNEL

sp = _accel.speedups
needs_accel = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")

# (the pages arrays of 50, 100, 256 and 512 pages live in kmalloc-512/1k/2k/4k, whose
# slabs are order 1, 2, 3, 3: the bulk pages section's twins make and destroy those)
SIZES = [1, 4096, 4096, 4096, 3 * 4096, 8192, 64 << 10, 200 << 10, 400 << 10, 1 << 20, 2 << 20]


def _slabs(k: Kernel) -> object:
    sa = k.slab
    caches = []
    for c in sa.caches.values():
        caches.append(
            (
                c.name,
                c.active_objs,
                [s.pfn for s in c.partial],
                [
                    (s.pfn, s.order, s.inuse, list(s.free), s.fresh, bytes(s.free_map), s.addr)
                    for s in c.slabs.values()
                ],
            )
        )
    page_slab = sorted((p, s.pfn) for p, s in sa._page_slab.items())
    return caches, page_slab, sa.slab_bytes, sa.slab_pages, sa.nr_allocs, sorted(sa.large)


def _state(k: Kernel) -> tuple[object, ...]:
    pm = k.phys
    return (
        k.vmallocinfo(),
        k.meminfo(),
        k.buddyinfo(),
        k.dmesg(),
        dict(k.vm.stats),
        _slabs(k),
        [list(z.pcp) for z in pm.zones],
        [(dict(z.nxt), dict(z.free_order), z.free_pages) for z in pm.zones],
        pm.flags.tobytes(),
        pm.order.tobytes(),
        pm.refcount.tobytes(),
        pm.owner.tobytes(),
        {p: bytes(b) for p, b in pm._data.items()},
    )


@contextmanager
def _python_calls(fn: Callable[..., Any]) -> Iterator[list[int]]:
    """Counts the calls of the Python function ``fn`` (from C or Python)."""
    code = fn.__code__
    n = [0]

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code:
            n[0] += 1

    sys.setprofile(prof)
    try:
        yield n
    finally:
        sys.setprofile(None)


def _outcome(fn: Callable[[], Any]) -> object:
    try:
        return ("ok", fn())
    except Exception as e:
        return ("raised", type(e).__name__, str(e))


def _run(ram: str, seed: int, n: int) -> tuple[int, int]:
    ks = [Kernel("6.18", cpus=2, ram=ram) for _ in range(2)]
    ks[0].slab._c_slab_pages = False
    rng = random.Random(f"slab:{seed}:{ram}")
    live: list[int] = []
    calls = [0, 0]
    for i in range(n):
        r = rng.random()
        cpu = rng.randrange(2)
        size = rng.choice(SIZES)
        op: Callable[[Kernel], Any]
        if len(live) > rng.randrange(1, 6):  # few live areas: slabs empty often
            r = 0.5 + r / 2
        if r < 0.35 or not live:
            r = 0.0
            op = lambda k: k.vmalloc(size, cpu=cpu)
        elif r < 0.45:
            op = lambda k: k.vzalloc(size, cpu=cpu)
        elif r < 0.50:
            op = lambda k: k._vmalloc(size, GFP_KERNEL | __GFP_ZERO, cpu=cpu)
        elif r < 0.60:
            a, b = live[-1], rng.randrange(256)
            op = lambda k: k.write(a, bytes((b,)))
        elif r < 0.97:
            a = live.pop(rng.randrange(len(live)) if rng.random() < 0.3 else -1)
            op = lambda k: k.vfree(a, cpu=cpu)
        else:
            op = lambda k: k.purge_vmap_area_lazy()
        got = []
        for j, k in enumerate(ks):
            with _python_calls(slab.SlabAllocator.kmalloc) as c:
                got.append(_outcome(lambda: op(k)))
            calls[j] += c[0]
        assert got[0] == got[1], i
        assert _state(ks[0]) == _state(ks[1]), i
        if got[0][0] == "ok" and r < 0.50 and got[0][1]:
            live.append(got[0][1])
        if i % 50 == 0:
            for k in ks:
                k.check()
    for a in live:
        assert _outcome(lambda: ks[0].vfree(a)) == _outcome(lambda: ks[1].vfree(a))
    assert _state(ks[0]) == _state(ks[1])
    for k in ks:
        k.check()
    return calls[0], calls[1]


@needs_accel
@pytest.mark.parametrize(("ram", "seed"), [("1G", 1), ("1G", 2), ("48M", 3), ("256M", 4)])
def test_new_and_empty_slabs_equal_the_methods(ram: str, seed: int) -> None:
    ref, fast = _run(ram, seed, 700)
    # the methods ran for every new slab in model 0; model 1 made most of them in C
    assert ref > 50
    assert fast < ref // 2


@needs_accel
def test_switch_and_replaced_methods_reach_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kmalloc/kfree replaced on the instance is called for every new and last object."""
    k = Kernel("6.18", cpus=2, ram="256M")
    seen: list[str] = []
    real_kmalloc, real_kfree = k.slab.kmalloc, k.slab.kfree

    def kmalloc(*a: Any) -> int:
        seen.append("kmalloc")
        return real_kmalloc(*a)

    def kfree(addr: int) -> bool:
        seen.append("kfree")
        return real_kfree(addr)

    monkeypatch.setattr(k.slab, "kmalloc", kmalloc)
    monkeypatch.setattr(k.slab, "kfree", kfree)
    a = k.vmalloc(4096)
    k.vfree(a)
    assert seen.count("kmalloc") == 2 and seen.count("kfree") == 2  # vm_struct + pages array
    k.check()


@needs_accel
def test_slab_owner_tag_matches() -> None:
    """The C side writes slab.OWNER_SLAB (5) into the owner column."""
    assert slab.OWNER_SLAB == 5
    k = Kernel("6.18", cpus=2, ram="256M")
    a = k.vmalloc(4096)
    assert any(int(k.phys.owner[s.pfn]) == slab.OWNER_SLAB for c in k.slab.caches.values()
               for s in c.slabs.values())  # fmt: skip
    k.vfree(a)
    k.check()


@needs_accel
@pytest.mark.parametrize(
    "args",
    [
        ["test-vmalloc", "performance", "--loops", "300", "--no-progress", "--check"],
        [
            "test-vmalloc",
            "stress",
            "run_test_mask=2041",
            "test_repeat_count=1",
            "--loops",
            "20",
            "--no-progress",
            "--json",
            "-",
        ],
    ],
)
def test_test_vmalloc_runs_equal_the_pure_reference(
    args: list[str], fresh_python: Callable[..., str]
) -> None:
    fast = fresh_python("-m", "pyvmalloc", *args, pure=False, timeout=300)
    ref = fresh_python("-m", "pyvmalloc", *args, pure=True, timeout=300)
    if "--json" in args:  # everything but the run's wall-clock time
        f, r = json.loads(fast), json.loads(ref)
        assert f.pop("wall_seconds") > 0 and r.pop("wall_seconds") > 0
        assert f == r and f["summaries"]
    else:
        assert fast == ref and "Summary: fix_size_alloc_test passed: 3 failed: 0" in fast
