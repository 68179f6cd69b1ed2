"""The 4.19 list allocator against addresses derived by hand from v4.19's rules.

Notation: S = VMALLOC_START = 0xffffc90000000000 (4-level x86_64), E = VMALLOC_END,
P = PAGE_SIZE. Sizes include the guard page. "cache" is ``free_vmap_cache``, "chs"
``cached_hole_size``. The rules (from v4.19 ``alloc_vmap_area``/``__free_vmap_area``):

* drop the cache (chs := 0) if size < chs, vstart < cached_vstart or
  align < cached_align; then cached_vstart/align := the request's;
* with a cache start at addr = ALIGN(cache.end) (below vstart: drop it after all),
  else at ALIGN(vstart) from the lowest area with end >= addr;
* walk while addr + size > first.start and addr + size <= vend: note the gap below
  first in chs, addr := ALIGN(first.end), next area; the new area becomes the cache;
* a free (direct, or each area of a purge, newest first) drops the cache if it ends
  below cached_vstart, else moves it to its predecessor if it starts at or below it;
* a lazily freed area keeps its range until a purge.
"""

from __future__ import annotations

import random

import pytest

from pyvmalloc import Kernel, KernelWarning
from pyvmalloc.config import ULONG_MAX
from pyvmalloc.vmap.area import VaState, VmapArea
from pyvmalloc.vmap.list419 import ListVmapSpace

S = 0xFFFFC90000000000
E = 0xFFFFE8FFFFFFFFFF
P = 0x1000
EINVAL, EBUSY = 22, 16


def k419(cpus: int = 2) -> Kernel:
    k = Kernel("4.19", cpus=cpus)
    assert isinstance(k.vmap_space, ListVmapSpace)
    return k


def alloc(k: Kernel, pages: int, align: int = 1, vstart: int = S, vend: int = E) -> VmapArea:
    va = k.alloc_vmap_area(pages * P, align, vstart, vend)
    assert isinstance(va, VmapArea), va
    return va


def rel(va: VmapArea) -> int:
    """Offset from S in pages."""
    return (va.va_start - S) // P


def gaps(k: Kernel) -> list[tuple[int, int]]:
    return [(va.va_start, va.va_end) for va in k.vmap_space.free_areas()]


# ----------------------------------------------------------------------------------
# Placement
# ----------------------------------------------------------------------------------
def test_first_allocation_at_vmalloc_start():
    # Empty tree, no cache: addr = ALIGN(S, 1) = S; the descent finds no area with
    # end >= S, so "found" at once. The new area becomes the cache.
    k = k419()
    assert gaps(k) == [(1, ULONG_MAX)]
    va = alloc(k, 2)
    assert (va.va_start, va.va_end) == (S, S + 2 * P)
    v = k.vmap_space
    assert v.free_vmap_cache is va
    assert (v.cached_vstart, v.cached_align, v.cached_hole_size) == (S, 1, 0)
    assert (v.cache_misses, v.cache_hits, v.last_walk_steps) == (1, 0, 0)
    assert gaps(k) == [(1, S), (S + 2 * P, ULONG_MAX)]
    assert v.nr_free == 2 and v.nr_busy == 1
    k.check()


def test_consecutive_allocations_follow_the_cache():
    # Each request matches the cached parameters, so it starts at ALIGN(cache.end)
    # and examines exactly one area (the cache, which is also the last one).
    k = k419()
    starts = [rel(alloc(k, n)) for n in (2, 3, 5)]
    assert starts == [0, 2, 5]
    v = k.vmap_space
    assert (v.cache_hits, v.cache_misses) == (2, 1)
    assert v.last_walk_steps == 1
    assert v.free_vmap_cache.va_start == S + 5 * P
    k.check()


def _holey() -> Kernel:
    """A[S,S+2p) B[S+2p,S+6p) C[S+6p,S+8p); B freed directly (cache moves to A)."""
    k = k419()
    a, b, c = alloc(k, 2), alloc(k, 4), alloc(k, 2)
    assert [rel(a), rel(b), rel(c)] == [0, 2, 6]
    k.free_vmap_area(b)
    # B ends at S+6p >= cached_vstart S and starts at or below the cache C, so the
    # cache moves to rb_prev(B) = A.
    assert k.vmap_space.free_vmap_cache is a
    return k


def test_walk_records_the_skipped_hole_and_continues_after_the_cache():
    # 8 pages from cache A: addr = S+2p; A is passed (addr stays S+2p), then C:
    # S+10p > S+6p, so the 4-page gap [S+2p, S+6p) is noted (chs = 4p) and
    # addr = S+8p; C is last: found at S+8p.
    k = _holey()
    d = alloc(k, 8)
    assert rel(d) == 8
    v = k.vmap_space
    assert v.cached_hole_size == 4 * P
    assert v.last_walk_steps == 2
    # A request of exactly chs pages does not invalidate (size < chs is strict):
    # it continues above the cache D although the 4-page hole would fit it.
    e = alloc(k, 4)
    assert rel(e) == 16
    k.check()


def test_hole_reuse_when_size_is_below_cached_hole_size():
    # After D (chs = 4p), a 2-page request has size < chs: nocache, chs := 0,
    # addr = S; first = A (contains S); A is passed (addr = S+2p); C: S+4p <= S+6p
    # fits -> S+2p. Then the next 2 pages come from the cache at S+4p.
    k = _holey()
    alloc(k, 8)
    misses = k.vmap_space.cache_misses
    f = alloc(k, 2)
    assert rel(f) == 2
    assert k.vmap_space.cache_misses == misses + 1
    assert k.vmap_space.cached_hole_size == 0
    g = alloc(k, 2)
    assert rel(g) == 4
    k.check()


def test_smaller_align_invalidates_the_cache():
    # A(2p) at S; B(2p, align 16p) from cache A: ALIGN(S+2p, 16p) = S+16p, leaving
    # the slack [S+2p, S+16p) unrecorded (chs stays 0). cached_align = 16p.
    k = k419()
    alloc(k, 2)
    b = alloc(k, 2, align=16 * P)
    assert rel(b) == 16
    assert k.vmap_space.cached_align == 16 * P and k.vmap_space.cached_hole_size == 0
    # The same alignment again keeps using the cache: ALIGN(S+18p, 16p) = S+32p.
    assert rel(alloc(k, 2, align=16 * P)) == 32
    # align 1 < cached_align: rescan from S, A passed, the slack hole takes it.
    assert rel(alloc(k, 2, align=1)) == 2
    k.check()


def test_lower_vstart_invalidates_the_cache_higher_vstart_drops_it_if_below():
    k = k419()
    alloc(k, 2)  # A at S
    alloc(k, 2, align=16 * P)  # B at S+16p
    # vstart S+64p >= cached_vstart: the cache is tried, but ALIGN(S+18p, 16p) =
    # S+32p < vstart -> nocache: ALIGN(S+64p) with no area above -> S+64p.
    c = alloc(k, 2, align=16 * P, vstart=S + 64 * P)
    assert rel(c) == 64
    assert k.vmap_space.cached_vstart == S + 64 * P
    # vstart S < cached_vstart: rescan from S with align 16p: A -> S+16p, B ->
    # S+32p, C at S+64p: S+34p <= S+64p fits -> S+32p (the cache would say S+80p).
    d = alloc(k, 2, align=16 * P, vstart=S)
    assert rel(d) == 32
    k.check()


def test_a_free_at_the_bottom_makes_the_next_walks_long():
    # 1000 contiguous 2-page areas; freeing the lowest moves the cache to its
    # predecessor (none): the refill walks nothing (lands at S), but the next
    # request starts from that area at the bottom and examines all 1000 areas.
    k = k419()
    areas = [alloc(k, 2) for _ in range(1000)]
    k.free_vmap_area(areas[0])
    assert k.vmap_space.free_vmap_cache is None
    assert rel(alloc(k, 2)) == 0
    assert k.vmap_space.last_walk_steps == 0
    assert rel(alloc(k, 2)) == 2000
    assert k.vmap_space.last_walk_steps == 1000
    k.check()


# ----------------------------------------------------------------------------------
# Lazy freeing and purging
# ----------------------------------------------------------------------------------
def test_lazy_area_keeps_its_range_until_a_purge():
    k = k419()
    a, _b = alloc(k, 2), alloc(k, 2)
    k.free_vmap_area_noflush(a)
    v = k.vmap_space
    assert a.state == VaState.LAZY and v.vmap_lazy_nr == 2
    # Still in the tree and list (VM_LAZY_FREE): not busy, but not free either.
    assert k.find_vmap_area(S) is None
    assert v.find_any_vmap_area(S) is a
    assert gaps(k) == [(1, S), (S + 4 * P, ULONG_MAX)]
    assert v.free_vmap_cache is _b  # a lazy free does not touch the cache
    # With the cache emptied by hand, the walk from S steps over the lazy A (addr
    # S+2p), then B (S+4p) and lands above B.
    v.free_vmap_cache = None
    assert rel(alloc(k, 2)) == 4
    assert k.purge_vmap_area_lazy()  # A <= cache (new area) -> cache := rb_prev(A)
    assert v.free_vmap_cache is None
    assert gaps(k) == [(1, S + 2 * P), (S + 6 * P, ULONG_MAX)]
    assert v.vmap_lazy_nr == 0 and a.state == VaState.DETACHED
    k.check()


def test_allocation_failure_purges_once_and_retries():
    # A, B at S, S+2p; A lazily freed. 2 pages in [S, S+4p): cache B -> addr S+4p,
    # S+6p > vend -> overflow -> purge (A: ends at S+2p >= cached_vstart, starts
    # below B -> cache := rb_prev(A) = NULL) -> retry without cache from S: B at
    # S+2p, S+2p <= S+2p fits -> S.
    k = k419()
    a, _b = alloc(k, 2), alloc(k, 2)
    k.free_vmap_area_noflush(a)
    va = alloc(k, 2, vend=S + 4 * P)
    assert va.va_start == S
    assert k.vmap_space.stats.retries == 1 and k.vmap_space.stats.purges == 1
    assert not k.log.grep("vmap allocation")
    k.check()


def test_synchronous_purge_at_the_threshold():
    # lazy_max_pages = fls(2) * 32 MiB / 4 KiB = 16384. Five 4096-page areas:
    # four lazy frees reach 16384 (not > 16384), the fifth makes 20480 > 16384 and
    # the purge runs inside that free. It takes the llist newest first: A4 (the
    # cache) moves the cache to A3, A3 to A2, ... A0 to NULL.
    k = k419()
    v = k.vmap_space
    assert v.lazy_max_pages == 16384
    areas = [alloc(k, 4096) for _ in range(5)]
    assert [rel(a) for a in areas] == [0, 4096, 8192, 12288, 16384]
    for a in areas[:4]:
        k.free_vmap_area_noflush(a)
    assert v.vmap_lazy_nr == 16384 and v.stats.purges == 0 and len(v.lazy) == 4
    k.free_vmap_area_noflush(areas[4])
    assert v.vmap_lazy_nr == 0 and not v.lazy
    assert (v.stats.purges, v.stats.purged_areas) == (1, 5)
    assert v.last_flush == (S, S + 5 * 4096 * P)
    assert v.free_vmap_cache is None and v.nr_tree == 0
    assert rel(alloc(k, 2)) == 0
    k.check()


def test_one_cpu_threshold():
    assert k419(cpus=1).vmap_space.lazy_max_pages == 8192
    assert k419(cpus=4).vmap_space.lazy_max_pages == 3 * 8192


def test_purge_order_moves_the_cache_to_the_lowest_predecessor():
    # X A Y B Z (2 pages each), A then B lazily freed; purge frees B first (newest):
    # B <= cache Z -> cache := Y; then A <= Y -> cache := X. Next 2 pages from X:
    # addr S+2p fits before Y -> A's old place.
    k = k419()
    x, a, _y, b, _z = (alloc(k, 2) for _ in range(5))
    k.free_vmap_area_noflush(a)
    k.free_vmap_area_noflush(b)
    assert k.purge_vmap_area_lazy()
    assert k.vmap_space.free_vmap_cache is x
    assert rel(alloc(k, 2)) == 2
    assert rel(alloc(k, 2)) == 6  # cache (new A) -> Y passed -> B's old place
    k.check()


def test_double_free_and_unknown_address_warn():
    k = k419()
    a = alloc(k, 2)
    k.free_vmap_area_noflush(a)
    k.free_vmap_area_noflush(a)  # lazy already
    k.free_vmap_area_noflush(S)  # the address is inside a lazy area only
    assert len([ln for ln in k.log.lines if ln.level == "WARN"]) == 2
    assert k.vmap_space.vmap_lazy_nr == 2
    k.check()


def test_find_unlink_then_noflush_keeps_the_range():
    k = k419()
    a = alloc(k, 3)
    va = k.vmap_space.find_unlink_vmap_area(S + P)
    assert va is a and a.state == VaState.DETACHED
    assert k.vmap_space.nr_busy == 0 and k.vmap_space.find_any_vmap_area(S) is a
    k.check()
    k.vmap_space.free_vmap_area_noflush(va)
    assert a.state == VaState.LAZY and k.vmap_space.vmap_lazy_nr == 3
    k.check()


# ----------------------------------------------------------------------------------
# Failures and bad input
# ----------------------------------------------------------------------------------
def test_failure_warning_text():
    k = k419()
    assert k.alloc_vmap_area(8 * P, 1, S, S + 4 * P) == -EBUSY
    assert k.log.lines[-1].text == (
        "vmap allocation for size 32768 failed: use vmalloc=<size> to increase size"
    )
    assert k.vmap_space.stats.alloc_failures == 1 and k.vmap_space.stats.retries == 1
    assert k.alloc_vmap_area(8 * P, 1, S, S + 4 * P, gfp_nowarn=True) == -EBUSY
    assert len(k.log.grep("vmap allocation for size")) == 1
    k.check()


def test_wrap_is_overflow():
    k = k419()
    assert k.alloc_vmap_area(1 << 63, 1, S, ULONG_MAX, gfp_nowarn=True) == -EBUSY
    k.check()


@pytest.mark.parametrize(("size", "align"), [(0, 1), (P + 1, 1), (P, 3), (P, 0)])
def test_bad_input_is_a_bug(size, align):
    k = k419()
    assert k.alloc_vmap_area(size, align) == -EINVAL
    assert k.log.lines[-1].level == "BUG"
    strict = Kernel("4.19", cpus=2, strict=True)
    with pytest.raises(KernelWarning):
        strict.alloc_vmap_area(size, align)


def test_no_tracepoints_no_pools():
    k = k419()
    with pytest.raises(ValueError):
        k.trace_subscribe("all", lambda e: None)
    assert k.drop_caches(2) == 0
    assert len(k.vmap_space.nodes) == 1


# ----------------------------------------------------------------------------------
# Differential tests
# ----------------------------------------------------------------------------------
U = ULONG_MAX


def brute_first_fit(areas, size, align, vstart, vend):
    """Lowest aligned addr >= vstart with [addr, addr+size) clear and <= vend."""
    addr = -(-vstart // align) * align
    for start, end in sorted(areas):
        if end <= addr:
            continue
        if addr + size <= start:
            break
        addr = -(-end // align) * align
    if addr + size > vend or addr + size > U:
        return None
    return addr


class Ref419:
    """An independent, list-based rendering of the same 4.19 rules (no rb-tree)."""

    def __init__(self, lazy_max: int) -> None:
        self.areas: list[tuple[int, int]] = []  # sorted, busy + lazy
        self.lazy: list[int] = []  # starts, oldest first
        self.lazy_nr = 0
        self.lazy_max = lazy_max
        self.cache: int | None = None  # start of the cached area
        self.chs = 0
        self.cvstart = 0
        self.calign = 0

    def _al(self, x: int, a: int) -> int:
        return (x + a - 1) & ~(a - 1) & U

    def _idx(self, start: int) -> int:
        return [s for s, _ in self.areas].index(start)

    def search(self, size, align, vstart, vend):
        if self.cache is not None and (
            size < self.chs or vstart < self.cvstart or align < self.calign
        ):
            self.cache = None
        self.cvstart, self.calign = vstart, align
        i = None
        if self.cache is not None:
            i = self._idx(self.cache)
            addr = self._al(self.areas[i][1], align)
            if addr < vstart:
                self.cache = None
                i = None
        if self.cache is None:
            self.chs = 0
            addr = self._al(vstart, align)
            i = next((j for j, (_, e) in enumerate(self.areas) if e >= addr), None)
        if addr + size > U:
            return None
        if i is not None:
            while addr + size > self.areas[i][0] and addr + size <= vend:
                if ((addr + self.chs) & U) < self.areas[i][0]:
                    self.chs = self.areas[i][0] - addr
                addr = self._al(self.areas[i][1], align)
                if addr + size > U:
                    return None
                if i == len(self.areas) - 1:
                    break
                i += 1
        if addr + size > vend:
            return None
        self.areas.append((addr, addr + size))
        self.areas.sort()
        self.cache = addr
        return addr

    def alloc(self, size, align, vstart, vend):
        addr = self.search(size, align, vstart, vend)
        if addr is None:
            self.purge()
            addr = self.search(size, align, vstart, vend)
        return addr

    def free_now(self, start: int) -> None:
        i = self._idx(start)
        s, e = self.areas[i]
        if self.cache is not None:
            if e < self.cvstart:
                self.cache = None
            elif s <= self.cache:
                self.cache = self.areas[i - 1][0] if i > 0 else None
        del self.areas[i]

    def free_lazy(self, start: int) -> None:
        s, e = self.areas[self._idx(start)]
        self.lazy.append(start)
        self.lazy_nr += (e - s) // P
        if self.lazy_nr > self.lazy_max:
            self.purge()

    def purge(self) -> None:
        for start in reversed(self.lazy):
            s, e = self.areas[self._idx(start)]
            self.free_now(start)
            self.lazy_nr -= (e - s) // P
        self.lazy = []


def _random_request(rng: random.Random, narrow: bool = False) -> tuple[int, int, int, int]:
    pages = rng.choice((1, 2, 2, 3, 5, 8, 17, 64, 256, 1024))
    if narrow:  # plain vmalloc traffic: the cache hits most of the time
        return pages * P, 1, S, E
    align = rng.choice((1, 1, P, P, 4 * P, 16 * P, 64 * P))
    r = rng.random()
    if r < 0.75:
        vstart, vend = S, E
    elif r < 0.9:
        vstart = S + rng.randrange(0, 4096) * P
        vend = E
    else:
        vstart = S + rng.randrange(0, 4096) * P
        vend = vstart + rng.randrange(1, 8192) * P
    return pages * P, align, vstart, vend


@pytest.mark.parametrize(("seed", "narrow"), [(1, False), (2, False), (3, True), (4, True)])
def test_random_ops_against_reference_with_check_every_step(seed, narrow):
    rng = random.Random(seed)
    k = k419()
    ref = Ref419(k.vmap_space.lazy_max_pages)
    live: list[VmapArea] = []
    for step in range(1500):
        op = rng.random()
        if op < 0.5 or not live:
            size, align, vstart, vend = _random_request(rng, narrow)
            got = k.alloc_vmap_area(size, align, vstart, vend, gfp_nowarn=True)
            want = ref.alloc(size, align, vstart, vend)
            if want is None:
                assert got == -EBUSY, (step, got)
            else:
                assert isinstance(got, VmapArea) and got.va_start == want, (step, got, want)
                live.append(got)
        elif op < 0.85:
            va = live.pop(rng.randrange(len(live)))
            ref.free_lazy(va.va_start)
            k.free_vmap_area_noflush(va)
        elif op < 0.97:
            va = live.pop(rng.randrange(len(live)))
            ref.free_now(va.va_start)
            k.free_vmap_area(va)
        else:
            ref.purge()
            k.purge_vmap_area_lazy()
        v = k.vmap_space
        cache = v.free_vmap_cache
        assert (cache.va_start if cache else None) == ref.cache, step
        assert (v.cached_hole_size, v.cached_vstart, v.cached_align) == (
            ref.chs,
            ref.cvstart,
            ref.calign,
        ), step
        assert v.vmap_lazy_nr == ref.lazy_nr
        k.vmap_space.check(lowest_match_samples=2)
    tree = [(va.va_start, va.va_end) for va in k.vmap_space.tree_areas()]
    assert tree == ref.areas


def test_empty_cache_search_is_brute_force_first_fit():
    rng = random.Random(419)
    k = k419()
    live: list[VmapArea] = []
    for _ in range(300):
        size, align, vstart, vend = _random_request(rng)
        va = k.alloc_vmap_area(size, align, vstart, vend, gfp_nowarn=True)
        if isinstance(va, VmapArea):
            live.append(va)
        if live and rng.random() < 0.4:
            x = live.pop(rng.randrange(len(live)))
            (k.free_vmap_area if rng.random() < 0.5 else k.free_vmap_area_noflush)(x)
    checked = 0
    for _ in range(300):
        size, align, vstart, vend = _random_request(rng)
        areas = [(va.va_start, va.va_end) for va in k.vmap_space.tree_areas()]
        want = brute_first_fit(areas, size, align, vstart, vend)
        if want is None:
            continue
        k.vmap_space.free_vmap_cache = None  # the state the self-check compares in
        k.vmap_space.cached_hole_size = 0
        va = k.alloc_vmap_area(size, align, vstart, vend)
        assert isinstance(va, VmapArea) and va.va_start == want
        k.free_vmap_area(va)
        checked += 1
    assert checked > 100
    k.check()


def test_check_detects_corruption():
    from pyvmalloc.vmap.area import InvariantError

    k = k419()
    a = alloc(k, 2)
    alloc(k, 2)
    k.free_vmap_area_noflush(a)
    k.vmap_space.vmap_lazy_nr += 1
    with pytest.raises(InvariantError):
        k.check()
    k.vmap_space.vmap_lazy_nr -= 1
    k.vmap_space.free_vmap_cache = VmapArea(S, S + P)
    with pytest.raises(InvariantError):
        k.check()
