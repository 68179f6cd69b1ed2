"""``lib/test_vmalloc.c`` and ``test_vmalloc.sh`` as model workloads.

Every test case of the kernel's vmalloc test module runs against a model
:class:`~pyvmalloc.kernel.Kernel`, with the module parameters, defaults and output of
the module its profile ships (``KernelProfile.test_vmalloc``, a
:class:`~pyvmalloc.config.TestVmallocModule`; every difference between the two is a
field of it):

* **the "5.4" module** (profiles "5.4" and "4.19"): the eight cases of the v5.1–5.4 module
  (``fix_size_alloc_test`` with a fixed 3 pages), parameters ``single_cpu_test``,
  ``sequential_test_order``, ``test_repeat_count``, ``test_loop_count``,
  ``run_test_mask`` (default INT_MAX), one worker pinned to each online CPU unless
  ``single_cpu_test``, ``All test took CPU%d=...``. The module did not exist in 4.19
  (it arrived in 5.1); the 2019 rewrite's published numbers were taken by running it on
  a 4.20 kernel, which is what the "4.19" profile does here.
* **the "6.18" module** (profile "6.18"): eleven cases (adds the two ``kvfree_rcu`` cases
  and ``vm_map_ram_test``), ``nr_threads`` unpinned workers (worker ``i`` runs on CPU
  ``i % cpus``), ``nr_pages``, ``use_huge``, ``run_test_mask`` default 7 (6.17+),
  ``align_shift_alloc_test`` marked xfail and the ``xfailed:`` column, ``All test took
  worker%d=...``.

**Workers.** Each worker is a Python generator that yields after every API call; a
scheduler seeded from ``seed`` picks which runnable worker makes the next call, so a
run is a deterministic interleaving (one worker: no choice to make). Each worker has
its own random stream (the test order shuffle and the tests' random sizes). Lock
contention is not modelled: every worker's clock advances only by its own calls.

**Model time ("cycles").** The kernel reports ``ktime`` microseconds per test and
``get_cycles()`` per worker. The model has no CPU, so both come from a deterministic
cost model (:class:`CostModel`) charged per API call: a fixed cost per call, per page
allocated/mapped/freed, per list node the 4.19 allocator walks, per free-tree level
the augmented allocator descends, per lazily freed area a purge processes. The
``cycles`` printed are this model time in **nanoseconds**. The figures compare
algorithms and eras, they are not calibrated to a real CPU. (Python wall time per
loop is what ``bench/bench_test_vmalloc.py`` measures.)

**kvfree_rcu.** A small grace-period model (:class:`RcuModel`): ``kvfree_rcu(p)``
queues ``p`` on the calling CPU's list; a grace period completes every
``rcu_gp_interval`` API calls of all workers together (default 1000) or on
:meth:`RcuModel.synchronize_rcu`, and then every object queued *before* it began is
``vfree``'d (on its queue's CPU). So an object is never freed before one full grace
period. The 1- and 2-argument forms behave the same here (the kernel needs the
``rcu_head`` only when it cannot allocate its pointer arrays).

**The test_vmalloc.sh modes** (:data:`MODES`): ``performance``, ``stress``, ``smoke``
with each module's parameter strings; extra ``key=value`` arguments override them (the
real script passes extra arguments to modprobe only without a mode, where it rejects
values <= 0; ``manual`` mode does that).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import (
    INT_MAX,
    NUMA_NO_NODE,
    PAGE_SHIFT,
    PAGE_SIZE,
    TEST_VMALLOC_5_4,
    TEST_VMALLOC_6_18,
    THREAD_ALIGN,
    KernelProfile,
    TestVmallocModule,
    fls,
    get_profile,
)
from pyvmalloc.gfp import __GFP_ZERO, GFP_KERNEL
from pyvmalloc.workloads.percpu import PercpuAllocator

if TYPE_CHECKING:
    from pyvmalloc.kernel import Kernel

__all__ = [
    "CASES",
    "INT_MAX",
    "MODES",
    "CostModel",
    "RcuModel",
    "Summary",
    "TestVmallocParams",
    "TestVmallocRun",
    "align_shift_first_failure",
    "register_cli",
    "run_test_vmalloc",
    "run_test_vmalloc_full",
]

USHRT_MAX = 0xFFFF
_GFP_KERNEL_ZERO = GFP_KERNEL | __GFP_ZERO
#: the one-byte strings the cases store
_BYTE = tuple(bytes((b,)) for b in range(256))
BITS_PER_LONG = 64
#: The compiled harness (``_speedups.tv_loops``): whole loops of the allocate/store/free
#: cases for a lone worker, doing what :class:`Worker`'s methods do (see
#: :meth:`Worker.loops_compiled`). None with the pure-Python reference; tests set it to
#: None to compare the two in one process.
_c_loops: Callable[..., tuple[int, int, tuple[int, ...]]] | None = getattr(
    _speedups, "tv_loops", None
)
#: Loops per compiled call (a progress report and a scheduler turn between calls).
_LOOPS_PER_CALL = 2048

#: The modules the profiles ship, by name (``TestVmallocModule.name``).
MODULES: dict[str, TestVmallocModule] = {m.name: m for m in (TEST_VMALLOC_5_4, TEST_VMALLOC_6_18)}
#: Case names per module, in ``test_case_array`` order (bit ``1 << index``).
CASES: dict[str, tuple[str, ...]] = {n: m.cases for n, m in MODULES.items()}
#: Cases marked ``xfail`` per module (6.17+ only).
XFAIL: dict[str, frozenset[str]] = {n: m.xfail for n, m in MODULES.items()}
#: test_vmalloc.sh presets per module (5.x scripts; 5.13+ scripts).
MODES: dict[str, dict[str, str]] = {n: dict(m.modes) for n, m in MODULES.items()}


def _module(profile: str | KernelProfile | TestVmallocModule) -> TestVmallocModule:
    if isinstance(profile, TestVmallocModule):
        return profile
    return get_profile(profile).test_vmalloc


# ------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------
_BOOL_TRUE = {"1", "y", "Y", "true", "True", "on"}
_BOOL_FALSE = {"0", "n", "N", "false", "False", "off"}


_KSTRTOINT_RE = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\n?", re.ASCII)


def kstrtoint(text: str) -> int:
    """A module parameter's number as ``kstrtoint(s, 0)`` reads it: an optional sign,
    ``0x`` hex, ``0`` octal or decimal, ASCII digits only (no ``_`` or spaces, which
    ``int()`` takes), and one trailing newline."""
    m = _KSTRTOINT_RE.fullmatch(text)
    if m is None or len(m.group(2)) > 24:
        raise ValueError(f"not an integer: {text!r}")
    digits = m.group(2)
    base = 16 if digits[:2].lower() == "0x" else 8 if len(digits) > 1 and digits[0] == "0" else 10
    n = int(digits[2:] if base == 16 else digits, base)
    return -n if m.group(1) == "-" else n


@dataclass
class TestVmallocParams:
    """The module parameters (``modprobe test_vmalloc key=value ...``) of one module.

    Use :meth:`defaults` for the kernel's defaults; parameters the module does not
    have are rejected by :meth:`set` (``single_cpu_test`` only in 5.4, ``nr_threads``,
    ``nr_pages`` and ``use_huge`` only in 6.18).
    """

    __test__ = False  # not a pytest test class

    module: TestVmallocModule = TEST_VMALLOC_6_18
    nr_threads: int = 0
    single_cpu_test: bool = False
    sequential_test_order: bool = False
    test_repeat_count: int = 1
    test_loop_count: int = 1_000_000
    nr_pages: int = 0
    use_huge: bool = False
    run_test_mask: int = 7
    #: Model-only knobs (not module parameters).
    rcu_gp_interval: int = 1000
    check_each_test: bool = False

    @property
    def era(self) -> str:
        """The name of the module these parameters are for ("5.4", "6.18")."""
        return self.module.name

    @classmethod
    def defaults(cls, profile: str | KernelProfile | TestVmallocModule) -> TestVmallocParams:
        """The module defaults of ``profile``'s test_vmalloc (or of a module)."""
        module = _module(profile)
        return cls(module=module, run_test_mask=module.run_test_mask)

    def set(self, key: str, value: str, *, num_cpus: int = 1) -> None:
        """Set one parameter from its modprobe text (``$NUM_CPUS`` expands)."""
        params = self.module.params
        if key not in params and key not in ("rcu_gp_interval",):
            known = ", ".join(params)
            raise ValueError(f"test_vmalloc ({self.era}) has no parameter {key!r}; known: {known}")
        value = value.replace("$NUM_CPUS", str(num_cpus))
        cur = getattr(self, key)
        if isinstance(cur, bool):
            if value in _BOOL_TRUE:
                setattr(self, key, True)
            elif value in _BOOL_FALSE:
                setattr(self, key, False)
            else:
                raise ValueError(f"{key}: not a bool: {value!r}")
        else:
            try:
                n = kstrtoint(value)
            except ValueError:
                raise ValueError(f"{key}: not an integer: {value!r}") from None
            if not -(1 << 31) <= n < (1 << 31):
                raise ValueError(f"{key}: out of int range: {value!r}")
            setattr(self, key, n)

    def apply(self, args: Iterable[str], *, num_cpus: int = 1) -> TestVmallocParams:
        """Apply ``key=value`` strings (a copy is returned)."""
        out = replace(self)
        for arg in args:
            key, sep, value = arg.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {arg!r}")
            out.set(key, value, num_cpus=num_cpus)
        return out

    def normalized(self) -> TestVmallocParams:
        """What ``init_test_configurtion`` makes of the values (clamps)."""
        out = replace(self)
        if "nr_threads" in out.module.params:
            out.nr_threads = min(max(out.nr_threads, 1), USHRT_MAX)
        out.test_repeat_count = max(out.test_repeat_count, 1)
        out.test_loop_count = max(out.test_loop_count, 1)
        return out

    def describe(self) -> str:
        return " ".join(f"{k}={int(getattr(self, k))}" for k in self.module.params)


def mode_params(
    mode: str, profile: str | KernelProfile, num_cpus: int, extra: Sequence[str] = ()
) -> TestVmallocParams:
    """The parameters ``test_vmalloc.sh MODE`` loads the module with, plus ``extra``.

    ``manual`` (the script's fallback without a mode) uses only ``extra`` and, like the
    script, rejects values that are not > 0.
    """
    p = TestVmallocParams.defaults(profile)
    if mode == "manual":
        for arg in extra:
            key, _, value = arg.partition("=")
            try:
                ok = int(value, 0) > 0
            except ValueError:
                ok = False
            if not ok or key not in p.module.params:
                raise ValueError(f"Error: key or value is not correct: {key} {value}")
        return p.apply(extra, num_cpus=num_cpus)
    preset = p.module.mode(mode)
    if preset is None:
        known = ", ".join(m for m, _ in p.module.modes)
        raise ValueError(f"unknown mode {mode!r}; known: {known}, manual")
    return p.apply([*preset.split(), *extra], num_cpus=num_cpus)


# ------------------------------------------------------------------------------------
# Model time and the RCU model
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostModel:
    """Nanoseconds charged per API call (deterministic model time; see module doc)."""

    call_ns: int = 150
    page_ns: int = 60
    write_ns: int = 5
    walk_ns: int = 10
    tree_level_ns: int = 6
    purge_area_ns: int = 40
    pcpu_ns: int = 80


class RcuModel:
    """Per-CPU ``kvfree_rcu`` queues with a grace period every ``interval`` calls."""

    def __init__(self, k: Kernel, interval: int = 1000) -> None:
        self.k = k
        self.interval = max(1, interval)
        self.queues: list[list[int]] = [[] for _ in range(k.machine.cpus_online)]
        #: objects queued before the current grace period began, per CPU
        self.waiting: list[list[int]] = [[] for _ in range(k.machine.cpus_online)]
        self._calls = 0
        self.gp_seq = 0
        self.freed = 0

    def kvfree_rcu(self, addr: int, cpu: int) -> None:
        self.queues[cpu].append(addr)

    def tick(self) -> None:
        """One API call happened somewhere; maybe complete a grace period."""
        self._calls += 1
        if self._calls >= self.interval:
            self._calls = 0
            self._complete_gp()

    def _complete_gp(self) -> None:
        """The grace period ends: free what waited for it; start the next one."""
        self.gp_seq += 1
        for cpu, batch in enumerate(self.waiting):
            for addr in batch:
                self.k.vfree(addr, cpu=cpu)
            self.freed += len(batch)
        self.waiting = self.queues
        self.queues = [[] for _ in self.waiting]

    def synchronize_rcu(self) -> None:
        """Wait for a full grace period: everything queued so far is freed."""
        self._complete_gp()
        self._complete_gp()

    rcu_barrier = synchronize_rcu

    @property
    def pending(self) -> int:
        return sum(map(len, self.queues)) + sum(map(len, self.waiting))


# ------------------------------------------------------------------------------------
# Workers
# ------------------------------------------------------------------------------------
@dataclass
class CaseData:
    passed: int = 0
    failed: int = 0
    xfailed: int = 0
    time_us: int = 0


Step = Generator[None, None, int]


class Worker:
    """One test thread: its CPU, random stream, clock and per-case results."""

    def __init__(self, run: _Runner, index: int, cpu: int) -> None:
        self.run = run
        self.k = run.k
        self.index = index
        self.cpu = cpu
        self.rng = random.Random(f"{run.seed}/worker/{index}")
        self.clock = 0
        self.start = 0
        self.stop = 0
        self.data = [CaseData() for _ in run.cases]
        self.steps = 0
        #: the order the worker runs the cases in (after the shuffle)
        self.order: list[int] = []
        self._v = run.k.vmap_space
        self._tree = run.k.vmap_space.tracks_free_space
        #: 4.19's list allocator counts the nodes its walk visits; the trees do not
        #: (a getattr with a default would raise and catch on every call for them).
        self._walks = hasattr(self._v, "walk_steps")

    # --- charged API calls --------------------------------------------------------
    def _charge(self, pages: int) -> None:
        run = self.run
        c = run.cost
        v = self._v
        ns = c.call_ns + c.page_ns * pages
        purged = v.stats.purged_areas
        if purged != run.seen_purged:
            ns += c.purge_area_ns * (purged - run.seen_purged)
            run.seen_purged = purged
        if self._walks:
            walk = v.walk_steps  # type: ignore[attr-defined]
            if walk != run.seen_walk:
                ns += c.walk_ns * (walk - run.seen_walk)
                run.seen_walk = walk
        self.clock += ns
        self.steps += 1
        # run.rcu.tick(), inlined (two calls per loop of every case)
        rcu = run.rcu
        calls = rcu._calls + 1
        if calls >= rcu.interval:
            rcu._calls = 0
            rcu._complete_gp()
        else:
            rcu._calls = calls

    def _alloc_cost(self) -> None:
        if self._tree:
            self.clock += self.run.cost.tree_level_ns * 2 * fls(self._v.nr_free)

    def vmalloc(self, size: int) -> int:
        p = self.k.vmalloc(size, cpu=self.cpu, caller="test_vmalloc")
        if self._tree:  # self._alloc_cost(), inlined
            self.clock += self.run.cost.tree_level_ns * 2 * fls(self._v.nr_free)
        self._charge(size // PAGE_SIZE)
        return p

    def vmalloc_huge(self, size: int) -> int:
        p = self.k.vmalloc_huge(size, GFP_KERNEL, cpu=self.cpu, caller="test_vmalloc")
        self._alloc_cost()
        self._charge(size // PAGE_SIZE)
        return p

    def vmalloc_node_align(self, size: int, align: int) -> int:
        """5.4: ``__vmalloc_node_range`` over the vmalloc range; 6.18: ``__vmalloc_node``."""
        gfp = _GFP_KERNEL_ZERO
        log = self.k.log
        before = log.lines[-1].seq if log.lines else 0
        if self.run.module.node_align_api == "__vmalloc_node_range":
            p = self.k._vmalloc_node_range(
                size, align, gfp=gfp, node=0, caller="test_vmalloc", cpu=self.cpu
            )
        else:
            p = self.k._vmalloc_node(size, align, gfp, 0, caller="test_vmalloc", cpu=self.cpu)
        if any(ln.level == "BUG" and ln.seq > before for ln in log.lines[-8:]):
            # 4.19: ALIGN() wraps to a low address the old allocator does not reject,
            # and its BUG_ON(va_start < vstart) fires; the real kernel oopses here
            # (the model refuses the call, so the vmalloc fails).
            self.run.kernel_bugs += 1
            p = 0
        self._alloc_cost()
        self._charge(size // PAGE_SIZE)
        return p

    def vfree(self, addr: int, pages: int) -> None:
        self.k.vfree(addr, cpu=self.cpu)
        self._charge(pages)

    def write(self, addr: int, byte: int) -> None:
        """``*(u8 *)addr = byte``: a store through the page tables (``Kernel.write``'s
        work for one byte of a vmalloc'ed address, which never spans a page: the
        translation, which raises PageFault, then the physical write)."""
        pgt = self.k.pgtables
        pa = pgt.translate(addr, True)
        pgt.phys.write(pa >> PAGE_SHIFT, pa & (PAGE_SIZE - 1), _BYTE[byte])
        self.clock += self.run.cost.write_ns

    def kvfree_rcu(self, addr: int) -> None:
        self.run.rcu.kvfree_rcu(addr, self.cpu)
        self._charge(0)

    # --- the compiled harness ---------------------------------------------------------
    def _compiled_args(self) -> tuple[object, ...] | None:
        """What ``_speedups.tv_loops`` needs, or None where the reference must run.

        It runs only for a lone worker (with several, the scheduler picks the next
        worker after every call) whose charged calls are this class's, with the cost
        model's values and the clocks in 64 bits. It calls the compiled whole
        vmalloc()/vfree() only where ``k.vmalloc``/``k.vfree`` are the vmalloc layer's
        methods and those would call them, reads PTEs only while ``translate`` is the
        page tables' own, and stores bytes itself only while ``write`` is the page
        allocator's own; in every other case it calls the Python function.
        """
        if _c_loops is None or len(self.run.workers) != 1 or type(self) is not Worker:
            return None
        if tuple(getattr(Worker, n) for n in _WORKER_METHOD_NAMES) != _WORKER_METHODS:
            return None
        run, k = self.run, self.k
        c = run.cost
        costs = (c.call_ns, c.page_ns, c.write_ns, c.walk_ns, c.tree_level_ns, c.purge_area_ns)
        counters = (self.clock, self.steps, run.seen_purged, run.seen_walk, run.rcu._calls)
        if (
            type(run.rcu) is not RcuModel
            or not all(type(x) is int and 0 <= x < 1 << 24 for x in costs)
            or not all(type(x) is int and 0 <= x < 1 << 60 for x in counters)
        ):
            return None
        import pyvmalloc.vmalloc as vmalloc_layer
        from pyvmalloc.pgtable import _PAGE_PRESENT, _PAGE_RW, PTE_PFN_MASK, PageTables
        from pyvmalloc.phys.buddy import PhysicalMemory

        vm = k.vm
        k_vmalloc, k_vfree = k.vmalloc, k.vfree
        c_vmalloc = (
            vmalloc_layer._c_vmalloc is _speedups.vmalloc_node_range  # type: ignore[union-attr]
            and getattr(k_vmalloc, "__func__", None) is vmalloc_layer.Vmalloc.vmalloc
            and getattr(k_vmalloc, "__self__", None) is vm
        )
        c_vfree = (
            vmalloc_layer._c_vfree is _speedups.vfree  # type: ignore[union-attr]
            and getattr(k_vfree, "__func__", None) is vmalloc_layer.Vmalloc.vfree
            and getattr(k_vfree, "__self__", None) is vm
        )
        pgt = k.pgtables
        phys = pgt.phys
        translate, phys_write = pgt.translate, phys.write
        own_translate = (  # tv_loops tests bits 1 and 2, as translate these constants
            getattr(translate, "__func__", None) is PageTables.translate
            and (_PAGE_PRESENT, _PAGE_RW) == (1, 2)
        )
        own_write = getattr(phys_write, "__func__", None) is PhysicalMemory.write
        ptecache = pgt._ptecache if own_translate and type(pgt._ptecache) is dict else {}
        data = phys._data if type(phys._data) is dict else {}
        return (
            self, run, vm, k_vmalloc, k_vfree, c_vmalloc, c_vfree, self.cpu, "test_vmalloc",
            GFP_KERNEL, self._v, self._tree, self._walks, costs, run.rcu, ptecache,
            pgt.pmd_shift, pgt.pte_entries, PTE_PFN_MASK, translate, data, phys.max_pfn,
            own_write and data is phys._data, phys_write, _BYTE,
        )  # fmt: skip

    def loops_compiled(
        self, loops: int, sizes: tuple[int, ...], pages: tuple[int, ...], data: tuple[int, ...]
    ) -> Generator[None, None, tuple[int, int, tuple[int, ...]]]:
        """Run up to ``loops`` loops of a case in C: per loop ``vmalloc(sizes[j])`` for
        each j (stopping at one that returns 0), ``write(addr_j, data[j])`` for each,
        ``vfree(addr_j, pages[j])`` for each: what the case's Python loop does with these
        methods, in that order (``pages[j]`` must be ``sizes[j] // PAGE_SIZE``, what
        :meth:`vmalloc` charges). Returns (loops done, the j whose vmalloc returned 0 in the
        next loop or -1, that loop's addresses before it); (0, -1, ()) when the compiled
        harness cannot run (:meth:`_compiled_args`), and the case's Python loop does the
        rest. One yield per call of up to ``_LOOPS_PER_CALL`` loops.
        """
        done = 0
        if any(s // PAGE_SIZE != n for s, n in zip(sizes, pages, strict=True)):
            return done, -1, ()  # tv_loops charges pages[j] for the vmalloc too
        while done < loops:
            h = self._compiled_args()
            if h is None or _c_loops is None:
                break
            n, failed, addrs = _c_loops(h, min(loops - done, _LOOPS_PER_CALL), sizes, pages, data)
            done += n
            yield
            if failed >= 0:
                return done, failed, addrs
        return done, -1, ()

    # --- the worker thread (test_func) ----------------------------------------------
    def body(self) -> Step:
        run = self.run
        p = run.params
        n = len(run.cases)
        order = list(range(n))
        below = run.module.random_u32_below
        if not p.sequential_test_order:
            for i in range(n - 1, 0, -1):
                # 5.x: a random u32 mod i; 6.2+: get_random_u32_below(i). Never i itself.
                j = self.rng.randrange(i) if below else self.rng.getrandbits(32) % i
                order[i], order[j] = order[j], order[i]
        self.order = order
        self.start = self.clock
        for index in order:
            if not (p.run_test_mask >> index) & 1:
                continue
            name = run.cases[index]
            func = _CASE_FUNCS[name]
            xfail = name in run.xfail
            t0 = self.clock
            d = self.data[index]
            for _ in range(p.test_repeat_count):
                ret = yield from func(self)
                if ret == 0 and not xfail:
                    d.passed += 1
                elif ret != 0 and xfail:
                    d.xfailed += 1
                else:
                    d.failed += 1
                if p.check_each_test:
                    self.k.check()
                    run.percpu.check()
            d.time_us = (self.clock - t0) // 1000 // p.test_repeat_count
        self.stop = self.clock
        return 0


#: The worker methods the compiled harness does the work of (a test that replaces one
#: gets the Python loop).
_WORKER_METHOD_NAMES = ("vmalloc", "vfree", "write", "_charge", "loops_compiled")
_WORKER_METHODS = tuple(getattr(Worker, n) for n in _WORKER_METHOD_NAMES)


# ------------------------------------------------------------------------------------
# The test cases (generators: one yield per API call)
# ------------------------------------------------------------------------------------
def fix_size_alloc_test(w: Worker) -> Step:
    p = w.run.params
    fixed = w.run.module.fix_size_pages
    npages = fixed or (p.nr_pages if p.nr_pages > 0 else 1)
    size = npages * PAGE_SIZE
    huge = "use_huge" in w.run.module.params and p.use_huge
    done = 0
    if not huge:
        done, failed, _ = yield from w.loops_compiled(p.test_loop_count, (size,), (npages,), (0,))
        if failed == 0:
            return -1
    for _ in range(p.test_loop_count - done):
        ptr = w.vmalloc_huge(size) if huge else w.vmalloc(size)
        yield
        if not ptr:
            return -1
        w.write(ptr, 0)
        w.vfree(ptr, npages)
        yield
    return 0


def full_fit_alloc_test(w: Worker) -> Step:
    junk_length = fls(w.k.machine.cpus_online) * (32 * 1024 * 1024 // PAGE_SIZE)
    arr_size = 8 * junk_length
    arr_pages = -(-arr_size // PAGE_SIZE)
    ptr = w.vmalloc(arr_size)
    yield
    if not ptr:
        return -1
    junk_ptr = w.vmalloc(arr_size)
    yield
    if not junk_ptr:
        w.vfree(ptr, arr_pages)
        yield
        return -1
    ptrs: list[int] = []
    junk: list[int] = []
    for _ in range(junk_length):
        ptrs.append(w.vmalloc(PAGE_SIZE))
        yield
        junk.append(w.vmalloc(PAGE_SIZE))
        yield
    for a in junk:
        if a:
            w.vfree(a, 1)
            yield
    rv = 0
    loops = w.run.params.test_loop_count
    done, failed, _ = yield from w.loops_compiled(loops, (PAGE_SIZE,), (1,), (1,))
    if failed == 0:
        rv, loops = -1, done
    for _ in range(loops - done):
        tmp = w.vmalloc(PAGE_SIZE)
        yield
        if not tmp:
            rv = -1
            break
        w.write(tmp, 1)
        w.vfree(tmp, 1)
        yield
    for a in ptrs:
        if a:
            w.vfree(a, 1)
            yield
    w.vfree(ptr, arr_pages)
    yield
    w.vfree(junk_ptr, arr_pages)
    yield
    return rv


def long_busy_list_alloc_test(w: Worker) -> Step:
    n = 15000
    arr_pages = -(-8 * n // PAGE_SIZE)
    ptr = w.vmalloc(8 * n)
    yield
    if not ptr:
        return -1
    ptrs: list[int] = []
    for _ in range(n):
        ptrs.append(w.vmalloc(PAGE_SIZE))
        yield
    rv = 0
    loops = w.run.params.test_loop_count
    done, failed, addrs = yield from w.loops_compiled(
        loops, (100 * PAGE_SIZE, PAGE_SIZE), (100, 1), (0, 1)
    )
    if failed >= 0:
        if failed == 1:
            w.vfree(addrs[0], 100)
            yield
        rv, loops = -1, done
    for _ in range(loops - done):
        p1 = w.vmalloc(100 * PAGE_SIZE)
        yield
        if not p1:
            rv = -1
            break
        p2 = w.vmalloc(PAGE_SIZE)
        yield
        if not p2:
            w.vfree(p1, 100)
            yield
            rv = -1
            break
        w.write(p1, 0)
        w.write(p2, 1)
        w.vfree(p1, 100)
        yield
        w.vfree(p2, 1)
        yield
    for a in ptrs:
        if a:
            w.vfree(a, 1)
            yield
    w.vfree(ptr, arr_pages)
    yield
    return rv


def random_size_alloc_test(w: Worker) -> Step:
    rng = w.rng
    below = w.run.module.random_u32_below
    for _ in range(w.run.params.test_loop_count):
        n = rng.randint(1, 100) if below else rng.getrandbits(32) % 100 + 1
        p = w.vmalloc(n * PAGE_SIZE)
        yield
        if not p:
            return -1
        w.write(p, 1)
        w.vfree(p, n)
        yield
    return 0


def fix_align_alloc_test(w: Worker) -> Step:
    for _ in range(w.run.params.test_loop_count):
        p = w.vmalloc_node_align(5 * PAGE_SIZE, THREAD_ALIGN << 1)
        yield
        if not p:
            return -1
        w.vfree(p, 5)
        yield
    return 0


def random_size_align_alloc_test(w: Worker) -> Step:
    rng = w.rng
    bits = w.run.module.random_align_bits  # 5.x: an unsigned long; 6.x: get_random_u8()
    for _ in range(w.run.params.test_loop_count):
        rnd = rng.getrandbits(bits)
        align = 1 << (rnd % 23)
        npages = rnd % 10 + 1
        p = w.vmalloc_node_align(npages * PAGE_SIZE, align)
        yield
        if not p:
            return -1
        w.vfree(p, npages)
        yield
    return 0


def align_shift_alloc_test(w: Worker) -> Step:
    for i in range(BITS_PER_LONG):
        p = w.vmalloc_node_align(PAGE_SIZE, 1 << i)
        yield
        if not p:
            w.run.align_shift_failed_at = i
            return -1
        w.vfree(p, 1)
        yield
    return 0


def pcpu_alloc_test(w: Worker) -> Step:
    n = 35000
    rng = w.rng
    pa = w.run.percpu
    below = w.run.module.random_u32_below
    arr_pages = -(-8 * n // PAGE_SIZE)
    arr = w.vmalloc(8 * n)
    yield
    if not arr:
        return -1
    rv = 0
    objs: list[int] = []
    cost = w.run.cost.pcpu_ns
    for i in range(n):
        if below:
            size = rng.randint(1, PAGE_SIZE // 4)
            align = 1 << rng.randint(1, 11)
        else:
            size = rng.getrandbits(32) % (PAGE_SIZE // 4) + 1
            rng.getrandbits(32)  # the unused second random word of the 5.x test
            align = 1 << ((i % 11) + 1)
        obj = pa.alloc_percpu(size, align, cpu=w.cpu)
        w.clock += cost
        w._charge(0)
        yield
        if not obj:
            rv = -1
        objs.append(obj)
    for obj in objs:
        pa.free_percpu(obj, cpu=w.cpu)
        w.clock += cost
        w._charge(0)
        yield
    w.vfree(arr, arr_pages)
    yield
    return rv


def _kvfree_rcu_test(w: Worker) -> Step:
    for _ in range(w.run.params.test_loop_count):
        p = w.vmalloc(PAGE_SIZE)
        yield
        if not p:
            return -1
        w.write(p, ord("a"))
        w.kvfree_rcu(p)
        yield
    return 0


def kvfree_rcu_1_arg_vmalloc_test(w: Worker) -> Step:
    return (yield from _kvfree_rcu_test(w))


def kvfree_rcu_2_arg_vmalloc_test(w: Worker) -> Step:
    return (yield from _kvfree_rcu_test(w))


def vm_map_ram_test(w: Worker) -> Step:
    p = w.run.params
    n = p.nr_pages if p.nr_pages > 0 else 1
    k = w.k
    pages = k.alloc_pages(n)
    w._charge(len(pages))
    yield
    rv = 0
    if len(pages) == n:
        for _ in range(p.test_loop_count):
            v = k.vm_map_ram(pages, n, NUMA_NO_NODE, cpu=w.cpu)
            w._alloc_cost()
            w._charge(n)
            yield
            if not v:  # the kernel test would oops on NULL; the model reports a failure
                rv = -1
                break
            w.write(v, ord("a"))
            k.vm_unmap_ram(v, n, cpu=w.cpu)
            w._charge(n)
            yield
    else:
        rv = -1
    k.free_pages(pages)
    w._charge(len(pages))
    yield
    return rv


_CASE_FUNCS: dict[str, Callable[[Worker], Step]] = {
    f.__name__: f
    for f in (
        fix_size_alloc_test,
        full_fit_alloc_test,
        long_busy_list_alloc_test,
        random_size_alloc_test,
        fix_align_alloc_test,
        random_size_align_alloc_test,
        align_shift_alloc_test,
        pcpu_alloc_test,
        kvfree_rcu_1_arg_vmalloc_test,
        kvfree_rcu_2_arg_vmalloc_test,
        vm_map_ram_test,
    )
}


# ------------------------------------------------------------------------------------
# The driver (do_concurrent_test)
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """One ``Summary:`` line: one case as seen by one worker."""

    worker: int
    name: str
    passed: int
    failed: int
    xfailed: int
    repeat: int
    loops: int
    avg_usec: int
    #: the module prints an ``xfailed:`` column (6.17+)
    xfailed_column: bool

    def line(self) -> str:
        xf = f" xfailed: {self.xfailed}" if self.xfailed_column else ""
        return (
            f"Summary: {self.name} passed: {self.passed} failed: {self.failed}{xf} "
            f"repeat: {self.repeat} loops: {self.loops} avg: {self.avg_usec} usec"
        )


@dataclass
class TestVmallocRun:
    """Everything a run produced: summaries, per-worker cycles, the printed lines."""

    __test__ = False

    params: TestVmallocParams
    summaries: list[Summary]
    #: (label, id, model ns) per worker: ("CPU", cpu, ns) in 5.4, ("worker", i, ns) in 6.x
    took: list[tuple[str, int, int]]
    lines: list[str]
    steps: int
    align_shift_failed_at: int | None
    rcu_grace_periods: int
    percpu_chunks_created: int
    #: kernel BUGs logged by the model during the run (4.19 align_shift_alloc_test)
    kernel_bugs: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.failed == 0 for s in self.summaries)


class _Runner:
    def __init__(
        self, k: Kernel, params: TestVmallocParams, seed: int, cost: CostModel | None
    ) -> None:
        self.k = k
        self.params = params.normalized()
        self.module = self.params.module
        if k.profile.test_vmalloc != self.module:
            raise ValueError(
                f"parameters are for the {self.module.name} module but the model runs "
                f"{k.profile.name} (whose module is {k.profile.test_vmalloc.name})"
            )
        self.seed = seed
        self.cost = cost or CostModel()
        self.cases = self.module.cases
        self.xfail = self.module.xfail
        self.rcu = RcuModel(k, self.params.rcu_gp_interval)
        self.percpu = PercpuAllocator(k)
        self.seen_purged = k.vmap_space.stats.purged_areas
        self.seen_walk: int = getattr(k.vmap_space, "walk_steps", 0)
        self.align_shift_failed_at: int | None = None
        self.kernel_bugs = 0
        cpus = k.machine.cpus_online
        if self.module.workers_per_cpu:
            cpu_ids = [0] if self.params.single_cpu_test else list(range(cpus))
            self.workers = [Worker(self, i, c) for i, c in enumerate(cpu_ids)]
        else:
            self.workers = [Worker(self, i, i % cpus) for i in range(self.params.nr_threads)]

    def estimated_steps(self) -> int:
        """API calls the run will make (for a progress bar; rough for setup phases)."""
        p = self.params
        per = {
            "fix_size_alloc_test": 2 * p.test_loop_count,
            "full_fit_alloc_test": 2 * p.test_loop_count
            + 4 * fls(self.k.machine.cpus_online) * 8192,
            "long_busy_list_alloc_test": 4 * p.test_loop_count + 30000,
            "random_size_alloc_test": 2 * p.test_loop_count,
            "fix_align_alloc_test": 2 * p.test_loop_count,
            "random_size_align_alloc_test": 2 * p.test_loop_count,
            "align_shift_alloc_test": 100,
            "pcpu_alloc_test": 70000,
            "kvfree_rcu_1_arg_vmalloc_test": 2 * p.test_loop_count,
            "kvfree_rcu_2_arg_vmalloc_test": 2 * p.test_loop_count,
            "vm_map_ram_test": 2 * p.test_loop_count,
        }
        one = sum(per[n] for i, n in enumerate(self.cases) if (p.run_test_mask >> i) & 1)
        return one * p.test_repeat_count * len(self.workers)

    def run(self, progress: Callable[[int], None] | None) -> TestVmallocRun:
        gens = [w.body() for w in self.workers]
        sched = random.Random(f"{self.seed}/scheduler")
        done_steps = 0
        if len(gens) == 1:
            g = gens[0]
            w = self.workers[0]
            if progress is None:
                for _ in g:
                    pass
            else:
                # the worker's charged calls (a compiled call makes many per yield)
                report = 0x1000
                for _ in g:
                    if w.steps >= report:
                        progress(w.steps)
                        report = (w.steps | 0xFFF) + 1
            done_steps = w.steps
        else:
            live = list(gens)
            while live:
                i = sched.randrange(len(live))
                try:
                    next(live[i])
                except StopIteration:
                    live.pop(i)
                done_steps += 1
                if progress is not None and not done_steps & 0xFFF:
                    progress(done_steps)
        if progress is not None:
            progress(done_steps)
        return self._report()

    def _report(self) -> TestVmallocRun:
        p = self.params
        summaries: list[Summary] = []
        took: list[tuple[str, int, int]] = []
        lines: list[str] = []
        label = self.module.took_label
        per_cpu = self.module.workers_per_cpu
        for w in self.workers:
            for j, name in enumerate(self.cases):
                if not (p.run_test_mask >> j) & 1:
                    continue
                d = w.data[j]
                s = Summary(
                    worker=w.index,
                    name=name,
                    passed=d.passed,
                    failed=d.failed,
                    xfailed=d.xfailed,
                    repeat=p.test_repeat_count,
                    loops=p.test_loop_count,
                    avg_usec=d.time_us,
                    xfailed_column=self.module.xfailed_column,
                )
                summaries.append(s)
                lines.append(s.line())
            wid = w.cpu if per_cpu else w.index
            took.append((label, wid, w.stop - w.start))
            lines.append(f"All test took {label}{wid}={w.stop - w.start} cycles")
        for line in lines:
            self.k.log.info(line)
        return TestVmallocRun(
            params=p,
            summaries=summaries,
            took=took,
            lines=lines,
            steps=sum(w.steps for w in self.workers),
            align_shift_failed_at=self.align_shift_failed_at,
            rcu_grace_periods=self.rcu.gp_seq,
            percpu_chunks_created=self.percpu.nr_chunks_created,
            kernel_bugs=self.kernel_bugs,
        )

    def finish(self) -> None:
        """Module unload: outstanding kvfree_rcu objects freed, spare percpu chunk gone."""
        self.rcu.rcu_barrier()
        self.percpu.release_empty()


def run_test_vmalloc_full(
    k: Kernel,
    params: TestVmallocParams | None = None,
    seed: int = 1,
    *,
    cost: CostModel | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TestVmallocRun:
    """Load ``test_vmalloc`` into the model ``k``: run, report, clean up.

    ``progress(done, total)`` is called every few thousand API calls. Afterwards every
    object the tests allocated is freed (kvfree_rcu objects after a final
    ``rcu_barrier``); lazily freed areas are left for the model's own purge.
    """
    if params is None:
        params = TestVmallocParams.defaults(k.profile)
    r = _Runner(k, params, seed, cost)
    total = r.estimated_steps()
    cb = None if progress is None else (lambda done: progress(done, total))
    out = r.run(cb)
    r.finish()
    st = k.vmap_space.stats
    out.stats = {
        "allocs": st.allocs,
        "purges": st.purges,
        "purged_areas": st.purged_areas,
        "pool_hits": st.pool_hits,
        "walk_steps": getattr(k.vmap_space, "walk_steps", 0),
    }
    return out


def run_test_vmalloc(
    k: Kernel, params: TestVmallocParams | None = None, seed: int = 1
) -> list[Summary]:
    """Run test_vmalloc on ``k``; the ``Summary`` lines' data (see :class:`TestVmallocRun`)."""
    return run_test_vmalloc_full(k, params, seed).summaries


def align_shift_first_failure(
    vmalloc_start: int, vmalloc_end: int, size: int = 2 * PAGE_SIZE
) -> int:
    """The first ``i`` for which ``align_shift_alloc_test`` cannot place 1 page + guard.

    With an empty vmalloc range the lowest fit starts at ``ALIGN(VMALLOC_START, 1 << i)``;
    the allocation fails when that wraps past ``ULONG_MAX`` or ``start + size`` passes
    ``VMALLOC_END``. x86_64 4-level: VMALLOC_START = 0xffffc90000000000 is a multiple of
    2^40 (0xc9 is odd), the next multiples of 2^41..2^45 are 0xffffca.., 0xffffcc..,
    0xffffd0.., 0xffffd0.., 0xffffe0.. — all below VMALLOC_END = 0xffffe8ffffffffff —
    and the next multiple of 2^46 is 2^64, which wraps: ``i = 46`` fails.
    """
    umax = (1 << 64) - 1
    for i in range(BITS_PER_LONG):
        a = 1 << i
        start = (vmalloc_start + a - 1) & ~(a - 1) & umax
        if start < vmalloc_start or start + size > vmalloc_end:
            return i
    return BITS_PER_LONG


# ------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------
def _usage(module: TestVmallocModule) -> str:
    out = ["test_vmalloc parameters (" + module.name + "):"]
    d = TestVmallocParams.defaults(module)
    for key in module.params:
        out.append(f"  {key}={int(getattr(d, key))}")
    out.append("cases (bit: name):")
    for i, name in enumerate(module.cases):
        xf = " (xfail)" if name in module.xfail else ""
        out.append(f"  {1 << i:5}: {name}{xf}")
    out.append("modes: " + "; ".join(f"{m}: {s}" for m, s in module.modes))
    return "\n".join(out)


#: Model API calls per second of a test_vmalloc run, for the up-front time estimate:
#: measured with ``pyvmalloc test-vmalloc performance`` (24.3 million calls in 107 s
#: CPU time at the kernel's defaults, with the accelerator's bulk pages and compiled
#: harness, on the project's 2-core machine, Python 3.11; the reference makes about
#: 50,000 calls/s). Progress lines show the real rate.
CALLS_PER_SECOND = 220_000
#: The same with the pure-Python reference (``PYVMALLOC_PURE=1`` or no compiler).
CALLS_PER_SECOND_REFERENCE = 50_000


def calls_per_second() -> int:
    """The estimate's rate for the implementation in use (see :mod:`pyvmalloc._accel`)."""
    from pyvmalloc._accel import ACCELERATED

    return CALLS_PER_SECOND if ACCELERATED else CALLS_PER_SECOND_REFERENCE


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _check_words(mode: str, extra: Sequence[str], module: TestVmallocModule) -> None:
    """Clear errors for ``key=value`` words before the module's own terse one."""
    known = module.params
    for w in extra:
        key, eq, value = w.partition("=")
        if not eq:
            raise ValueError(
                f"test-vmalloc: {w!r} after {mode} is not key=value (parameters: {', '.join(known)})"
            )
        if key not in known:
            raise ValueError(
                f"test-vmalloc: unknown parameter {key!r} for the {module.name} module; "
                f"known: {', '.join(known)}"
            )
        try:
            v = kstrtoint(value)
        except ValueError:
            raise ValueError(f"test-vmalloc: {key}={value}: the value is not an integer") from None
        if mode == "manual" and v <= 0:
            raise ValueError(
                f"test-vmalloc: {key}={value}: test_vmalloc.sh's manual mode takes only values > 0"
            )


def _cmd_test_vmalloc(args: argparse.Namespace) -> int:
    import time

    from pyvmalloc.cli_output import Ticker, check_writable, console
    from pyvmalloc.kernel import Kernel

    module = get_profile(args.profile).test_vmalloc
    words: list[str] = list(args.args)
    if not words:
        print(_usage(module))
        return 0
    mode = words[0] if "=" not in words[0] else "manual"
    extra = words[1:] if mode != "manual" else words
    modes = dict(module.modes)
    if mode != "manual" and mode not in modes:
        raise ValueError(
            f"test-vmalloc: unknown mode {mode!r}; modes: {', '.join(modes)}, or only "
            "key=value parameters (manual mode)"
        )
    _check_words(mode, extra, module)
    check_writable(args.json, "--json")
    params = mode_params(mode, args.profile, args.cpus, extra)
    if args.loops is not None:
        if args.loops < 1:
            raise ValueError(f"--loops {args.loops}: must be at least 1")
        params.test_loop_count = args.loops
    params.check_each_test = args.check
    k = Kernel(args.profile, cpus=args.cpus)
    err = console(stderr=True)
    t0 = time.perf_counter()
    r = _Runner(k, params, args.seed, None)
    total = r.estimated_steps()
    err.print(
        f"[bold]test_vmalloc[/] {mode} on kernel {args.profile}, {args.cpus} CPUs: "
        f"{params.normalized().describe()} (seed {args.seed})"
    )
    rate = calls_per_second()
    err.print(
        f"about {total:,} API calls: roughly {_duration(total / rate)} at ~{rate:,} calls/s"
        + ("" if args.loops is not None else "; --loops N for a shorter run"),
        markup=False,
    )
    ticker = Ticker("test_vmalloc", total, unit="calls", enabled=not args.no_progress)
    try:
        out = r.run(ticker if total >= 200_000 and not args.no_progress else None)
    finally:
        ticker.close()
    r.finish()
    wall = time.perf_counter() - t0
    if args.json:
        from dataclasses import asdict

        from pyvmalloc.cli_output import write_json

        write_json(
            {
                "params": asdict(params.normalized()),
                "summaries": [asdict(x) for x in out.summaries],
                "took": [{"label": a, "id": b, "model_ns": c} for a, b, c in out.took],
                "api_calls": out.steps,
                "kernel_bugs": out.kernel_bugs,
                "ok": out.ok,
                "wall_seconds": round(wall, 3),
            },
            args.json,
        )
    for line in out.lines if args.json != "-" else ():
        print(line)
    if out.kernel_bugs:
        err.print(
            f"[red]{out.kernel_bugs} kernel BUG(s) during the run[/] (see the model's dmesg); "
            "the real kernel would have oopsed there"
        )
    else:
        k.check()
    err.print(
        f"model: {out.steps:,} API calls in {wall:.1f} s wall; 'cycles' are model "
        f"nanoseconds; {k.vmap_space.nr_busy} busy areas, {k.vmap_space.vmap_lazy_nr} lazy pages left",
        markup=False,
    )
    return 0 if out.ok else 1


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``test-vmalloc MODE [key=value ...]`` to the ``pyvmalloc`` command line."""
    from pyvmalloc.cli_output import add_profile_argument

    p = subparsers.add_parser(
        "test-vmalloc",
        help="run lib/test_vmalloc.c (test_vmalloc.sh modes) in the model",
        description=(
            "Run the kernel's vmalloc test module against the model, as "
            "tools/testing/selftests/mm/test_vmalloc.sh would. MODE is performance, "
            "stress or smoke (the module's presets; more key=value arguments override "
            "them), or omit it and give only key=value module parameters (manual "
            "mode, values must be > 0 as in the script). Times are model time from a "
            "deterministic cost model: 'avg: N usec' is model microseconds, and "
            "'All test took workerN=C cycles' (CPU%%d in 5.4) prints model nanoseconds "
            "as cycles. Without arguments: the parameters and cases. The kernel's "
            "defaults (test_loop_count=1000000) make 'performance' a run of about 2 "
            "minutes on 6.18 (accelerated); the run says its estimate up front and shows progress "
            "on stderr (a line every 5 s when not a terminal)."
        ),
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="MODE|key=value",
        help="performance, stress or smoke, then key=value module parameters",
    )
    add_profile_argument(p)
    p.add_argument("--cpus", type=int, default=2, help="online CPUs ($NUM_CPUS, default 2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random streams (default 1)")
    p.add_argument(
        "--loops",
        type=int,
        default=None,
        help="override test_loop_count (the kernel's 1,000,000 per test takes minutes)",
    )
    p.add_argument("--check", action="store_true", help="run the model's check() after each test")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    from pyvmalloc.cli_output import add_json_argument

    add_json_argument(p, "the summaries")
    p.set_defaults(func=_cmd_test_vmalloc, extra_words="args")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyvmalloc")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(["test-vmalloc", *(sys.argv[1:] if argv is None else argv)])
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
