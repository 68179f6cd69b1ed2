"""Placement and pool policies: the shipped ones, by name, and a worked example.

A kernel profile *names* its policies (``KernelProfile.placement``,
``KernelProfile.pools``); a model can override them::

    >>> from pyvmalloc import Kernel
    >>> k = Kernel(profile="6.18", placement=BestFit())
    >>> k.vmap_space.placement
    BestFit()

This module resolves names — the registered ones below, or any importable
``module:Class`` — into policy objects, and says which mechanism each placement runs
on. It also ships :class:`BestFit`, the example of ``docs/policy.md``: a complete
placement policy in one class.

========================  ===============================================================
placement                 what it does
========================  ===============================================================
``lowest-match``          the kernel since v5.2: lowest fitting block of the free tree
``list-walk``             before v5.2: first fit walking the busy list from a cache
``best-fit``              :class:`BestFit`: the smallest fitting block, lowest among equals
========================  ===============================================================

========================  ===============================================================
pools                     what it does
========================  ===============================================================
``none``                  before v6.9: every freed area returns to the free tree
``node-pools``            since v6.9: per-node exact-size pools, 25 % decay per purge
========================  ===============================================================
"""

from __future__ import annotations

import importlib
import os
import random
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from pyvmalloc.config import KernelProfile
from pyvmalloc.errors import InvariantError
from pyvmalloc.vmap.area import VmapArea
from pyvmalloc.vmap.freetree import FreeTree
from pyvmalloc.vmap.list419 import ListVmapSpace, ListWalk
from pyvmalloc.vmap.placement import LowestMatch, PlacementPolicy, is_within_this_va
from pyvmalloc.vmap.pools import NodePools, NoPools, PoolPolicy
from pyvmalloc.vmap.space import VmapSpace

__all__ = [
    "MECHANISMS",
    "PLACEMENTS",
    "POOLS",
    "BestFit",
    "ListWalk",
    "LowestMatch",
    "NoPools",
    "NodePools",
    "load_object",
    "mechanism_of",
    "placement_policy",
    "pool_policy",
]


class BestFit:
    """Best fit: the smallest free block that can hold the request inside its range.

    Among blocks of the same size the lowest address wins; inside the chosen block
    the area starts at the lowest aligned address (as the kernel's does). Best fit
    keeps large blocks whole for large requests, at the price of a search that may
    visit every block big enough (O(n) in the worst case; subtrees whose
    ``subtree_max_size`` is too small are skipped).

    Its invariant (:meth:`check`): for random requests, :meth:`find` returns the
    block a linear scan of the free list picks by the same rule.

    >>> from pyvmalloc import Kernel
    >>> k = Kernel("6.18", cpus=1, placement=BestFit())
    >>> S, P = k.VMALLOC_START, 4096
    >>> a, b, c, d = (k.alloc_vmap_area(n * P, 1, S, k.VMALLOC_END) for n in (4, 1, 2, 1))
    >>> k.vmap_space.free_vmap_area(a); k.vmap_space.free_vmap_area(c)
    >>> hex(k.alloc_vmap_area(2 * P, 1, S, k.VMALLOC_END).va_start - S)  # c's hole, not a's
    '0x5000'
    """

    name: ClassVar[str] = "best-fit"

    def __repr__(self) -> str:
        return "BestFit()"

    def __eq__(self, other: object) -> bool:
        return type(other) is BestFit

    def __hash__(self) -> int:
        return hash(BestFit)

    def find(
        self, tree: FreeTree, size: int, align: int, vstart: int, vend: int
    ) -> tuple[VmapArea, int] | None:
        umax = tree.ulong_max
        best: VmapArea | None = None
        best_size = 0
        visits = 0
        stack: list[Any] = []
        # In-order walk (lowest address first among equal sizes), pruning subtrees
        # that hold no block of at least ``size`` bytes.
        node: Any = tree.root.rb_node
        while stack or node is not None:
            while node is not None:
                if node.subtree_max_size < size:
                    node = None
                    break
                stack.append(node)
                node = node.rb_left
            if not stack:
                break
            node = stack.pop()
            visits += 1
            block = node.va_end - node.va_start
            if (best is None or block < best_size) and _fits_in_range(
                node, size, align, vstart, vend, umax
            ):
                best, best_size = node, block
            if node.va_start >= vend:
                break  # every later block starts past the range
            node = node.rb_right
        tree.stats.search_visits += visits
        if best is None:
            return None
        s = best.va_start
        return best, ((s if s > vstart else vstart) + align - 1) & ~(align - 1) & umax

    def check(self, tree: FreeTree, *, samples: int, rng: random.Random, vstart: int) -> None:
        largest = tree.largest
        if not largest:
            return
        visits = tree.stats.search_visits
        blocks = list(tree)
        for _ in range(samples):
            # Sizes up to a random block's: the requests where the choice matters.
            pages = min(rng.choice(blocks).size // 4096, 1024)
            size = rng.randint(1, max(1, pages)) * 4096
            align = 1 << rng.choice((0, 12, 12, 14, 16))
            # Most requests start at VMALLOC_START; some at a random higher address.
            v = vstart if rng.random() < 0.5 else vstart + rng.getrandbits(24) * 4096
            vend = tree.ulong_max if rng.random() < 0.5 else v + rng.getrandbits(30) * 4096
            want = None
            for va in blocks:
                if _fits_in_range(va, size, align, v, vend, tree.ulong_max) and (
                    want is None or va.size < want.size
                ):
                    want = va
            got = self.find(tree, size, align, v, vend)
            if (got[0] if got else None) is not want:
                raise InvariantError(
                    f"best fit: find gave {got[0] if got else None!r}, the smallest fitting "
                    f"block is {want!r} (size {size:#x}, align {align:#x}, vstart {v:#x})"
                )
        tree.stats.search_visits = visits


def _fits_in_range(va: VmapArea, size: int, align: int, vstart: int, vend: int, umax: int) -> bool:
    """Does the lowest aligned address of ``va`` at or above ``vstart`` fit by ``vend``?"""
    if not is_within_this_va(va, size, align, vstart, umax):
        return False
    s = va.va_start
    return (((s if s > vstart else vstart) + align - 1) & ~(align - 1) & umax) + size <= vend


#: Placement policies by name: each builds the policy for a profile.
PLACEMENTS: dict[str, Callable[[KernelProfile], Any]] = {
    "lowest-match": lambda profile: LowestMatch(),
    "list-walk": lambda profile: ListWalk(),
    "best-fit": lambda profile: BestFit(),
}

#: Pool policies by name.
POOLS: dict[str, Callable[[KernelProfile], PoolPolicy]] = {
    "none": lambda profile: NoPools(),
    "node-pools": lambda profile: NodePools(
        max_va_size_pages=profile.max_va_size_pages,
        decay_keeps_small_classes=profile.decay_keeps_small_classes,
    ),
}

#: The mechanism each kind of placement runs on (``policy.mechanism``, default
#: "free-tree").
MECHANISMS: dict[str, type[VmapSpace]] = {"free-tree": VmapSpace, "busy-list": ListVmapSpace}


def _import_policy_module(module: str) -> Any:
    """Import ``module``; a module in the current directory counts as importable.

    ``python -m pyvmalloc`` puts the current directory on ``sys.path``, the installed
    ``pyvmalloc`` script does not (its own directory is ``sys.path[0]``). So that
    ``pyvmalloc compare CAPTURE --policy mymodule:MyPolicy`` finds ``./mymodule.py``
    either way, a top-level module not found on the path is looked for there too.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != module.partition(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module)
        finally:
            sys.path.remove(cwd)


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (``attribute`` may be dotted), with a clear error."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"not a policy: {spec!r} (a registered name, or module:Class)")
    if not all(part.isidentifier() for part in module.split(".") + attr.split(".")):
        raise ValueError(
            f"not a policy: {spec!r} (module:Class takes a dotted module name, not a path)"
        )
    try:
        obj: Any = _import_policy_module(module)
    except ImportError as e:
        raise ValueError(f"cannot import {module!r} for policy {spec!r}: {e}") from None
    except Exception as e:  # the module's own code failed while it was imported
        raise ValueError(
            f"importing {module!r} for policy {spec!r} failed: {type(e).__name__}: {e}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module!r} has no {attr!r} (policy {spec!r})") from None
    return obj


def _resolve(
    spec: object,
    registry: dict[str, Callable[[KernelProfile], Any]],
    profile: KernelProfile,
    kind: str,
) -> Any:
    if isinstance(spec, str):
        if spec in registry:
            return registry[spec](profile)
        if ":" not in spec:
            raise ValueError(
                f"unknown {kind} policy {spec!r}; known: {', '.join(registry)} (or module:Class)"
            )
        spec = load_object(spec)
    if isinstance(spec, type):
        try:
            spec = spec()
        except TypeError as e:
            name = getattr(spec, "__name__", repr(spec))
            raise ValueError(f"cannot build {kind} policy {name}(): {e}") from None
    return spec


def placement_policy(spec: str | PlacementPolicy | type, profile: KernelProfile) -> Any:
    """A placement policy from a name, ``module:Class``, a class or an instance."""
    policy = _resolve(spec, PLACEMENTS, profile, "placement")
    missing = [m for m in ("find", "check", "name") if not hasattr(policy, m)]
    if getattr(policy, "mechanism", "free-tree") == "busy-list":
        missing = [m for m in ("search", "check_first_fit", "name") if not hasattr(policy, m)]
    if missing:
        raise ValueError(f"{policy!r} is not a placement policy: no {', '.join(missing)}")
    if mechanism_of(policy) not in MECHANISMS:
        raise ValueError(f"{policy!r} runs on an unknown mechanism {policy.mechanism!r}")
    return policy


def pool_policy(spec: str | PoolPolicy | type, profile: KernelProfile) -> PoolPolicy:
    """A pool policy from a name, ``module:Class``, a class or an instance."""
    policy = _resolve(spec, POOLS, profile, "pool")
    if not isinstance(policy, PoolPolicy):
        raise ValueError(
            f"{policy!r} is not a pool policy "
            "(needs name, node_alloc, populate, decay, push_head, check)"
        )
    return policy


def mechanism_of(placement: object) -> str:
    """The mechanism a placement policy runs on: "free-tree" unless it says so."""
    return str(getattr(placement, "mechanism", "free-tree"))
