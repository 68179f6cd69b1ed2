"""Thread stacks as ``kernel/fork.c`` allocates them with ``CONFIG_VMAP_STACK``.

On a real machine most of the vmap allocator's traffic is thread stacks (THREAD_SIZE
16 KiB + guard, aligned to THREAD_ALIGN = 16 KiB on x86_64). But most forks never
reach the allocator: each CPU keeps up to ``NR_CACHED_STACKS`` = 2 freed stacks and
hands them to the next fork on that CPU (zeroed), without any ``vmalloc``. A model of
fork/exit traffic without this cache over-counts ``alloc_vmap_area`` and
``free_vmap_area_noflush`` many times over.

* ``alloc_thread_stack_node``: take a cached stack of this CPU if there is one (and
  clear it), else ``__vmalloc_node(THREAD_SIZE, THREAD_ALIGN, THREADINFO_GFP, node)``.
* ``free_thread_stack``: put the stack into a free slot of this CPU's cache; if both
  are taken, defer to an RCU callback (since 5.17), which tries the cache of the CPU it
  runs on once more and otherwise ``vfree``s the stack — from softirq context, so the
  vfree itself is deferred to a work item (``vfree_atomic``).

>>> from pyvmalloc import Kernel
>>> k = Kernel("6.18", cpus=2)
>>> stacks = ThreadStacks(k)
>>> s = stacks.alloc_thread_stack_node(cpu=0)
>>> hex(s)
'0xffffc90000000000'
>>> stacks.free_thread_stack(s, cpu=0)        # into CPU 0's cache, still mapped
>>> stacks.alloc_thread_stack_node(cpu=0) == s  # reused without any vmalloc
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pyvmalloc.config import NUMA_NO_NODE, THREAD_ALIGN, THREAD_SIZE
from pyvmalloc.gfp import __GFP_ZERO, GFP_KERNEL
from pyvmalloc.kernel import Kernel

__all__ = [
    "NR_CACHED_STACKS",
    "THREAD_ALIGN",
    "THREAD_SIZE",
    "ForkStats",
    "ThreadStacks",
    "fork_workload",
]

NR_CACHED_STACKS = 2
#: THREADINFO_GFP without __GFP_ACCOUNT (the model has no memcg).
THREADINFO_GFP = GFP_KERNEL | __GFP_ZERO


@dataclass
class ForkStats:
    allocs: int = 0
    cache_hits: int = 0
    frees_cached: int = 0
    frees_deferred: int = 0
    rcu_cached: int = 0
    rcu_vfreed: int = 0


@dataclass
class ThreadStacks:
    """Per-CPU stack caches and the RCU-deferred frees of one model kernel."""

    k: Kernel
    cached: list[list[int]] = field(default_factory=list)
    #: Stacks waiting for an RCU grace period: (address, CPU that queued it).
    rcu_pending: list[tuple[int, int]] = field(default_factory=list)
    stats: ForkStats = field(default_factory=ForkStats)

    def __post_init__(self) -> None:
        if not self.cached:
            self.cached = [[] for _ in range(self.k.machine.cpus_online)]

    def alloc_thread_stack_node(self, cpu: int = 0, node: int = NUMA_NO_NODE) -> int:
        """A stack for a new task forked on ``cpu``: cached, or freshly vmalloc'ed."""
        cache = self.cached[cpu]
        if cache:
            stack = cache.pop(0)
            self.k.write(stack, bytes(THREAD_SIZE))  # memset(s->addr, 0, THREAD_SIZE)
            self.stats.cache_hits += 1
            return stack
        caller = self.k.profile.thread_stack_caller
        stack = self.k._vmalloc_node(
            THREAD_SIZE, THREAD_ALIGN, THREADINFO_GFP, node, caller=caller, cpu=cpu
        )
        if stack:
            self.stats.allocs += 1
        return stack

    def _try_release_to_cache(self, stack: int, cpu: int) -> bool:
        cache = self.cached[cpu]
        if len(cache) < NR_CACHED_STACKS:
            cache.append(stack)
            return True
        return False

    def free_thread_stack(self, stack: int, cpu: int = 0) -> None:
        """The task on ``cpu`` is gone: cache its stack, or queue it for RCU."""
        if self._try_release_to_cache(stack, cpu):
            self.stats.frees_cached += 1
            return
        self.rcu_pending.append((stack, cpu))
        self.stats.frees_deferred += 1

    def rcu_grace_period(self) -> int:
        """A grace period ends: run ``thread_stack_free_rcu`` for every queued stack.

        Each callback runs on the CPU that queued it, in softirq context: it tries that
        CPU's cache again, else vfrees (deferred, as vfree is in interrupt context).
        Returns how many stacks were vfreed.
        """
        pending, self.rcu_pending = self.rcu_pending, []
        vfreed = 0
        for stack, cpu in pending:
            if self._try_release_to_cache(stack, cpu):
                self.stats.rcu_cached += 1
                continue
            with self.k.interrupt_context():
                self.k.vfree(stack, cpu=cpu)
            vfreed += 1
        self.stats.rcu_vfreed += vfreed
        self.k.run_deferred_work()
        return vfreed

    def drain(self) -> None:
        """Empty the caches (as if the CPUs went offline): vfree every cached stack."""
        self.rcu_grace_period()
        for cpu, cache in enumerate(self.cached):
            while cache:
                self.k.vfree(cache.pop(), cpu=cpu)


def fork_workload(
    k: Kernel, seed: int = 1, rounds: int = 30, max_threads: int = 120, gp_every: int = 50
) -> ThreadStacks:
    """Rounds of many concurrent threads that all exit: the traffic of ``threads.py``.

    Each round forks 20..``max_threads`` threads on random CPUs, then they exit on
    random CPUs; an RCU grace period ends every ``gp_every`` exits.
    """
    rng = random.Random(seed)
    stacks = ThreadStacks(k)
    cpus = k.machine.cpus_online
    exits = 0
    for _ in range(rounds):
        live = [
            s
            for s in (
                stacks.alloc_thread_stack_node(cpu=rng.randrange(cpus))
                for _ in range(rng.randint(20, max_threads))
            )
            if s
        ]
        rng.shuffle(live)
        for s in live:
            stacks.free_thread_stack(s, cpu=rng.randrange(cpus))
            exits += 1
            if exits % gp_every == 0:
                stacks.rcu_grace_period()
    stacks.rcu_grace_period()
    return stacks
