"""Hostile whole-API sequences: random kernel-named calls with arguments of every shape.

Sizes (0, 1, huge, 2^64, negative, numpy integers), addresses (live, interior, freed,
stale, foreign, the direct map, module space, past the range), nodes, CPUs, GFP
masks, page lists (borrowed, freed, invalid pfns), interrupt context, strict mode.
After every call the model must be consistent (``Kernel.check``; the full check every
``full_every`` calls). Allowed outcomes of a call: a result; the kernel's own failure
(NULL, a WARN/BUG in dmesg, ``KernelWarning``/``KernelHang`` in strict mode); a
``TypeError``/``ValueError`` for an argument the C API cannot take; ``PageFault`` where
the kernel oopses (e.g. ``vrealloc`` of an interior pointer copies past the guard
page); ``NotImplementedError`` for a documented model limit (``pcpu_get_vm_areas`` on
4.19); a ``MemoryError`` that says what the host cannot hold. Anything else, or a
failed check, is a defect.

Run as a script (``python chaos_api.py SEED RUNS``) it prints one line per call and the
final /proc views, so two builds (accelerated, ``PYVMALLOC_PURE=1``) can be compared.
Releasing a vmalloc'ed area without ``vfree`` leaks in the kernel too (and
``check()`` names the leak), so the sequences leave those calls out.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from pyvmalloc import Kernel, KernelHang, KernelWarning
from pyvmalloc.gfp import __GFP_NOFAIL as NOFAIL
from pyvmalloc.gfp import __GFP_NOWARN as NOWARN
from pyvmalloc.gfp import __GFP_ZERO as ZERO
from pyvmalloc.gfp import GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT
from pyvmalloc.pgtable import PageFault

GFPS = [GFP_KERNEL, GFP_ATOMIC, GFP_NOWAIT, GFP_KERNEL | ZERO, GFP_KERNEL | NOFAIL,
        GFP_NOWAIT | NOFAIL, GFP_KERNEL | NOWARN, 0, -1, 1 << 40]  # fmt: skip
#: Exceptions a call may raise (see the module docstring).
ALLOWED = (KernelWarning, KernelHang, TypeError, ValueError, OverflowError,
           NotImplementedError, PageFault)  # fmt: skip


class ChaosFailure(AssertionError):
    pass


def run(
    rng: random.Random,
    profile: str,
    strict: bool,
    steps: int,
    *,
    full_every: int = 50,
    out: Callable[[str], None] | None = None,
    label: str = "",
) -> dict[str, int]:
    """One model and ``steps`` hostile calls; raises :class:`ChaosFailure`."""
    k = Kernel(profile, cpus=rng.choice([1, 2, 4]), ram=rng.choice(["64M", "128M"]), strict=strict)
    addrs: list[int] = []
    owned: list[int] = []
    vms: list[Any] = []

    def addr() -> Any:
        r = rng.random()
        if addrs and r < 0.6:
            return rng.choice(addrs) + rng.choice([0, 0, 0, 1, 4096, -4096, 8192, 4095])
        if r < 0.8:
            return k.VMALLOC_START + rng.randrange(1 << 24) * rng.choice([1, 4096])
        return rng.choice([0, 1, -1, (1 << 64) - 4096, k.VMALLOC_END, k.VMALLOC_END - 4096,
                           0xFFFF888000000000, 0xFFFFFFFFA0000000, 1 << 64, np.int64(-4096), True])  # fmt: skip

    def size() -> Any:
        if rng.random() < 0.7:
            return rng.randrange(1, 300_000)
        return rng.choice([0, -1, 1 << 63, (1 << 64) - 1, 1 << 64, 1 << 40, 70 << 20, 4096,
                           np.uint64(8192), np.int32(4096), 2 << 20, 4 << 20])  # fmt: skip

    def cpu() -> int:
        if rng.random() < 0.1:
            return rng.choice([0, 1, 2, 3, -1, 999])
        return rng.randrange(k.machine.cpus_online)

    def node() -> int:
        return rng.choice([-1, -1, 0, 1, -2, 1 << 31])

    def pages() -> Any:
        r = rng.random()
        if r < 0.7:
            p = k.alloc_pages(rng.choice([1, 2, 3, 8, 64, 300]))
            owned.extend(p)
            return p
        if r < 0.8 and owned:
            return rng.sample(owned, min(len(owned), rng.randrange(1, 5)))
        return rng.choice([[], [0], [-1], [1 << 40], [k.phys.max_pfn], [k.phys.max_pfn - 1] * 2,
                           np.array([1, 2], dtype=np.int64), list(range(5))])  # fmt: skip

    def without_leak(release: Callable[[int], object]) -> Callable[[], object]:
        def call() -> object:
            a = addr()
            ok = isinstance(a, int) and not isinstance(a, bool) and 0 <= a < 1 << 64
            vm = k.find_vm_area(a & ~4095) if ok else None
            if vm is not None and vm.nr_pages and vm.pages is not None:
                return None  # would leak a vmalloc'ed area's pages (the kernel's too)
            return release(a)

        return call

    def free_vm_area() -> object:
        if not vms:
            return None
        vm = vms.pop(rng.randrange(len(vms)))
        if vm is None or (vm.nr_pages and vm.pages is not None):
            return None
        return k.free_vm_area(vm, cpu=cpu())

    vmalloc_node = getattr(k, "__vmalloc_node")
    node_range = getattr(k, "__vmalloc_node_range")
    get_area_caller = getattr(k, "__get_vm_area_caller")
    calls: dict[str, Callable[[], object]] = {
        "vmalloc": lambda: k.vmalloc(size(), cpu=cpu()),
        "vzalloc": lambda: k.vzalloc(size(), cpu=cpu()),
        "vmalloc_node": lambda: k.vmalloc_node(size(), node(), cpu=cpu()),
        "vmalloc_user": lambda: k.vmalloc_user(size(), cpu=cpu()),
        "vmalloc_32": lambda: k.vmalloc_32(size(), cpu=cpu()),
        "__vmalloc": lambda: getattr(k, "__vmalloc")(size(), rng.choice(GFPS), cpu=cpu()),
        "__vmalloc_node": lambda: vmalloc_node(
            size(),
            rng.choice([1, 4096, 3, 0, 1 << 21, 1 << 63]),
            rng.choice(GFPS),
            node(),
            cpu=cpu(),
        ),
        "__vmalloc_node_range": lambda: node_range(
            size(),
            rng.choice([1, 4096, 1 << 21]),
            rng.choice([None, k.VMALLOC_START, k.VMALLOC_START + 4096 * rng.randrange(100), 0]),
            rng.choice([None, k.VMALLOC_END, k.VMALLOC_START + (1 << 20), k.VMALLOC_START]),
            rng.choice(GFPS),
            cpu=cpu(),
        ),
        "vmalloc_huge": lambda: k.vmalloc_huge(size(), rng.choice(GFPS), cpu=cpu()),
        "vrealloc": lambda: k.vrealloc(
            rng.choice([0, addr()]), size(), rng.choice(GFPS), cpu=cpu()
        ),
        "kvmalloc": lambda: k.kvmalloc(size(), rng.choice(GFPS), cpu=cpu()),
        "kvmalloc_node": lambda: k.kvmalloc_node(
            size(), rng.choice(GFPS), node(), cpu=cpu(), align=rng.choice([1, 8, 4096, 3])
        ),
        "kvfree": lambda: k.kvfree(addr(), cpu=cpu()),
        "vfree": lambda: k.vfree(addr(), cpu=cpu(), in_interrupt=rng.random() < 0.2),
        "vfree_atomic": lambda: k.vfree_atomic(addr(), cpu=cpu()),
        "vunmap": without_leak(lambda a: k.vunmap(a, cpu=cpu())),
        "iounmap": without_leak(lambda a: k.iounmap(a, cpu=cpu())),
        "remove_vm_area": without_leak(lambda a: k.remove_vm_area(a, cpu=cpu())),
        "free_vm_area": free_vm_area,
        "vmap": lambda: k.vmap(
            pages(),
            rng.choice([None, None, 0, 1, 2, 100, -1]),
            flags=rng.choice([4, 0, 0x104, 0x204]),
            cpu=cpu(),
        ),
        "vmap_pfn": lambda: k.vmap_pfn(
            rng.choice([[0x100000, 0x100001], pages(), [1 << 45], []]), cpu=cpu()
        ),
        "vm_map_ram": lambda: k.vm_map_ram(
            pages(), rng.choice([None, None, 0, 1, 2, 100]), node=node(), cpu=cpu()
        ),
        "vm_unmap_ram": lambda: k.vm_unmap_ram(
            addr(), rng.choice([1, 2, 3, 8, 64, 300, 0, -1]), cpu=cpu()
        ),
        "ioremap": lambda: k.ioremap(
            rng.choice([0xFED00000, 0xFE000123, 0, -4096, 1 << 46, 1 << 52, 0x1000, 1 << 64]),
            size(),
            cpu=cpu(),
        ),
        "get_vm_area": lambda: vms.append(
            k.get_vm_area(size(), rng.choice([0, 4, 1, 0x40, 1 << 40]), cpu=cpu())
        ),
        "__get_vm_area_caller": lambda: vms.append(
            get_area_caller(
                size(),
                4,
                rng.choice([k.VMALLOC_START, 0, k.VMALLOC_END - 8192]),
                rng.choice([k.VMALLOC_END, k.VMALLOC_START + 8192, 0]),
                None,
                cpu=cpu(),
            )
        ),
        "find_vm_area": lambda: k.find_vm_area(addr()),
        "vread": lambda: k.vread(addr(), rng.choice([0, 1, 4096, 10000, -1, 1 << 22])),
        "vwrite": lambda: k.vwrite(addr(), b"x" * rng.choice([0, 1, 4096, 9000])),
        "vmalloc_to_page": lambda: k.vmalloc_to_page(addr()),
        "vmalloc_to_pfn": lambda: k.vmalloc_to_pfn(addr()),
        "free_pages": lambda: k.free_pages(pages()),
        "alloc_vmap_area": lambda: k.alloc_vmap_area(
            size(),
            rng.choice([1, 4096, 3, 0]),
            rng.choice([None, k.VMALLOC_START, 4096, -1]),
            rng.choice([None, k.VMALLOC_END, 1 << 20]),
            cpu=cpu(),
        ),
        "free_vmap_area_noflush": lambda: k.free_vmap_area_noflush(addr(), cpu=cpu()),
        "pcpu_get_vm_areas": lambda: k.pcpu_get_vm_areas(
            rng.choice([[0], [0, 1 << 20], [0, 4096], [4096, 0]]),
            rng.choice([[8192], [8192, 8192], [3, 5]]),
            rng.choice([4096, 8192, 3]),
            cpu=cpu(),
        ),
        "vm_unmap_aliases": lambda: k.vm_unmap_aliases(cpu=cpu()),
        "purge_vmap_area_lazy": k.purge_vmap_area_lazy,
        "drop_caches": lambda: k.drop_caches(rng.choice([1, 2, 3, 0, 4])),
        "run_deferred_work": k.run_deferred_work,
        "kmalloc": lambda: k.kmalloc(size(), rng.choice(GFPS)),
        "kfree": lambda: k.kfree(addr()),
    }
    return execute(k, calls, rng, steps, where=f"{label} profile={profile} strict={strict}",
                   full_every=full_every, out=out, label=label, irq=0.05,
                   addrs=addrs)  # fmt: skip


def execute(
    k: Kernel,
    calls: dict[str, Callable[[], Any]],
    rng: random.Random,
    steps: int,
    *,
    where: str,
    full_every: int,
    out: Callable[[str], None] | None,
    label: str,
    irq: float = 0.0,
    allowed: tuple[type[BaseException], ...] = ALLOWED,
    shown: tuple[int, int] = (200, 200),
    addr_attrs: tuple[str, ...] = ("addr",),
    addrs: list[int] | None = None,
) -> dict[str, int]:
    """Run ``steps`` calls drawn from ``calls`` on ``k``, each checked, and the final
    check; return how often each outcome came (``ok``, an allowed exception's name).

    ``irq``: the share of calls made in interrupt context (drawn per call when > 0);
    ``shown``: how much of a result's and of an error's text a printed line keeps;
    ``addr_attrs``: the attributes of a result whose address joins ``addrs`` (the
    caller's pool of addresses to reuse)."""
    if addrs is None:
        addrs = []
    names = sorted(calls)
    outcomes: dict[str, int] = {}
    for step in range(steps):
        name = rng.choice(names)
        at = f"{where} step={step} {name}"
        try:
            if irq and rng.random() < irq:
                with k.interrupt_context():
                    r = calls[name]()
            else:
                r = calls[name]()
            kind = "ok"
            text = (f"bytes[{len(r)}] {hashlib.sha1(r).hexdigest()[:12]}"
                    if isinstance(r, bytes) else repr(r)[: shown[0]])  # fmt: skip
            if isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r:
                addrs.append(int(r))
            else:
                for attr in addr_attrs:
                    if getattr(r, attr, None):
                        addrs.append(int(getattr(r, attr)))
                        break
        except allowed as e:
            kind, text = type(e).__name__, str(e)[: shown[1]]
        except MemoryError as e:
            if not str(e):
                raise ChaosFailure(f"{at}: bare MemoryError") from e
            kind, text = "MemoryError", str(e).split(";")[0]  # (not the host's budget)
        except Exception as e:
            raise ChaosFailure(f"{at}: {type(e).__name__}: {e}") from e
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if out is not None:
            out(f"{label} {step} {name} {kind} {text}")
        try:
            k.check(full=step % full_every == full_every - 1)
        except AssertionError as e:
            raise ChaosFailure(f"{at}: check() failed after the call: {e}") from e
    try:
        k.check()
    except AssertionError as e:
        raise ChaosFailure(f"{where}: final check: {e}") from e
    if out is not None:
        out(k.vmallocinfo() + k.meminfo() + k.dmesg())
    return outcomes


def plan(seed: int, runs: int) -> list[tuple[str, random.Random, str, bool, int]]:
    """``runs`` (label, rng, profile, strict, steps) cases of ``seed``."""
    out = []
    for i in range(runs):
        rng = random.Random(f"{seed}:{i}")
        out.append((f"run {i}", rng, rng.choice(["4.19", "5.4", "6.18"]), rng.random() < 0.4,
                    rng.choice([100, 200, 400])))  # fmt: skip
    return out


if __name__ == "__main__":
    seed, runs = int(sys.argv[1]), int(sys.argv[2])
    for label, rng, profile, strict, steps in plan(seed, runs):
        run(rng, profile, strict, steps, out=print, label=label)
