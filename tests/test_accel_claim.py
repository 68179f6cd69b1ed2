"""claim_range's compiled scans (_speedups.c, replay batch section) against the Python.

``overlapping(areas, start, end)`` is ``[va for va in areas if va.va_start < end and
start < va.va_end]`` and ``pooled_overlapping(nodes, start, end)`` the same over every
node's pools, as ``(pool, va)`` pairs in the nodes', the pools dict's and each pool's
order. Both read only, and return None (the comprehension runs) for an item that is not
a ``VmapArea`` or a bound past 64 bits. Replays through ``TraceHarness.claim_range``'s
slow path are compared with the twins off in ``tests/trace/test_replay_batch.py``.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from pyvmalloc import _accel
from pyvmalloc.trace import harness
from pyvmalloc.vmap.area import VmapArea

sp = _accel.speedups
pytestmark = pytest.mark.skipif(sp is None, reason=f"accelerator not in use: {_accel.DESCRIPTION}")
P = 4096


@dataclass
class Node:
    """What the scan reads of a VmapNode: its pools (size class -> deque of areas)."""

    pools: dict[int, deque[VmapArea]] = field(default_factory=dict)


def _py(areas: object, start: int, end: int) -> list[VmapArea]:
    return [va for va in areas if va.va_start < end and start < va.va_end]  # type: ignore[attr-defined]


def test_overlapping_matches_the_comprehension() -> None:
    assert sp is not None
    rng = random.Random(15)
    base = 0xFFFFC90000000000  # addresses past 2^63, as the kernel's
    for _ in range(300):
        areas = []
        for _ in range(rng.randrange(0, 30)):
            s = base + rng.randrange(0, 64) * P
            areas.append(VmapArea(s, s + rng.randrange(1, 8) * P))
        start = base + rng.randrange(0, 70) * P
        end = start + rng.randrange(1, 10) * P
        for seq in (areas, deque(areas), tuple(areas)):
            got = sp.overlapping(seq, start, end)
            want = _py(seq, start, end)
            assert got is not None and len(got) == len(want)
            assert all(a is b for a, b in zip(got, want, strict=True))
        nodes = [Node(), Node()]
        for va in areas:
            cls = (va.va_end - va.va_start - 1) // P
            nodes[rng.randrange(2)].pools.setdefault(cls, deque()).append(va)
        pooled = sp.pooled_overlapping(nodes, start, end)
        want_p = [
            (pool, va)
            for vn in nodes
            for pool in vn.pools.values()
            for va in pool
            if va.va_start < end and start < va.va_end
        ]
        assert pooled is not None and len(pooled) == len(want_p)
        assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(pooled, want_p, strict=True))


def test_edges_and_declines() -> None:
    assert sp is not None
    a = VmapArea(0x1000, 0x3000)
    assert sp.overlapping([a], 0x3000, 0x4000) == []  # touching at the end: no overlap
    assert sp.overlapping([a], 0, 0x1000) == []
    assert sp.overlapping([a], 0x2FFF, 0x3000) == [a]
    assert sp.overlapping([a, object()], 0, 1) is None  # not a VmapArea
    assert sp.overlapping([a], 0, 1 << 64) is None  # past 64 bits
    assert sp.overlapping([VmapArea(0, 1 << 65)], 0, 1) is None
    assert sp.pooled_overlapping([Node({0: deque([a, "x"])})], 0, 1) is None  # type: ignore[list-item]
    with pytest.raises(AttributeError):
        sp.pooled_overlapping([object()], 0, 1)  # a node without pools: as the Python fails
    with pytest.raises(TypeError):
        sp.overlapping([a], 0)  # type: ignore[call-arg]


def test_harness_uses_them() -> None:
    assert harness._c_overlapping is sp.overlapping  # type: ignore[union-attr]
    assert harness._c_pooled_overlapping is sp.pooled_overlapping  # type: ignore[union-attr]
