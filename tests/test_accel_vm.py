"""The accelerator's vmalloc-layer paths against the pure-Python reference.

* whole model, in two fresh processes (one with ``PYVMALLOC_PURE=1``): seeded mixes of
  vmalloc/vzalloc/vmalloc_node/__vmalloc_node_range with many sizes and gfp masks,
  vmalloc_huge, vmap of caller pages, vm_map_ram, bad and double frees, and allocations
  that fail (a small machine runs out of pages) — every address, every /proc view along
  the way, the kernel log and ``check()`` must agree;
* the page allocator's bulk paths in process: the C column updates against the numpy
  reference on the same seeded operations (pages, columns, pcp and buddy lists);
* the trace parser in process: the C line scan against the reference (``_speedups``
  set to None) on every bundled capture and on a seeded corpus of damaged lines:
  the same events, counters and the same error text with the same PATH:LINE.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from pyvmalloc import _accel
from pyvmalloc.errors import InputError
from pyvmalloc.trace import parse

sp = _accel.speedups
needs_accel = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")
ROOT = Path(__file__).resolve().parents[1]
CAPTURES = [
    *sorted(p for p in (ROOT / "tests" / "data" / "captures").iterdir() if p.is_dir()),
    ROOT / "src" / "pyvmalloc" / "data" / "captures" / "default",
]

# --- whole model ---------------------------------------------------------------------------
_WORKLOAD = r"""
import json, random, sys
from pyvmalloc import Kernel, _accel
from pyvmalloc.gfp import GFP_KERNEL, __GFP_NOWARN, __GFP_ZERO, __GFP_DMA32, __GFP_HIGHMEM
GFPS = [GFP_KERNEL, GFP_KERNEL | __GFP_NOWARN, GFP_KERNEL | __GFP_ZERO,
        GFP_KERNEL | __GFP_DMA32, GFP_KERNEL | __GFP_HIGHMEM]
SIZES = [1, 4096, 4096, 4097, 8192, 3 * 4096, 16 << 10, 64 << 10, 1 << 20, 4 << 20, 9 << 20]
out = {"accelerated": _accel.ACCELERATED, "runs": []}
seed = int(sys.argv[1])
for profile, ram in (("4.19", "64M"), ("5.4", "4G"), ("6.18", "4G"), ("6.18", "48M")):
    k = Kernel(profile, cpus=2, ram=ram)
    rng = random.Random(f"{seed}:{profile}:{ram}")
    live, mapped, ram_maps, user, seen, infos = [], [], [], [], [], []
    for i in range(700):
        r = rng.random()
        cpu = rng.randrange(2)
        if r < 0.30 or not live:
            a = k.vmalloc(rng.choice(SIZES), cpu=cpu)
        elif r < 0.38:
            a = k.vzalloc(rng.choice(SIZES), cpu=cpu)
        elif r < 0.44:
            a = k.vmalloc_node(rng.choice(SIZES), 0, cpu=cpu)
        elif r < 0.52:
            a = k._vmalloc_node_range(rng.choice(SIZES), rng.choice([1, 4096, 1 << 16]),
                                      gfp=rng.choice(GFPS), cpu=cpu)
        elif r < 0.55 and profile == "6.18":
            a = k.vmalloc_huge(rng.choice([2 << 20, 4 << 20, 1 << 20]), cpu=cpu)
        elif r < 0.60:
            pages = k.alloc_pages(rng.choice([1, 2, 5, 32]))
            user.append(pages)
            a = k.vmap(pages, cpu=cpu) if pages else 0
            if a:
                mapped.append(a)
            seen.append(a)
            continue
        elif r < 0.65:
            pages = k.alloc_pages(rng.choice([1, 3, 16, 64, 300]))
            user.append(pages)
            a = k.vm_map_ram(pages, cpu=cpu) if pages else 0
            if a:
                ram_maps.append((a, len(pages)))
            seen.append(a)
            continue
        elif r < 0.90:
            k.vfree(live.pop(rng.randrange(len(live))), cpu=cpu)
            continue
        elif r < 0.92 and mapped:
            k.vunmap(mapped.pop(rng.randrange(len(mapped))), cpu=cpu)
            continue
        elif r < 0.94 and ram_maps:
            a, n = ram_maps.pop(rng.randrange(len(ram_maps)))
            k.vm_unmap_ram(a, n, cpu=cpu)
            continue
        elif r < 0.95 and live:
            k.vfree(live[-1] + 8, cpu=cpu)  # inside an area, unaligned: a WARN
            continue
        elif r < 0.96:
            k.vfree(0xFFFF_C900_0000_0000 + 4096 * rng.randrange(1 << 20), cpu=cpu)  # none
            continue
        elif r < 0.98:
            k.run_deferred_work()
            continue
        else:
            k.purge_vmap_area_lazy()
            continue
        seen.append(a)
        if a:
            live.append(a)
        if i % 100 == 0:
            infos.append(k.vmallocinfo())
            k.check()
    for a in live[::2]:
        k.vfree(a)
    infos += [k.vmallocinfo(), k.meminfo(), k.buddyinfo(), k.dmesg()]
    try:
        k.check()
        ok = "ok"
    except Exception as e:
        ok = repr(e)
    out["runs"].append({"profile": profile, "ram": ram, "addrs": seen, "infos": infos,
                        "check": ok, "failures": seen.count(0)})
print(json.dumps(out))
"""


@needs_accel
def test_vmalloc_paths_reference_and_accelerated_agree(fresh_python: Callable[..., str]) -> None:
    pure = json.loads(fresh_python("-c", _WORKLOAD, "5", pure=True))
    fast = json.loads(fresh_python("-c", _WORKLOAD, "5", pure=False))
    assert pure["accelerated"] is False and fast["accelerated"] is True
    failures = 0
    for a, b in zip(pure["runs"], fast["runs"], strict=True):  # type: ignore[call-overload]
        what = f"{a['profile']} {a['ram']}"
        assert a["check"] == "ok" == b["check"], what
        assert a["addrs"] == b["addrs"], what
        for x, y in zip(a["infos"], b["infos"], strict=True):
            assert x == y, what
        assert len(a["addrs"]) > 300, what
        failures += a["failures"]
    assert failures > 5  # the small machines did run out


# --- the page allocator's bulk paths ----------------------------------------------------------
def _phys_state(pm: object) -> tuple[object, ...]:
    return (
        pm.flags.tobytes(),  # type: ignore[attr-defined]
        pm.order.tobytes(),  # type: ignore[attr-defined]
        pm.refcount.tobytes(),  # type: ignore[attr-defined]
        pm.owner.tobytes(),  # type: ignore[attr-defined]
        tuple(
            (tuple(z.pcp), z.free_pages, tuple(z.nr_free), tuple(z.free_order.items()))
            for z in pm.zones  # type: ignore[attr-defined]
        ),
        # the buddy lists in list order (head first), and the links in dict order
        tuple(
            (
                tuple(z.free_list(o) for o in range(len(z.nr_free))),
                tuple(z.nxt.items()),
                tuple(z.prv.items()),
            )
            for z in pm.zones  # type: ignore[attr-defined]
        ),
    )


@needs_accel
@pytest.mark.parametrize(("seed", "ram"), [(1, "256M"), (2, "256M"), (3, "256M"), (4, "48M"),
                                           (5, "24M"), (6, "1G")])  # fmt: skip
def test_bulk_pages_c_and_numpy_agree(seed: int, ram: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model 0: the reference (numpy column updates, the Python buddy and pcp code);
    model 1: the C twins (column passes, and alloc_pages_bulk/free_pages_bulk whole,
    pcp refills from the buddy lists and drains back included). 256M's DMA32 pcp has
    batch 15 and high 275, 48M's batch 1 and high 95 (a refill or a drain on nearly
    every call); 24M runs out (the bulk path's fall-back single allocation, the failure
    report); 1G has batch 63."""
    from pyvmalloc.config import PROFILES, Machine
    from pyvmalloc.gfp import __GFP_DMA32, __GFP_NOWARN, __GFP_ZERO, GFP_KERNEL
    from pyvmalloc.phys import buddy
    from pyvmalloc.printk import KernelLog

    pms = [buddy.PhysicalMemory(Machine(ram=ram), PROFILES["6.18"], KernelLog()) for _ in "ab"]
    held: list[list[list[int]]] = [[], []]
    rng = random.Random(seed)

    def on(i: int, fn):  # type: ignore[no-untyped-def]
        if i == 0:
            with monkeypatch.context() as m:
                m.setattr(buddy, "_speedups", None)
                m.setattr(buddy, "_c_alloc_bulk", None)
                m.setattr(buddy, "_c_free_bulk", None)
                return fn(pms[0], held[0])
        return fn(pms[1], held[1])

    failed = 0
    p_alloc = 0.8 if ram == "24M" else 0.5  # 24M: hold pages until it runs out
    for _ in range(400):
        r = rng.random()
        if r < p_alloc or not held[0]:
            nr = rng.choice([1, 2, 14, 15, 16, 17, 63, 64, 100, 100, 256, 276, 600])
            gfp = GFP_KERNEL | (__GFP_ZERO if rng.random() < 0.3 else 0)
            gfp |= __GFP_NOWARN if rng.random() < 0.5 else 0
            gfp |= __GFP_DMA32 if rng.random() < 0.2 else 0
            pre = rng.choice([0, 0, 0, 1, 5])

            def alloc(pm, h, nr=nr, gfp=gfp, pre=pre):  # type: ignore[no-untyped-def]
                out: list[int] = [0] * pre  # pre-filled entries count as populated
                n = pm.alloc_pages_bulk(gfp, -1, nr, out)
                h.append(out[pre:])
                return n, out

        else:
            j = rng.randrange(len(held[0]))
            dup = rng.random() < 0.1  # a page twice: the per-page path, and its warning

            def alloc(pm, h, j=j, dup=dup):  # type: ignore[no-untyped-def]
                pages = h.pop(j)
                if dup and pages:
                    pages = pages + pages[:1]
                pm.free_pages_bulk(pages)
                return len(pages)

        got = on(0, alloc)
        assert got == on(1, alloc)
        if isinstance(got, tuple) and got[0] < nr:
            failed += 1
        assert _phys_state(pms[0]) == _phys_state(pms[1])
        assert pms[0].log.dmesg() == pms[1].log.dmesg()
    for pm in pms:
        pm.check()
    assert (failed > 0) == (ram == "24M")


# --- the trace parser -------------------------------------------------------------------------
def _parse(src: object, pure: bool, monkeypatch: pytest.MonkeyPatch, **kw: object) -> object:
    with monkeypatch.context() as m:
        if pure:
            m.setattr(parse, "_speedups", None)
        try:
            r = parse.parse_trace(src, **kw)  # type: ignore[arg-type]
        except InputError as e:
            return ("error", type(e).__name__, str(e))
    return (
        r.events,
        r.markers,
        r.lost_records,
        r.lost,
        r.skipped,
        r.lines,
        r.format,
        r.instance,
        r.path,
    )


@needs_accel
@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_parser_same_events_on_every_capture(cap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _parse(cap, True, monkeypatch)
    fast = _parse(cap, False, monkeypatch)
    assert ref == fast
    assert isinstance(ref, tuple) and ref[0] != "error" and len(ref[0]) > 0  # type: ignore[arg-type]


_GOOD = (
    "            bash-1234    [001] d..2.  4711.123456: alloc_vmap_area: va_start: "
    "18446683600570023936 size=8192 align=1 vstart=0xffffc90000000000 "
    "vend=0xffffe8ffffffffff failed=0\n",
    "     kworker/0:1-77      [000] .....  4711.200000: free_vmap_area_noflush: "
    "va_start=0xffffc90000000000 nr_lazy=2 nr_lazy_max=32768\n",
    "     kworker/0:1-77      [000] .....  4711.300000: purge_vmap_area_lazy: "
    "start=0xffffc90000000000 end=0xffffc90000002000 num_purged=1\n",
)
_SWAPS = [
    ("1234", "4194304"),
    ("1234", "4194305"),
    ("1234", "00001234"),
    ("1234", "12345678901"),
    ("[001]", "[002]"),
    ("[001]", "[8191]"),
    ("[001]", "[8192]"),
    ("[001]", "[1]"),
    ("d..2.", "\td..2"),
    ("d..2.", "7..2."),
    ("d..2. ", "d..2.\t"),
    ("size=8192", "size=0"),
    ("size=8192", "size=4095"),
    ("size=8192", "size=" + "9" * 21),
    ("align=1", "align=3"),
    ("align=1", "align=0"),
    ("align=1", "align=4096"),
    ("failed=0", "failed=1"),
    ("failed=0", "failed=-0"),
    ("failed=0", "failed=-12"),
    ("vend=0xffffe8ffffffffff", "vend=0x1"),
    ("0xffffc90000000000", "0xFFFFC90000000000"),
    ("0xffffc90000000000", "0x1ffffc90000000000"),
    ("18446683600570023936", "18446683600570023937"),
    ("18446683600570023936", "0"),
    ("18446683600570023936", "99999999999999999999"),
    ("nr_lazy=2", "nr_lazy=0"),
    ("nr_lazy=2", "nr_lazy=18446744073709551616"),
    ("va_start=0xffffc90000000000", "va_start=0x1"),
    ("num_purged=1", "num_purged=4294967296"),
    ("end=0xffffc90000002000", "end=0x0"),
    ("4711.123456", "4711.1234567890123"),
    ("4711.123456", "4711"),
    ("4711.123456", "04711.5"),
    ("bash", "bäsh"),
    ("bash", "ba\x0bh"),
    ("bash", "   bash   bash"),
    ("bash-1234 ", "bash-1234"),
    (": alloc", ":  alloc"),
    ("\n", " \n"),
    ("\n", "\r\n"),
    ("va_start: ", "va_start:  "),
]


def _corpus(rng: random.Random) -> str:
    lines = [rng.choice(_GOOD) for _ in range(rng.randrange(1, 40))]
    for _ in range(rng.randrange(0, 4)):
        i = rng.randrange(len(lines))
        old, new = rng.choice(_SWAPS)
        lines[i] = lines[i].replace(old, new, 1)
    extras = ["# tracer: nop\n", "\n", "CPU:1 [LOST 12 EVENTS]\n", "cpus=2\n", "garbage here\n",
              "  <idle>-0     [000] d.h1. 1.5: tracing_mark_write: hello\n",
              "  <idle>-0     [000] d.h1. 1.5: sched_switch: x\n"]  # fmt: skip
    for _ in range(rng.randrange(0, 3)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(extras))
    return "".join(lines)


@needs_accel
def test_parser_same_results_and_errors_on_damaged_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    outcomes = {"ok": 0, "error": 0}
    for i in range(600):
        text = _corpus(rng)
        cpus = rng.choice([None, 2, 8192])
        f = tmp_path / f"t{i}.trace"
        f.write_bytes(text.encode("utf-8", "surrogateescape"))
        for src in (f, text.splitlines(keepends=True)):
            ref = _parse(src, True, monkeypatch, cpus=cpus)
            fast = _parse(src, False, monkeypatch, cpus=cpus)
            assert ref == fast, (i, text)
        outcomes["error" if ref[0] == "error" else "ok"] += 1  # type: ignore[index]
    assert outcomes["ok"] > 100 and outcomes["error"] > 100


@needs_accel
def test_parser_fast_path_is_used() -> None:
    out: list[object] = []
    pos, line = sp.parse_tracefs("".join(_GOOD), 0, 0, 8192, out, {})  # type: ignore[union-attr]
    assert (pos, line) == (len("".join(_GOOD)), 3)  # every line taken by the C scan
    assert [e.line for e in out] == [1, 2, 3]  # type: ignore[attr-defined]
    assert out[0].task == "bash" and out[1].task == "kworker/0:1"  # type: ignore[attr-defined]
    ref = parse.parse_trace(list(_GOOD)).events
    assert [(e.__class__, e) for e in ref] == [(e.__class__, e) for e in out]


# --- the unobserved vmalloc path against the named one ------------------------------------
@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_unobserved_path_equals_the_named_steps(profile: str) -> None:
    """``space.explain`` (set while the explain recorder wraps the named methods) makes
    vmalloc/vfree take every named step; without it the delegation frames are skipped.
    The same seeded workload must give the same addresses, views, log and check()."""
    from pyvmalloc import Kernel

    def run(named: bool) -> list[object]:
        k = Kernel(profile, cpus=2, ram="48M")
        k.vm.space.explain = named
        rng = random.Random(f"named:{profile}")
        live: list[int] = []
        out: list[object] = []
        for i in range(1200):
            if rng.random() < 0.6 or not live:
                a = k.vmalloc(rng.choice([1, 4096, 8192, 5 * 4096, 1 << 20, 6 << 20]), cpu=i % 2)
                out.append(a)
                if a:
                    live.append(a)
            else:
                k.vfree(live.pop(rng.randrange(len(live))), cpu=i % 2)
            if i % 200 == 0:
                out.append(k.vmallocinfo())
        out += [k.vmallocinfo(), k.meminfo(), k.buddyinfo(), k.dmesg(), k.vm.ptes_written]
        k.check()
        return out

    named, fast = run(True), run(False)
    assert named == fast
    assert 0 in named  # the small machine ran out of pages along the way


def test_vm_struct_positional_construction_matches_the_fields() -> None:
    # __get_vm_area_node builds the vm_struct positionally on its hot path.
    from pyvmalloc.vmalloc import VmStruct

    a = VmStruct(0, 0, 0x22, "c", None, 0, 0, 0, 4096, 0, 0xFFFF_8880_0000_1000)
    b = VmStruct(flags=0x22, caller="c", requested_size=4096, kaddr=0xFFFF_8880_0000_1000)
    assert [getattr(a, f) for f in VmStruct.__dataclass_fields__] == [
        getattr(b, f) for f in VmStruct.__dataclass_fields__
    ]


# --- the PTE fill and clear over cached tables -------------------------------------------------
@needs_accel
@pytest.mark.parametrize("seed", [1, 2])
def test_pte_fill_and_clear_c_and_python_agree(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``map_pages`` of several small pages and ``unmap`` across PMDs: model 0 without
    the compiled twins (pte_map_cached, pte_clear_cached), model 1 with them, on seeded
    ranges over a few PMDs: fresh ranges (tables to allocate), busy slots (the WARN and
    the partial fill), unaligned addresses, lists and uint64/int64 arrays, ranges with
    absent tables. Results, tables, the PTE cache, the log and the pages must agree."""
    import numpy as np

    from pyvmalloc import pgtable
    from pyvmalloc.config import PROFILES, Machine
    from pyvmalloc.gfp import GFP_KERNEL
    from pyvmalloc.phys import PhysicalMemory
    from pyvmalloc.printk import KernelLog

    pts = []
    for _ in "ab":
        m = Machine(ram="256M")
        log = KernelLog()
        pm = PhysicalMemory(m, PROFILES["6.18"], log)
        pts.append((pgtable.PageTables(m, pm, log), pm, log))
    base = pts[0][0].machine.vmalloc_start + (64 << 21)
    pages = [pts[0][1].alloc_page(GFP_KERNEL) for _ in range(600)]
    assert [pts[1][1].alloc_page(GFP_KERNEL) for _ in range(600)] == pages
    rng = random.Random(seed)
    taken = 0
    c_taken = [0, 0]
    real = (pgtable._c_map_cached, pgtable._c_clear_cached)

    def counting(i: int):  # type: ignore[no-untyped-def]
        def f(*a):  # type: ignore[no-untyped-def]
            r = real[i](*a)  # type: ignore[misc]
            c_taken[i] += r is True
            return r

        return f

    monkeypatch.setattr(pgtable, "_c_map_cached", counting(0))
    monkeypatch.setattr(pgtable, "_c_clear_cached", counting(1))
    for _ in range(300):
        n = rng.choice([2, 3, 17, 100, 256, 512, 600])
        addr = base + rng.randrange(0, 6 << 21, 4096) + (8 if rng.random() < 0.03 else 0)
        kind = rng.choice(["int64", "uint64", "list"])
        src = [int(p) for p in rng.sample(pages, n)]  # type: ignore[arg-type]
        arr = np.asarray(src, np.int64 if kind == "int64" else np.uint64) if kind != "list" else src
        do_map = rng.random() < 0.55
        size = rng.choice([1, 4096, 100 << 12, 3 << 21, (1 << 21) + 4096])
        got = []
        for j, (pt, _pm, _log) in enumerate(pts):
            with monkeypatch.context() as mp:
                if j == 0:
                    mp.setattr(pgtable, "_c_map_cached", None)
                    mp.setattr(pgtable, "_c_clear_cached", None)
                if do_map:
                    got.append(pt.map_pages(addr, arr, pgtable.PAGE_KERNEL))
                else:
                    got.append(pt.unmap(addr, size))
        assert got[0] == got[1]
        a, b = pts[0][0], pts[1][0]
        assert sorted(a.tables) == sorted(b.tables)
        assert all(np.array_equal(a.tables[p], b.tables[p]) for p in a.tables)
        assert sorted(a._ptecache) == sorted(b._ptecache)
        assert pts[0][2].dmesg() == pts[1][2].dmesg()
        taken += do_map and got[0] == 0
    assert pts[0][1].flags.tobytes() == pts[1][1].flags.tobytes()
    assert taken > 20
    assert c_taken[0] > 10 and c_taken[1] > 10, c_taken  # the twins did run
    for pt, pm, _ in pts:
        pt.check()
        pm.check()
