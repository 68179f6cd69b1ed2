"""The compiled accelerator (pyvmalloc._speedups) against the pure-Python reference.

Two layers, both in one test run:

* in process: the reference functions (``rbtree.py_*``, ``freetree.py_propagate``,
  ``placement.py_find_vmap_lowest_match``) and their compiled twins drive two copies of
  the same trees with the same seeded operations; after every step the trees must be
  identical node for node (keys, colours, parent links, ``subtree_max_size``) and every
  search must return the same node;
* whole model: the same seeded workload runs in two fresh processes, one with
  ``PYVMALLOC_PURE=1`` (the choice is made at import); every address, the
  /proc/vmallocinfo text along the way, the final /proc/meminfo and /proc/buddyinfo,
  the search cost and the ``check()`` outcome must agree.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable

import pytest

import pyvmalloc
from pyvmalloc import _accel, rbtree
from pyvmalloc.vmap import freetree, placement
from pyvmalloc.vmap.area import FREE_AUGMENT, VmapArea, compute_subtree_max_size

sp = _accel.speedups
needs_accel = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")


def test_accel_reports_itself() -> None:
    assert (sp is not None) == _accel.ACCELERATED
    assert ("accelerated" in _accel.DESCRIPTION) == _accel.ACCELERATED

    assert pyvmalloc.accelerator() == _accel.SUMMARY
    assert (_accel.SUMMARY == "C accelerator") == _accel.ACCELERATED
    if os.environ.get("PYVMALLOC_PURE"):
        assert not _accel.ACCELERATED


def _shape(root: rbtree.RBRoot) -> list[tuple[int, int, bool, int | None, int]]:
    out = []
    for n in rbtree.rb_inorder(root):
        p = n.rb_parent
        out.append((n.va_start, n.va_end, n.rb_red, p.va_start if p else None, n.subtree_max_size))
    return out


class _Impl:
    """One implementation's functions."""

    def __init__(self, compiled: bool) -> None:
        if compiled:
            assert sp is not None
            self.insert_aug = sp.rb_insert_augmented
            self.erase_aug = sp.rb_erase_augmented
            self.insert = sp.rb_insert_color
            self.erase = sp.rb_erase
            self.propagate = sp.propagate
            self.lowest = sp.find_vmap_lowest_match
        else:
            self.insert_aug = rbtree.py_rb_insert_augmented
            self.erase_aug = rbtree.py_rb_erase_augmented
            self.insert = rbtree.py_rb_insert_color
            self.erase = rbtree.py_rb_erase
            self.propagate = freetree.py_propagate
            self.lowest = placement.py_find_vmap_lowest_match


def _link(root: rbtree.RBRoot, va: VmapArea) -> None:
    parent, left, node = None, False, root.rb_node
    while node is not None:
        parent, left = node, va.va_start < node.va_start
        node = node.rb_left if left else node.rb_right
    rbtree.rb_link_node(va, parent, left, root)


@needs_accel
@pytest.mark.parametrize("seed", range(6))
def test_augmented_tree_step_for_step(seed: int) -> None:
    """Random inserts, erases and size changes on two copies of one free tree."""
    rng = random.Random(seed)
    impls = [_Impl(False), _Impl(True)]
    roots = [rbtree.RBRoot(), rbtree.RBRoot()]
    live: list[list[VmapArea]] = [[], []]
    used: set[int] = set()
    for step in range(600):
        op = rng.random()
        if op < 0.55 or not live[0]:
            slot = rng.randrange(1 << 20)
            if slot in used:
                continue
            used.add(slot)
            start = (1 << 63) + slot * (1 << 24)  # addresses past 2^63, as on x86_64
            size = rng.randrange(1, 1 << 23)
            for impl, root, lst in zip(impls, roots, live, strict=True):
                va = VmapArea(start, start + size)
                _link(root, va)
                impl.insert_aug(va, root, FREE_AUGMENT)  # as FreeTree.link does
                va.subtree_max_size = 0
                impl.propagate(va, None)
                lst.append(va)
        elif op < 0.85:
            i = rng.randrange(len(live[0]))
            for impl, root, lst in zip(impls, roots, live, strict=True):
                va = lst.pop(i)
                impl.erase_aug(va, root, FREE_AUGMENT)
            used.discard((va.va_start - (1 << 63)) >> 24)
        else:
            i = rng.randrange(len(live[0]))
            new_size = rng.randrange(1, 1 << 23)
            for impl, lst in zip(impls, live, strict=True):
                va = lst[i]
                va.va_end = va.va_start + new_size
                impl.propagate(va, None)
        assert _shape(roots[0]) == _shape(roots[1]), f"seed {seed} step {step}"
        if step % 50 == 0:
            rbtree.validate_rbtree(
                roots[1],
                lambda v: v.va_start,
                augmented=lambda v: v.subtree_max_size,
                compute=compute_subtree_max_size,
            )


@needs_accel
@pytest.mark.parametrize("seed", range(4))
def test_plain_tree_and_busy_lookups(seed: int) -> None:
    """rb_insert_color/rb_erase and the busy-tree helpers on two copies."""
    assert sp is not None
    rng = random.Random(100 + seed)
    impls = [_Impl(False), _Impl(True)]
    roots = [rbtree.RBRoot(), rbtree.RBRoot()]
    live: list[dict[int, VmapArea]] = [{}, {}]
    for step in range(500):
        k = rng.randrange(400)
        start = 0xFFFF_C900_0000_0000 + k * 0x4000
        if k in live[0]:
            impls[0].erase(live[0].pop(k), roots[0])
            va = live[1].pop(k)
            assert sp.busy_unlink(roots[1], start + 0x1FFF) is va  # find + erase
            assert va.rb_parent is va.rb_left is va.rb_right is None
            assert sp.busy_unlink(roots[1], start) is None
        else:
            for n, (impl, root, d) in enumerate(zip(impls, roots, live, strict=True)):
                va = VmapArea(start, start + 0x2000)
                if n == 0:
                    _link(root, va)
                    impl.insert(va, root)
                else:
                    assert sp.busy_insert(root, va) is None
                d[k] = va
        assert [(a, b, r, p) for a, b, r, p, _ in _shape(roots[0])] == [
            (a, b, r, p) for a, b, r, p, _ in _shape(roots[1])
        ], f"step {step}"
        addr = 0xFFFF_C900_0000_0000 + rng.randrange(400 * 0x4000)
        ref = next((v for v in live[1].values() if v.va_start <= addr < v.va_end), None)
        assert sp.busy_find(roots[1], addr) is ref
        if ref is not None:
            clash = VmapArea(ref.va_start + 0x1000, ref.va_start + 0x3000)
            assert sp.busy_insert(roots[1], clash) is ref  # overlap: nothing linked


@needs_accel
@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_lowest_match_same_node(profile: str) -> None:
    """Both searches on one fragmented free tree: same node, same visit count."""
    from pyvmalloc import Kernel

    k = Kernel(profile, cpus=2)
    rng = random.Random(7)
    addrs = [k.vmalloc(4096 * rng.randint(1, 40)) for _ in range(600)]
    for a in addrs[::3]:
        k.vfree(a)
    k.purge_vmap_area_lazy()
    tree = k.vmap_space.free
    ref, acc = _Impl(False), _Impl(True)
    shift = k.profile.rollback_shifts_vstart
    for _ in range(400):
        size = 4096 * rng.randint(1, 64)
        align = 1 << rng.randint(0, 22)
        vstart = k.VMALLOC_START + rng.getrandbits(30)
        adjust = True if not shift else rng.random() < 0.5
        v0 = tree.stats.search_visits
        a = ref.lowest(tree, size, align, vstart, adjust, shift)
        v1 = tree.stats.search_visits
        b = acc.lowest(tree, size, align, vstart, adjust, shift)
        v2 = tree.stats.search_visits
        assert a is b, (size, align, vstart)
        assert v1 - v0 == v2 - v1
    # values past 64 bits go to the reference and still agree
    big = 1 << 70
    assert ref.lowest(tree, 4096, 1, big, True, shift) is acc.lowest(
        tree, 4096, 1, big, True, shift
    )
    with pytest.raises(ValueError):
        acc.lowest(tree, 4096, 4096, k.VMALLOC_START, False, False)


@needs_accel
def test_bad_arguments_are_errors_not_crashes() -> None:
    assert sp is not None
    with pytest.raises(TypeError):
        sp.rb_insert_color(object(), rbtree.RBRoot())
    with pytest.raises(TypeError):
        sp.rb_erase(VmapArea(1, 2), object())
    with pytest.raises(TypeError):
        sp.propagate(rbtree.RBNode(), None)
    with pytest.raises(TypeError):
        sp.busy_insert(rbtree.RBRoot(), rbtree.RBNode())


# --- whole model, reference in a subprocess ---------------------------------------------
_WORKLOAD = r"""
import json, random, sys
from pyvmalloc import Kernel, _accel
out = {"accelerated": _accel.ACCELERATED, "runs": []}
for profile in ("5.4", "6.18"):
    k = Kernel(profile, cpus=2)
    rng = random.Random(int(sys.argv[1]))
    live, addrs, infos = [], [], []
    for i in range(1500):
        r = rng.random()
        cpu = rng.randrange(2)
        if r < 0.55 or not live:
            size = 4096 * rng.choice([1, 1, 2, 3, 4, 8, 16, 64, 256])
            a = k.vmalloc(size, cpu=cpu)
            addrs.append(a)
            if a:
                live.append(a)
        elif r < 0.95:
            k.vfree(live.pop(rng.randrange(len(live))), cpu=cpu)
        elif r < 0.98:
            k.run_deferred_work()
        else:
            k.purge_vmap_area_lazy()
        if i % 250 == 0:
            infos.append(k.vmallocinfo())
            k.check()
    infos += [k.vmallocinfo(), k.meminfo(), k.buddyinfo()]
    try:
        k.check()
        ok = "ok"
    except Exception as e:
        ok = repr(e)
    out["runs"].append({"profile": profile, "addrs": addrs, "infos": infos, "check": ok,
                        "visits": k.vmap_space.search_cost})
print(json.dumps(out))
"""


@needs_accel
def test_whole_model_reference_and_accelerated_agree(fresh_python: Callable[..., str]) -> None:
    pure = json.loads(fresh_python("-c", _WORKLOAD, "11", pure=True))
    fast = json.loads(fresh_python("-c", _WORKLOAD, "11", pure=False))
    assert pure["accelerated"] is False and fast["accelerated"] is True
    for a, b in zip(pure["runs"], fast["runs"], strict=True):  # type: ignore[call-overload]
        assert a["check"] == "ok" == b["check"]
        assert a["addrs"] == b["addrs"], a["profile"]
        assert a["infos"] == b["infos"], a["profile"]
        assert a["visits"] == b["visits"], a["profile"]
        assert len(a["addrs"]) > 700


@needs_accel
@pytest.mark.parametrize(
    ("profile", "seed", "bits"), [("5.4", 1, 64), ("6.18", 2, 64), ("6.18", 3, 64), ("6.18", 4, 72)]
)
def test_free_tree_clip_and_merge_step_for_step(
    profile: str, seed: int, bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """va_clip and merge_or_add_vmap_area_augment: compiled vs reference FreeTree.

    With 72-bit addresses (no such machine; it forces every compiled call onto its
    past-64-bit fallback) the results must still be the reference's.
    """
    from pyvmalloc.config import PROFILES
    from pyvmalloc.printk import KernelLog
    from pyvmalloc.vmap.area import VmapStats

    umax = (1 << bits) - 1
    trees = [freetree.FreeTree(umax, PROFILES[profile], KernelLog(), VmapStats()) for _ in range(2)]
    for t in trees:
        t.insert_vmap_area_augment(VmapArea(1, umax))
    reference = {
        "_c_merge_or_add": None,
        "_c_va_clip": None,
        "_c_find_va_links": None,
        "propagate": freetree.py_propagate,
        "rb_erase_augmented": rbtree.py_rb_erase_augmented,
        "rb_insert_augmented": rbtree.py_rb_insert_augmented,
    }

    def on(tree_index: int, fn):  # type: ignore[no-untyped-def]
        if tree_index == 0:
            with monkeypatch.context() as m:
                for name, value in reference.items():
                    m.setattr(freetree, name, value)
                return fn(trees[0])
        return fn(trees[1])

    rng = random.Random(seed)
    base = 0xFFFF_C900_0000_0000 << (bits - 64)
    busy: list[tuple[int, int]] = []
    for step in range(700):
        if rng.random() < 0.6 or not busy:
            size = 4096 * rng.randint(1, 16)
            align = 4096 << rng.randint(0, 4)
            vstart = base + 4096 * rng.randrange(1 << 16)

            def clip(t: freetree.FreeTree, size: int = size, align: int = align, v: int = vstart):
                va = placement.py_find_vmap_lowest_match(t, size, align, v, True, True)
                if va is None:
                    return None
                nva = (max(va.va_start, v) + align - 1) & ~(align - 1)
                return nva, t.va_clip(va, nva, size)

            a, b = on(0, clip), on(1, clip)
            assert a == b, step
            if a is not None:
                busy.append((a[0], a[0] + size))
        else:
            s, e = busy.pop(rng.randrange(len(busy)))

            def give_back(t: freetree.FreeTree, s: int = s, e: int = e):
                got = t.merge_or_add_vmap_area_augment(VmapArea(s, e))
                return got.va_start, got.va_end

            assert on(0, give_back) == on(1, give_back), step
        assert _shape(trees[0].root) == _shape(trees[1].root), step
        assert trees[0].nr_free == trees[1].nr_free
        assert trees[0].stats.fits == trees[1].stats.fits
    trees[1].check()
