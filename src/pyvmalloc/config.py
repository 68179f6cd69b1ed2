"""Machine configuration and kernel profiles.

Two kinds of input decide what the kernel's vmalloc does:

* the **machine** — architecture, paging depth, RAM, CPUs (online and possible),
  NUMA nodes and build options such as ``CONFIG_NR_CPUS``;
* the **kernel version** — the rules of the allocator itself, which changed a lot
  between the 2019 rewrite (v5.2, the seed documents' era: v5.4) and the vmap-node era
  (v6.9 onward, the live machine: v6.18).

:class:`Machine` holds the first, :class:`KernelProfile` the second. Every constant and
rule that differs between kernel versions lives in a profile and nowhere else; the
allocator asks its profile, it never tests a version string.

>>> m = Machine()
>>> hex(m.vmalloc_start), hex(m.vmalloc_end)
('0xffffc90000000000', '0xffffe8ffffffffff')
>>> PROFILES["6.18"].nr_vmap_nodes(m)
2
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

__all__ = [
    "EBUSY",
    "EINVAL",
    "ENOENT",
    "ENOMEM",
    "ERANGE",
    "INT_MAX",
    "NUMA_NO_NODE",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "PROFILES",
    "TEST_VMALLOC_5_4",
    "TEST_VMALLOC_6_18",
    "THREAD_ALIGN",
    "THREAD_SIZE",
    "ULONG_MAX",
    "KernelProfile",
    "Machine",
    "TestVmallocModule",
    "fls",
    "format_size",
    "get_profile",
    "parse_size",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ULONG_MAX = (1 << 64) - 1
#: ``INT_MAX`` (a C ``int`` is 32 bits on every arch the model knows).
INT_MAX = (1 << 31) - 1
#: ``NUMA_NO_NODE``: "any node" for every node argument.
NUMA_NO_NODE = -1
#: ``THREAD_SIZE`` on x86_64 without KASAN (``PAGE_SIZE << 2``); with VMAP_STACK
#: stacks are vmalloc'ed aligned to ``THREAD_ALIGN == THREAD_SIZE``.
THREAD_SIZE = PAGE_SIZE << 2
THREAD_ALIGN = THREAD_SIZE

#: errno values; the kernel returns them negated (``-ENOMEM``), cast to unsigned long
#: where an address is expected.
ENOENT = 2
ENOMEM = 12
EBUSY = 16
EINVAL = 22
ERANGE = 34

Arch = Literal["x86_64", "i386", "arm", "arm64"]

#: Architectures the model knows (``Machine.arch``).
ARCHES: tuple[str, ...] = ("x86_64", "i386", "arm", "arm64")
#: Releases whose arch layout rules are modelled (the profiles' names).
LAYOUT_RELEASES: tuple[str, ...] = ("4.19", "5.4", "6.18")


def fls(x: int) -> int:
    """Find last set bit, 1-based (``fls(0) == 0``, ``fls(1) == 1``, ``fls(2) == 2``)."""
    return x.bit_length()


_SIZE_RE = re.compile(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", re.ASCII)


def parse_size(value: int | str) -> int:
    """Parse a size such as ``4G``, ``512M``, ``64KiB``, ``4096`` or ``0x1000`` into bytes.

    Suffixes are binary (``K`` = 1024), as on the kernel command line (``memparse``,
    which also takes ``0x`` hex). Digits are ASCII, at most as many as an ``unsigned
    long long`` prints (20 decimal, 16 hex).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str, np.integer)):
        raise TypeError(f"a size is an integer or a string such as '4G', not {value!r}")
    if not isinstance(value, str):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return int(value)
    m = _SIZE_RE.fullmatch(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (expected e.g. 4096, 64K, 512M, 4G, 0x1000)")
    digits = m.group(1)
    hexa = digits[:2].lower() == "0x"
    if len(digits) > (18 if hexa else 20):
        raise ValueError(f"not a size: {value[:30]!r}...: more digits than a 64-bit number has")
    shift = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    return int(digits, 16 if hexa else 10) << shift


def format_size(n: int) -> str:
    """A byte count in the binary unit that fits it: ``format_size(3 << 40) == '3.0 TiB'``."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024  # type: ignore[assignment]
        if n < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}"
    raise AssertionError("unreachable")


#: NUMA nodes the model holds (a page's node and zone are uint8 columns).
MAX_MODEL_NODES = 128


def max_physmem_bits(arch: str, paging_levels: int, lpae: bool) -> int:
    """``MAX_PHYSMEM_BITS``: the physical address bits the kernel maps RAM with.

    x86_64: 46, or 52 with 5-level paging (asm/sparsemem.h); arm64: 48
    (``CONFIG_ARM64_PA_BITS`` default); arm: 32, 40 with LPAE; i386 (non-PAE): 32.
    """
    if arch == "x86_64":
        return 52 if paging_levels == 5 else 46
    if arch == "arm64":
        return 48
    return 40 if arch == "arm" and lpae else 32


@dataclass(frozen=True)
class Machine:
    """The simulated machine: what ``arch/`` and the boot configuration decide.

    ``cpus_online`` drives ``lazy_max_pages()``; ``cpus_possible`` drives the number of
    vmap nodes in 6.x; ``nr_cpus`` is ``CONFIG_NR_CPUS`` and sizes vmap blocks.
    ``ram`` and ``numa_nodes`` drive the physical page allocator.
    """

    arch: Arch = "x86_64"
    paging_levels: int = 4
    cpus_online: int = 2
    cpus_possible: int = 0  # 0: same as cpus_online
    nr_cpus: int = 256
    ram: int = 4 << 30
    numa_nodes: int = 1
    #: i386 and arm: ``vmalloc=`` boot option (bytes); 0 = the kernel's default.
    vmalloc_reserve: int = 0
    #: Release whose arch layout rules apply (arm/arm64 changed between 4.19, 5.4 and
    #: 6.18); tools that build a Machine for a profile pass the profile's name.
    kernel_release: str = "6.18"
    #: arm: ``CONFIG_VMSPLIT_*`` ("3G", "3G_OPT", "2G", "1G").
    vmsplit: str = "3G"
    #: arm: ``CONFIG_ARM_LPAE`` (3-level page tables).
    lpae: bool = False
    #: arm: ``CONFIG_HIGHMEM`` (RAM above the lowmem limit is usable as highmem).
    highmem: bool = True
    #: arm: ``CONFIG_THUMB2_KERNEL`` (8 MiB modules area instead of 16 MiB).
    thumb2: bool = False
    #: arm: ``CONFIG_ARM_MODULE_PLTS`` (modules may spill into the vmalloc range).
    module_plts: bool = True
    #: arm: ``CONFIG_SMP`` (UP non-LPAE kernels align ioremap to 16 MiB).
    smp: bool = True
    #: arm: ``PHYS_OFFSET``, the physical address RAM starts at.
    phys_offset: int = 0
    #: arm64: ``CONFIG_ARM64_VA_BITS``.
    va_bits: int = 48
    #: arm64: the granule. The allocator model runs with 4 KiB pages only; the
    #: 16K/64K layouts are :func:`pyvmalloc.arch.arm64.compute_layout`.
    page_size: int = PAGE_SIZE
    layout: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check_types()
        if self.arch not in ARCHES:
            raise ValueError(f"unsupported arch {self.arch!r} ({', '.join(ARCHES)})")
        if self.kernel_release not in LAYOUT_RELEASES:
            raise ValueError(
                f"kernel_release {self.kernel_release!r} unknown ({', '.join(LAYOUT_RELEASES)})"
            )
        if self.arch == "x86_64" and self.paging_levels not in (4, 5):
            raise ValueError("x86_64 has 4- or 5-level paging")
        if self.arch == "i386" and self.paging_levels != 2:
            object.__setattr__(self, "paging_levels", 2)
        if self.page_size != PAGE_SIZE:
            raise ValueError(
                f"the allocator model runs with 4 KiB pages only (PAGE_SIZE is a constant "
                f"of the model), not {self.page_size}; for the arm64 16K/64K layouts use "
                "pyvmalloc.arch.arm64.compute_layout(page_size=..., va_bits=..., release=...)"
            )
        if self.arch == "arm":
            # pgtable-2level.h: two levels; pgtable-3level.h (LPAE): three
            object.__setattr__(self, "paging_levels", 3 if self.lpae else 2)
        if self.arch == "arm64":
            from pyvmalloc.arch.arm64 import VA_BITS_BY_PAGE_SIZE, pgtable_levels

            if self.va_bits not in VA_BITS_BY_PAGE_SIZE[self.page_size]:
                allowed = ", ".join(map(str, VA_BITS_BY_PAGE_SIZE[self.page_size]))
                raise ValueError(
                    f"arm64 with {self.page_size >> 10}K pages has VA_BITS {allowed}, "
                    f"not {self.va_bits}"
                )
            object.__setattr__(self, "paging_levels", pgtable_levels(self.page_size, self.va_bits))
        if self.vmalloc_reserve and self.arch not in ("i386", "arm"):
            raise ValueError("vmalloc= is a boot option of 32-bit kernels (i386, arm) only")
        if self.cpus_online < 1:
            raise ValueError(f"at least one CPU must be online (cpus {self.cpus_online})")
        if self.cpus_possible == 0:
            object.__setattr__(self, "cpus_possible", self.cpus_online)
        if self.cpus_possible < self.cpus_online:
            raise ValueError(
                f"cpus_possible {self.cpus_possible} must be >= cpus_online {self.cpus_online}"
            )
        if self.nr_cpus > 8192:
            raise ValueError(
                f"{self.cpus_possible} CPUs: CONFIG_NR_CPUS is at most 8192 (x86-64 MAXSMP), "
                f"not {self.nr_cpus}"
            )
        if self.cpus_possible > self.nr_cpus:
            raise ValueError(
                f"{self.cpus_possible} CPUs: more than CONFIG_NR_CPUS ({self.nr_cpus})"
            )
        if self.numa_nodes < 1:
            raise ValueError("at least one NUMA node")
        if self.numa_nodes > MAX_MODEL_NODES:
            raise ValueError(
                f"{self.numa_nodes} NUMA nodes: the model keeps a page's node and zone in "
                f"8 bits, so at most {MAX_MODEL_NODES} (the kernel's MAX_NUMNODES is 1024)"
            )
        object.__setattr__(self, "ram", parse_size(self.ram))
        if self.ram < 16 << 20:
            raise ValueError(f"RAM must be at least 16 MiB, not {format_size(self.ram)}")
        object.__setattr__(self, "vmalloc_reserve", parse_size(self.vmalloc_reserve))
        object.__setattr__(self, "phys_offset", parse_size(self.phys_offset))
        if self.arch == "arm" and not self.lpae and self.phys_offset + self.ram > 1 << 32:
            raise ValueError("RAM above 4 GiB needs LPAE (lpae=True) on arm")
        bits = max_physmem_bits(self.arch, self.paging_levels, self.lpae)
        if self.phys_offset + self.ram > 1 << bits:
            raise ValueError(
                f"RAM {format_size(self.ram)} ends past what {self.arch} addresses "
                f"(MAX_PHYSMEM_BITS {bits}: {format_size(1 << bits)})"
            )
        from pyvmalloc.arch import arch_layout  # arch/ reads this class (type-only)

        self.layout.update(arch_layout(self))

    def _check_types(self) -> None:
        """Refuse a field of the wrong type (a float CPU count, ``lpae="no"``) before
        it reaches arithmetic that would fail far from here, or take it as true."""
        for name in ("paging_levels", "cpus_online", "cpus_possible", "nr_cpus",
                     "numa_nodes", "va_bits", "page_size"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Machine {name} must be an integer, not {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("lpae", "highmem", "thumb2", "module_plts", "smp"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"Machine {name} must be True or False, not {value!r}")
            object.__setattr__(self, name, bool(value))
        for name in ("arch", "kernel_release", "vmsplit"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Machine {name} must be a string, not {getattr(self, name)!r}")

    # --- address-space layout (arch/*/include/asm/pgtable_*_types.h) ---------------
    @property
    def vmalloc_start(self) -> int:
        """``VMALLOC_START``: first byte of the vmalloc range."""
        return self.layout["VMALLOC_START"]

    @property
    def vmalloc_end(self) -> int:
        """``VMALLOC_END``: the kernel's (odd, inclusive-looking) end of the range."""
        return self.layout["VMALLOC_END"]

    @property
    def modules_vaddr(self) -> int:
        return self.layout["MODULES_VADDR"]

    @property
    def modules_end(self) -> int:
        return self.layout["MODULES_END"]

    @property
    def ioremap_max_order(self) -> int:
        """``IOREMAP_MAX_ORDER``: the largest ioremap alignment (x86_64 PUD_SHIFT,
        i386 PMD_SHIFT)."""
        return self.layout["IOREMAP_MAX_ORDER"]

    def check_cpu(self, cpu: int) -> None:
        """Reject a CPU number that is not online (``cpu=`` of every model call)."""
        if not 0 <= cpu < self.cpus_online:
            raise ValueError(f"cpu {cpu} is not online (0..{self.cpus_online - 1})")

    @property
    def bits_per_long(self) -> int:
        return 64 if self.arch in ("x86_64", "arm64") else 32

    @property
    def ulong_max(self) -> int:
        return (1 << self.bits_per_long) - 1

    @property
    def vmalloc_total(self) -> int:
        """``VMALLOC_TOTAL`` = END - START, shown as ``VmallocTotal`` in /proc/meminfo."""
        return self.vmalloc_end - self.vmalloc_start

    # --- derived constants ------------------------------------------------------------
    def lazy_max_pages(self) -> int:
        """``lazy_max_pages()``: ``fls(num_online_cpus()) * 32 MiB / PAGE_SIZE``."""
        return fls(self.cpus_online) * ((32 << 20) // PAGE_SIZE)

    @property
    def vmap_max_alloc(self) -> int:
        """``VMAP_MAX_ALLOC`` = ``BITS_PER_LONG`` pages: the largest vb_alloc request."""
        return self.bits_per_long

    @property
    def vmap_bbmap_bits(self) -> int:
        """``VMAP_BBMAP_BITS``: pages per vmap block, a build-config input (NR_CPUS)."""
        vmalloc_space = (128 << 30) if self.bits_per_long == 64 else (128 << 20)
        vmalloc_pages = vmalloc_space // PAGE_SIZE
        nr = 1 << (self.nr_cpus - 1).bit_length()  # roundup_pow_of_two(NR_CPUS)
        return min(1024, max(2 * self.vmap_max_alloc, vmalloc_pages // nr // 16))

    @property
    def vmap_block_size(self) -> int:
        return self.vmap_bbmap_bits * PAGE_SIZE

    def with_(self, **changes: object) -> Machine:
        """A copy with some fields changed (the layout is recomputed)."""
        return replace(self, layout={}, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Kernel profiles
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestVmallocModule:
    """``lib/test_vmalloc.c`` (and ``test_vmalloc.sh``) as shipped with one release.

    The module arrived in v5.1 (Uladzislau Rezki, "vmalloc: add test driver to analyse
    vmalloc allocator"); :data:`TEST_VMALLOC_5_4` is the v5.1–5.4 module,
    :data:`TEST_VMALLOC_6_18` the v6.17+ one. ``name`` is the release the module is
    taken from (it is what the workload prints and what parameters are checked
    against), not a switch: every difference is a field.
    """

    __test__ = False  # not a pytest test class

    name: str
    #: ``test_case_array`` in order: bit ``1 << i`` of ``run_test_mask`` runs case i.
    cases: tuple[str, ...]
    #: Cases marked ``xfail`` (v6.17: ``align_shift_alloc_test``).
    xfail: frozenset[str]
    #: The module parameters (``single_cpu_test`` until v5.13's ``nr_threads``;
    #: ``nr_pages`` and ``use_huge`` later).
    params: tuple[str, ...]
    #: ``test_vmalloc.sh`` presets: (mode, modprobe parameters).
    modes: tuple[tuple[str, str], ...]
    #: Default ``run_test_mask``: INT_MAX (every case) before v6.17, 7 since.
    run_test_mask: int
    #: Pages of ``fix_size_alloc_test``: a fixed 3 in 5.x; 0 = the ``nr_pages``
    #: parameter (0 meaning 1).
    fix_size_pages: int
    #: 5.x: one worker kthread bound to each online CPU (CPU 0 only with
    #: ``single_cpu_test``); v5.13+: ``nr_threads`` unbound workers.
    workers_per_cpu: bool
    #: ``All test took <label><id>=... cycles``: "CPU" (the CPU id) or "worker" (index).
    took_label: str
    #: v6.2 (Jason A. Donenfeld, "treewide: use get_random_u32_below()"): bounded
    #: random numbers come from ``get_random_u32_below(n)``; before, ``get_random_bytes``
    #: of a u32 taken ``% n``.
    random_u32_below: bool
    #: Bits of the random word of ``random_size_align_alloc_test``: an unsigned long
    #: (64) in 5.x, ``get_random_u8()`` (8) in 6.x.
    random_align_bits: int
    #: The ``Summary:`` line has an ``xfailed:`` column (v6.17).
    xfailed_column: bool
    #: ``fix_align``/``random_size_align``/``align_shift`` call
    #: ``__vmalloc_node_range`` over the vmalloc range (5.x) or ``__vmalloc_node``.
    node_align_api: Literal["__vmalloc_node_range", "__vmalloc_node"]

    def __str__(self) -> str:
        return f"lib/test_vmalloc.c of {self.name} ({len(self.cases)} cases)"

    def mode(self, name: str) -> str | None:
        """The modprobe parameters of a ``test_vmalloc.sh`` mode, or None."""
        return dict(self.modes).get(name)


_TEST_CASES_5 = (
    "fix_size_alloc_test",
    "full_fit_alloc_test",
    "long_busy_list_alloc_test",
    "random_size_alloc_test",
    "fix_align_alloc_test",
    "random_size_align_alloc_test",
    "align_shift_alloc_test",
    "pcpu_alloc_test",
)

TEST_VMALLOC_5_4 = TestVmallocModule(
    name="5.4",
    cases=_TEST_CASES_5,
    xfail=frozenset(),
    params=(
        "single_cpu_test",
        "sequential_test_order",
        "test_repeat_count",
        "test_loop_count",
        "run_test_mask",
    ),
    modes=(
        ("performance", "single_cpu_test=1 sequential_test_order=1 test_repeat_count=3"),
        ("smoke", "single_cpu_test=1 test_loop_count=10000 test_repeat_count=10"),
        ("stress", "test_repeat_count=20"),
    ),
    run_test_mask=INT_MAX,
    fix_size_pages=3,
    workers_per_cpu=True,
    took_label="CPU",
    random_u32_below=False,
    random_align_bits=64,
    xfailed_column=False,
    node_align_api="__vmalloc_node_range",
)

TEST_VMALLOC_6_18 = TestVmallocModule(
    name="6.18",
    cases=(
        *_TEST_CASES_5,
        "kvfree_rcu_1_arg_vmalloc_test",
        "kvfree_rcu_2_arg_vmalloc_test",
        "vm_map_ram_test",
    ),
    xfail=frozenset({"align_shift_alloc_test"}),
    params=(
        "nr_threads",
        "sequential_test_order",
        "test_repeat_count",
        "test_loop_count",
        "nr_pages",
        "use_huge",
        "run_test_mask",
    ),
    modes=(
        ("performance", "sequential_test_order=1 test_repeat_count=3"),
        ("smoke", "test_loop_count=10000 test_repeat_count=10"),
        ("stress", "nr_threads=$NUM_CPUS test_repeat_count=20"),
    ),
    run_test_mask=7,
    fix_size_pages=0,
    workers_per_cpu=False,
    took_label="worker",
    random_u32_below=True,
    random_align_bits=8,
    xfailed_column=True,
    node_align_api="__vmalloc_node",
)


@dataclass(frozen=True)
class KernelProfile:
    """The allocator rules of one kernel version.

    Each field documents the kernel change that introduced it, so a reader can tell
    why the model behaves differently under "5.4" and "6.18".
    """

    name: str
    #: Search length: v5.2–5.15 always search ``size + align - 1``; since v5.18
    #: ("adjust_search_size") only when align > PAGE_SIZE and the range is not exact.
    adjust_search_size: bool
    #: v5.16 ("find_vmap_lowest_match() fix"): on roll-back, shift vstart to
    #: ``ancestor.va_start + 1`` so a searched subtree is never re-entered.
    rollback_shifts_vstart: bool
    #: v6.16 (Baoquan He): alloc errors are negative errno values instead of ``vend``.
    errno_errors: bool
    #: v6.9 (Rezki, "Mitigate a vmap lock contention"): per-CPU vmap nodes with pools.
    vmap_nodes: bool
    #: ~v5.19/6.0: the lazy purge runs from a work item instead of synchronously.
    deferred_purge: bool
    #: v5.4: merge_or_add propagates after each step and extends prev before
    #: unlinking next; v5.6+: one propagation at the end, next unlinked first.
    merge_propagates_each_step: bool
    #: v6.2 added the ``vmalloc`` tracepoints.
    has_tracepoints: bool
    #: find_vmap_area() visits nodes stepping -1 (v6.16+) or +1 (v6.9–6.15).
    node_lookup_step: int
    #: The warning printed when alloc_vmap_area gives up (``%lu`` size, range).
    alloc_fail_warning: str
    #: Maximum buddy order (MAX_ORDER-1 before v6.4, MAX_PAGE_ORDER after): 10.
    max_page_order: int = 10
    #: Page allocation in __vmalloc_area_node: one page at a time (5.4) or bulk (6.x).
    bulk_page_alloc: bool = False
    #: pcp ``high``: the zone's low watermark split over the node's CPUs, at least
    #: ``4 * batch`` (zone_highsize(), v5.14, Mel Gorman, "mm/page_alloc: disassociate
    #: the pcp->high from pcp->batch"); before, ``6 * batch`` (pageset_set_batch()).
    pcp_high_from_low_wmark: bool = True
    #: VM_ALLOW_HUGE_VMAP huge mappings (v5.13+, x86_64 since v5.18).
    huge_vmalloc: bool = False
    #: Pool size classes (MAX_VA_SIZE_PAGES) in 6.x.
    max_va_size_pages: int = 256
    #: v6.16 decay rule: classes with < 4 entries survive a partial decay.
    decay_keeps_small_classes: bool = True
    #: Where a new area goes: a placement policy's name (see :mod:`pyvmalloc.policies`).
    #: "list-walk": before v5.2, a first-fit walk of the busy list from
    #: ``free_vmap_cache``; "lowest-match": since v5.2 (Uladzislau Rezki, "mm/vmalloc.c: keep
    #: track of free blocks for vmap allocation"), the lowest fitting block of the
    #: augmented free tree.
    placement: str = "lowest-match"
    #: What is recycled without a search: a pool policy's name. "none" before v6.9;
    #: "node-pools" since v6.9 (Rezki, "mm: vmalloc: Offload
    #: free_vmap_area_lock lock"): per-node exact-size pools refilled at purge.
    pools: str = "none"
    #: /proc/vmallocinfo skips VM_UNINITIALIZED areas (v6.16, also 6.12.y stable).
    vmallocinfo_skips_uninitialized: bool = False

    # --- the vm_struct / vmalloc layer (mm/vmalloc.c) ------------------------------
    #: ``sizeof(struct vm_struct)`` on 64-bit, which picks its kmalloc cache: 5.4 has
    #: 8 words (64, kmalloc-64); v5.13 added ``page_order`` (packed beside
    #: ``nr_pages``) and v6.15 ``requested_size``: 72 bytes, kmalloc-96.
    sizeof_vm_struct: int = 64
    #: ``vm_struct.requested_size`` remembers the caller's size (v6.15, Kees Cook,
    #: "mm: vmalloc: support more granular vrealloc() sizing"); without it the model
    #: keeps the area size there.
    vm_requested_size: bool = False
    #: ``vmalloc``/``vzalloc`` go through ``__vmalloc_node_flags`` and ``kvmalloc``
    #: falls back through ``__vmalloc_node_flags_caller``; v5.8 (Christoph Hellwig,
    #: "mm: remove __vmalloc_node_flags_caller") calls ``__vmalloc_node`` directly.
    #: Both pass plain ``GFP_KERNEL`` (v4.12, Michal Hocko, "mm, vmalloc: use
    #: __GFP_HIGHMEM implicitly"): ``__vmalloc_area_node`` adds the HIGHMEM bit for
    #: the page allocations only (see ``pages_array_highmem``).
    vmalloc_node_flags: bool = True
    #: 5.4 has ``map_vm_area`` (removed in v5.8, Christoph Hellwig, "mm: remove
    #: map_vm_area"); its page-range mapper is named ``vmap_page_range`` (v5.13:
    #: ``vmap_pages_range``, Nicholas Piggin).
    has_map_vm_area: bool = True
    #: The failure handling of ``__vmalloc_node_range`` since v5.13–5.15 (reworked
    #: with huge vmalloc and the bulk allocator; the exact commits are not pinned
    #: here): ``WARN_ON_ONCE(!size)``, the unaligned size is checked against
    #: ``totalram_pages()``, and each failure is worded ``vmalloc error: size %lu,
    #: <what failed>``; a failed pages array WARNs and ``free_vm_area``s. Before
    #: (5.4): ``PAGE_ALIGN`` first, then ``vmalloc: allocation failure: %lu bytes`` /
    #: ``..., allocated %ld of %ld bytes``, and a failed pages array returns NULL
    #: without a warning of its own.
    vmalloc_error_warnings: bool = False
    #: The pages array, when it is vmalloc'ed itself, is asked with ``__GFP_HIGHMEM``
    #: (5.4's ``nested_gfp | highmem_mask``); 6.18 passes ``nested_gfp`` only (the
    #: commit that dropped it is not pinned here). With it, 5.4 keeps
    #: ``highmem_mask`` apart from ``gfp_mask``, so its warn_alloc lines print the
    #: caller's mask (``mode:0xcc0(GFP_KERNEL)`` for vmalloc); 6.18 ORs
    #: ``__GFP_HIGHMEM`` into ``gfp_mask`` first and prints it.
    pages_array_highmem: bool = True
    #: 5.4's ``vfree`` and ``vunmap`` share ``__vunmap``, which WARNs ``Trying to
    #: vfree() bad address`` for an unaligned address and ``... nonexistent vm area``
    #: before ``remove_vm_area``. v6.3 (Christoph Hellwig, "mm: remove __vunmap"):
    #: ``remove_vm_area`` WARNs on an unaligned address itself and ``vunmap`` has its
    #: own ``Trying to vunmap() nonexistent vm area`` text.
    vunmap_helper: bool = True
    #: ``vmap`` maps ``pgprot_nx(prot)`` (v5.8, Christoph Hellwig, "mm: enforce that
    #: vmap can't map pages executable"), WARNs and drops ``VM_NO_GUARD`` (Christoph
    #: Hellwig, "mm/vmalloc: don't allow VM_NO_GUARD on vmap()") and WARNs and fails
    #: on ``VM_FLUSH_RESET_PERMS``: all in v6.18, none in v5.4 (modelled together).
    vmap_checks_flags: bool = False
    #: kvmalloc's gfp rules of v6.18 (modelled together): any blocking gfp may fall
    #: back to vmalloc (v5.17, Michal Hocko, "mm: allow !GFP_KERNEL allocations for
    #: kvmalloc"), sizes above INT_MAX WARN (v5.15, Linus Torvalds, "mm: don't allow
    #: oversized kvmalloc() calls"), the kmalloc try drops direct reclaim and
    #: ``__GFP_NOFAIL`` instead of adding ``__GFP_NORETRY``, and the fallback allows
    #: huge mappings. 5.4: non-GFP_KERNEL masks use kmalloc only.
    kvmalloc_any_gfp: bool = False
    #: ``vrealloc`` exists (v6.12, Danilo Krummrich, "mm: vmalloc: implement
    #: vrealloc()").
    has_vrealloc: bool = False
    #: vm_map_ram areas carry ``VMAP_RAM`` (blocks also ``VMAP_BLOCK``) in
    #: ``vmap_area.flags`` (v6.3, Baoquan He, "mm/vmalloc.c: add flags to mark
    #: vm_map_ram area"): ``vread`` reads only areas with a vm_struct or VMAP_RAM,
    #: and /proc/vmallocinfo prints ``vm_map_ram`` only for VMAP_RAM areas.
    vmap_ram_flags: bool = False
    #: v6.5 (Thomas Gleixner, "mm/vmalloc: Don't purge usable blocks unnecessarily"
    #: and "... Prevent flushing dirty space over and over"): a fragmented vmap block
    #: is purged only below ``VMAP_PURGE_THRESHOLD`` free pages unless forced, and
    #: ``vm_unmap_aliases`` visits every block and resets the dirty range of the
    #: blocks it keeps.
    vmap_block_purge_threshold: bool = False
    #: /proc/vmallocinfo knows ``VM_SPARSE`` (" sparse"; v6.9, Alexei Starovoitov,
    #: "mm: Introduce VM_SPARSE kind and vm_area_[un]map_pages()").
    has_vm_sparse: bool = False
    #: /proc/vmallocinfo prints each vmap node's lazy areas in address order after
    #: all busy areas (v6.9, Uladzislau Rezki, "mm: vmalloc: support multiple nodes
    #: in vmallocinfo"); 5.4 prints the purge list newest first after the last busy
    #: area (nothing when no area is busy).
    vmallocinfo_lazy_per_node: bool = False
    #: The caller /proc/vmallocinfo shows for thread stacks: ``_do_fork`` until v5.10
    #: (Christian Brauner, "fork: introduce kernel_clone()"); the 6.18 machine's
    #: ``kernel_clone+0x94/0x3e0`` (dup_task_struct and copy_process are inlined).
    thread_stack_caller: str = "_do_fork"
    #: The ``lib/test_vmalloc.c`` this release ships (see :class:`TestVmallocModule`).
    #: 4.19 had none (it arrived in v5.1): the 2019 rewrite's published figures were
    #: taken running it on a 4.20 kernel, so the "4.19" profile runs the 5.4 module.
    test_vmalloc: TestVmallocModule = TEST_VMALLOC_5_4
    #: The release whose source gives the ``kernel BUG at FILE:LINE!`` lines and
    #: ``panic()`` texts (see :mod:`pyvmalloc.bugsites`); a profile derived with
    #: ``dataclasses.replace`` keeps its base's lines until someone reads its source.
    bug_lines: str = "6.18"
    #: ``vm_unmap_ram`` of a large count with no area there: ``BUG_ON(!va)`` in
    #: v5.4; ``if (WARN_ON_ONCE(!va)) return;`` in v6.18 (mm/vmalloc.c).
    vm_unmap_ram_warn_once: bool = False
    #: ``__GFP_NOFAIL`` vmalloc retries (v5.17, Michal Hocko, "mm/vmalloc: add
    #: support for __GFP_NOFAIL"): a failed vm_struct allocation warns ``vmalloc
    #: error: size %lu, vm_struct allocation failed. Retrying.`` and tries again
    #: after a tick, and a failed ``vmap_pages_range`` is retried the same way.
    vmalloc_nofail_retry: bool = False
    #: ``kvmalloc_node_align(size, align, gfp, node)``: the vmalloc fallback takes an
    #: alignment (v6.17, Vitaly Wool, "mm/slub: allow to set node and align in
    #: k[v]realloc").
    kvmalloc_align: bool = False
    #: /proc/meminfo ``VmallocUsed`` counts ``nr_vmalloc_pages`` (v5.3, Roman
    #: Gushchin, "mm: vmalloc: show number of vmalloc pages in /proc/meminfo");
    #: v4.4-v5.2 print 0 (v4.4, Linus Torvalds, "mm: get rid of 'vmalloc_info' from
    #: /proc/meminfo").
    meminfo_vmalloc_used: bool = True
    #: ``vmap_pfn`` exists (v5.10, Christoph Hellwig, "mm: add a vmap_pfn function").
    has_vmap_pfn: bool = False

    def nr_vmap_nodes(self, machine: Machine) -> int:
        """``nr_vmap_nodes``: ``clamp(num_possible_cpus(), 1, 128)`` on 64-bit in 6.x."""
        if not self.vmap_nodes or machine.bits_per_long != 64:
            return 1
        return max(1, min(machine.cpus_possible, 128))


_WARN_OLD = "vmap allocation for size {size} failed: use vmalloc=<size> to increase size"
_WARN_NEW = (
    "vmalloc_node_range for size {size} failed: Address range restricted to {vstart:#x} - {vend:#x}"
)

PROFILES: dict[str, KernelProfile] = {
    "4.19": KernelProfile(
        name="4.19",
        bug_lines="4.19",
        placement="list-walk",
        adjust_search_size=False,
        rollback_shifts_vstart=False,
        errno_errors=False,
        vmap_nodes=False,
        deferred_purge=False,
        merge_propagates_each_step=True,
        has_tracepoints=False,
        node_lookup_step=1,
        alloc_fail_warning=_WARN_OLD,
        pcp_high_from_low_wmark=False,
        meminfo_vmalloc_used=False,
    ),
    "5.4": KernelProfile(
        name="5.4",
        bug_lines="5.4",
        adjust_search_size=False,
        rollback_shifts_vstart=False,
        errno_errors=False,
        vmap_nodes=False,
        deferred_purge=False,
        merge_propagates_each_step=True,
        has_tracepoints=False,
        node_lookup_step=1,
        alloc_fail_warning=_WARN_OLD,
        pcp_high_from_low_wmark=False,
    ),
    "6.18": KernelProfile(
        name="6.18",
        pools="node-pools",
        adjust_search_size=True,
        rollback_shifts_vstart=True,
        errno_errors=True,
        vmap_nodes=True,
        deferred_purge=True,
        merge_propagates_each_step=False,
        has_tracepoints=True,
        node_lookup_step=-1,
        alloc_fail_warning=_WARN_NEW,
        bulk_page_alloc=True,
        huge_vmalloc=True,
        vmallocinfo_skips_uninitialized=True,
        sizeof_vm_struct=72,
        vm_requested_size=True,
        vmalloc_node_flags=False,
        has_map_vm_area=False,
        vmalloc_error_warnings=True,
        pages_array_highmem=False,
        vunmap_helper=False,
        vmap_checks_flags=True,
        kvmalloc_any_gfp=True,
        has_vrealloc=True,
        vmap_ram_flags=True,
        vmap_block_purge_threshold=True,
        has_vm_sparse=True,
        vmallocinfo_lazy_per_node=True,
        thread_stack_caller="kernel_clone+0x94/0x3e0",
        test_vmalloc=TEST_VMALLOC_6_18,
        vm_unmap_ram_warn_once=True,
        has_vmap_pfn=True,
        vmalloc_nofail_retry=True,
        kvmalloc_align=True,
    ),
}


def get_profile(name: str | KernelProfile) -> KernelProfile:
    """Look a profile up by name ("4.19", "5.4", "6.18"), with a clear error."""
    if isinstance(name, KernelProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown kernel profile {name!r}; known: {', '.join(PROFILES)}") from None
