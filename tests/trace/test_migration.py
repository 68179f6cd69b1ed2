"""A task rescheduled onto another CPU inside ``alloc_vmap_area`` (hand-built traces).

6.18 ``node_alloc`` picks the vmap node from the CPU the task runs on
(``raw_smp_processor_id() % nr_vmap_nodes``): that node's pool is tried first, and the
node is recorded in ``va->flags`` (``encode_vn_id``), so the area's lazy list and pool
are that node's when it is freed and purged. After a pool miss the task allocates the
``vmap_area`` with GFP_KERNEL before searching the free tree, and only then writes the
tracepoint. A task with a reschedule pending can therefore search the tree and trace
on another CPU than the one whose node it chose. Seen on this machine in KVM's VM
creation (``kvm``, ``pair-nodrop``): the task's previous event has the need-resched flag
(``.N...``) on one CPU, the next allocation is traced on the other.
"""

from __future__ import annotations

from pathlib import Path

from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy
from pyvmalloc.trace.replay import replay

V = 0xFFFFC90000000000  # VMALLOC_START (x86_64, 4-level)
VEND = 0xFFFFE8FFFFFFFFFF
SIZE = 0x2000  # one page + the guard page: pool[1] (2 pages)


class Trace:
    """A 6.18 trace on 2 CPUs (2 vmap nodes), one event per millisecond."""

    def __init__(self) -> None:
        self.lines = ["# tracer: nop", "#"]
        self.t = 100.0
        self.nr_lazy = 0

    def _tick(self) -> float:
        self.t += 0.001
        return self.t

    def alloc(self, addr: int, cpu: int, pid: int, flags: str = ".....") -> int:
        ev = AllocVmapArea(
            addr=addr, size=SIZE, align=1, vstart=V, vend=VEND, failed=0, cpu=cpu,
            task="kvm", pid=pid, flags=flags, timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))
        return len(self.lines)  # the line number of this event

    def free(self, addr: int, cpu: int, pid: int) -> None:
        self.nr_lazy += SIZE >> 12
        ev = FreeVmapAreaNoflush(
            va_start=addr, nr_lazy=self.nr_lazy, nr_lazy_max=16384, cpu=cpu, task="kvm",
            pid=pid, timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))

    def purge(self, start: int, end: int, n: int) -> None:
        self.nr_lazy -= n * (SIZE >> 12)
        ev = PurgeVmapAreaLazy(
            start=start, end=end, npurged=n, cpu=1, task="kworker/1:1", pid=40,
            timestamp=self._tick(),
        )  # fmt: skip
        self.lines.append(str(ev))


def _replay(tmp_path: Path, resched: str):
    """Node 0's pool holds P; node 1's is empty. Task 10 allocates Q on CPU 1 (traced
    with ``resched`` flags), then Z, traced on CPU 0 but with its node chosen on CPU 1:
    node 1's pool is empty, so the tree's lowest fit, tagged node 1. Z freed and purged
    goes to node 1's pool, where the next CPU 1 allocation finds it; node 0's pool
    still holds P."""
    p, q, z = V + 0x1000, V + 0x3000, V + 0x5000
    tr = Trace()
    tr.alloc(p, cpu=0, pid=20)  # the tree's lowest fit (node 0)
    tr.free(p, cpu=0, pid=20)
    tr.purge(p, p + SIZE, 1)  # node 0 pool[1] = [P]
    tr.alloc(q, cpu=1, pid=10, flags=resched)  # node 1's pool is empty: the tree
    line_z = tr.alloc(z, cpu=0, pid=10)  # node 1 (empty pool) -> the tree; traced on CPU 0
    tr.free(z, cpu=0, pid=10)  # onto node 1's lazy list (va->flags)
    tr.purge(z, z + SIZE, 1)  # node 1 pool[1] = [Z]
    tr.alloc(z, cpu=1, pid=30)  # node 1's pool head
    tr.alloc(p, cpu=0, pid=31)  # node 0's pool head, untouched by Z
    trace = tmp_path / "trace"
    trace.write_text("\n".join(tr.lines) + "\n")
    snap = tmp_path / "vmallocinfo"
    snap.write_text(f"{V:#x}-{V + 0x1000:#x}     4096 start_kernel+0x1/0x2 vmalloc\n")
    res = replay(trace, snap, meta={"drop_caches": True, "cpus_possible": [0, 1]})
    return res, line_z, (p, z)


def test_an_allocation_traced_after_a_move_to_another_cpu_keeps_the_old_cpus_node(tmp_path):
    res, line_z, (p, z) = _replay(tmp_path, ".N...")
    assert res.allocs_compared == 5
    assert [m.line for m in res.mismatches] == [line_z]  # one mismatch, no cascade
    m = res.mismatches[0]
    assert (m.kernel, m.model) == (z, p)  # the model first tried CPU 0's node: P
    assert m.cause_class == "race"
    assert m.cause_key == f"migrated:{line_z}"
    assert "from CPU 1 to CPU 0" in m.cause
    assert res.migrated == 1
    assert res.allocs_matched == 4  # Z found in node 1's pool; P still in node 0's


def test_no_move_is_assumed_without_a_pending_reschedule(tmp_path):
    # The same trace with no need-resched flag on the task's previous event: nothing
    # says the task was rescheduled, so the model does not assume it was. Z is adopted
    # on CPU 0's node, and the CPU 1 allocation after the purge diverges too.
    res, line_z, _ = _replay(tmp_path, ".....")
    assert res.migrated == 0
    assert line_z in [m.line for m in res.mismatches]
    assert all(not m.cause_key.startswith("migrated") for m in res.mismatches)
    assert res.allocs_matched < 4


# --- a task rescheduled between the free-tree lock and its tracepoint ---------------

STACK, ALIGN = 0x5000, 0x4000  # THREAD_SIZE 16 KiB + guard, THREAD_ALIGN


def _stack(addr: int, cpu: int, pid: int, t: float) -> str:
    return str(
        AllocVmapArea(addr=addr, size=STACK, align=ALIGN, vstart=V, vend=VEND, failed=0,
                      cpu=cpu, task="forkbomb", pid=pid, timestamp=t)
    )  # fmt: skip


def _late_trace(tmp_path: Path, late_at: int, gap: float, touch: bool = False):
    """Task 7 took V + 0x4000 first and was rescheduled before its tracepoint, traced
    ``gap`` seconds and 30 events later (its previous event came before). Meanwhile
    others took V + 0xc000, V + 0x14000, ... (each the lowest 16 KiB-aligned slot left);
    with ``touch`` one of them allocates in task 7's range (and frees it), which the
    kernel could not have done while task 7 held it."""
    b = V + 0x40000000  # busy at snapshot time; task 7's previous event frees it
    free = FreeVmapAreaNoflush(
        va_start=b, nr_lazy=5, nr_lazy_max=16384, cpu=0, task="forkbomb", pid=7, timestamp=99.0
    )
    lines = ["# tracer: nop", "#", str(free)]
    t = 100.0
    addrs = [V + 0xC000 + k * 0x8000 for k in range(30)]
    for k, a in enumerate(addrs):
        lines.append(_stack(a, k % 2, 100 + k, t))
        if touch and k == 5:  # the same task again: not a candidate, but it used the range
            lines.append(_stack(V + 0x4000, k % 2, 100 + k, t))
            again = FreeVmapAreaNoflush(
                va_start=V + 0x4000, nr_lazy=10, nr_lazy_max=16384, cpu=k % 2,
                task="forkbomb", pid=100 + k, timestamp=t,
            )  # fmt: skip
            lines.append(str(again))
        t += gap / 30
        if k == late_at:
            lines.append(_stack(V + 0x4000, 1, 7, t))
    trace = tmp_path / "trace"
    trace.write_text("\n".join(lines) + "\n")
    snap = tmp_path / "vmallocinfo"
    snap.write_text(
        f"{V:#x}-{V + 0x1000:#x}     4096 start_kernel+0x1/0x2 vmalloc\n"
        f"{b:#x}-{b + STACK:#x}    20480 kernel_clone+0xb8/0x400 pages=4 vmalloc\n"
    )
    return replay(trace, snap, meta={"drop_caches": True, "cpus_possible": [0, 1]})


def test_an_allocation_traced_ms_later_is_served_in_the_lock_order(tmp_path):
    # The first stack after the snapshot is traced at V + 0xc000: V + 0x4000, the
    # lowest slot, was already task 7's. 30 events and 3 ms later (beyond the 1 ms /
    # 64-event window) task 7's event shows it: nothing in between touched its range,
    # and with it taken the lowest slot left in the same free block is V + 0xc000.
    res = _late_trace(tmp_path, late_at=29, gap=3e-3)
    assert res.reordered == 1
    assert res.allocs_compared == 31 and res.allocs_matched == 31, res.mismatches[:2]


def test_a_late_allocation_is_not_moved_before_an_event_that_used_its_range(tmp_path):
    # The same, but a task in between allocated in V + 0x4000 itself: task 7 cannot
    # have held it all along, so its event is not moved (the model's first choice is
    # refuted as a hidden fact instead).
    res = _late_trace(tmp_path, late_at=29, gap=3e-3, touch=True)
    first = res.mismatches[0]
    assert (first.line, first.kernel, first.model) == (4, V + 0xC000, V + 0x4000)
    assert first.cause_class == "hidden state"


def test_a_pool_head_allocated_across_a_move_is_found_in_the_old_cpus_pool(tmp_path):
    # Task 10 traced Q on CPU 1 with a reschedule pending, then Z on CPU 0. Both pools
    # are empty, so Z is the tree's lowest fit either way (the model matches it), but
    # its node was chosen on CPU 1: freed and purged it goes to node 1's pool. The
    # model, which tagged Z with node 0, offers it to the next CPU 0 allocation; the
    # kernel searches the tree (node 0's pool is empty). One race: Z moves to node 1's
    # pool, where the next CPU 1 allocation finds it.
    q, z, t = V + 0x1000, V + 0x3000, V + 0x5000
    tr = Trace()
    tr.alloc(q, cpu=1, pid=10, flags=".N...")
    line_z = tr.alloc(z, cpu=0, pid=10)
    tr.free(z, cpu=0, pid=10)
    tr.purge(z, z + SIZE, 1)  # node 1 pool[1] = [Z] in the kernel
    line_t = tr.alloc(t, cpu=0, pid=30)  # node 0's pool is empty: the tree
    tr.alloc(z, cpu=1, pid=31)  # node 1's pool head
    trace = tmp_path / "trace"
    trace.write_text("\n".join(tr.lines) + "\n")
    snap = tmp_path / "vmallocinfo"
    snap.write_text(f"{V:#x}-{V + 0x1000:#x}     4096 start_kernel+0x1/0x2 vmalloc\n")
    res = replay(trace, snap, meta={"drop_caches": True, "cpus_possible": [0, 1]})
    assert res.allocs_compared == 4
    assert [m.line for m in res.mismatches] == [line_t]
    m = res.mismatches[0]
    assert (m.kernel, m.model) == (t, z)
    assert m.cause_class == "race"
    assert m.cause_key == f"migrated:{line_z}"
    assert res.allocs_matched == 3
