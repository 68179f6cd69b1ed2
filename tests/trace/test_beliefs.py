"""Belief revision in the replay: hand-built traces whose expected addresses follow from
the kernel's rules (mm/vmalloc.c, 6.18), and the real captures' cause classes.

Every trace here is what a 6.18 kernel would write for the stated hidden state; the
replay starts from the visible state only and must learn the hidden part from the
kernel's decisions, paying at most one mismatch per refuted guess.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy
from pyvmalloc.trace.replay import load_capture, replay

V = 0xFFFFC90000000000  # VMALLOC_START (x86_64, 4-level)
VEND = 0xFFFFE8FFFFFFFFFF
STACK = 20480  # THREAD_SIZE 16 KiB + guard page
ALIGN = 16384  # THREAD_ALIGN
CAPTURES = Path(__file__).parent.parent / "data" / "captures"


class Trace:
    """A 6.18 trace written event by event, 1 ms apart."""

    def __init__(self) -> None:
        self.lines: list[str] = ["# tracer: nop", "#"]
        self.t = 100.0
        self.nr_lazy = 0

    def _tick(self) -> float:
        self.t += 0.001
        return self.t

    def marker(self, name: str) -> None:
        ts = f"{self._tick():.6f}"
        self.lines.append(
            f"       pyvmalloc-1       [000] ...1. {ts:>12}: tracing_mark_write: pyvmalloc: {name}"
        )

    def alloc(self, addr: int, cpu: int, size: int = STACK, align: int = ALIGN) -> None:
        ev = AllocVmapArea(
            addr=addr, size=size, align=align, vstart=V, vend=VEND, failed=0, cpu=cpu,
            task="threads", pid=10, timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))

    def free(self, addr: int, size: int = STACK, cpu: int = 0) -> None:
        self.nr_lazy += size >> 12
        ev = FreeVmapAreaNoflush(
            va_start=addr, nr_lazy=self.nr_lazy, nr_lazy_max=16384, cpu=cpu,
            task="kworker/0:1", pid=11, timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))

    def purge(self, start: int, end: int, n: int, pages: int) -> None:
        self.nr_lazy -= pages
        ev = PurgeVmapAreaLazy(
            start=start, end=end, npurged=n, cpu=1, task="kworker/1:1", pid=40,
            timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines) + "\n")
        return path


def snapshot(path: Path, busy: list[tuple[int, int]], lazy: list[tuple[int, int]] = ()) -> Path:
    lines = [
        f"{s:#x}-{e:#x} {e - s:>8} kernel_clone+0xb8/0x400 pages={(e - s) // 4096 - 1} vmalloc"
        for s, e in busy
    ]
    lines += [f"{s:#x}-{e:#x} {e - s:>8} unpurged vm_area" for s, e in lazy]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(tmp_path: Path, tr: Trace, busy, lazy=(), *, drop: bool = True):
    return replay(
        tr.write(tmp_path / "trace"),
        snapshot(tmp_path / "vmallocinfo", busy, list(lazy)),
        meta={"drop_caches": drop, "cpus_possible": [0, 1]},
    )


def test_node_of_a_pre_snapshot_area_is_revised_by_a_pool_hit_below_it(tmp_path):
    # Two stacks busy before the snapshot, both in address zones of node 1
    # (addr / 64 KiB odd), so the model guesses node 1 for both. The kernel had
    # allocated the upper one on node 0. Freed and purged, node 1's pool is [s1]
    # in the kernel and [s2, s1] in the model (a purge pushes ascending: head s2).
    s1, s2 = V + 0x10000, V + 0x30000
    tr = Trace()
    tr.free(s1)
    tr.free(s2)
    tr.purge(s1, s2 + STACK, 2, 10)
    tr.alloc(s1, cpu=1)  # node 1's pool head in the kernel: s1 (model: s2 first)
    tr.alloc(s2, cpu=0)  # node 0's pool head: s2, where the revision moved it
    tr.alloc(V, cpu=1)  # node 1's pool is empty: the lowest fit of the tree
    res = run(tmp_path, tr, [(s1, s1 + STACK), (s2, s2 + STACK)])
    assert [m.line for m in res.mismatches] == [6]
    m = res.mismatches[0]
    assert (m.kernel, m.model) == (s1, s2)
    assert m.cause_class == "hidden state"
    assert m.cause_key == f"node:{s2:#x}"
    assert res.allocs_matched == 2


def test_a_small_hole_the_kernel_passes_over_is_not_chosen_again(tmp_path):
    # A 32 KiB hole between two busy areas: shorter than the search length for a
    # stack (20 KiB + 16 KiB - 1), but a stack fits at its 16 KiB-aligned middle.
    # The model's rebuilt tree has it on the descent path, the kernel's tree not:
    # the kernel takes the lowest block of at least the search length instead.
    hole = (V + 0x1000, V + 0x9000)
    busy = [(V, V + 0x1000), (V + 0x9000, V + 0x10000)]
    tr = Trace()
    tr.alloc(V + 0x10000, cpu=0)
    tr.alloc(V + 0x18000, cpu=0)
    tr.alloc(V + 0x20000, cpu=1)
    res = run(tmp_path, tr, busy)
    assert len(res.mismatches) == 1, res.mismatches
    m = res.mismatches[0]
    assert m.model == V + 0x4000  # the hole, reached on the model's path
    assert m.cause_key == f"shape:{hole[0]:#x}:{hole[1]:#x}"
    assert res.searches_skipping_unreachable == 2  # refuted, never chosen again


def test_window_allocation_missing_from_the_snapshot_is_applied(tmp_path):
    # An allocation between the snapshot markers that the file does not show (its
    # node was printed before it): applied, so its range is never reused.
    busy = [(V, V + 0x1000)]
    tr = Trace()
    tr.marker("snapshot-begin")
    tr.alloc(V + 0x4000, cpu=0)
    tr.marker("snapshot-end")
    tr.alloc(V + 0xC000, cpu=0)
    tr.alloc(V + 0x14000, cpu=1)
    res = run(tmp_path, tr, busy)
    assert res.window_applied == 1
    assert res.allocs_compared == 2 and res.allocs_matched == 2
    assert any("between the snapshot markers" in n for n in res.notes)


def test_window_allocation_in_the_snapshot_is_not_applied_twice(tmp_path):
    busy = [(V, V + 0x1000), (V + 0x4000, V + 0x9000)]
    tr = Trace()
    tr.marker("snapshot-begin")
    tr.alloc(V + 0x4000, cpu=0)
    tr.marker("snapshot-end")
    tr.alloc(V + 0xC000, cpu=0)
    res = run(tmp_path, tr, busy)
    assert (res.window_reflected, res.window_applied) == (1, 0)
    assert res.allocs_matched == 1


def test_hidden_pool_heads_are_followed_down_then_given_up(tmp_path):
    # No drop_caches: node 0's pool held three stacks pooled side by side at 32 KiB
    # stride (one purge: heads descending), invisible in vmallocinfo. The kernel
    # takes them head first, then searches the tree (lowest fit at VMALLOC_START).
    top = V + 0x400000
    tr = Trace()
    for k in range(3):
        tr.alloc(top - k * 0x8000, cpu=0)
    tr.alloc(V + 0x4000, cpu=0)  # pool used up: the tree's lowest fit
    tr.alloc(V + 0xC000, cpu=0)
    busy = [(V, V + 0x1000), (top + STACK, top + 0x10000)]
    res = run(tmp_path, tr, busy, drop=False)
    keys = [m.cause_key for m in res.mismatches]
    # one mismatch to learn the head, one to learn that the pool is used up
    assert len(keys) == 2, res.mismatches
    assert keys[0].startswith("snapshot-head")
    assert keys[1].startswith("snapshot-pool-end")
    assert res.hidden_pool_hits == 2
    assert res.allocs_matched == 3


def test_a_free_range_the_kernel_lacks_is_skipped_for_every_size(tmp_path):
    # No drop_caches: [V + 0x1000, V + 0x21000) looks free, but the kernel has two
    # 64 KiB areas pooled there (side by side), so its free tree has nothing in it. A
    # 40 KiB request (align 1: not a stack, no pool head guessed) goes to the next
    # free block; so does a later 16 KiB one (another pool class: the tree), which the
    # model must not place in the pooled range either.
    busy = [(V, V + 0x1000), (V + 0x21000, V + 0x30000)]
    tr = Trace()
    tr.alloc(V + 0x30000, cpu=0, size=0xA000, align=1)
    tr.alloc(V + 0x3A000, cpu=1, size=0x4000, align=1)
    res = run(tmp_path, tr, busy, drop=False)
    assert len(res.mismatches) == 1, res.mismatches
    m = res.mismatches[0]
    assert m.model == V + 0x1000
    assert m.cause_key == f"snapshot-free:{V + 0x1000:#x}"
    assert res.allocs_matched == 1


def test_an_allocation_inside_a_purge_in_flight_is_a_race_and_catches_the_purge_up(
    tmp_path,
):
    # Two lazily freed 40 KiB areas in the snapshot (node 0's list) and a busy one freed
    # in the trace: the next purge takes all three (num_purged=3). It starts right
    # after that free; its event comes after three allocations that already use its
    # refill: node 0's pool gets a, b, c pushed in ascending order, head c. The first
    # allocation shows the model the purge was further on (race); then the pool's
    # LIFO order matches.
    a, b, c = V + 0x10000, V + 0x30000, V + 0x100000
    size = 0xA000
    tr = Trace()
    tr.nr_lazy = 2 * (size >> 12)
    tr.free(c, size=size)
    tr.alloc(c, cpu=0, size=size, align=1)
    tr.alloc(b, cpu=0, size=size, align=1)
    tr.alloc(a, cpu=0, size=size, align=1)
    tr.purge(a, c + size, 3, 3 * (size >> 12))
    res = run(tmp_path, tr, [(V, V + 0x1000), (c, c + size)], [(a, a + size), (b, b + size)])
    assert [m.cause_class for m in res.mismatches] == ["race"], res.mismatches
    assert res.mismatches[0].kernel == c
    assert res.allocs_matched == 2


def test_lock_order_race_is_replayed_in_the_kernels_order(tmp_path):
    # CPU 1 took the free-tree lock first: the lowest fit for 64 KiB (align 1) is
    # [V + 0x1000, V + 0x11000). CPU 0's stack then got the lowest 16 KiB-aligned
    # slot above it, V + 0x14000. CPU 1 reached its tracepoint 20 us later, so in
    # timestamp order the model would give CPU 0 V + 0x4000, inside CPU 1's area.
    # Served in the kernel's order, both match.
    tr = Trace()
    t = tr._tick()
    tr.lines.append(
        str(AllocVmapArea(addr=V + 0x14000, size=STACK, align=ALIGN, vstart=V, vend=VEND,
                          failed=0, cpu=0, task="threads", pid=10, timestamp=t))
    )  # fmt: skip
    tr.lines.append(
        str(AllocVmapArea(addr=V + 0x1000, size=0x10000, align=1, vstart=V, vend=VEND,
                          failed=0, cpu=1, task="bpf", pid=12, timestamp=t + 20e-6))
    )  # fmt: skip
    res = run(tmp_path, tr, [(V, V + 0x1000)])
    assert res.reordered == 1
    assert res.allocs_compared == 2 and res.allocs_matched == 2, res.mismatches


# --- the real captures -----------------------------------------------------------

REAL = {
    # capture: (agreement floor, floor for the fully known part); measured values in
    # tests/data/captures/README.md
    "threads-pool": (0.999, 0.999),
    "forkstorm": (0.995, 0.999),
    "bpf-churn-bg": (0.99, 0.999),
    "mixed-preempt": (0.99, 0.999),
    "threads-long": (0.998, 0.999),
    "threads-pool-nodrop": (0.99, 0.999),
    "threads-long-nodrop": (0.99, 0.999),
    "small-spread-nodrop": (0.92, 0.999),
    "mixed-nodrop": (0.80, 0.99),
    "bpf-churn-bg-nodrop": (0.54, 0.97),
    "bpfprog-nodrop": (0.62, 0.99),
}


#: The captures of session 4 (tests/test_captures_fresh.py FLOORS4): kinds recorded after
#: the targets below were met; their own floors are there.
SESSION4 = {
    "ipset", "ipset-nodrop", "nftbig", "nftbig-nodrop", "swapfile", "swapfile-nodrop",
    "ctbuckets", "ctbuckets-nodrop", "bursts", "bursts-nodrop", "sng-clone",
    "sng-clone-nodrop", "sng-swap", "sng-swap-nodrop", "sng-nlproc", "sng-sysfs",
    "sng-zombie-nodrop", "sng-resources-nodrop",
}  # fmt: skip


@pytest.mark.xfail(
    strict=True,
    reason="with session 4's captures the no-drop_caches total from the snapshot alone is "
    "87.9 % (sng-resources-nodrop: 36.65 %, one fact per pooled pty area and stack)",
)
def test_nodrop_target_with_session4_captures():
    matched = compared = 0
    for cap in sorted(p for p in CAPTURES.iterdir() if p.is_dir() and p.name.endswith("nodrop")):
        trace, snap, meta = load_capture(cap)
        res = replay(trace, snap, meta=meta)
        matched += res.allocs_matched
        compared += res.allocs_compared
    assert matched / compared >= 0.90


def test_targets_over_all_captures():
    # The targets: BPF-map captures >= 99.9 % together, captures without
    # drop_caches >= 90 % together (drained >= 99.5 %: tests/trace/test_replay.py).
    bpf = ("mixed-spread", "churn-cpu0", "churn-cpu1", "churn-any", "longlived-any",
           "mixed-cpu1-paced", "bpfprog")  # fmt: skip
    totals = {"bpf": [0, 0], "nodrop": [0, 0]}
    for cap in sorted(p for p in CAPTURES.iterdir() if p.is_dir() and p.name not in SESSION4):
        kind = "bpf" if cap.name in bpf else "nodrop" if cap.name.endswith("nodrop") else ""
        if not kind:
            continue
        trace, snap, meta = load_capture(cap)
        res = replay(trace, snap, meta=meta)
        totals[kind][0] += res.allocs_matched
        totals[kind][1] += res.allocs_compared
    assert totals["bpf"][0] / totals["bpf"][1] >= 0.999
    assert totals["nodrop"][1] > 30_000
    assert totals["nodrop"][0] / totals["nodrop"][1] >= 0.90


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_capture_floors_and_causes(name):
    trace, snap, meta = load_capture(CAPTURES / name)
    res = replay(trace, snap, meta=meta)
    floor, known = REAL[name]
    assert res.agreement >= floor
    assert res.agreement_known >= known
    per_cause = Counter(m.cause_key for m in res.mismatches)
    assert all(m.cause_class in ("hidden state", "race", "rule difference") for m in res.mismatches)
    if meta["drop_caches"]:
        # drained: every remaining mismatch is a one-off hidden-state fact, or a race
        # with a purge in flight
        assert all(m.cause_class in ("hidden state", "race") for m in res.mismatches)
        assert max(per_cause.values(), default=0) <= 3
    else:
        assert max(per_cause.values(), default=0) <= 3
    assert sum(c["mismatches"] for c in res.causes) == len(res.mismatches)
    assert all(c["mismatches"] == 1 + next(
        m.cascade for m in res.mismatches if m.cause_key == c["key"]
    ) for c in res.causes)  # fmt: skip


def test_no_refuted_choice_is_repeated():
    # Each refuted guess (a node, a pool entry, an unreachable block) costs the
    # replay at most one mismatch on these drained captures.
    for name in ("threads-pool", "forkstorm", "stacks-and-churn", "everything-concurrent"):
        trace, snap, meta = load_capture(CAPTURES / name)
        res = replay(trace, snap, meta=meta)
        counts = Counter(m.cause_key for m in res.mismatches)
        assert all(n == 1 for n in counts.values()), (name, counts.most_common(3))


# --- a purge in flight: its decay, its refill ----------------------------------------


def _alloc_at(tr: Trace, t: float, addr: int, cpu: int, size: int) -> None:
    tr.t = t - 0.001  # Trace._tick adds 1 ms
    tr.alloc(addr, cpu=cpu, size=size, align=1)


def test_a_decay_not_yet_in_the_kernels_tree_is_held_out_of_the_models(tmp_path):
    # CPU 1 fills node 1's pool[2] with 80 areas of 12 KiB (pushed ascending: head =
    # the highest). The next purge decays 80 >> 2 = 20 of them from the head, a[60..79],
    # a private tree first (decay_va_pool_node), the global free tree only at the end
    # of the node's decay. CPU 0 allocates 8 KiB twice within 2 us of the purge's
    # start: both searches miss the decayed areas and go above the lazy area b. After
    # the purge's event they are in the tree: the next 8 KiB goes to a[60].
    s = 0x3000
    a = [V + 0x1000 + i * s for i in range(80)]
    b = a[-1] + s  # 20 KiB, lazily freed on node 0 by CPU 0
    tr = Trace()
    for x in a:
        tr.alloc(x, cpu=1, size=s, align=1)
    for x in a:
        tr.free(x, size=s, cpu=1)
    tr.purge(a[0], a[-1] + s, 80, 80 * 3)
    tr.alloc(b, cpu=0, size=0x5000, align=1)
    tr.free(b, size=0x5000, cpu=0)
    began = tr.t + 20e-6  # the purge worker's wake-up (Replayer.worker_latency)
    _alloc_at(tr, began + 1e-6, b + 0x5000, 0, 0x2000)
    _alloc_at(tr, began + 2e-6, b + 0x7000, 0, 0x2000)
    tr.t = began + 30e-6 - 0.001
    tr.purge(b, b + 0x5000, 1, 5)
    tr.alloc(a[60], cpu=0, size=0x2000, align=1)
    res = run(tmp_path, tr, [(V, V + 0x1000)])
    assert res.allocs_compared == 80 + 1 + 3
    assert [(m.kernel, m.model) for m in res.mismatches] == [(b + 0x5000, a[60])]
    m = res.mismatches[0]
    assert m.cause_class == "race" and m.cause_key.startswith("decay:"), m


def test_each_allocation_racing_a_refill_is_its_own_race(tmp_path):
    # Node 0's purge pushes a[0..9] onto its pool in ascending order while CPU 0
    # allocates from it: the first allocation gets a[3] (the last pushed then), the
    # second a[6]. Neither follows from the other; after the purge's event the pool
    # head is a[9], as the model has it.
    s = 0x3000
    a = [V + 0x1000 + i * s for i in range(10)]
    tr = Trace()
    for x in a:
        tr.alloc(x, cpu=0, size=s, align=1)
    for x in a:
        tr.free(x, size=s, cpu=0)
    tr.alloc(a[3], cpu=0, size=s, align=1)
    tr.alloc(a[6], cpu=0, size=s, align=1)
    tr.purge(a[0], a[-1] + s, 10, 30)
    tr.alloc(a[9], cpu=0, size=s, align=1)
    res = run(tmp_path, tr, [(V, V + 0x1000)])
    assert [m.kernel for m in res.mismatches] == [a[3], a[6]]
    assert all(m.cause_class == "race" for m in res.mismatches)
    keys = [m.cause_key for m in res.mismatches]
    assert all(k.startswith("refill:") for k in keys) and len(set(keys)) == 2
    assert res.allocs_matched == res.allocs_compared - 2


# --- pools at snapshot time, areas with align <= PAGE_SIZE (no drop_caches) ----------


def test_a_tree_choice_shows_every_lower_fitting_block_is_not_in_the_kernels_tree(tmp_path):
    # Without drop_caches, the 12 KiB and 16 KiB holes below V + 0xA000 are pooled
    # in the kernel (other sizes' pools): its 12 KiB tree search returns the lowest
    # block of at least 12 KiB in its tree, the top one. So neither hole is in its
    # tree, and its next 8 KiB search ends there too, not in the 16 KiB hole.
    busy = [(V, V + 0x1000), (V + 0x4000, V + 0x5000), (V + 0x9000, V + 0xA000)]
    tr = Trace()
    tr.alloc(V + 0xA000, cpu=0, size=0x3000, align=1)
    tr.alloc(V + 0xD000, cpu=0, size=0x2000, align=1)
    res = run(tmp_path, tr, busy, drop=False)
    assert [(m.kernel, m.model) for m in res.mismatches] == [(V + 0xA000, V + 0x1000)]
    assert res.allocs_matched == 1


def test_hidden_pool_heads_of_exact_size_holes_are_followed_down_by_their_stride(tmp_path):
    # Node 0's pool[2] holds six 12 KiB areas at snapshot time, h0 < ... < h5, 20 KiB
    # apart (one purge pushed them ascending: head h5), each alone between busy areas;
    # h1 has a free page above it. The first two allocations show the model a head (h5
    # looks like a tree choice, h4 comes from a range the kernel's tree lacks); the next
    # heads are the exact-size holes below (h3, h2); three heads 20 KiB apart make a
    # stride, which finds h1 (not an exact hole) and h0; then the tree.
    h = [V + 0x1000 + i * 0x5000 for i in range(6)]
    busy = [(V, V + 0x1000)] + [(x + (0x4000 if x == h[1] else 0x3000), x + 0x5000) for x in h]
    top = h[-1] + 0x5000
    tr = Trace()
    for addr in (*h[::-1], top):
        tr.alloc(addr, cpu=0, size=0x3000, align=1)
    res = run(tmp_path, tr, busy, drop=False)
    assert [m.kernel for m in res.mismatches] == [h[5], h[4]]
    assert res.allocs_matched == 5
    assert res.hidden_pool_hits == 4


def test_once_a_hidden_stack_pool_is_used_up_a_tree_choice_parks_every_lower_block(
    tmp_path,
):
    # Three 40 KiB holes F1 < F2 < F3 and a range R hold pooled areas in the kernel
    # (no drop_caches). Node 0's hidden stack pool shows its head inside R, then the
    # kernel goes to its tree (above R): that pool is used up. From then on a stack at
    # the bottom of the top block is a tree search for length 0x8fff, the lowest block
    # of that length in the kernel's tree: every lower block of that length is not in
    # it, F3 and what is left of R as well as the model's choice F2.
    f = [V + 0x1000, V + 0xC000, V + 0x17000]
    r, top = V + 0x22000, V + 0x41000
    busy = [(V, V + 0x1000)] + [(x + 0xA000, x + 0xB000) for x in f] + [(r + 0x1E000, top)]
    tr = Trace()
    for addr in (V + 0x38000, V + 0x44000, V + 0x4C000, V + 0x54000):
        tr.alloc(addr, cpu=0)
    res = run(tmp_path, tr, busy, drop=False)
    assert [m.kernel for m in res.mismatches] == [V + 0x38000, V + 0x44000, V + 0x4C000]
    assert res.mismatches[-1].model == f[1]
    assert res.allocs_matched == 1


def test_a_stack_tree_choice_parks_every_lower_block_while_no_hidden_stack_is_seen(
    tmp_path,
):
    # Two 40 KiB holes below the top block are pooled in the kernel (no drop_caches);
    # CPU 1's node has shown no pooled stack yet. Its stacks at the bottom of the top
    # block are tree searches for length 0x8fff: neither hole is in the kernel's tree.
    f = [V + 0x1000, V + 0xC000]
    top = V + 0x17000
    busy = [(V, V + 0x1000)] + [(x + 0xA000, x + 0xB000) for x in f]
    tr = Trace()
    for addr in (top + 0x1000, top + 0x9000, top + 0x11000):
        tr.alloc(addr, cpu=1)
    res = run(tmp_path, tr, busy, drop=False)
    assert [(m.kernel, m.model) for m in res.mismatches] == [(top + 0x1000, f[0] + 0x3000)]
    assert res.allocs_matched == 2


def test_pools_emptied_by_the_shrinker_are_inferred_at_once(tmp_path):
    # Six stacks of CPU 0 are freed and purged into node 0's pool (head: the highest).
    # Then drop_caches (or memory pressure) runs the vmap-node shrinker, which returns
    # every pooled area to the free tree; no vmalloc event says so. The next stack is
    # a tree search: the lowest slot, V + 0x4000, at position 5 of the model's pool.
    # That is where a search ends with every pool in the tree: the model empties its
    # pools too, and the stack after it (V + 0xC000) agrees.
    stacks = [V + 0x4000 + i * 0x8000 for i in range(6)]
    tr = Trace()
    for x in stacks:
        tr.alloc(x, cpu=0)
    for x in stacks:
        tr.free(x)
    tr.purge(stacks[0], stacks[-1] + STACK, 6, 30)
    tr.alloc(stacks[0], cpu=0)
    tr.alloc(stacks[1], cpu=0)
    res = run(tmp_path, tr, [(V, V + 0x1000)])
    assert [(m.kernel, m.model) for m in res.mismatches] == [(stacks[0], stacks[-1])]
    assert res.mismatches[0].cause_key.startswith("shrinker:")
    assert res.allocs_matched == 7


def test_passed_over_marks_only_the_short_blocks_that_fit_once_aligned():
    # Free blocks (4 KiB pages, from V): [V+1p, V+3p) 8 KiB, [V+4p, V+9p) 20 KiB,
    # [V+10p, V+15p) 20 KiB starting 8 KiB past a 16 KiB boundary (the aligned start
    # V+12p leaves 12 KiB: a 20 KiB stack does not fit), [V+16p, V+40p) 96 KiB.
    # A stack search (20 KiB, align 16 KiB: length 0x8fff) that passed over [V, V+40p):
    # only [V+4p, V+9p) is shorter than the length and takes the stack once aligned
    # (V+4p is 16 KiB aligned); the 8 KiB block is too short, the third block does not
    # fit once aligned, the 96 KiB one is not shorter than the search length.
    from pyvmalloc.trace.beliefs import Beliefs
    from pyvmalloc.trace.harness import TraceHarness

    page = 0x1000
    h = TraceHarness("6.18", cpus=2)
    for s, e in [(0, 1), (3, 4), (9, 10), (15, 16)]:
        h.seed_busy(V + s * page, V + e * page)
    b = Beliefs(h.space)
    length = STACK + ALIGN - 1
    assert b.mark_passed_over(V, V + 40 * page, STACK, ALIGN, length) == 1
    assert b.unreachable == {(V + 4 * page, V + 9 * page): {length}}
    # Marking again adds nothing; another search length is a new mark.
    assert b.mark_passed_over(V, V + 40 * page, STACK, ALIGN, length) == 0
    assert b.mark_passed_over(V, V + 40 * page, STACK, ALIGN, length + 1) == 1
    assert b.unreachable == {(V + 4 * page, V + 9 * page): {length, length + 1}}


def test_driving_a_trace_leaves_the_garbage_collector_as_it_was(tmp_path):
    import gc

    tr = Trace()
    tr.alloc(V + 0x4000, cpu=0)  # the stack's lowest 16 KiB-aligned fit
    busy = [(V, V + 0x1000)]
    assert gc.get_freeze_count() == 0
    assert run(tmp_path, tr, busy).allocs_matched == 1
    assert gc.get_freeze_count() == 0  # unfrozen after the replay
    keep = [object() for _ in range(10)]
    gc.freeze()  # a caller's own frozen objects stay frozen
    try:
        frozen = gc.get_freeze_count()
        run(tmp_path, tr, busy)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    del keep


def test_the_compiled_passed_over_walk_is_the_reference():
    # The same seeded free trees and questions through both: every list equal.
    import random

    from pyvmalloc.trace import beliefs
    from pyvmalloc.trace.harness import TraceHarness

    if beliefs._c_short_fitting_below is None:
        pytest.skip("no compiled accelerator")
    rnd = random.Random(15)
    page = 0x1000
    for _ in range(5):
        h = TraceHarness("6.18", cpus=2)
        pos = V
        for _ in range(300):
            pos += rnd.choice([1, 1, 2, 3, 5, 8, 9]) * page  # a free gap
            end = pos + rnd.randint(1, 4) * page
            h.seed_busy(pos, end)
            pos = end
        free = h.space.free
        umax = h.space.ulong_max
        for _ in range(200):
            lo = V + rnd.randint(0, 600) * page
            hi = lo + rnd.randint(1, 900) * page
            size = rnd.choice([1, 2, 4, 5]) * page
            align = rnd.choice([page, 2 * page, ALIGN, 8 * page])
            length = size + align - 1 if align > page else size
            limit = rnd.choice([0, 1, 7, 256])
            blk = free.pvm_find_va_enclose_addr(hi - 1)
            args = (blk, lo, hi, size, align, length, limit, umax)
            assert beliefs._c_short_fitting_below(*args) == beliefs.short_fitting_below(*args)


def test_the_compiled_skipping_search_is_the_reference(monkeypatch):
    # Seeded free trees with seeded beliefs (blocks marked unreachable for some search
    # lengths, snapshot blocks below the kernel's highest tree choice): both searches
    # end in the same block, for every question.
    import random

    from pyvmalloc.trace import beliefs
    from pyvmalloc.trace.harness import TraceHarness

    compiled = beliefs._c_search_skipping
    if compiled is None:
        pytest.skip("no compiled accelerator")
    rnd = random.Random(15)
    page = 0x1000
    found = 0
    for _ in range(5):
        h = TraceHarness("6.18", cpus=2)
        pos = V
        for _ in range(300):
            pos += rnd.choice([1, 1, 2, 3, 5, 8, 9]) * page  # a free gap
            end = pos + rnd.randint(1, 4) * page
            h.seed_busy(pos, end)
            pos = end
        b = beliefs.Beliefs(h.space)
        b.remember_old_blocks()
        blocks = list(h.space.free_areas())
        for _ in range(200):
            size = rnd.choice([1, 2, 4, 5]) * page
            align = rnd.choice([page, 2 * page, ALIGN, 8 * page])
            length = size + align - 1 if align > page else size
            vstart = V + rnd.randint(0, 600) * page
            blk = rnd.choice(blocks)
            if rnd.random() < 0.5:
                b.mark_unreachable((blk.va_start, blk.va_end), length)
            if rnd.random() < 0.3:
                b.saw_kernel_tree_choice(V + rnd.randint(0, 1200) * page, length)
            got = b.search_skipping(size, align, vstart, length)
            monkeypatch.setattr(beliefs, "_c_search_skipping", None)
            want = b.search_skipping(size, align, vstart, length)
            monkeypatch.setattr(beliefs, "_c_search_skipping", compiled)
            assert got is want
            found += got is not None
    assert found > 500  # the questions mostly have an answer


# --- a big purge: helper workers, nodes finishing out of order (6.18) ---------------

S3 = 0x3000  # 12 KiB: pool[2]
BIG = 128 << 20  # 32768 pages: past the pools, back to the tree


def _helper_purge_trace(low: int, cpu1_extra: int = 0) -> tuple[Trace, dict[str, int]]:
    """CPU 0 allocates a1, a2 (12 KiB) and G (128 MiB), CPU 1 b1, b2 (12 KiB), an
    optional area H of ``cpu1_extra`` bytes and c (20 KiB), all in the tree's lowest
    fit from ``low``; then a1..H are freed. With 32780 and more lazy pages, 6.18's
    ``__purge_vmap_area_lazy`` has ``vmap_lazy_nr / lazy_max_pages() = 2``: one
    helper, which purges node 0 on CPU 0 (``schedule_work_on``), while the purging
    worker purges node 1 itself."""
    at = {}
    x = low
    for name, size, cpu in (
        ("a1", S3, 0), ("a2", S3, 0), ("b1", S3, 1), ("b2", S3, 1), ("G", BIG, 0),
        ("H", cpu1_extra, 1), ("c", STACK, 1),
    ):  # fmt: skip
        if not size:
            continue
        at[name] = x
        at[name + "_size"] = size
        at[name + "_cpu"] = cpu
        x += size
    at["top"] = x
    tr = Trace()
    for name in ("a1", "a2", "b1", "b2", "G", "H", "c"):
        if name in at:
            tr.alloc(at[name], cpu=at[name + "_cpu"], size=at[name + "_size"], align=1)
    for name in ("a1", "a2", "b1", "b2", "G", "H"):
        if name in at:
            tr.free(at[name], size=at[name + "_size"], cpu=0)
    return tr, at


def test_a_frees_nr_lazy_shows_the_helper_purged_node_is_not_done_yet(tmp_path):
    # The purging worker (CPU 1) is done with node 1 first: b1, b2 pushed on node 1's
    # pool[2], 6 pages off vmap_lazy_nr. Node 0's helper waits for CPU 0, which is
    # busy with the allocating task. c's free on CPU 1 shows the counter 6 pages
    # lower than with nothing purged: node 1 is done, node 0 is not. So CPU 1's 12 KiB
    # gets b2 (node 1's head), CPU 0's 12 KiB finds node 0's pool empty and takes the
    # tree's lowest fit (above c: a1..G are still on the helper's list). After the
    # purge's event node 0's pool[2] is [a2, a1]: CPU 0's next 12 KiB gets a2.
    tr, at = _helper_purge_trace(V + 0x1000)
    tr.nr_lazy -= 6  # purge_vmap_node(node 1): atomic_long_sub(6, &vmap_lazy_nr)
    tr.free(at["c"], size=STACK, cpu=1)
    tr.alloc(at["b2"], cpu=1, size=S3, align=1)
    tr.alloc(at["top"], cpu=0, size=S3, align=1)
    tr.purge(at["a1"], at["c"], 5, 6 + BIG // 4096)
    tr.alloc(at["a2"], cpu=0, size=S3, align=1)
    res = run(tmp_path, tr, [(V, V + 0x1000)])
    assert res.allocs_compared == 6 + 3
    assert res.mismatches == []


def test_an_area_found_in_the_tree_while_its_guessed_node_is_not_done_was_the_done_nodes(
    tmp_path,
):
    # U (257 pages, never pooled) was busy before the snapshot; its address zone is
    # node 0's, so the model guesses node 0, but the kernel had allocated it on node 1.
    # Node 1 (the purging worker's own) is done first: c's free shows vmap_lazy_nr
    # lower by node 1's pages, b1 + b2 + H + U = 4359 (the model's node 1 has 4102:
    # close enough, the rest is a guess). CPU 0's 257-page request then gets U from
    # the kernel's tree: U was node 1's, one mismatch; node 0's helper is still not
    # done, so CPU 0's 12 KiB goes to the tree's lowest fit, H (node 1's, back in the
    # tree: past the pools), not to a2.
    u = V + 0x20000
    u_end = u + 257 * 4096
    extra = 16 << 20  # H: 4096 pages on node 1
    tr, at = _helper_purge_trace(u_end, extra)
    tr.free(u, size=257 * 4096, cpu=0)
    tr.nr_lazy -= 6 + 4096 + 257
    tr.free(at["c"], size=STACK, cpu=1)
    tr.alloc(at["b2"], cpu=1, size=S3, align=1)
    tr.alloc(u, cpu=0, size=257 * 4096, align=1)
    tr.alloc(at["H"], cpu=0, size=S3, align=1)
    tr.purge(u, at["c"], 7, 6 + BIG // 4096)
    tr.alloc(at["a2"], cpu=0, size=S3, align=1)
    res = run(tmp_path, tr, [(V, u), (u, u_end)])
    assert [m.kernel for m in res.mismatches] == [u]
    m = res.mismatches[0]
    assert m.cause_class == "hidden state" and m.cause_key == f"node:{u:#x}", m


def test_the_kernel_refuting_a_node_guess_often_moves_the_rest_of_that_kind(tmp_path):
    # Eight stacks busy before the snapshot, each in a node 1 address zone (so the
    # model guesses node 1 for all), were allocated by a thread pool on CPU 0: the
    # kernel purges them onto node 0's pool[4] (pushed ascending: head s[7]) and CPU 0's
    # next stacks take s[7], s[6], ... The model, with them in node 1's pool, searches
    # its tree for the first two; each kernel pool hit refutes one guess. After two
    # refutations and no confirmation (SWITCH_AFTER), the other stacks guessed on node 1
    # move to node 0's pool, in the order their purge gave: s[5] .. s[0] then match. CPU
    # 1 then finds node 1's pool empty: the tree's lowest fit, V.
    s = [V + 0x10000 * (2 * i + 1) for i in range(8)]
    tr = Trace()
    for x in s:
        tr.free(x)
    tr.purge(s[0], s[-1] + STACK, 8, 8 * 5)
    for x in reversed(s):
        tr.alloc(x, cpu=0)
    tr.alloc(V, cpu=1)
    res = run(tmp_path, tr, [(x, x + STACK) for x in s])
    assert [m.kernel for m in res.mismatches] == [s[7], s[6]]
    assert all(m.cause_key == f"node:{m.kernel:#x}" for m in res.mismatches)
    assert res.allocs_matched == res.allocs_compared - 2 == 7


def test_the_purge_after_a_failed_allocation_empties_the_pools(tmp_path):
    # CPU 0 fills node 0's pool[2] with a1..a4 (12 KiB) and frees b lazily. Then a
    # request that cannot fit its range fails (traced failed=1); alloc_vmap_area's
    # overflow path runs reclaim_and_purge_vmap_areas() in the same task:
    # __purge_vmap_area_lazy(ULONG_MAX, 0, true) decays every pool fully and refills
    # none (skip_populate), so a1..a4 and b all go back to the tree; the retry fails
    # again. CPU 0's next 12 KiB finds node 0's pool empty: the tree's lowest fit, a1.
    a = [V + 0x1000 + i * S3 for i in range(4)]
    b = a[-1] + S3
    tr = Trace()
    for x in a:
        tr.alloc(x, cpu=0, size=S3, align=1)
    tr.alloc(b, cpu=0, align=1)
    for x in a:
        tr.free(x, size=S3, cpu=0)
    tr.purge(a[0], a[-1] + S3, 4, 12)
    tr.free(b, cpu=0)
    for _ in range(2):  # the failed attempt, the reclaim purge, the failed retry
        ev = AllocVmapArea(
            addr=(1 << 64) - 16, size=0x4000, align=1, vstart=V, vend=V + 0x2000, failed=1,
            cpu=0, task="insmod", pid=50, timestamp=tr._tick(),
        )  # fmt: skip
        tr.lines.append(str(ev))
        if _ == 0:
            tr.nr_lazy -= 5
            ev2 = PurgeVmapAreaLazy(
                start=b, end=b + STACK, npurged=1, cpu=0, task="insmod", pid=50,
                timestamp=tr._tick(),
            )  # fmt: skip
            tr.lines.append(str(ev2))
    tr.alloc(a[0], cpu=0, size=S3, align=1)
    res = run(tmp_path, tr, [(V, V + 0x1000)])
    assert res.kernel_failures == 2
    assert res.mismatches == [], res.mismatches
    assert res.allocs_matched == res.allocs_compared == 5 + 2 + 1


def test_next_hidden_area_after_two_adjacent_heads_is_the_slot_below():
    # A hidden pool of 16 KiB areas (3 pages + guard, align 1, pool class 3) that a
    # purge filled with areas side by side: the kernel took V+40p, then V+36p (adjacent,
    # descending: one purge pushes ascending, the pool pops descending). Free space to
    # the model: [V+16p, V+44p), one block. The next head is V+32p, the slot right
    # below; after one head only, or when that slot was refuted, no adjacency guess
    # (the highest exact-size free range below is the fallback: none here).
    from pyvmalloc.trace.beliefs import Beliefs, next_hidden_area
    from pyvmalloc.trace.harness import TraceHarness

    page, size = 0x1000, 0x4000
    h = TraceHarness("6.18", cpus=2)
    h.seed_busy(V, V + 16 * page)
    h.seed_busy(V + 44 * page, V + 64 * page)
    b = Beliefs(h.space)
    key = (0, 3)
    b.saw_hidden_head(key, V + 40 * page)
    assert next_hidden_area(b, 0, 3, size) is None  # one head: no stride yet
    b.saw_hidden_head(key, V + 36 * page)
    assert next_hidden_area(b, 0, 3, size) == V + 32 * page
    b.hidden_refuted[key] = {V + 32 * page}
    assert next_hidden_area(b, 0, 3, size) is None
    # The slot below busy (not pooled): no guess either.
    b.hidden_refuted[key] = set()
    h.seed_busy(V + 32 * page, V + 36 * page)
    assert next_hidden_area(b, 0, 3, size) is None
