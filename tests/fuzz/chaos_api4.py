"""Hostile API sequences over the calls tests/fuzz/chaos_api.py leaves out (round 4).

``pcpu_get_vm_areas``/``pcpu_free_vm_areas`` (double, foreign, bogus lists),
``free_vmap_area`` of any area, ``vrealloc`` with odd ``align``/``nid``,
``vzalloc_node``, ``vmalloc_32_user``, ``kvzalloc``, nested interrupt contexts,
``alloc_vmap_area`` with ``node``/``va_flags``/``gfp_nowarn``, ``read``/``write``/
``vwrite`` with odd buffers, ``walk``, the /proc views, and trace subscribers that raise
or call back into the model from inside a tracepoint. Arguments include floats,
strings, ``None`` and numpy integers. After every call ``check()`` must hold.

Run as a script (``python chaos_api4.py SEED RUNS``) it prints one line per call and the
final /proc views, so the accelerated build and ``PYVMALLOC_PURE=1`` can be compared.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pyvmalloc import Kernel
from pyvmalloc.gfp import __GFP_NOFAIL as NOFAIL
from pyvmalloc.gfp import __GFP_ZERO as ZERO
from pyvmalloc.gfp import GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT

# The executing loop, the allowed outcomes and the failure are chaos_api.py's (a sibling
# file, not a package: loaded by path whether this runs as a script or from a test).
_spec = importlib.util.spec_from_file_location(
    "chaos_api", Path(__file__).with_name("chaos_api.py")
)
assert _spec is not None and _spec.loader is not None
_base = sys.modules.get("chaos_api") or importlib.util.module_from_spec(_spec)
if "chaos_api" not in sys.modules:
    sys.modules["chaos_api"] = _base
    _spec.loader.exec_module(_base)
ALLOWED, ChaosFailure, execute = _base.ALLOWED, _base.ChaosFailure, _base.execute

GFPS = [GFP_KERNEL, GFP_ATOMIC, GFP_NOWAIT, GFP_KERNEL | ZERO, GFP_KERNEL | NOFAIL, 0, -1, 1 << 40]


class SubscriberError(RuntimeError):
    """What the raising trace subscriber raises (and the call must re-raise)."""


def run(
    rng: random.Random,
    profile: str,
    strict: bool,
    steps: int,
    *,
    full_every: int = 40,
    out: Callable[[str], None] | None = None,
    label: str = "",
) -> dict[str, int]:
    """One model and ``steps`` hostile calls; raises :class:`ChaosFailure`."""
    k = Kernel(profile, cpus=rng.choice([1, 2, 4]), ram=rng.choice(["64M", "128M"]), strict=strict)
    addrs: list[int] = []
    areas: list[Any] = []
    reentrant = rng.random() < 0.3

    def raising(_event: object) -> None:
        if rng.random() < 0.05:
            raise SubscriberError("subscriber fails")

    def calling_back(_event: object) -> None:
        if rng.random() < 0.05:
            k.vmalloc(4096)  # into the model from inside a tracepoint

    def addr() -> Any:
        r = rng.random()
        if addrs and r < 0.6:
            return rng.choice(addrs) + rng.choice([0, 0, 0, 1, 4096, -4096, 8192])
        if r < 0.85:
            return k.VMALLOC_START + rng.randrange(1 << 24) * 4096
        return rng.choice([0, -1, 1 << 64, k.VMALLOC_END, np.int64(-4096), True, 3.5, None])

    def size() -> Any:
        if rng.random() < 0.7:
            return rng.randrange(1, 300_000)
        return rng.choice([0, -1, 1 << 63, 1 << 64, 70 << 20, 4096, np.uint64(8192), 2.5,
                           "4096", None, True])  # fmt: skip

    def cpu() -> Any:
        if rng.random() < 0.05:
            return rng.choice([-1, 99, True, 1.0])
        return rng.randrange(k.machine.cpus_online)

    def node() -> Any:
        return rng.choice([-1, -1, 0, 1, -2, 1 << 31, np.int8(0)])

    def pcpu_get() -> object:
        n = rng.choice([1, 2, 3])
        offsets = [o << 20 for o in sorted(rng.sample(range(64), n))]
        if rng.random() < 0.2:
            offsets.reverse()
        sizes = [rng.choice([4096, 8192, 1 << 20, 3, 0]) for _ in range(n)]
        r = k.pcpu_get_vm_areas(offsets, sizes, rng.choice([4096, 8192, 1 << 21, 3, 0]), cpu=cpu())
        if r:
            areas.append(r)
        return r

    def pcpu_free() -> object:
        if not areas:
            return k.pcpu_free_vm_areas(rng.choice([[], [None]]), cpu=cpu())
        vas = rng.choice(areas)
        if rng.random() < 0.8:
            areas.remove(vas)
        return k.pcpu_free_vm_areas(vas, cpu=cpu())

    def in_irq(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with k.interrupt_context():
                if rng.random() < 0.3:
                    with k.interrupt_context():
                        return fn()
                return fn()

        return call

    calls: dict[str, Callable[[], object]] = {
        "vmalloc": lambda: k.vmalloc(size(), cpu=cpu()),
        "vzalloc_node": lambda: k.vzalloc_node(size(), node(), cpu=cpu()),
        "vmalloc_32_user": lambda: k.vmalloc_32_user(size(), cpu=cpu()),
        "kvzalloc": lambda: k.kvzalloc(size(), rng.choice(GFPS), cpu=cpu()),
        "vrealloc": lambda: k.vrealloc(
            rng.choice([0, addr()]),
            size(),
            rng.choice(GFPS),
            align=rng.choice([1, 4096, 3, 0, 1 << 21, -1]),
            nid=node(),
            cpu=cpu(),
        ),
        "vfree": lambda: k.vfree(addr(), cpu=cpu(), in_interrupt=rng.random() < 0.3),
        "vfree_atomic": lambda: k.vfree_atomic(addr(), cpu=cpu()),
        "kvfree": lambda: k.kvfree(addr(), cpu=cpu()),
        "irq_vmalloc": in_irq(lambda: k.vmalloc(size(), cpu=cpu())),
        "irq_vfree": in_irq(lambda: k.vfree(addr(), cpu=cpu())),
        "irq_vunmap": in_irq(lambda: k.vunmap(addr(), cpu=cpu())),
        "irq_purge": in_irq(k.purge_vmap_area_lazy),
        "pcpu_get": pcpu_get,
        "pcpu_free": pcpu_free,
        "get_vm_area_caller": lambda: k.get_vm_area_caller(
            size(),
            rng.choice([0, 4, 0x44, 1 << 20]),
            rng.choice([None, "x", "a" * 5000, "\n\x00"]),
            cpu=cpu(),
        ),
        "alloc_vmap_area": lambda: k.alloc_vmap_area(
            size(),
            rng.choice([1, 4096, 1 << 21]),
            None,
            None,
            cpu=cpu(),
            node=node(),
            gfp_nowarn=rng.random() < 0.5,
            va_flags=rng.choice([0, 1, 2, 4, 0xFF]),
        ),
        "free_vmap_area": lambda: k.free_vmap_area(
            k.find_vmap_area(addr()) if rng.random() < 0.8 else None  # type: ignore[arg-type]
        ),
        "find_vmap_area": lambda: k.find_vmap_area(addr()),
        "is_vmalloc_addr": lambda: k.is_vmalloc_addr(addr()),
        "read": lambda: k.read(addr(), rng.choice([0, 1, 4096, 9000, -1])),
        "write": lambda: k.write(addr(), b"y" * rng.choice([0, 1, 4096, 9000])),
        "vwrite": lambda: k.vwrite(
            addr(), rng.choice([b"z" * 10, bytearray(5), "str", memoryview(b"abc")])
        ),
        "walk": lambda: k.walk(addr()),
        "reclaim": k.reclaim_and_purge_vmap_areas,
        "purge": k.purge_vmap_area_lazy,
        "deferred": k.run_deferred_work,
        "unmap_aliases": lambda: k.vm_unmap_aliases(cpu=cpu()),
        "vm_map_ram": lambda: k.vm_map_ram(
            k.alloc_pages(rng.choice([1, 2, 16, 64, 256])), None, node=node(), cpu=cpu()
        ),
        "vm_unmap_ram": lambda: k.vm_unmap_ram(
            addr(), rng.choice([1, 2, 16, 64, 256, 0]), cpu=cpu()
        ),
        "views": lambda: len(k.vmallocinfo() + k.meminfo() + k.buddyinfo() + k.dmesg()) * 0,
        "drop_caches": lambda: k.drop_caches(rng.choice([1, 2, 3])),
        "subscribe": lambda: k.trace_subscribe(
            rng.choice(
                ["alloc_vmap_area", "free_vmap_area_noflush", "purge_vmap_area_lazy", "all", "nope"]
            ),
            calling_back if reentrant else raising,
        ),
        "unsubscribe": lambda: k.trace_unsubscribe(rng.choice([raising, calling_back])),
    }
    return execute(k, calls, rng, steps, where=f"{label} profile={profile} strict={strict}",
                   full_every=full_every, out=out, label=label,
                   allowed=(*ALLOWED, SubscriberError), shown=(120, 160),
                   addr_attrs=("addr", "va_start"), addrs=addrs)  # fmt: skip


def plan(seed: int, runs: int) -> list[tuple[str, random.Random, str, bool, int]]:
    """``runs`` (label, rng, profile, strict, steps) cases of ``seed``."""
    out = []
    for i in range(runs):
        rng = random.Random(f"round4:{seed}:{i}")
        out.append((f"run {i}", rng, rng.choice(["4.19", "5.4", "6.18"]), rng.random() < 0.4,
                    rng.choice([100, 200])))  # fmt: skip
    return out


if __name__ == "__main__":
    seed, runs = int(sys.argv[1]), int(sys.argv[2])
    for label, rng, profile, strict, steps in plan(seed, runs):
        run(rng, profile, strict, steps, out=print, label=label)
