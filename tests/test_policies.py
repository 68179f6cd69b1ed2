"""Placement and pool policies: hand-derived placements, the seam, random walks.

Addresses below are derived by hand: S = VMALLOC_START = 0xffffc90000000000, P = 4 KiB,
sizes as given to alloc_vmap_area (no guard page added). The models run on one CPU
(one vmap node, so no pools take part) unless said otherwise.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pyvmalloc import Kernel
from pyvmalloc.errors import InvariantError
from pyvmalloc.policies import BestFit, load_object, placement_policy
from pyvmalloc.vmap.area import VmapArea, is_err
from pyvmalloc.vmap.freetree import FreeTree
from pyvmalloc.vmap.placement import LowestMatch, is_within_this_va
from pyvmalloc.vmap.pools import NodePools

P = 4096
S = 0xFFFFC90000000000


def holes(k: Kernel, sizes: list[int], free: list[int]) -> list[VmapArea]:
    """Allocate ``sizes`` (pages) back to back from S, then free those indexed by ``free``
    directly (free_vmap_area: no lazy list, the holes exist at once)."""
    vas = [k.alloc_vmap_area(n * P, 1, k.VMALLOC_START, k.VMALLOC_END) for n in sizes]
    assert all(not is_err(va) for va in vas)
    for i in free:
        k.vmap_space.free_vmap_area(vas[i])  # type: ignore[arg-type]
    return vas  # type: ignore[return-value]


#: Areas of 1, 4, 1, 2 and 1 pages from S, the 4P and the 2P one freed: holes of 4P at
#: S+P and 2P at S+6P, the top block from S+9P. (The first area stays busy: a hole at S
#: would merge with the free block [1, S) below the vmalloc range.)
LAYOUT = ([1, 4, 1, 2, 1], [1, 3])


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_best_fit_and_lowest_match_differ(profile):
    # A 2P request: the lowest match is the lowest fitting block (the 4P hole at S+P,
    # LE fit); best fit the smallest that fits (the 2P hole at S+6P, FL fit).
    lo = Kernel(profile, cpus=1)
    bf = Kernel(profile, cpus=1, placement=BestFit())
    for k in (lo, bf):
        holes(k, *LAYOUT)
    assert lo.alloc_vmap_area(2 * P, 1, S, lo.VMALLOC_END).va_start == S + P
    assert bf.alloc_vmap_area(2 * P, 1, S, bf.VMALLOC_END).va_start == S + 6 * P
    lo.check()
    bf.check()


def test_best_fit_and_lowest_match_agree():
    # Same holes; a 3P request fits only the 4P hole below the top block: both take S+P.
    for placement in (None, BestFit()):
        k = Kernel("6.18", cpus=1, placement=placement)
        holes(k, *LAYOUT)
        assert k.alloc_vmap_area(3 * P, 1, S, k.VMALLOC_END).va_start == S + P
        # A fresh model: the first area goes to VMALLOC_START under either policy.
        k2 = Kernel("6.18", cpus=1, placement=placement)
        assert k2.alloc_vmap_area(2 * P, 1, S, k2.VMALLOC_END).va_start == S


def test_best_fit_ties_go_to_the_lowest_address_and_alignment_counts():
    k = Kernel("6.18", cpus=1, placement="best-fit")
    # Areas of 1, 2, 1, 2, 1 pages, the 2P ones freed: 2P holes at S+P and S+4P, the
    # top block from S+7P. Equal sizes: the lowest address wins.
    holes(k, [1, 2, 1, 2, 1], [1, 3])
    assert k.alloc_vmap_area(2 * P, 1, S, k.VMALLOC_END).va_start == S + P
    # A 2P request aligned to 8P (32 KiB): ALIGN(S+4P, 8P) = S+8P is past the hole's
    # end S+6P, so only the top block fits, at ALIGN(S+7P, 8P) = S+8P.
    assert k.alloc_vmap_area(2 * P, 8 * P, S, k.VMALLOC_END).va_start == S + 8 * P
    k.check()


def test_profile_names_the_policies_and_kernel_overrides_them():
    assert Kernel("6.18").vmap_space.placement == LowestMatch()
    assert Kernel("6.18").vmap_space.pools.name == "node-pools"
    assert Kernel("5.4").vmap_space.pools.name == "none"
    assert Kernel("4.19").vmap_space.placement.name == "list-walk"
    k = Kernel("6.18", placement="pyvmalloc.policies:BestFit", pools="none")
    assert k.vmap_space.placement == BestFit() and k.vmap_space.pools.name == "none"
    assert Kernel("6.18", placement=BestFit).vmap_space.placement == BestFit()


def test_bad_policy_specs_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown placement policy 'nope'; known: lowest-match"):
        Kernel(placement="nope")
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        Kernel(placement="no_such_module_xyz:Thing")
    with pytest.raises(ValueError, match="has no 'Nothing'"):
        load_object("pyvmalloc.policies:Nothing")
    with pytest.raises(ValueError, match="is not a placement policy"):
        placement_policy(object(), Kernel().profile)
    with pytest.raises(ValueError, match="is not a pool policy"):
        Kernel(pools=object())
    with pytest.raises(ValueError, match="no vmap nodes"):
        Kernel("4.19", pools="node-pools")


# --- a policy defined outside the package -------------------------------------------


class TopDown:
    """Highest fitting address: the top of the highest block that can hold it."""

    name: ClassVar[str] = "top-down"

    def find(self, tree: FreeTree, size: int, align: int, vstart: int, vend: int):
        for va in reversed(list(tree)):
            top = min(va.va_end, vend) - size
            addr = top & ~(max(align, P) - 1)
            if top >= 0 and addr >= max(va.va_start, vstart):
                return va, addr
        return None

    def check(self, tree: FreeTree, *, samples: int, rng: random.Random, vstart: int) -> None:
        for va in tree:
            if va.va_start >= va.va_end:
                raise InvariantError(f"empty block {va!r}")


@dataclass(frozen=True)
class KeepAll(NodePools):
    """Pools that never decay partially (only reclaim and the shrinker empty them)."""

    name: ClassVar[str] = "keep-all"

    def decay(self, vn, full):
        return super().decay(vn, full) if full else []


def test_a_policy_from_outside_the_package_through_kernel():
    k = Kernel("6.18", cpus=1, placement=TopDown())
    va = k.alloc_vmap_area(2 * P, 1, k.VMALLOC_START, k.VMALLOC_END)
    # VMALLOC_END is 0xffffe8ffffffffff: END - 2P = 0xffffe8ffffffdfff, aligned down to
    # a page: 0xffffe8ffffffd000 (= 0xffffe8fffffff000 - 2P).
    assert va.va_start == 0xFFFFE8FFFFFFF000 - 2 * P
    k.free_vmap_area_noflush(va)
    k.purge_vmap_area_lazy()
    k.check()


def test_a_pool_policy_from_outside_the_package():
    k = Kernel("6.18", cpus=2, pools=KeepAll())
    vas = [k.alloc_vmap_area(2 * P, 1, k.VMALLOC_START, k.VMALLOC_END, cpu=0) for _ in range(8)]
    for va in vas:
        k.free_vmap_area_noflush(va)
    k.purge_vmap_area_lazy()  # the 8 go to node 0's pool[1]
    k.purge_vmap_area_lazy()  # NodePools would decay 8 >> 2 = 2 here; KeepAll keeps all
    assert len(k.vmap_space.nodes[0].pools[1]) == 8
    k.check()
    assert k.drop_caches(2) == 8  # the shrinker still empties them
    k.check()


def test_a_policy_from_outside_the_package_through_compare(tmp_path, monkeypatch):
    from pyvmalloc.cli import main

    # The policy lives in a module of its own, importable by name, as a user's would.
    (tmp_path / "user_policy.py").write_text(_USER_POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "cmp.json"
    cap = "tests/data/captures/mixed-spread"
    rc = main(
        ["compare", cap, "--profiles", "6.18", "--policy", "user_policy:TopDown",
         "--policy", "best-fit", "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["placement"] for r in rows] == ["lowest-match", "top-down", "best-fit"]
    # The kernel's own rules agree on this capture; a top-down allocator cannot.
    assert rows[0]["agreement"] == 1.0 and rows[1]["agreement"] < 0.5
    for r in rows:
        assert r["allocs_compared"] == 284
        assert r["search_cost_per_alloc"] >= 0 and r["samples"]
        assert r["peak_used_bytes"] > 0 and r["max_free_blocks"] > 0


_USER_POLICY = """
from typing import ClassVar


class TopDown:
    name: ClassVar[str] = "top-down"

    def find(self, tree, size, align, vstart, vend):
        for va in reversed(list(tree)):
            top = min(va.va_end, vend) - size
            addr = top & ~(max(align, 4096) - 1)
            if top >= 0 and addr >= max(va.va_start, vstart):
                return va, addr
        return None

    def check(self, tree, *, samples, rng, vstart):
        pass
"""


# --- random walks under every shipped policy -----------------------------------------

POLICY_MODELS = [
    ("4.19", None, None),
    ("5.4", None, None),
    ("6.18", None, None),
    ("5.4", "best-fit", None),
    ("6.18", "best-fit", None),
    ("6.18", None, "none"),
]


@pytest.mark.parametrize(("profile", "placement", "pools"), POLICY_MODELS)
def test_random_operations_keep_every_invariant(profile, placement, pools):
    rng = random.Random(f"{profile}/{placement}/{pools}")
    k = Kernel(profile, cpus=2, placement=placement, pools=pools)
    live: list[VmapArea] = []
    for _ in range(400):
        op = rng.random()
        if op < 0.55 or not live:
            size = rng.choice((1, 1, 2, 3, 5, 16)) * P
            align = rng.choice((1, P, 4 * P)) if profile != "5.4" or placement else 1
            if rng.random() < 0.8:
                lo, hi = k.VMALLOC_START, k.VMALLOC_END
            else:
                lo = k.VMALLOC_START + rng.randrange(1 << 20) * P
                hi = lo + rng.randrange(64, 4096) * P
            va = k.alloc_vmap_area(size, align, lo, hi, cpu=rng.randrange(2))
            if not is_err(va):
                assert va.va_start % max(align, 1) == 0 and lo <= va.va_start
                assert va.va_end <= hi
                live.append(va)
        elif op < 0.85:
            k.free_vmap_area_noflush(live.pop(rng.randrange(len(live))), cpu=rng.randrange(2))
        elif op < 0.93:
            k.vmap_space.free_vmap_area(live.pop(rng.randrange(len(live))))
        elif op < 0.98:
            k.purge_vmap_area_lazy()
        else:
            k.drop_caches(2)
        k.check()


def test_best_fit_check_catches_a_wrong_choice():
    k = Kernel("6.18", cpus=1, placement=BestFit())
    holes(k, *LAYOUT)

    class Wrong(BestFit):
        def find(self, tree, size, align, vstart, vend):  # always the lowest block
            for va in tree:
                if is_within_this_va(va, size, align, vstart, tree.ulong_max):
                    return va, max(va.va_start, vstart)
            return None

    with pytest.raises(InvariantError, match="best fit"):
        Wrong().check(k.vmap_space.free, samples=64, rng=random.Random(1), vstart=S)
