"""Replays of captures of workload kinds the replay was not tuned on.

Recorded on this machine (Linux 6.18.44, 2 CPUs) after the replay's inference was
written: zram devices (up to 4 GiB) and swap, seccomp filters, AF_PACKET rings and
AF_XDP UMEMs, per-CPU chunk growth, BPF ring buffers and arenas, all of them at once, a
pinned thread pool, containers, loop devices with ext4, BPF JIT packs in the module
range under a thread storm, a drop_caches in the middle of a trace, squashfs/erofs
mounts (decompressor workspaces, vm_map_ram vmap blocks), XFS/btrfs/ext4 mounts (bursts
of kernel threads), a thread storm while the snapshot was read, and a minute of the
busy machine (tests/data/captures/README.md says how each was recorded). Every address
in these traces is the kernel's own choice.

The floors are the values measured with main @ 5b7c59b (12:20 UTC), rounded down to
a whole percent: a regression guard, not a target. The targets of issue 10 that some
of these captures do not meet yet are the strict xfail tests at the end: when the
replay learns the missing rule they pass, and the xfail must go.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from pyvmalloc.trace.capturedir import load_capture_dir
from pyvmalloc.trace.events import PurgeVmapAreaLazy
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.replay import ReplayResult, replay_capture

CAPTURES = Path(__file__).parent / "data" / "captures"

# capture: (agreement floor, floor for the part where the state was fully known),
# measured (%) in the comment
FLOORS = {
    "zram": (0.99, 1.00),  # 99.04 / 100
    "zram-nodrop": (1.00, 1.00),  # 100 / 100
    "seccomp": (1.00, 1.00),  # 100 / 100 (99.70 before captures3's late-tracepoint rule)
    "seccomp-nodrop": (1.00, 1.00),  # 100 / 100 (99.70 before)
    "percpu": (0.98, 1.00),  # 98.48 / 100
    "percpu-nodrop": (0.98, 1.00),  # 98.85 / 100
    "bpfring": (1.00, 1.00),  # 100 / 100
    "bpfring-nodrop": (0.83, 1.00),  # 83.75 / 100 (85.00 with main @ 71763c9)
    "mixed2": (0.98, 0.99),  # 98.47 / 99.93
    "mixed2-nodrop": (0.87, 0.99),  # 87.61 / 99.61
    "threads-cpu0-nodrop": (0.99, 1.00),  # 99.74 / 100
    "userns": (0.98, 1.00),  # 98.58 / 100
    "fsloop-nodrop": (0.95, 1.00),  # 95.65 / 100
    "duration60-nodrop": (0.98, 1.00),  # 98.27 / 100
    "sockring": (1.00, 1.00),  # 100 / 100
    "sockring-nodrop": (0.68, 1.00),  # 68.30 / 100
    "zram-big": (0.95, 1.00),  # 95.16 / 100
    "zram-big-nodrop": (0.67, 1.00),  # 67.60 / 100
    "bpfjit-busy": (0.99, 1.00),  # 99.07 / 100 (95.13 / 99.80 before beliefs2)
    "bpfjit-busy-nodrop": (0.91, 0.99),  # 91.72 / 99.85
    "dropmid2": (0.99, 1.00),  # 99.89 / 100
    "dropmid2-nodrop": (0.91, 0.99),  # 91.21 / 99.97
    "busy60": (0.99, 1.00),  # 99.71 / 100
    "busy60-nodrop": (0.87, 0.99),  # 87.07 / 99.97
    "zram-nodrop2": (0.26, 1.00),  # 26.28 / 100
    "sockring2": (0.97, 1.00),  # 97.02 / 100 (90.48 before beliefs2)
    "cfs": (0.97, 1.00),  # 97.96 / 100
    "cfs-nodrop": (0.76, 1.00),  # 76.19 / 100
    "fsmount": (1.00, 1.00),  # 100 / 100
    "fsmount-nodrop": (1.00, 1.00),  # 100 / 100
    "storm-nodrop": (0.94, 1.00),  # 94.42 / 100 (97.30 with main @ 71763c9)
    # recorded 12:17 with the capture of main @ 5b7c59b: kstate.json (the BPF readout of
    # the free tree, vmap nodes, lazy lists and pools) in each; without it (--no-kstate)
    # the same captures replay at 47.25, 53.61, 84.66, 56.03 and 56.38 %
    "k-bpfjit-nodrop": (1.00, 1.00),  # 100 / 100
    "k-sockring-nodrop": (1.00, 1.00),  # 100 / 100
    "k-mixed2-nodrop": (1.00, 1.00),  # 100 / 100
    "k-seccomp-nodrop": (1.00, 1.00),  # 100 / 100
    "k-zrambig-nodrop": (1.00, 1.00),  # 100 / 100
}

CLASSES = ("hidden state", "race", "rule difference")

# captures where one cause costs more than the 3 mismatches issue 10 allows
OVER_3 = {
    "mixed2-nodrop": "one purge in flight (a race) costs 5 mismatches",
    "sockring-nodrop": "the unknown contents of node 0's stack pool at snapshot time cost 4",
    "bpfjit-busy-nodrop": "one purge in flight (a race) costs 6 mismatches",
    "busy60-nodrop": "one pool fact costs 4 mismatches",
    "storm-nodrop": "node 1's stack pool at snapshot time costs 4",
}


@cache
def _replay(
    name: str, end: bool = False, kstate: bool = True
) -> tuple[ReplayResult, dict[str, object]]:
    """Replay as ``pyvmalloc replay DIR`` does: seeded from kstate.json when the
    capture has one (the k-* captures), else from the snapshot alone."""
    res = replay_capture(CAPTURES / name, use_kstate=kstate, end=end)
    return res, load_capture_dir(CAPTURES / name).meta


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_fresh_capture_floor(name):
    res, meta = _replay(name)
    floor, known = FLOORS[name]
    assert res.agreement >= floor, (res.agreement, res.mismatches[:3])
    assert res.agreement_known >= known, res.agreement_known
    # Every allocation after the snapshot is compared, or resolved against it when it
    # falls inside the snapshot window (the skipped and window counts are of all events).
    counts = meta["event_counts"]
    assert isinstance(counts, dict)
    window = res.window_applied + res.window_reflected
    n = counts["alloc_vmap_area"]
    assert n - res.skipped_before_snapshot - window <= res.allocs_compared <= n
    # every purge traced after the snapshot started is replayed
    begin = meta["marker_lines"]["snapshot-begin"]  # type: ignore[index]
    events = parse_trace(CAPTURES / name).events
    assert res.purges == sum(isinstance(e, PurgeVmapAreaLazy) and e.line > begin for e in events)


@pytest.mark.parametrize("name", sorted(n for n in FLOORS if n.startswith("k-")))
def test_kstate_is_what_makes_the_k_captures_exact(name):
    # The same traces seeded from the snapshot alone: the pools are then invisible
    # (no drop_caches), and the replay falls back to inferring them.
    assert (CAPTURES / name / "kstate.json.gz").exists()
    without = _replay(name, kstate=False)[0]
    assert without.seed != "kstate" and without.agreement < 0.9
    assert _replay(name)[0].seed == "kstate"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_fresh_capture_mismatches_are_classified(name):
    res, _meta = _replay(name)
    assert all(m.cause_class in CLASSES and m.cause for m in res.mismatches)
    per_key = Counter(m.cause_key for m in res.mismatches)
    assert sum(c["mismatches"] for c in res.causes) == len(res.mismatches)
    for c in res.causes:
        assert c["class"] in CLASSES and c["mismatches"] == per_key[c["key"]]
        first = next(m for m in res.mismatches if m.cause_key == c["key"])
        assert c["mismatches"] == 1 + first.cascade


@pytest.mark.parametrize("name", sorted(n for n in FLOORS if "nodrop" not in n))
def test_fresh_drained_capture_ends_in_the_kernels_busy_state(name):
    # The busy areas the model ends with are the kernel's (vmallocinfo.end), except the
    # per-CPU chunks pcpu_get_vm_areas makes: it has no alloc tracepoint.
    res, _meta = _replay(name, end=True)
    e = res.end_check
    assert e is not None and e["busy_agree"] > 200
    assert e["busy_only_model"] == 0
    untraced = 2 if name in ("percpu", "mixed2", "busy60") else 0
    assert e["busy_only_kernel"] <= untraced
    assert e["lazy_only_model"] == 0


def test_no_cause_costs_over_3_but_the_known_ones():
    # Issue 10: no single cause costs more than 3 mismatches. The captures where one
    # does are strict xfails below; causes costing 2-3 are in /work/notes/fresh-captures.md.
    worst = {n: max((c["mismatches"] for c in _replay(n)[0].causes), default=0) for n in FLOORS}
    assert all(v <= 3 for n, v in worst.items() if n not in OVER_3), worst


# --- targets of issue 10 these captures do not meet yet ---------------------------


# drained captures below issue 10's 99 % each, and why
BELOW_99 = {
    "zram-big": "95.16 %; line 96 a pool hit on the other node's pool (the node of an area "
    "busy before the snapshot), then pool and decay beliefs wrong for 8 more allocations",
    "sockring2": "97.02 %; 20 KiB areas of align 1 share pool class 4 with the thread "
    "stacks: two node guesses for stacks busy before the snapshot are refuted before the "
    "rest follow, and three tree-shape first encounters",
    "mixed2": "98.47 % (purge-in-flight races and tree-shape one-offs under five concurrent "
    "workloads)",
    "percpu": "98.48 %: one tree-shape first encounter in 66 allocations",
    "userns": "98.58 %: two tree-shape first encounters in 141 allocations",
    "cfs": "97.96 %: three tree-shape first encounters in 147 allocations",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=BELOW_99[n])] if n in BELOW_99 else [])
        for n in sorted(n for n in FLOORS if "nodrop" not in n)
    ],
)  # fmt: skip
def test_target_drained_at_least_99_percent(name):
    assert _replay(name)[0].agreement >= 0.99


def test_seccomp_late_tracepoint_is_served_in_the_lock_order():
    # seccomp line 649: the forking parent was rescheduled for 140 ms between its stack
    # allocation and its tracepoint (line 902). The replay serves it in the lock order
    # (PREEMPT_SECONDS) instead of calling the range it holds 'not free' twice.
    res = _replay("seccomp")[0]
    assert res.reordered >= 1
    assert all(c["mismatches"] == 1 for c in res.causes if c["class"] == "hidden state")
    assert res.agreement == 1.0


@pytest.mark.xfail(
    strict=True,
    reason="percpu, busy60: the frees of pcpu_get_vm_areas chunks (no alloc tracepoint) are "
    "unknown to the model, whose nr_lazy then differs from the kernel's at every later "
    "free; the free event's nr_lazy tells the freed area's page count",
)
@pytest.mark.parametrize("name", ["percpu", "busy60"])
def test_target_lazy_accounting_follows_the_kernel(name):
    assert _replay(name)[0].lazy_drift == 0


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=r)) for n, r in OVER_3.items()],
)
def test_target_no_cause_over_3(name):
    assert max(c["mismatches"] for c in _replay(name)[0].causes) <= 3


# --- session 3: captures of kinds never captured before (helper captures3) ---------
#
# Recorded 14:01-14:13 UTC on this machine with the capture of main @ 70e91fe (kstate
# read after each snapshot), the workloads in tests/data/workloads/ (README there):
# KVM VMs, a bounded fork bomb, big-argv execs with big-stack thread pools, IPv4 routing
# tables (fib_trie), many memory cgroups, io_uring rings, many-queue veth pairs,
# iptables/nftables rule sets, IPsec policies, KVM and fib_trie at once, and a 5-minute
# mixed run (mix3: the first ~60 s are bundled). Each holds kstate.json, so the default
# replay is seeded from the kernel's own state; the snapshot-only replay (--no-kstate)
# is what tests the inference. kvm, forkbomb and pair-nodrop keep kstate.end.json too.

# capture: (floor seeded from kstate.json, floor from the snapshot alone), measured (%)
# in the comment as kstate / snapshot, and before this session's rules (main @ 70e91fe)
FLOORS3 = {
    "kvm": (0.999, 0.999),  # 99.91 / 99.91 (before 99.19 / 99.19)
    "kvm-nodrop": (0.999, 0.90),  # 99.91 / 90.62 (before 99.19 / 90.62)
    "forkbomb": (1.00, 0.998),  # 100 / 99.80 (before 99.60 / 99.41)
    "forkbomb-nodrop": (1.00, 0.80),  # 100 / 80.49
    "pair": (1.00, 1.00),  # 100 / 100 (before 99.85 / 99.85)
    "pair-nodrop": (0.997, 0.90),  # 99.77 / 90.52 (before 95.83 / 88.86)
    "execargv": (1.00, 0.999),  # 100 / 99.96
    "execargv-nodrop": (1.00, 0.86),  # 100 / 86.60
    "fibtrie": (1.00, 1.00),  # 100 / 100
    "fibtrie-nodrop": (1.00, 1.00),  # 100 / 100
    "memcg": (1.00, 1.00),  # 100 / 100
    "memcg-nodrop": (1.00, 0.998),  # 100 / 99.90
    "uring2": (1.00, 1.00),  # 100 / 100 (15 allocations)
    "uring2-nodrop": (1.00, 1.00),  # 100 / 100 (26)
    "vethq": (1.00, 1.00),  # 100 / 100 (32)
    "vethq-nodrop": (1.00, 1.00),  # 100 / 100 (32)
    "xtables": (1.00, 1.00),  # 100 / 100 (60)
    "xtables-nodrop": (1.00, 1.00),  # 100 / 100 (43)
    "xfrm": (1.00, 1.00),  # 100 / 100 (9)
    "xfrm-nodrop": (1.00, 1.00),  # 100 / 100 (2)
    "mix3": (0.994, 0.993),  # 99.47 / 99.31 (before 99.09 / 98.94)
    "mix3-nodrop": (0.992, 0.89),  # 99.24 / 89.87 (before 98.74 / 89.34)
}

# where one cause costs more than 3 mismatches (kstate-seeded replay)
OVER_3_S3 = {
    "mix3": "a purge in flight with helper workers (line 6966): its nodes' effects reach the "
    "allocating CPU at other times than the model assumes, 4 mismatches",
    "mix3-nodrop": "node 0 pool[32] (KVM's 132 KiB areas) differs from kstate.json's by line "
    "5832 after several overlapping purges: 4 mismatches",
}


def _check_floors(name, floors, *, purges):
    """Replay ``name`` seeded from kstate.json and from the snapshot alone: each at or
    above its floor, every allocation event after the snapshot compared, every
    mismatch classified and counted once (and, with ``purges``, every purge event
    replayed). Returns the kstate-seeded result."""
    seeded, snapshot = floors[name]
    res, meta = _replay(name)
    assert res.seed == "kstate"
    assert res.agreement >= seeded, (res.agreement, res.mismatches[:3])
    alone = _replay(name, kstate=False)[0]
    assert alone.seed == "snapshot"
    assert alone.agreement >= snapshot, (alone.agreement, alone.mismatches[:3])
    counts = meta["event_counts"]
    assert isinstance(counts, dict)
    n = counts["alloc_vmap_area"]
    for r in (res, alone):
        window = r.window_applied + r.window_reflected
        assert n - r.skipped_before_snapshot - window <= r.allocs_compared <= n
        if purges:
            assert r.purges == counts["purge_vmap_area_lazy"]
        assert all(m.cause_class in CLASSES and m.cause for m in r.mismatches)
        assert sum(c["mismatches"] for c in r.causes) == len(r.mismatches)
    return res


@pytest.mark.parametrize("name", sorted(FLOORS3))
def test_session3_capture_floor(name):
    _check_floors(name, FLOORS3, purges=True)


@pytest.mark.parametrize("name", sorted(n for n in FLOORS3 if n not in ("mix3", "mix3-nodrop")))
def test_session3_capture_ends_in_the_kernels_state(name):
    # Every busy and lazily freed area the model ends with is the kernel's
    # (vmallocinfo.end), seeded from the snapshot alone; with kstate.end.json the free
    # tree is the kernel's node for node and the pools entry for entry.
    res = _replay(name, end=True, kstate=False)[0]
    e = res.end_check
    assert e is not None and e["busy_agree"] > 200
    assert e["busy_only_model"] == e["busy_only_kernel"] == 0
    assert e["lazy_only_model"] == e["lazy_only_kernel"] == 0
    if (CAPTURES / name / "kstate.end.json.gz").exists():
        k = _replay(name, end=True)[0].end_kstate
        assert k is not None and k["free_agree"] == k["free_nodes_kernel"] > 100
        assert k["free_position_differs"] == k["free_color_differs"] == 0
        assert k["pool_only_model"] == k["pool_only_kernel"] == k["pool_moved"] == 0


@pytest.mark.parametrize("name", ["kvm", "kvm-nodrop", "pair-nodrop"])
def test_session3_cpu_moves_cost_one_mismatch_each(name):
    # KVM's VM creation: a task traced with a reschedule pending on one CPU traces its
    # next allocation on the other; the node was chosen on the first (one race each,
    # not a cascade of pool and "not free" facts: 9, 9 and 55 mismatches before).
    res = _replay(name)[0]
    moved = [c for c in res.causes if str(c["key"]).startswith("migrated")]
    assert moved and all(c["mismatches"] == 1 and c["class"] == "race" for c in moved)
    assert res.migrated == len(moved) == len(res.mismatches)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=OVER_3_S3[n])] if n in OVER_3_S3 else [])
        for n in sorted(FLOORS3)
    ],
)  # fmt: skip
def test_session3_no_cause_over_3(name):
    assert max((c["mismatches"] for c in _replay(name)[0].causes), default=0) <= 3


# --- session 4: more kinds never captured before (helper captures4) ----------------
#
# Recorded 16:15-16:25 UTC on this machine with the capture of main @ dc88b11 (kstate
# read after each snapshot, `--gzip --end-snapshot`), the workloads in
# tests/data/workloads/ (tests/data/captures/README.md lists them): ipset tables with big hashes, fixed-size and
# interval nftables sets, swap files with zswap (deflate, lzo, lzo-rle) under memory
# pressure, conntrack hash resizes, a mostly idle machine with periodic bursts, and
# stress-ng's clone, swap, netlink-proc, sysfs, zombie and resources stressors (the last
# opens ptys: n_tty's 16 KiB vzalloc()ed n_tty_data, align 1).

# capture: (floor seeded from kstate.json, floor from the snapshot alone), measured (%)
# as kstate / snapshot, and before this session's rules (main @ dc88b11) where they differ
FLOORS4 = {
    "ipset": (1.00, 1.00),  # 100 / 100 (17 allocations)
    "ipset-nodrop": (1.00, 0.913),  # 100 / 91.30 (23)
    "nftbig": (1.00, 1.00),  # 100 / 100 (29)
    "nftbig-nodrop": (1.00, 0.633),  # 100 / 63.33 (30)
    "swapfile": (1.00, 0.956),  # 100 / 95.69 (116)
    "swapfile-nodrop": (1.00, 0.993),  # 100 / 99.32 (147)
    "ctbuckets": (1.00, 1.00),  # 100 / 100 (67)
    "ctbuckets-nodrop": (1.00, 0.577),  # 100 / 57.78 (45)
    "bursts": (0.997, 0.986),  # 99.73 / 98.63 (730: two purge-in-flight races)
    "bursts-nodrop": (1.00, 0.712),  # 100 / 71.25 (814)
    "sng-clone": (1.00, 1.00),  # 100 / 100 (172)
    "sng-clone-nodrop": (1.00, 1.00),  # 100 / 100 (139)
    "sng-swap": (1.00, 1.00),  # 100 / 100 (268)
    "sng-swap-nodrop": (1.00, 1.00),  # 100 / 100 (352)
    "sng-nlproc": (0.999, 0.904),  # 99.97 / 90.41 (before 99.97 / 80.82; 3588)
    "sng-sysfs": (1.00, 0.991),  # 100 / 99.12 (1028)
    "sng-zombie-nodrop": (1.00, 0.97),  # 100 / 97.01 (6280)
    "sng-resources-nodrop": (1.00, 0.366),  # 100 / 36.65 (before 100 / 34.75; 8941)
}


@pytest.mark.parametrize("name", sorted(FLOORS4))
def test_session4_capture_floor(name):
    res = _check_floors(name, FLOORS4, purges=False)
    # seeded from the kernel's own state: no cause costs more than one mismatch
    assert max((c["mismatches"] for c in res.causes), default=0) <= 1


def test_session4_drained_capture_infers_pools_filled_in_the_trace():
    # sng-nlproc is drained (no pool at snapshot time), but 3,285 areas were purged at
    # line 2837, many of them lazy or busy at snapshot time with a node the snapshot
    # does not show. From line 4028 CPU 1 takes node 1's pool head by head, downwards,
    # inside what the model holds as free (its guess put them in node 0's pool, which
    # it decayed). Each such address is a pool head, not a tree choice: the model
    # predicts the next slot below instead of parking its tree choice as "not free"
    # again and again (688 mismatches, one cause costing 18, before; 344 now).
    alone = _replay("sng-nlproc", kstate=False)[0]
    assert alone.hidden_pool_hits > 100
    assert len(alone.mismatches) <= 344
    assert max(c["mismatches"] for c in alone.causes) <= 2


@pytest.mark.parametrize("name", sorted(FLOORS4))
def test_session4_capture_ends_in_the_kernels_state(name):
    # From the snapshot alone, every busy and lazily freed area the model ends with is
    # the kernel's (vmallocinfo.end); seeded from kstate.json, the free tree and pools
    # are the kernel's (kstate.end.json). Not for sng-nlproc's free tree: 79 of its
    # 3,622 blocks differ in place (not analysed; its one mismatch, a pool refill in
    # flight during the purge at line 2837, is the likely origin).
    res = _replay(name, end=True, kstate=False)[0]
    e = res.end_check
    assert e is not None and e["busy_agree"] > 200
    assert e["busy_only_model"] == e["busy_only_kernel"] == 0
    assert e["lazy_only_model"] == e["lazy_only_kernel"] == 0
    k = _replay(name, end=True)[0].end_kstate
    assert k is not None
    assert k["pool_only_model"] == k["pool_only_kernel"] == k["pool_moved"] == 0
    if name != "sng-nlproc":
        assert k["free_agree"] == k["free_nodes_kernel"] > 100
        assert k["free_position_differs"] == 0
