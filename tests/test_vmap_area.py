"""The vmap area allocator against addresses derived by hand from the kernel's rules.

Notation: S = VMALLOC_START = 0xffffc90000000000 (4-level x86_64, no KASLR),
p = PAGE_SIZE = 0x1000, MAX = ULONG_MAX. Every size includes the guard page where a
vmalloc would add one.
"""

from __future__ import annotations

import pytest

from pyvmalloc import Kernel
from pyvmalloc.config import ULONG_MAX
from pyvmalloc.vmap.area import VaState, VmapArea, is_err
from pyvmalloc.vmap.placement import find_vmap_lowest_linear_match
from pyvmalloc.vmap.tracepoints import AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy

S = 0xFFFFC90000000000
E = 0xFFFFE8FFFFFFFFFF
P = 0x1000
EINVAL, EBUSY = 22, 16


def free_ranges(k: Kernel) -> list[tuple[int, int]]:
    return [(va.va_start, va.va_end) for va in k.vmap_space.free_areas()]


def traced(k: Kernel) -> list:
    events: list = []
    k.trace_subscribe("all", events.append)
    return events


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_first_allocation_splits_the_initial_block(profile):
    # The free tree starts as one block [1, MAX). The first full-range allocation
    # starts at ALIGN(vstart) = S, strictly inside the block: an NE fit that leaves
    # [1, S) below and [S + 8 KiB, MAX) above.
    k = Kernel(profile, cpus=2)
    assert free_ranges(k) == [(1, ULONG_MAX)]
    va = k.alloc_vmap_area(2 * P, 1)
    assert isinstance(va, VmapArea)
    assert (va.va_start, va.va_end) == (S, S + 2 * P)
    assert free_ranges(k) == [(1, S), (S + 2 * P, ULONG_MAX)]
    assert k.vmap_space.stats.fits[4] == 1  # NE_FIT_TYPE
    k.check()


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_consecutive_allocations_are_left_edge_fits(profile):
    # After the split the lowest block that fits is [S + 2p, MAX): the descent goes
    # left into [1, S) (its max is huge and S < its start... no: vstart S is below the
    # root's start), finds it too low, rolls back to the root which fits at its start.
    k = Kernel(profile, cpus=2)
    starts = [k.alloc_vmap_area(n * P, 1).va_start for n in (2, 3, 5)]
    assert starts == [S, S + 2 * P, S + 5 * P]
    assert k.vmap_space.stats.fits[2] == 2  # LE_FIT_TYPE
    k.check()


def _tree_with_holes(profile: str) -> Kernel:
    """X, A, B, C, D of 2 pages each from S; free A and C; purge.

    One CPU, so 6.18 has one vmap node and no pools; both profiles then merge C
    before A (5.4: newest first; 6.x: per node, descending). Derived tree:
    C[S+6p,S+8p) is the black root, lo=[1,S) its black left child with red right
    child A[S+2p,S+4p), big=[S+10p,MAX) the black right child.
    """
    k = Kernel(profile, cpus=1)
    vas = [k.alloc_vmap_area(2 * P, 1) for _ in range(5)]
    assert [v.va_start for v in vas] == [S + i * 2 * P for i in range(5)]
    k.free_vmap_area_noflush(vas[1])
    k.free_vmap_area_noflush(vas[3])
    assert k.purge_vmap_area_lazy()
    root = k.vmap_space.free_root.rb_node
    assert (root.va_start, root.rb_red) == (S + 6 * P, False)
    assert (root.rb_left.va_start, root.rb_left.rb_red) == (1, False)
    assert (root.rb_left.rb_right.va_start, root.rb_left.rb_right.rb_red) == (S + 2 * P, True)
    assert (root.rb_right.va_start, root.rb_right.rb_red) == (S + 10 * P, False)
    k.check()
    return k


def test_54_inflated_search_length_skips_the_lowest_hole():
    # 5.4 searches L = size + align - 1 = 8 KiB + 4095 for align 4 KiB. From root C
    # the descent goes left to lo (its max >= L, S < C.start); lo does not fit and
    # its right subtree (hole A, 8 KiB) is smaller than L, so it rolls back to C,
    # which fits: the allocation lands at S + 6p although A at S + 2p is lower.
    k = _tree_with_holes("5.4")
    va = k.alloc_vmap_area(2 * P, P)
    assert va.va_start == S + 6 * P
    linear = find_vmap_lowest_linear_match(k.vmap_space.free, 2 * P, P, S)
    assert linear.va_start == S + 2 * P


def test_618_exact_search_length_finds_the_lowest_hole():
    # 6.x (since 5.18) keeps L = size for align <= PAGE_SIZE: lo's right subtree has
    # max 8 KiB >= L, so the descent goes right from lo into A, which fits.
    k = _tree_with_holes("6.18")
    va = k.alloc_vmap_area(2 * P, P)
    assert va.va_start == S + 2 * P


def test_vend_check_after_choosing_the_block_618():
    # Range [S, S+16K) asking 32K: the lowest match is the big block (fits from
    # vstart up to MAX), then nva + size > vend -> -ERANGE; the reclaim purge and a
    # retry fail the same way; the kernel warns and returns -EBUSY.
    k = Kernel("6.18", cpus=2)
    events = traced(k)
    r = k.alloc_vmap_area(8 * P, 1, S, S + 4 * P)
    assert r == -EBUSY
    allocs = [e for e in events if isinstance(e, AllocVmapArea)]
    assert len(allocs) == 2
    assert all(e.addr == 18446744073709551582 and e.failed == 1 for e in allocs)  # -ERANGE
    assert [type(e) for e in events] == [AllocVmapArea, PurgeVmapAreaLazy, AllocVmapArea]
    assert k.log.lines[-1].text == (
        "vmalloc_node_range for size 32768 failed: Address range restricted to "
        "0xffffc90000000000 - 0xffffc90000004000"
    )
    k.check()


def test_failure_warning_54():
    k = Kernel("5.4", cpus=2)
    assert k.alloc_vmap_area(8 * P, 1, S, S + 4 * P) == -EBUSY
    assert k.log.lines[-1].text == (
        "vmap allocation for size 32768 failed: use vmalloc=<size> to increase size"
    )
    assert k.alloc_vmap_area(8 * P, 1, S, S + 4 * P, gfp_nowarn=True) == -EBUSY
    assert len(k.log.grep("vmap allocation for size")) == 1


def test_no_block_at_all_is_enoent():
    # 2^63 bytes from vstart S wraps past ULONG_MAX in every block: no block fits,
    # so __alloc_vmap_area returns -ENOENT (before any vend check).
    k = Kernel("6.18", cpus=2)
    events = traced(k)
    assert k.alloc_vmap_area(1 << 63, 1) == -EBUSY
    failed = [e for e in events if isinstance(e, AllocVmapArea) and e.failed]
    assert failed and all(e.addr == ULONG_MAX + 1 - 2 for e in failed)


@pytest.mark.parametrize(("size", "align"), [(0, 1), (P + 1, 1), (P, 3), (P, 0)])
def test_bad_input_618_is_einval_silently(size, align):
    # v6.18 alloc_vmap_area: "if (unlikely(!size || offset_in_page(size) ||
    # !is_power_of_2(align))) return ERR_PTR(-EINVAL);" -- no WARN, no message,
    # so strict mode has nothing to raise either.
    k = Kernel("6.18", cpus=2)
    assert k.alloc_vmap_area(size, align) == -EINVAL
    assert k.log.lines == []
    k.check()
    strict = Kernel("6.18", cpus=2, strict=True)
    assert strict.alloc_vmap_area(size, align) == -EINVAL
    strict.check()


def test_bad_input_54_is_a_bug():
    k = Kernel("5.4", cpus=2)
    assert k.alloc_vmap_area(0, 1) == -EINVAL
    assert k.log.lines[-1].level == "BUG"
    k.check()


def test_free_of_unknown_or_freed_address_warns_and_changes_nothing():
    k = Kernel("6.18", cpus=2)
    va = k.alloc_vmap_area(2 * P, 1)
    k.free_vmap_area_noflush(S + 5 * P)
    assert "no busy vmap_area at 0xffffc90000005000" in k.log.lines[-1].text
    k.free_vmap_area_noflush(va.va_start + 1)  # an interior address finds the area
    assert va.state == VaState.LAZY
    k.free_vmap_area_noflush(va.va_start)  # double free
    assert k.log.lines[-1].level == "WARN"
    k.free_vmap_area_noflush(va)
    assert "double free" in k.log.lines[-1].text
    assert k.vmap_space.vmap_lazy_nr == 2
    k.check()


def test_lazy_accounting_and_tracepoint_618():
    # free_vmap_area_noflush adds va_size >> PAGE_SHIFT (guard included) to
    # vmap_lazy_nr and reports it with nr_lazy_max = fls(2) * 8192 = 16384.
    k = Kernel("6.18", cpus=2)
    events = traced(k)
    a = k.alloc_vmap_area(5 * P, 1)
    b = k.alloc_vmap_area(3 * P, 1)
    k.free_vmap_area_noflush(a)
    k.free_vmap_area_noflush(b, cpu=1)
    frees = [e for e in events if isinstance(e, FreeVmapAreaNoflush)]
    assert [(e.va_start, e.nr_lazy, e.nr_lazy_max, e.cpu) for e in frees] == [
        (S, 5, 16384, 0),
        (S + 5 * P, 8, 16384, 1),
    ]
    assert str(frees[0]).endswith(
        "free_vmap_area_noflush: va_start=0xffffc90000000000 nr_lazy=5 nr_lazy_max=16384"
    )
    alloc = events[0]
    assert alloc.payload() == (
        "va_start: 18446683600570023936 size=20480 align=1 vstart=0xffffc90000000000 "
        "vend=0xffffe8ffffffffff failed=0"
    )


@pytest.mark.parametrize(
    ("cpus", "lazy_max"), [(1, 8192), (2, 16384), (3, 16384), (4, 24576), (8, 32768)]
)
def test_lazy_max_pages(cpus, lazy_max):
    # fls(num_online_cpus()) * (32 MiB / 4 KiB)
    assert Kernel("6.18", cpus=cpus).vmap_space.lazy_max_pages == lazy_max


def test_threshold_schedules_deferred_purge_618():
    # 6.x: crossing the threshold (strictly greater) queues drain_vmap_work; nothing
    # is purged until the work runs.
    k = Kernel("6.18", cpus=2, deferred_work="manual")
    events = traced(k)
    vas = [k.alloc_vmap_area(257 * P, 1) for _ in range(64)]  # 64 * 257 = 16448 pages
    for va in vas[:63]:
        k.free_vmap_area_noflush(va)
    assert k.vmap_space.vmap_lazy_nr == 63 * 257 == 16191 and not k.workqueue.pending
    k.free_vmap_area_noflush(vas[63])
    assert [w.name for w in k.workqueue.pending] == ["drain_vmap_work"]
    assert k.vmap_space.vmap_lazy_nr == 16448
    assert k.run_deferred_work() == 1
    assert k.vmap_space.vmap_lazy_nr == 0
    purge = events[-1]
    assert isinstance(purge, PurgeVmapAreaLazy)
    assert (purge.start, purge.end, purge.npurged) == (S, S + 64 * 257 * P, 64)
    # 257 pages is beyond the 256 pool classes: all went back to the tree, coalesced.
    assert free_ranges(k) == [(1, ULONG_MAX)]
    k.check()


def test_threshold_purges_synchronously_54():
    k = Kernel("5.4", cpus=2)
    vas = [k.alloc_vmap_area(257 * P, 1) for _ in range(64)]
    for va in vas:
        k.free_vmap_area_noflush(va)
    assert k.vmap_space.vmap_lazy_nr == 0 and k.vmap_space.stats.purges == 1
    assert k.vmap_space.last_flush == (S, S + 64 * 257 * P)
    assert free_ranges(k) == [(1, ULONG_MAX)]


def test_pools_are_lifo_per_allocating_cpu_node():
    # Three 2-page areas allocated on CPU 0 (node 0), freed from CPU 1: they go to
    # node 0's lazy list (the allocating node), and the purge pushes them onto node
    # 0's pool[1] head in ascending order -> the highest address comes back first.
    k = Kernel("6.18", cpus=2)
    a, b, c = (k.alloc_vmap_area(2 * P, 1, cpu=0) for _ in range(3))
    for va in (a, b, c):
        k.free_vmap_area_noflush(va, cpu=1)
    k.purge_vmap_area_lazy()
    assert [va.va_start for va in k.vmap_space.nodes[0].pools[1]] == [S + 4 * P, S + 2 * P, S]
    assert not k.vmap_space.nodes[1].pools
    # CPU 1 uses node 1's (empty) pool: a tree allocation above everything.
    d = k.alloc_vmap_area(2 * P, 1, cpu=1)
    assert d.va_start == S + 6 * P
    # CPU 0 gets the pool heads, LIFO.
    assert [k.alloc_vmap_area(2 * P, 1, cpu=0).va_start for _ in range(3)] == [
        S + 4 * P,
        S + 2 * P,
        S,
    ]
    assert k.vmap_space.stats.pool_hits == 3
    k.check()


def test_pool_misaligned_head_rotates_to_tail():
    # Pool entries are only taken when the head is aligned; otherwise the head moves
    # to the tail and the tree is searched (6.x keeps L = size + align - 1 here).
    k = Kernel("6.18", cpus=2)
    vas = [k.alloc_vmap_area(5 * P, 1) for _ in range(2)]  # S, S + 5p
    for va in vas:
        k.free_vmap_area_noflush(va)
    k.purge_vmap_area_lazy()
    assert [va.va_start for va in k.vmap_space.nodes[0].pools[4]] == [S + 5 * P, S]
    # 5 pages aligned to 16 KiB: head S+5p is not 16K-aligned -> rotate; tree search
    # from [S+10p, MAX): ALIGN(S+10p, 16K) = S + 12p.
    va = k.alloc_vmap_area(5 * P, 4 * P)
    assert va.va_start == S + 12 * P
    assert [v.va_start for v in k.vmap_space.nodes[0].pools[4]] == [S, S + 5 * P]
    # Now the head S is aligned: a pool hit.
    assert k.alloc_vmap_area(5 * P, 4 * P).va_start == S
    k.check()


def test_pools_only_for_the_full_vmalloc_range():
    k = Kernel("6.18", cpus=2)
    va = k.alloc_vmap_area(2 * P, 1)
    k.free_vmap_area_noflush(va)
    k.purge_vmap_area_lazy()
    assert k.vmap_space.vmap_node_shrink_count() == 1
    other = k.alloc_vmap_area(2 * P, 1, S, E - P)  # not the exact range: tree
    assert other.va_start == S + 2 * P
    assert k.vmap_space.vmap_node_shrink_count() == 1


def test_decay_quarter_per_purge_from_the_head():
    # 8 entries in pool[0]: a purge decays 8 >> 2 = 2 from the head (the newest,
    # i.e. the highest addresses); 6 remain, then 6 >> 2 = 1; classes of < 4 stay.
    k = Kernel("6.18", cpus=2)
    vas = [k.alloc_vmap_area(P, 1) for _ in range(8)]
    for va in vas:
        k.free_vmap_area_noflush(va)
    k.purge_vmap_area_lazy()
    pool = k.vmap_space.nodes[0].pools[0]
    assert [va.va_start for va in pool] == [S + i * P for i in range(7, -1, -1)]
    k.purge_vmap_area_lazy()
    assert [va.va_start for va in pool] == [S + i * P for i in range(5, -1, -1)]
    # The decayed S+6p and S+7p coalesced with the top block.
    assert free_ranges(k)[-1] == (S + 6 * P, ULONG_MAX)
    k.purge_vmap_area_lazy()
    assert len(pool) == 5
    k.purge_vmap_area_lazy()  # 5 >> 2 = 1
    k.purge_vmap_area_lazy()  # 4 >> 2 = 1
    assert len(pool) == 3
    for _ in range(3):
        k.purge_vmap_area_lazy()
    assert len(pool) == 3  # fewer than 4: never decays partially (6.16+)
    k.check()


def test_shrinker_and_reclaim_decay_everything():
    k = Kernel("6.18", cpus=2)
    vas = [k.alloc_vmap_area(P, 1, cpu=i % 2) for i in range(6)]
    for va in vas:
        k.free_vmap_area_noflush(va)
    k.purge_vmap_area_lazy()
    assert k.vmap_space.vmap_node_shrink_count() == 6
    assert k.drop_caches(2) == 6
    assert k.vmap_space.vmap_node_shrink_count() == 0
    assert free_ranges(k) == [(1, ULONG_MAX)]
    # The reclaim purge (allocation failure path) skips pool refill entirely.
    vas = [k.alloc_vmap_area(P, 1) for _ in range(4)]
    for va in vas:
        k.free_vmap_area_noflush(va)
    k.reclaim_and_purge_vmap_areas()
    assert k.vmap_space.vmap_node_shrink_count() == 0
    assert free_ranges(k) == [(1, ULONG_MAX)]
    k.check()


def test_busy_node_by_64k_zone_and_lookup_by_containment():
    k = Kernel("6.18", cpus=2)
    a = k.alloc_vmap_area(16 * P, 1)  # S: zone 0 (node 0)
    b = k.alloc_vmap_area(16 * P, 1)  # S + 64K: zone 1 (node 1)
    assert (
        k.vmap_space.addr_to_node_id(a.va_start) == 0
        and k.vmap_space.addr_to_node_id(b.va_start) == 1
    )
    assert k.vmap_space.nodes[1].busy.rb_node is b
    assert k.find_vmap_area(b.va_start + 0x1234) is b
    assert k.find_vmap_area(b.va_end) is None
    k.check()


def test_one_node_on_54_and_with_one_cpu():
    assert Kernel("5.4", cpus=8).vmap_space.nr_vmap_nodes == 1
    assert Kernel("6.18", cpus=1).vmap_space.nr_vmap_nodes == 1
    assert Kernel("6.18", cpus=2, possible_cpus=4).vmap_space.nr_vmap_nodes == 4


def test_5_level_paging_layout():
    k = Kernel("6.18", cpus=2, paging_levels=5)
    assert (k.VMALLOC_START, k.VMALLOC_END) == (0xFFA0000000000000, 0xFFD1FFFFFFFFFFFF)
    assert k.alloc_vmap_area(2 * P).va_start == 0xFFA0000000000000


def test_tracepoints_absent_in_54():
    with pytest.raises(ValueError, match="no vmalloc tracepoints"):
        Kernel("5.4").trace_subscribe("all", print)


def test_check_detects_corruption():
    from pyvmalloc.vmap.area import InvariantError

    k = Kernel("6.18", cpus=2)
    va = k.alloc_vmap_area(2 * P)
    k.check()
    va.va_end += P  # now overlaps the free block above
    with pytest.raises(InvariantError):
        k.check()


def test_is_err():
    assert is_err(-EBUSY) and not is_err(VmapArea(1, 2))


def test_pcpu_get_vm_areas_first_chunk_matches_the_live_machine():
    # The live 6.18 machine shows 0xffffe8ffffc00000-0xffffe8ffffe00000 2097152
    # pcpu_get_vm_areas. One 2 MiB area, align 2 MiB: vmalloc_end = VMALLOC_END &
    # ~(2M-1) = 0xffffe8ffffe00000; the free block [S, MAX) ends above it, so the
    # aligned end is 0xffffe8ffffe00000 and base = end - 2M = 0xffffe8ffffc00000.
    k = Kernel("6.18", cpus=2)
    (va,) = k.pcpu_get_vm_areas([0], [2 << 20], 2 << 20)
    assert (va.va_start, va.va_end) == (0xFFFFE8FFFFC00000, 0xFFFFE8FFFFE00000)
    k.check()


def test_pcpu_get_vm_areas_congruent_top_down():
    # Two 1 MiB units 4 MiB apart, align 1 MiB, after the first chunk: vmalloc_end is
    # 0xffffe8fffff00000 (aligned down); the top block [0xffffe8ffffe00000, MAX) gives
    # end 0xffffe8fffff00000, base = end - (4M + 1M) = 0xffffe8ffffa00000. Unit 1 at
    # base + 4M fits in the top block, unit 0 at base fits below the first chunk.
    k = Kernel("6.18", cpus=2)
    k.pcpu_get_vm_areas([0], [2 << 20], 2 << 20)
    vas = k.pcpu_get_vm_areas([0, 4 << 20], [1 << 20, 1 << 20], 1 << 20)
    assert [v.va_start for v in vas] == [0xFFFFE8FFFFA00000, 0xFFFFE8FFFFE00000]
    k.check()
    k.pcpu_free_vm_areas(vas)
    assert all(v.state == VaState.LAZY for v in vas)
    k.purge_vmap_area_lazy()
    k.check()


def test_pcpu_get_vm_areas_bad_arguments():
    k = Kernel("6.18", cpus=2)
    assert k.pcpu_get_vm_areas([0, 0x1000], [0x2000, 0x1000], 0x1000) is None  # overlap
    assert k.log.lines[-1].level == "BUG"
    assert k.pcpu_get_vm_areas([0], [1 << 50], 0x1000) is None  # larger than the range
    k.check()


def test_pcpu_get_vm_areas_steps_down_the_free_list():
    # After the 2 MiB first chunk at [..c00000, ..e00000), a 4 MiB unit aligned to
    # 2 MiB: the top block starts at vmalloc_end (0xffffe8ffffe00000) itself, so it has
    # no room below it; the walk goes back to the block ending at 0xffffe8ffffc00000,
    # and base = that - 4 MiB = 0xffffe8ffff800000.
    k = Kernel("6.18", cpus=2)
    k.pcpu_get_vm_areas([0], [2 << 20], 2 << 20)
    (va,) = k.pcpu_get_vm_areas([0], [4 << 20], 2 << 20)
    assert (va.va_start, va.va_end) == (0xFFFFE8FFFF800000, 0xFFFFE8FFFFC00000)
    k.check()
