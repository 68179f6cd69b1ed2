"""The compiled whole vmalloc()/vfree() against the layered Python path, step for step.

``_speedups.vmalloc_node_range`` and ``_speedups.vfree`` replace the vmalloc layer's
frames of ``vmalloc``/``vzalloc``/``__vmalloc`` and ``vfree`` for the unobserved common
case and must return None, having changed nothing, for every call they do not mirror.
Two models run the same seeded operations in one process: model 0 with the two
switched off (``vmalloc._c_vmalloc``/``_c_vfree`` set to None: the reference's Python
frames) and the page allocator's bulk twins too (``buddy._c_alloc_bulk``/``_c_free_bulk``),
model 1 with them on (for multi-page areas: the bulk pages section's page array, pcp
refills and drains, PTE fills and clears, higher-order slabs). After every step the
result, every /proc view (vmallocinfo, meminfo, buddyinfo), the kernel log, the layer's
counters, the slab caches, the buddy lists (in list order, and the dicts linking them)
and the page columns must agree, and ``check()`` must pass. The mix includes what must
fall back (vmalloc_node, other gfp masks, sizes whose pages array is vmalloc'ed,
vmap/vm_map_ram areas, bad and double frees, vfree_atomic, interrupt context, explain,
strict mode, 5.4) and failures on a machine that runs out of pages.
(``tests/test_accel_vm.py`` compares the same layer with a ``PYVMALLOC_PURE=1`` process.)
"""

# Each step builds its operation as a closure and runs it in the same iteration:
# ruff: noqa: B023, E731
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pyvmalloc import Kernel, _accel, vmalloc
from pyvmalloc.gfp import __GFP_DMA32, __GFP_NOWARN, __GFP_ZERO, GFP_KERNEL
from pyvmalloc.phys import buddy
from pyvmalloc.printk import KernelWarning

sp = _accel.speedups
needs_accel = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")

GFPS = [GFP_KERNEL, GFP_KERNEL | __GFP_ZERO, GFP_KERNEL | __GFP_NOWARN, GFP_KERNEL | __GFP_DMA32]
SIZES = [1, 100, 4096, 4096, 4096, 4097, 8192, 3 * 4096, 64 << 10, 1 << 20, 2 << 20, 3 << 20,
         99 << 12, 100 << 12, 101 << 12, (200 << 12) + 1, 512 << 12]  # fmt: skip


class _Counted:
    """Counts the calls the compiled function took (did not decline)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.taken = 0

    def __call__(self, *a: Any) -> Any:
        r = self.fn(*a)
        if r is not None:
            self.taken += 1
        return r


def _state(k: Kernel) -> tuple[object, ...]:
    vm = k.vm
    pm = k.phys
    return (
        k.vmallocinfo(),
        k.meminfo(),
        k.buddyinfo(),
        k.dmesg(),
        vm.nr_vmalloc_pages,
        vm.ptes_written,
        dict(vm.stats),
        k.log.depth,
        k.slab.slabinfo(),
        k.slab.slab_bytes,
        k.slab.nr_allocs,
        [list(z.pcp) for z in pm.zones],
        # the buddy lists in list order, and the dicts that link them
        [[z.free_list(o) for o in range(pm.max_order + 1)] for z in pm.zones],
        [(z.free_pages, list(z.nr_free), list(z.free_order.items())) for z in pm.zones],
        pm.flags.tobytes(),
        pm.order.tobytes(),
        pm.refcount.tobytes(),
        pm.owner.tobytes(),
        sorted(pm._data),
    )


def _off(fn: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``fn`` on the reference: no whole vmalloc/vfree, no bulk-page twins."""
    with monkeypatch.context() as m:
        m.setattr(vmalloc, "_c_vmalloc", None)
        m.setattr(vmalloc, "_c_vfree", None)
        m.setattr(buddy, "_c_alloc_bulk", None)
        m.setattr(buddy, "_c_free_bulk", None)
        return fn()


def _outcome(fn: Callable[[], Any]) -> object:
    try:
        return ("ok", fn())
    except Exception as e:  # strict mode: the same warning must be raised
        return ("raised", type(e).__name__, str(e))


def _run(profile: str, ram: str, seed: int, n: int, monkeypatch: pytest.MonkeyPatch,
         strict: bool = False) -> tuple[int, int, int]:  # fmt: skip
    ks = [Kernel(profile, cpus=2, ram=ram, strict=strict) for _ in range(2)]
    va, vf = _Counted(vmalloc._c_vmalloc), _Counted(vmalloc._c_vfree)  # type: ignore[arg-type]
    monkeypatch.setattr(vmalloc, "_c_vmalloc", va)
    monkeypatch.setattr(vmalloc, "_c_vfree", vf)
    rng = random.Random(f"{seed}:{profile}:{ram}:{strict}")
    live: list[int] = []
    freed: list[int] = []
    mapped: list[int] = []
    failures = 0
    for i in range(n):
        r = rng.random()
        cpu = rng.randrange(2)
        size = rng.choice(SIZES)
        op: Callable[[Kernel], Any]
        kind = "alloc"
        if r < 0.30 or not live:
            op = lambda k: k.vmalloc(size, cpu=cpu)
        elif r < 0.38:
            op = lambda k: k.vzalloc(size, cpu=cpu)
        elif r < 0.46:
            gfp = rng.choice(GFPS)
            op = lambda k: k._vmalloc(size, gfp, cpu=cpu)
        elif r < 0.49:
            op = lambda k: k.vmalloc_node(size, 0, cpu=cpu)
        elif r < 0.52:
            nr = rng.choice([1, 2, 7])
            kind = "vmap"

            def op(k: Kernel, nr: int = nr, cpu: int = cpu) -> int:
                pages = k.alloc_pages(nr)
                return k.vmap(pages, cpu=cpu) if pages else 0

        elif r < 0.54:
            kind = "interrupt"
            a = live[-1]

            def op(k: Kernel, a: int = a, cpu: int = cpu) -> None:
                with k.interrupt_context():
                    k.vfree(a, cpu=cpu)

        elif r < 0.84:
            kind = "free"
            a = live.pop(rng.randrange(len(live)))
            freed.append(a)
            op = lambda k: k.vfree(a, cpu=cpu)
        elif r < 0.87:
            kind = "free"
            a = live.pop(rng.randrange(len(live)))
            op = lambda k: k.vfree_atomic(a, cpu=cpu)
        elif r < 0.89 and mapped:
            kind = "free"
            a = mapped.pop(rng.randrange(len(mapped)))
            op = lambda k: k.vfree(a, cpu=cpu)  # vfree of a vmap area
        elif r < 0.90 and freed:
            kind = "bad"
            a = rng.choice(freed)
            op = lambda k: k.vfree(a, cpu=cpu)  # double free
        elif r < 0.91:
            kind = "bad"
            a = live[-1] + 8
            op = lambda k: k.vfree(a, cpu=cpu)  # unaligned
        elif r < 0.93:
            kind = "write"
            a = live[-1]
            data = bytes([rng.randrange(1, 256)]) * 64
            op = lambda k: k.vwrite(a, data)
        elif r < 0.95:
            kind = "explain"
            on = rng.random() < 0.5

            def op(k: Kernel, on: bool = on) -> None:
                k.vm.space.explain = on

        elif r < 0.97:
            kind = "work"
            op = lambda k: k.run_deferred_work()
        else:
            kind = "work"
            op = lambda k: k.purge_vmap_area_lazy()
        got = [_outcome(lambda: _off(lambda: op(ks[0]), monkeypatch)), _outcome(lambda: op(ks[1]))]
        assert got[0] == got[1], (i, kind)
        assert _state(ks[0]) == _state(ks[1]), (i, kind)
        res = got[0]
        if kind in ("alloc", "vmap") and res[0] == "ok":
            if res[1]:
                (live if kind == "alloc" else mapped).append(res[1])
                if kind == "alloc" and rng.random() < 0.2:  # zeroed pages? read them back
                    assert ks[0].vread(res[1], 64) == ks[1].vread(res[1], 64)
            else:
                failures += 1
        if i % 25 == 0:
            for k in ks:
                k.vm.space.explain = False
                k.check()
    for k in ks:
        k.vm.space.explain = False
    for a in live:
        got = [_outcome(lambda: _off(lambda: ks[0].vfree(a), monkeypatch)),
               _outcome(lambda: ks[1].vfree(a))]  # fmt: skip
        assert got[0] == got[1]
    assert _state(ks[0]) == _state(ks[1])
    for k in ks:
        k.check()
    return va.taken, vf.taken, failures


@needs_accel
@pytest.mark.parametrize("seed", [1, 2])
def test_whole_vmalloc_vfree_equal_the_layered_path(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    va, vf, failures = _run("6.18", "48M", seed, 700, monkeypatch)
    assert va > 150 and vf > 150  # the compiled path did run
    assert failures > 3  # the small machine ran out of pages: the failure branches ran


@needs_accel
def test_whole_vmalloc_vfree_on_a_larger_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    va, vf, _ = _run("6.18", "1G", 3, 500, monkeypatch)
    assert va > 100 and vf > 100


@needs_accel
def test_whole_vmalloc_vfree_across_pcp_refills_and_drains(monkeypatch: pytest.MonkeyPatch) -> None:
    """256M: the DMA32 zone's pcp list has batch 15, high 275, so multi-page areas
    refill it from the buddy lists and drain it back on most calls."""
    va, vf, _ = _run("6.18", "256M", 6, 500, monkeypatch)
    assert va > 100 and vf > 100


@needs_accel
@pytest.mark.parametrize("profile", ["5.4", "4.19"])
def test_other_profiles_never_take_it(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    va, vf, _ = _run(profile, "48M", 4, 200, monkeypatch)
    assert va == 0 and vf == 0


@needs_accel
def test_strict_mode_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    va, vf, _ = _run("6.18", "48M", 5, 300, monkeypatch, strict=True)
    assert va == 0 and vf == 0


@needs_accel
def test_declines_change_nothing() -> None:
    """Each declined call leaves the model as it was (then the reference runs)."""
    k = Kernel("6.18", cpus=2, ram="64M")
    a = k.vmalloc(4096)
    before = _state(k)
    vm = k.vm
    assert sp is not None
    for size, gfp, cpu in [
        (0, GFP_KERNEL, 0),  # WARN_ON_ONCE(!size)
        (4096, GFP_KERNEL | __GFP_NOWARN, 0),  # another gfp
        (4096, GFP_KERNEL, 2),  # not an online CPU
        (4096, GFP_KERNEL, True),  # not an int
        (True, GFP_KERNEL, 0),
        (1 << 64, GFP_KERNEL, 0),  # past 64 bits
        (5 << 20, GFP_KERNEL, 0),  # the pages array is vmalloc'ed
        (1 << 40, GFP_KERNEL, 0),  # more than totalram_pages
    ]:
        assert sp.vmalloc_node_range(vm, size, gfp, cpu, None) is None
        assert _state(k) == before
    for addr, cpu in [(0, 0), (a + 8, 0), (a, 5), (a + (1 << 30), 0), (-4096, 0)]:
        assert sp.vfree(vm, addr, cpu) is None
        assert _state(k) == before
    big = k.vmalloc(5 << 20)  # its pages array is vmalloc'ed: vfree declines
    before = _state(k)
    assert sp.vfree(vm, big, 0) is None
    assert _state(k) == before
    with k.interrupt_context():
        assert sp.vmalloc_node_range(vm, 4096, GFP_KERNEL, 0, None) is None
        assert sp.vfree(vm, a, 0) is None
    vm.space.explain = True
    assert sp.vmalloc_node_range(vm, 4096, GFP_KERNEL, 0, None) is None
    assert sp.vfree(vm, a, 0) is None
    vm.space.explain = False
    assert _state(k) == before
    assert sp.vfree(vm, a, 0) is True and sp.vfree(vm, big, 0) is None
    k.check()


@needs_accel
def test_an_exception_below_unwinds_as_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lower layer that raises (here an injected fault in alloc_pages): the same
    exception, the same half-done state, log depth back to 0, in both paths."""
    ks = [Kernel("6.18", cpus=2, ram="64M") for _ in range(2)]
    for k in ks:
        real = k.phys.alloc_pages
        calls = [0]

        def faulty(gfp: int, order: int = 0, nid: int = -1, real: Any = real,
                   calls: list[int] = calls) -> Any:  # fmt: skip
            calls[0] += 1
            if calls[0] % 7 == 0:
                raise MemoryError("injected")
            return real(gfp, order, nid)

        monkeypatch.setattr(k.phys, "alloc_pages", faulty)
    outs: list[list[object]] = [[], []]
    for j, k in enumerate(ks):
        run = (lambda f: _off(f, monkeypatch)) if j == 0 else (lambda f: f())
        for i in range(40):
            outs[j].append(_outcome(lambda: run(lambda: k.vmalloc(4096 * (1 + i % 3)))))
        outs[j].append(_state(k))
    assert outs[0] == outs[1]
    assert ("raised", "MemoryError", "injected") in outs[0]
    assert ks[1].log.depth == 0


@needs_accel
def test_strict_warning_inside_is_raised_on_leave() -> None:
    """Not strict at the call, but a held warning pending: the compiled path raises it
    on leave as _leave does (here the log's pending list is filled by hand)."""
    k = Kernel("6.18", cpus=2, ram="64M")
    k.log.pending.append("held")
    with pytest.raises(KernelWarning):
        k.vmalloc(4096)
    assert k.log.depth == 0
    k.check()


def test_vmalloc_pages_array_is_int64() -> None:
    k = Kernel("6.18", cpus=2, ram="64M")
    a = k.vmalloc(4096)
    vm = k.find_vm_area(a)
    assert vm is not None and vm.pages is not None
    assert vm.pages.dtype == np.int64 and vm.nr_pages == 1 and vm.flags == 0x2


@needs_accel
@pytest.mark.parametrize(
    ("cls_path", "name"),
    [
        ("pyvmalloc.slab.SlabAllocator", "kmalloc"),
        ("pyvmalloc.slab.SlabAllocator", "kfree"),
        ("pyvmalloc.phys.buddy.PhysicalMemory", "alloc_pages"),
        ("pyvmalloc.phys.buddy.PhysicalMemory", "free_pages"),
        ("pyvmalloc.pgtable.PageTables", "map_pages"),
        ("pyvmalloc.pgtable.PageTables", "unmap"),
        ("pyvmalloc.vmap.space.VmapSpace", "find_vmap_area"),
        ("pyvmalloc.vmap.space.VmapSpace", "find_unlink_vmap_area"),
        ("pyvmalloc.vmap.space.VmapSpace", "free_vmap_area_noflush"),
        ("pyvmalloc.vmap.space.VmapSpace", "alloc_vmap_area"),
    ],
)
def test_a_replaced_lower_method_is_called(
    cls_path: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lower layer's method replaced on its class (a test's fault injection) is what
    the compiled path calls: its twin does not stand in for it."""
    import importlib

    mod, cls_name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(mod), cls_name)
    real = getattr(cls, name)
    calls = [0]

    def counted(self: Any, *a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real(self, *a, **kw)

    k = Kernel("6.18", cpus=2, ram="64M")
    keep = [k.vmalloc(4096) for _ in range(8)]  # partial slabs, pcp pages
    monkeypatch.setattr(cls, name, counted)
    for _ in range(5):
        k.vfree(k.vmalloc(4096))
    assert calls[0] >= 5
    monkeypatch.undo()
    for a in keep:
        k.vfree(a)
    k.check()


def _python_calls(fns: list[Callable[..., Any]]) -> tuple[list[int], Callable[..., Any]]:
    """A profile hook counting the calls of the Python functions ``fns``."""
    codes = {f.__code__: i for i, f in enumerate(fns)}
    n = [0] * len(fns)

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in codes:
            n[codes[frame.f_code]] += 1

    return n, prof


@needs_accel
@pytest.mark.parametrize("ram", ["48M", "256M", "1G"])
def test_multi_page_areas_take_the_compiled_path(ram: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """vmalloc/vfree of 2..512 pages: no Python frame of the page array's allocation,
    of its freeing, of the buddy lists or of the PTE fill/clear runs (while pages last),
    and the model ends as the reference's does."""
    import sys

    from pyvmalloc.pgtable import PageTables

    pm = buddy.PhysicalMemory
    fns = [vmalloc.Vmalloc.vm_area_alloc_pages, pm.alloc_pages_bulk, pm.free_pages_bulk,
           pm._rmqueue_smallest, pm._free_one_page, pm._fill_pcp_freed, PageTables.map_pages,
           PageTables.unmap]  # fmt: skip
    ks = [Kernel("6.18", cpus=2, ram=ram) for _ in range(2)]
    rng = random.Random(ram)
    ops: list[tuple[int, int]] = []
    for _ in range(300):
        ops.append((rng.choice([2, 3, 17, 99, 100, 101, 150, 256, 300, 512]), rng.randrange(2)))
    for j, k in enumerate(ks):
        keep = [k.vmalloc(4096 * (1 + i % 3)) for i in range(40)]  # tables, partial slabs
        for nr in sorted({nr for nr, _ in ops}):  # each kmalloc size's cache memoised
            k.vfree(k.vmalloc(nr << 12))
        live: list[int] = []

        def body(k: Kernel = k, live: list[int] = live) -> None:
            for i, (nr, cpu) in enumerate(ops):
                a = k.vmalloc(nr << 12, cpu=cpu)
                if a:
                    live.append(a)
                if i % 3 == 2 or len(live) > 6:
                    k.vfree(live.pop(0), cpu=cpu)

        if j == 0:
            _off(body, monkeypatch)
        else:
            counts, prof = _python_calls(fns)
            tables = k.phys.nr_pgtable_pages
            sys.setprofile(prof)
            try:
                body()
            finally:
                sys.setprofile(None)
            tables = k.phys.nr_pgtable_pages - tables
            # map_pages runs for a range that needs a new PTE table (it allocates it)
            assert counts[6] <= tables, (counts, tables)
            if ram == "1G":  # pages never run short: every multi-page call stays in C
                assert counts[:6] + counts[7:] == [0] * (len(fns) - 1), counts
            else:
                assert counts[0] < len(ops) // 2, counts  # most calls still did
        for a in keep + live:
            k.vfree(a)
    assert _state(ks[0]) == _state(ks[1])
    for k in ks:
        k.check()


@needs_accel
@pytest.mark.parametrize(
    ("cls_path", "name"),
    [
        ("pyvmalloc.vmalloc.Vmalloc", "vm_area_alloc_pages"),
        ("pyvmalloc.phys.buddy.PhysicalMemory", "alloc_pages_bulk"),
        ("pyvmalloc.phys.buddy.PhysicalMemory", "free_pages_bulk"),
        ("pyvmalloc.phys.buddy.PhysicalMemory", "_rmqueue_smallest"),
        ("pyvmalloc.phys.buddy.PhysicalMemory", "_free_one_page"),
        ("pyvmalloc.pgtable.PageTables", "map_pages"),
        ("pyvmalloc.pgtable.PageTables", "unmap"),
    ],
)
@pytest.mark.parametrize("where", ["class", "instance"])
def test_a_replaced_bulk_method_is_called(
    cls_path: str, name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multi-page areas on a small machine (pcp refills and drains): a replaced method
    (a test's fault injection) is what runs, on its class or on the instance."""
    import importlib

    mod, cls_name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(mod), cls_name)
    real = getattr(cls, name)
    calls = [0]
    k = Kernel("6.18", cpus=2, ram="48M")
    keep = [k.vmalloc(4096 * (1 + i % 3)) for i in range(8)]
    obj = {"Vmalloc": k.vm, "PhysicalMemory": k.phys, "PageTables": k.vm.pgt}[cls_name]
    if where == "class":

        def counted(self: Any, *a: Any, **kw: Any) -> Any:
            calls[0] += 1
            return real(self, *a, **kw)

        monkeypatch.setattr(cls, name, counted)
    else:

        def counted_i(*a: Any, **kw: Any) -> Any:
            calls[0] += 1
            return real(obj, *a, **kw)

        monkeypatch.setattr(obj, name, counted_i)
    for i in range(12):
        a = k.vmalloc((3 + 40 * i) << 12)
        assert a
        k.vfree(a)
    assert calls[0] >= 5, calls
    monkeypatch.undo()
    for a in keep:
        k.vfree(a)
    k.check()


@needs_accel
def test_bulk_twins_decline_without_changing_anything() -> None:
    """phys_alloc_pages_bulk / phys_free_pages_bulk: None, and the model untouched, for
    what they do not mirror."""
    assert sp is not None
    k = Kernel("6.18", cpus=2, ram="64M")
    pm = k.phys
    pages: list[int] = []
    assert sp.phys_alloc_pages_bulk(pm, GFP_KERNEL, -1, 40, pages) is None  # no memo yet
    pm._zones_for(-1, GFP_KERNEL)
    assert sp.phys_alloc_pages_bulk(pm, GFP_KERNEL, -1, 40, pages) == 40
    before = _state(k)
    for args in [
        (GFP_KERNEL, -1, 0, []),
        (GFP_KERNEL, -1, 2, [1, 2]),  # nothing wanted
        (GFP_KERNEL, 5, 10, []),  # no memoised zonelist for that node
        (GFP_KERNEL, -1, 1 << 41, []),
        (GFP_KERNEL, -1, 10, ()),  # not a list
    ]:
        assert sp.phys_alloc_pages_bulk(pm, *args) is None
        assert _state(k) == before
    for bad in [[], [pages[0], pages[0]], [pages[0], -1], [pages[0], 1 << 70], [pages[0], 0],
                (pages[0],), [pages[0], True]]:  # fmt: skip
        assert sp.phys_free_pages_bulk(pm, bad) is None
        assert _state(k) == before
    assert sp.phys_free_pages_bulk(pm, pages) is True
    pm.check()
