"""A real-kernel vmalloc workload made of BPF array maps.

Creating a BPF array map whose value area is at least 32 KiB makes the kernel back it
with ``vmalloc`` (``bpf_map_area_alloc`` → ``__vmalloc_node_range``, align 1, the full
vmalloc range, caller ``bpf_map_area_alloc``/``array_map_alloc``). Closing the map's
last fd frees it a little later from a kernel worker (``bpf_map_free_deferred``), so
its ``free_vmap_area_noflush`` event carries a ``kworker`` task and comes
asynchronously.

Sizes, as observed on Linux 6.18 (x86_64): the array is one ``struct bpf_array``
header (a few hundred bytes) followed by ``max_entries × round_up(value_size, 8)``
bytes, so ``value_size=4096, max_entries=k`` is vmalloc'ed as ``k + 1`` pages plus the
guard page: an area of ``k + 2`` pages in ``alloc_vmap_area.size``. The smallest
vmalloc'ed map this way is therefore 10 pages (40 KiB) — below 32 KiB of array the
kernel uses kmalloc. Areas of more than 512 data pages (``size`` > 2 MiB + 8 KiB) also
vmalloc their ``pages`` array (``nr_pages × 8`` bytes > one page), which shows as a
second, small ``alloc_vmap_area`` right after the big one.

Memory is charged to the memory cgroup (no ``RLIMIT_MEMLOCK`` since 5.11); the
generator still raises ``RLIMIT_MEMLOCK`` to infinity when it can, for older kernels.

Run standalone: ``python -m pyvmalloc.trace.bpfload --seed 1 --profile mixed``.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import math
import os
import random
import resource
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "MIN_AREA_PAGES",
    "PROFILES",
    "BpfArea",
    "WorkloadConfig",
    "WorkloadStats",
    "area_pages_for_map",
    "bpf_available",
    "create_area",
    "run_workload",
]

PAGE_SIZE = 4096
SYS_BPF_X86_64 = 321
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
BPF_ATTR_SIZE = 128
#: Smallest ``alloc_vmap_area.size`` (guard included) reachable with value_size 4096.
MIN_AREA_PAGES = 10
#: The biggest single map the generator creates (pages, guard included).
MAX_AREA_PAGES = 8192

CpuMode = Literal["any", "0", "1", "spread"]
Profile = Literal["mixed", "churn", "longlived", "small"]

PROFILES: tuple[str, ...] = ("mixed", "churn", "longlived", "small")

_libc: ctypes.CDLL | None = None


def _syscall() -> Callable[..., int]:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn: Callable[..., int] = _libc.syscall
    return fn


def current_cpu() -> int:
    """The CPU this thread runs on now (``sched_getcpu(3)``)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    cpu: int = _libc.sched_getcpu()
    return cpu


def area_pages_for_map(max_entries: int) -> int:
    """``alloc_vmap_area.size`` in pages of an array map of ``max_entries`` 4 KiB values."""
    return max_entries + 2


def create_area(pages: int) -> int:
    """Create a BPF array map whose vmalloc area is ``pages`` pages (guard included).

    Returns the map fd; closing it frees the area (asynchronously, in a kworker).
    Raises :class:`OSError` on failure (e.g. ``EPERM`` without ``CAP_BPF``).
    """
    if pages < MIN_AREA_PAGES:
        raise ValueError(f"a BPF array map is vmalloc'ed only from {MIN_AREA_PAGES} pages")
    if os.uname().machine != "x86_64":
        raise OSError(errno.ENOSYS, "the bpf workload knows the syscall number on x86_64 only")
    attr = struct.pack("IIII", BPF_MAP_TYPE_ARRAY, 4, PAGE_SIZE, pages - 2)
    buf = ctypes.create_string_buffer(attr.ljust(BPF_ATTR_SIZE, b"\0"), BPF_ATTR_SIZE)
    fd = _syscall()(SYS_BPF_X86_64, BPF_MAP_CREATE, buf, BPF_ATTR_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(BPF_MAP_CREATE, {pages} pages): {os.strerror(err)}")
    return fd


def bpf_available() -> str | None:
    """``None`` if BPF array maps can be created here, else the reason why not."""
    if sys.platform != "linux":
        return "not Linux"
    if os.uname().machine != "x86_64":
        return "the bpf workload supports x86_64 only"
    try:
        fd = create_area(MIN_AREA_PAGES)
    except OSError as e:
        return f"cannot create a BPF map: {e.strerror}"
    os.close(fd)
    return None


def raise_memlock() -> None:
    """Raise ``RLIMIT_MEMLOCK`` as far as allowed (only matters before Linux 5.11)."""
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        try:
            resource.setrlimit(
                resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
    except (ValueError, OSError):
        pass


@dataclass(slots=True)
class BpfArea:
    fd: int
    pages: int
    cpu: int
    long_lived: bool = False


@dataclass(slots=True)
class WorkloadConfig:
    """What :func:`run_workload` does. All randomness comes from ``seed``."""

    seed: int = 0
    profile: str = "mixed"
    #: ``any`` (no pinning), ``0``/``1`` (pin to that CPU), ``spread`` (random CPU per op).
    cpus: str = "any"
    #: Total bytes to free (lazily) before stopping; 64 MiB crosses the 2-CPU threshold.
    churn_bytes: int = 160 << 20
    #: Upper bound on operations (allocations + frees).
    max_ops: int = 4000
    #: Cap on the live (not yet freed) set, in bytes.
    max_live_bytes: int = 256 << 20
    #: Number of long-lived areas, allocated early, freed only at the very end (or kept
    #: open until the capture ends when ``keep_long_lived``).
    long_lived: int = 8
    #: Sleep between operations (seconds); 0 = as fast as possible.
    pause: float = 0.0
    #: Free everything at the end (long-lived areas last).
    free_at_end: bool = True


@dataclass(slots=True)
class WorkloadStats:
    allocs: int = 0
    frees: int = 0
    alloc_bytes: int = 0
    freed_bytes: int = 0
    failures: int = 0
    sizes: list[int] = field(default_factory=list)
    cpus_used: set[int] = field(default_factory=set)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "allocs": self.allocs,
            "frees": self.frees,
            "alloc_bytes": self.alloc_bytes,
            "freed_bytes": self.freed_bytes,
            "failures": self.failures,
            "cpus_used": sorted(self.cpus_used),
            "seconds": round(self.seconds, 3),
        }


def _pick_pages(rng: random.Random, profile: str) -> int:
    """Area size in pages (guard included) for one allocation."""
    r = rng.random()
    if profile == "small":
        return rng.randint(MIN_AREA_PAGES, 16)
    if profile == "churn":
        # A few exact sizes repeated, so pools get hit; some big ones for volume.
        if r < 0.55:
            return rng.choice((10, 11, 12, 16))
        if r < 0.85:
            return rng.choice((32, 64, 128, 256))
        return rng.choice((257, 520, 1024))
    # mixed / longlived
    if r < 0.55:
        return rng.randint(MIN_AREA_PAGES, 16)  # 40..64 KiB
    if r < 0.80:
        return rng.randint(17, 256)  # up to 1 MiB, still pool size classes
    if r < 0.93:
        return rng.randint(257, 514)  # up to 2 MiB, no pages array
    return rng.randint(515, 1024 if profile == "mixed" else 2048)  # nested pages array


def _set_cpu(mode: str, rng: random.Random, possible: Sequence[int]) -> int | None:
    if mode == "any":
        return None
    if mode == "spread":
        cpu = rng.choice(list(possible))
    else:
        cpu = int(mode)
    os.sched_setaffinity(0, {cpu})
    return cpu


def run_workload(
    cfg: WorkloadConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> WorkloadStats:
    """Run the seeded BPF-map workload in this process; returns what it did.

    The process's CPU affinity is restored afterwards. Every map is closed before
    returning when ``cfg.free_at_end`` (the kernel frees them a few ms later).
    """
    rng = random.Random(cfg.seed)
    stats = WorkloadStats()
    raise_memlock()
    old_affinity = os.sched_getaffinity(0)
    possible = sorted(old_affinity)
    if cfg.cpus not in ("any", "spread") and int(cfg.cpus) not in possible:
        raise ValueError(f"CPU {cfg.cpus} is not available (allowed: {possible})")
    live: list[BpfArea] = []
    live_bytes = 0
    t0 = time.monotonic()
    n_long = cfg.long_lived if cfg.profile != "small" else 0
    if cfg.profile == "longlived":
        n_long = max(n_long, 24)
    p_alloc_base = {"mixed": 0.55, "churn": 0.5, "longlived": 0.6, "small": 0.55}.get(
        cfg.profile, 0.55
    )

    def alloc(pages: int, long_lived: bool = False) -> None:
        nonlocal live_bytes
        cpu = _set_cpu(cfg.cpus, rng, possible)
        try:
            fd = create_area(pages)
        except OSError as e:
            stats.failures += 1
            if log:
                log(f"allocation of {pages} pages failed: {e}")
            if e.errno in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                raise
            return
        real_cpu = cpu if cpu is not None else current_cpu()
        live.append(BpfArea(fd, pages, real_cpu, long_lived))
        live_bytes += pages * PAGE_SIZE
        stats.allocs += 1
        stats.alloc_bytes += pages * PAGE_SIZE
        stats.sizes.append(pages * PAGE_SIZE)
        stats.cpus_used.add(real_cpu)

    def free(idx: int) -> None:
        nonlocal live_bytes
        _set_cpu(cfg.cpus, rng, possible)
        a = live.pop(idx)
        os.close(a.fd)
        live_bytes -= a.pages * PAGE_SIZE
        stats.frees += 1
        stats.freed_bytes += a.pages * PAGE_SIZE
        stats.cpus_used.add(current_cpu())

    try:
        for _ in range(n_long):
            alloc(_pick_pages(rng, cfg.profile), long_lived=True)
        ops = 0
        while ops < cfg.max_ops and stats.freed_bytes < cfg.churn_bytes:
            ops += 1
            short = [i for i, a in enumerate(live) if not a.long_lived]
            want_alloc = rng.random() < p_alloc_base or not short
            if live_bytes > cfg.max_live_bytes and short:
                want_alloc = False
            if want_alloc:
                alloc(_pick_pages(rng, cfg.profile))
            else:
                # Mostly free recent areas (LIFO-ish churn), sometimes an old one.
                if rng.random() < 0.7:
                    idx = short[-1 - min(len(short) - 1, int(rng.expovariate(0.5)))]
                else:
                    idx = rng.choice(short)
                free(idx)
            if cfg.pause:
                time.sleep(cfg.pause)
        if cfg.free_at_end:
            order = [i for i, a in enumerate(live) if not a.long_lived]
            rng.shuffle(order)
            for i in sorted(order, reverse=True):
                free(i)
            while live:
                free(len(live) - 1)
    except BaseException:
        # Interrupted: close everything we hold so no map outlives the run.
        while live:
            os.close(live.pop().fd)
        raise
    finally:
        os.sched_setaffinity(0, old_affinity)
        stats.seconds = time.monotonic() - t0
    if not cfg.free_at_end:
        _kept.extend(live)
    return stats


#: Areas kept alive when ``free_at_end`` is false (closed by :func:`release_kept`).
_kept: list[BpfArea] = []


def release_kept() -> int:
    """Close the maps a ``free_at_end=False`` workload kept open; returns how many."""
    n = len(_kept)
    while _kept:
        os.close(_kept.pop().fd)
    return n


def non_negative_int(text: str) -> int:
    """An argparse type: an ASCII integer >= 0 (a negative count would run nothing, or
    forever, after the capture has changed the machine)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")
    return int(text)


def non_negative_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0 (time.sleep refuses the rest
    mid-capture)."""
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a finite number of seconds >= 0: {text!r}")
    return value


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """The workload options, shared by ``pyvmalloc capture`` and ``python -m``."""
    g = p.add_argument_group("built-in BPF workload")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--profile",
        choices=PROFILES,
        default="mixed",
        help="size/lifetime mix: mixed (40 KiB..4 MiB, long-lived areas), churn (repeated "
        "sizes, many purges), longlived (many areas kept to the end), small (40..64 KiB); "
        "default mixed. Not a kernel profile: the capture records the running kernel",
    )
    g.add_argument(
        "--cpus",
        choices=("any", "0", "1", "spread"),
        default="any",
        help="pin the workload to CPU 0 or 1, spread it randomly per operation, or leave "
        "it to the scheduler (default)",
    )
    g.add_argument(
        "--churn-mb",
        type=non_negative_int,
        default=160,
        help="stop after freeing this many MiB (64 MiB of lazy frees trigger one purge "
        "on a 2-CPU machine; default 160)",
    )
    g.add_argument(
        "--max-ops", type=non_negative_int, default=4000, help="operation limit (default 4000)"
    )
    g.add_argument(
        "--long-lived",
        type=non_negative_int,
        default=8,
        help="areas kept until the end (default 8)",
    )
    g.add_argument(
        "--pause",
        type=non_negative_seconds,
        default=0.0,
        help="seconds to sleep between operations",
    )


def config_from_args(args: argparse.Namespace) -> WorkloadConfig:
    return WorkloadConfig(
        seed=args.seed,
        profile=args.profile,
        cpus=args.cpus,
        churn_bytes=args.churn_mb << 20,
        max_ops=args.max_ops,
        long_lived=args.long_lived,
        pause=args.pause,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pyvmalloc.trace.bpfload",
        description="Run the seeded BPF-map vmalloc workload (needs CAP_BPF, x86_64).",
    )
    add_workload_arguments(p)
    args = p.parse_args(argv)
    why = bpf_available()
    if why:
        print(f"bpfload: {why}", file=sys.stderr)
        return 1
    stats = run_workload(config_from_args(args))
    print(stats.as_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
