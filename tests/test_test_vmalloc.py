"""lib/test_vmalloc.c as a model workload (pyvmalloc.workloads.test_vmalloc)."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace

import pytest

from pyvmalloc import Kernel
from pyvmalloc.workloads.percpu import PercpuAllocator
from pyvmalloc.workloads.test_vmalloc import (
    CASES,
    INT_MAX,
    MODES,
    RcuModel,
    TestVmallocParams,
    align_shift_first_failure,
    mode_params,
    register_cli,
    run_test_vmalloc,
    run_test_vmalloc_full,
)

SUMMARY_54 = re.compile(
    r"^Summary: (\w+) passed: (\d+) failed: (\d+) repeat: (\d+) loops: (\d+) avg: (\d+) usec$"
)
SUMMARY_618 = re.compile(
    r"^Summary: (\w+) passed: (\d+) failed: (\d+) xfailed: (\d+) repeat: (\d+) "
    r"loops: (\d+) avg: (\d+) usec$"
)
TOOK_54 = re.compile(r"^All test took CPU(\d+)=(\d+) cycles$")
TOOK_618 = re.compile(r"^All test took worker(\d+)=(\d+) cycles$")


def _params(profile: str, loops: int, mask: int = INT_MAX, **kw: object) -> TestVmallocParams:
    p = TestVmallocParams.defaults(profile)
    p = replace(p, test_loop_count=loops, run_test_mask=mask, sequential_test_order=True)
    if p.era == "5.4":
        p.single_cpu_test = True
    return replace(p, **kw)  # type: ignore[arg-type]


def _assert_all_freed(k: Kernel) -> None:
    """After a full run + purge: nothing busy, nothing vmalloc'ed, pages back in buddy."""
    k.reclaim_and_purge_vmap_areas()
    k.run_deferred_work()
    k.check()
    assert k.vmap_space.nr_busy == 0, k.vmallocinfo()
    assert k.nr_vmalloc_pages == 0
    # page-table pages are never freed by unmapping (as in the kernel); all else is back
    assert k.phys_pages_used() == k.pgtable_pages_added()


# --- every case runs, passes, and leaves nothing behind --------------------------------
@pytest.mark.parametrize("profile", ["6.18", "5.4", "4.19"])
def test_every_case_runs_and_frees(profile: str) -> None:
    k = Kernel(profile, cpus=2)
    cases = CASES["6.18" if profile == "6.18" else "5.4"]
    mask = (1 << len(cases)) - 1
    if profile == "4.19":
        mask &= ~(1 << cases.index("align_shift_alloc_test"))  # kernel BUG there: see below
    r = run_test_vmalloc_full(k, _params(profile, 30, mask, check_each_test=True), seed=3)
    by_name = {s.name: s for s in r.summaries}
    assert set(by_name) == {c for i, c in enumerate(cases) if mask >> i & 1}
    for name, s in by_name.items():
        if name == "align_shift_alloc_test" and profile == "6.18":
            assert (s.passed, s.failed, s.xfailed) == (0, 0, 1)
        elif name == "align_shift_alloc_test":
            assert (s.passed, s.failed) == (0, 1)  # expected to fail; 5.4 has no xfail
        else:
            assert (s.passed, s.failed, s.xfailed) == (1, 0, 0), name
    assert r.kernel_bugs == 0
    _assert_all_freed(k)


def test_summary_lines_match_kernel_format() -> None:
    k = Kernel("6.18", cpus=2)
    r = run_test_vmalloc_full(k, _params("6.18", 20, 1 | 64 | 1024, test_repeat_count=2), 1)
    assert len(r.lines) == 4
    for line in r.lines[:3]:
        assert SUMMARY_618.match(line), line
    assert TOOK_618.match(r.lines[3])
    m = SUMMARY_618.match(r.lines[1])
    assert m is not None and m.groups()[:6] == ("align_shift_alloc_test", "0", "0", "2", "2", "20")
    assert k.log.grep("Summary: fix_size_alloc_test passed: 2 failed: 0 xfailed: 0 repeat: 2")

    k = Kernel("5.4", cpus=2)
    r = run_test_vmalloc_full(k, replace(_params("5.4", 20, 1), single_cpu_test=False), 1)
    assert [bool(SUMMARY_54.match(x)) for x in r.lines] == [True, False, True, False]
    assert [TOOK_54.match(x).group(1) for x in r.lines[1::2]] == ["0", "1"]  # type: ignore[union-attr]
    assert r.lines[0].startswith("Summary: fix_size_alloc_test passed: 1 failed: 0 repeat: 1 ")


def test_model_time_is_deterministic_and_positive() -> None:
    def once(seed: int) -> list[str]:
        k = Kernel("6.18", cpus=2)
        p = mode_params("stress", "6.18", 2, ["test_loop_count=15", "test_repeat_count=1"])
        p = replace(p, run_test_mask=1 | 8 | 32 | 256 | 1024, nr_threads=3)
        r = run_test_vmalloc_full(k, p, seed)
        assert r.ok
        _assert_all_freed(k)
        return r.lines

    a, b, c = once(7), once(7), once(8)
    assert a == b
    assert a != c
    assert len(a) == 3 * 6  # 3 workers x (5 summaries + "All test took")
    assert all(int(line.split("=")[1].split()[0]) > 0 for line in a if "took" in line)


def test_shuffle_is_a_permutation_and_sequential_is_identity() -> None:
    from pyvmalloc.workloads.test_vmalloc import _Runner

    def order(profile: str, seed: int, sequential: bool) -> list[int]:
        k = Kernel(profile, cpus=1)
        p = _params(profile, 1, 0, sequential_test_order=sequential)  # mask 0: runs nothing
        r = _Runner(k, p, seed, None)
        r.run(None)
        return r.workers[0].order

    for profile, n in (("6.18", 11), ("5.4", 8)):
        assert order(profile, 1, True) == list(range(n))
        o1, o2 = order(profile, 1, False), order(profile, 1, False)
        assert o1 == o2 and sorted(o1) == list(range(n)) and o1 != list(range(n))
        # j is drawn from [0, i - 1], never i: no element can stay at the last position
        assert o1[-1] != n - 1
        assert order(profile, 2, False) != o1 or order(profile, 3, False) != o1


# --- parameters and modes -------------------------------------------------------------
def test_defaults_per_era() -> None:
    p = TestVmallocParams.defaults("6.18")
    assert (p.era, p.run_test_mask, p.test_loop_count, p.test_repeat_count) == (
        "6.18",
        7,
        1_000_000,
        1,
    )
    assert p.normalized().nr_threads == 1
    q = TestVmallocParams.defaults("5.4")
    assert (q.era, q.run_test_mask, q.single_cpu_test) == ("5.4", INT_MAX, False)
    assert TestVmallocParams.defaults("4.19").era == "5.4"
    assert replace(q, test_loop_count=0, test_repeat_count=-3).normalized().test_loop_count == 1


def test_mode_presets_per_era() -> None:
    perf = mode_params("performance", "6.18", 4)
    assert (perf.sequential_test_order, perf.test_repeat_count, perf.nr_threads) == (True, 3, 0)
    stress = mode_params("stress", "6.18", 4)
    assert (stress.nr_threads, stress.test_repeat_count) == (4, 20)
    smoke = mode_params("smoke", "6.18", 4, ["run_test_mask=1"])
    assert (smoke.test_loop_count, smoke.test_repeat_count, smoke.run_test_mask) == (10000, 10, 1)
    perf54 = mode_params("performance", "5.4", 4)
    assert (perf54.single_cpu_test, perf54.sequential_test_order, perf54.test_repeat_count) == (
        True,
        True,
        3,
    )
    assert mode_params("stress", "4.19", 2).test_repeat_count == 20
    assert "single_cpu_test=1" in MODES["5.4"]["smoke"]
    with pytest.raises(ValueError, match="no parameter 'nr_threads'"):
        mode_params("performance", "5.4", 2, ["nr_threads=2"])
    with pytest.raises(ValueError, match="no parameter 'single_cpu_test'"):
        mode_params("smoke", "6.18", 2, ["single_cpu_test=1"])
    with pytest.raises(ValueError, match="not correct"):
        mode_params("manual", "6.18", 2, ["sequential_test_order=0"])
    man = mode_params("manual", "6.18", 2, ["run_test_mask=23", "use_huge=1", "nr_pages=0x10"])
    assert (man.run_test_mask, man.use_huge, man.nr_pages) == (23, True, 16)
    with pytest.raises(ValueError, match="not a bool"):
        TestVmallocParams.defaults("6.18").apply(["use_huge=maybe"])
    with pytest.raises(ValueError, match="unknown mode"):
        mode_params("turbo", "6.18", 2)


def test_params_of_wrong_era_rejected() -> None:
    with pytest.raises(ValueError, match=r"parameters are for the 5\.4 module"):
        run_test_vmalloc(Kernel("6.18", cpus=1), TestVmallocParams.defaults("5.4"))


def test_5_4_workers_one_per_cpu_pinned() -> None:
    k = Kernel("5.4", cpus=3)
    r = run_test_vmalloc_full(k, replace(_params("5.4", 10, 1 | 8), single_cpu_test=False), 2)
    assert [t[:2] for t in r.took] == [("CPU", 0), ("CPU", 1), ("CPU", 2)]
    assert all(s.passed == 1 for s in r.summaries)
    _assert_all_freed(k)


# --- align_shift_alloc_test ------------------------------------------------------------
def test_align_shift_derivation() -> None:
    # 4-level: VMALLOC_START 0xffffc90000000000 is 2^40-aligned; ALIGN to 2^45 gives
    # 0xffffe00000000000 (< VMALLOC_END 0xffffe8ffffffffff), ALIGN to 2^46 wraps to 0.
    assert align_shift_first_failure(0xFFFFC90000000000, 0xFFFFE8FFFFFFFFFF) == 46
    # 5-level: START 0xffa0000000000000 (2^53-aligned), END 0xffd1ffffffffffff:
    # 2^54 -> 0xffc0.. fits, 2^55 -> 0xff80.. < START? no: ALIGN up gives 2^64 -> wraps.
    assert align_shift_first_failure(0xFFA0000000000000, 0xFFD1FFFFFFFFFFFF) == 55


@pytest.mark.parametrize(("profile", "levels"), [("6.18", 4), ("5.4", 4), ("6.18", 5)])
def test_align_shift_fails_where_derived(profile: str, levels: int) -> None:
    k = Kernel(profile, cpus=2, paging_levels=levels)
    mask = 1 << CASES["6.18" if profile == "6.18" else "5.4"].index("align_shift_alloc_test")
    r = run_test_vmalloc_full(k, _params(profile, 1, mask), 1)
    assert r.align_shift_failed_at == align_shift_first_failure(k.VMALLOC_START, k.VMALLOC_END)
    s = r.summaries[0]
    assert (s.passed, s.failed, s.xfailed) == ((0, 0, 1) if profile == "6.18" else (0, 1, 0))
    _assert_all_freed(k)


def test_align_shift_on_4_19_hits_the_old_bug_on() -> None:
    """4.19's list allocator takes a wrapped ALIGN() result (0) and BUG()s.

    It happens one step earlier than on an empty range (45, not 46): the lazily freed
    areas of the previous steps still sit in 4.19's busy tree, so for 2^45 the walk
    starts at 0xffffe00000000000 (step 44's lazy area), moves past it, and ALIGN() to
    the next 2^45 multiple wraps to 0 — which the old code does not treat as overflow.
    (5.4 purges on the failure and retries, so it fails at 46 as derived.)
    """
    k = Kernel("4.19", cpus=2)
    r = run_test_vmalloc_full(k, _params("4.19", 1, 64), 1)
    assert r.kernel_bugs == 1 and r.align_shift_failed_at == 45
    assert r.summaries[0].failed == 1
    # v4.19.1 mm/vmalloc.c:512: BUG_ON(va->va_start < vstart); (ALIGN() wrapped to 0)
    assert [ln.text for ln in k.log.lines if ln.level == "BUG"] == [
        "kernel BUG at mm/vmalloc.c:512!"
    ]
    k.check()  # the model refused the call: no bogus area was left behind


# --- kvfree_rcu grace periods -----------------------------------------------------------
def test_kvfree_rcu_frees_only_after_a_grace_period() -> None:
    k = Kernel("6.18", cpus=2)
    rcu = RcuModel(k, interval=10)
    a = k.vmalloc(4096, cpu=1)
    b = k.vmalloc(4096, cpu=0)
    rcu.kvfree_rcu(a, 1)
    rcu.kvfree_rcu(b, 0)
    for _ in range(9):
        rcu.tick()
    assert k.nr_vmalloc_pages == 2 and rcu.pending == 2  # no grace period yet
    rcu.tick()  # GP 1 ends: a and b were queued during it, they need a full one
    assert k.nr_vmalloc_pages == 2 and rcu.gp_seq == 1
    for _ in range(10):
        rcu.tick()  # GP 2 ends: everything queued before it began is freed
    assert k.nr_vmalloc_pages == 0 and rcu.pending == 0 and rcu.freed == 2
    c = k.vmalloc(4096)
    rcu.kvfree_rcu(c, 0)
    rcu.synchronize_rcu()
    assert k.nr_vmalloc_pages == 0


def test_kvfree_rcu_test_leaves_objects_until_grace_period() -> None:
    from pyvmalloc.workloads.test_vmalloc import _Runner

    k = Kernel("6.18", cpus=2)
    p = _params("6.18", 50, 256, rcu_gp_interval=1 << 30)
    r = _Runner(k, p, 1, None)
    out = r.run(None)
    assert out.summaries[0].passed == 1
    assert k.nr_vmalloc_pages == 50  # all 50 still waiting for a grace period
    r.finish()  # module unload: rcu_barrier()
    assert k.nr_vmalloc_pages == 0
    _assert_all_freed(k)


# --- percpu model -----------------------------------------------------------------------
def test_percpu_allocator() -> None:
    k = Kernel("6.18", cpus=2)
    pa = PercpuAllocator(k, unit_size=64 << 10)
    ptrs = [pa.alloc_percpu(100 + i, 1 << (i % 12), cpu=0) for i in range(2000)]
    assert all(ptrs) and len(set(ptrs)) == 2000
    for i, p in enumerate(ptrs):
        assert p % max(4, 1 << (i % 12)) == 0
    pa.check()
    k.check()
    assert len(pa.chunks) > 1
    for p in ptrs:
        pa.free_percpu(p)
    assert len(pa.chunks) == 1  # one spare empty chunk is kept
    pa.release_empty()
    assert not pa.chunks
    _assert_all_freed(k)


# --- command line -----------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pyvmalloc")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(["test-vmalloc", *argv])
    rc: int = args.func(args)
    return rc


def test_cli_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["smoke", "run_test_mask=9", "test_repeat_count=2", "--loops", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert SUMMARY_618.match(out[0]) and out[0].startswith("Summary: fix_size_alloc_test passed: 2")
    assert "loops: 20 " in out[1]
    assert TOOK_618.match(out[2])
    assert _cli(["run_test_mask=1", "test_loop_count=5", "--profile", "5.4", "--cpus", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert SUMMARY_54.match(out[0]) and TOOK_54.match(out[1])
    assert _cli([]) == 0
    assert "align_shift_alloc_test (xfail)" in capsys.readouterr().out


def test_the_time_estimate_uses_the_rate_of_the_implementation_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyvmalloc import _accel
    from pyvmalloc.workloads import test_vmalloc as tv

    monkeypatch.setattr(_accel, "ACCELERATED", False)
    assert tv.calls_per_second() == tv.CALLS_PER_SECOND_REFERENCE
    monkeypatch.setattr(_accel, "ACCELERATED", True)
    assert tv.calls_per_second() == tv.CALLS_PER_SECOND


@pytest.mark.parametrize(("profile", "high"), [("6.18", 365), ("5.4", 378), ("4.19", 378)])
def test_pcp_of_the_zone_test_vmalloc_uses(profile: str, high: int) -> None:
    """The default machine (4 GiB, 2 CPUs): test_vmalloc's pages come from ZONE_NORMAL,
    whose 245760 managed pages give, by mm/page_alloc.c's rules:

    * zone_batchsize(): min(245760 >> 10, 1 MiB / 4 KiB) = 240; / 4 = 60;
      rounddown_pow_of_two(60 + 30) - 1 = 63 (all three kernels);
    * the low watermark: min_free_kbytes = int_sqrt(1023744 lowmem pages * 4 * 16) =
      8094 kB = 2023 pages, the zone's share 2023 * 245760 // 1023744 = 485, plus
      max(485 >> 2, 245760 * 10 // 10000) = 245: low = 730;
    * high: v5.14+ zone_highsize() = max(730 // 2 CPUs, 4 * 63) = 365; before,
      pageset_set_batch() = 6 * 63 = 378.

    And ZONE_DMA (3840 managed): batch max(1, rounddown_pow_of_two(1) - 1) = 1; high
    max(10 // 2, 4) = 5 (6.18) or 6 * 0 = 0 (5.4, 4.19: every free drains at once).
    """
    k = Kernel(profile, cpus=2)
    pfn = k.pgtables.translate(k.vmalloc(4096)) >> 12
    zones = {z.name: z for z in k.phys.zones}
    normal = zones["Normal"]
    assert k.phys.zones[int(k.phys.zone[pfn])] is normal
    assert (normal.managed, sum(z.managed for z in k.phys.zones)) == (245760, 1023744)
    assert (normal.wmark[1], normal.pcp_batch, normal.pcp_high) == (730, 63, high)
    dma = zones["DMA"]
    assert (dma.managed, dma.wmark[1], dma.pcp_batch) == (3840, 10, 1)
    assert dma.pcp_high == (5 if profile == "6.18" else 0)
