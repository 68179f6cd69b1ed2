"""kernel/fork.c's per-CPU thread-stack cache, with expectations derived by hand."""

from __future__ import annotations

from pyvmalloc import Kernel
from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush
from pyvmalloc.workloads.fork import THREAD_SIZE, ThreadStacks, fork_workload

S = 0xFFFFC90000000000
P = 0x1000


def traced(k):
    events = []
    k.trace_subscribe("all", events.append)
    return events


def test_stacks_are_16k_aligned_vmallocs_with_a_guard():
    # THREAD_SIZE 16 KiB + guard = 20480 bytes, align THREAD_ALIGN = 16 KiB, as the
    # real trace shows (size=20480 align=16384). First: S (aligned); second: the next
    # 16 KiB-aligned start above S + 20 KiB is S + 32 KiB.
    k = Kernel("6.18", cpus=2)
    events = traced(k)
    st = ThreadStacks(k)
    a = st.alloc_thread_stack_node(cpu=0)
    b = st.alloc_thread_stack_node(cpu=0)
    assert (a, b) == (S, S + 8 * P)
    allocs = [e for e in events if isinstance(e, AllocVmapArea)]
    assert [(e.size, e.align) for e in allocs] == [(20480, 16384)] * 2
    line = next(ln for ln in k.vmallocinfo().splitlines() if ln.startswith("0xffffc90000000000"))
    assert line == (
        "0xffffc90000000000-0xffffc90000005000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4"
    )


def test_two_cached_stacks_per_cpu_then_rcu_then_vfree():
    # Three exits on CPU 1: two stacks fill CPU 1's cache (no free event); the third
    # waits for RCU. At the grace period the cache is still full, so it is vfreed:
    # one free_vmap_area_noflush of 5 pages (guard included).
    k = Kernel("6.18", cpus=2)
    st = ThreadStacks(k)
    stacks = [st.alloc_thread_stack_node(cpu=0) for _ in range(3)]
    events = traced(k)
    for s in stacks:
        st.free_thread_stack(s, cpu=1)
    assert st.cached[1] == stacks[:2] and st.rcu_pending == [(stacks[2], 1)]
    assert not events
    assert st.rcu_grace_period() == 1
    frees = [e for e in events if isinstance(e, FreeVmapAreaNoflush)]
    assert [(e.va_start, e.nr_lazy) for e in frees] == [(stacks[2], 5)]
    k.check()


def test_a_fork_reuses_its_cpus_cached_stack_zeroed_without_vmalloc():
    k = Kernel("6.18", cpus=2)
    st = ThreadStacks(k)
    s = st.alloc_thread_stack_node(cpu=1)
    k.write(s + 100, b"old task")
    st.free_thread_stack(s, cpu=1)
    events = traced(k)
    assert st.alloc_thread_stack_node(cpu=0) != s  # CPU 0's cache is empty
    assert st.alloc_thread_stack_node(cpu=1) == s  # CPU 1's cache hit
    assert [type(e) for e in events] == [AllocVmapArea]
    assert k.read(s + 100, 8) == bytes(8)
    assert st.stats.cache_hits == 1


def test_fork_workload_mostly_hits_the_cache_and_frees_everything():
    k = Kernel("6.18", cpus=2)
    events = traced(k)
    st = fork_workload(k, seed=3, rounds=10, max_threads=60)
    forks = st.stats.allocs + st.stats.cache_hits
    # Each round's threads all live at once, so most need a fresh stack; but never
    # more vmallocs than forks, and at most 2 cached per CPU remain.
    allocs = sum(isinstance(e, AllocVmapArea) for e in events)
    assert allocs == st.stats.allocs <= forks
    assert st.stats.cache_hits >= 9 * 2  # every round after the first starts with full caches
    assert all(len(c) <= 2 for c in st.cached)
    st.drain()
    k.purge_vmap_area_lazy()
    k.check()
    assert k.vmap_space.nr_busy == 0 and k.nr_vmalloc_pages == 0


def test_stack_size_constant():
    assert THREAD_SIZE + P == 20480
