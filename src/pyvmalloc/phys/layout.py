"""Boot-time physical memory layout: an e820-like map, NUMA nodes and zones.

The model's firmware map (documented simplification of a PC's e820 table):

* RAM starts at physical 0, but pfn 0 is not RAM for the kernel (x86 trims the
  first page), and ``[0x9f000, 0x100000)`` is the legacy VGA/BIOS hole (640 KiB..1 MiB),
  so the first usable range is pfn 1..158 and the second starts at 1 MiB.
* With more than 3 GiB of RAM the PCI hole ``[3 GiB, 4 GiB)`` has no RAM and the rest
  of the memory is remapped above 4 GiB.
* ``ram`` is the size of the address range the RAM occupies below the hole plus the
  part moved above it; pages shadowed by the 640K..1M hole are lost (as on real PCs).

memblock reservations (present but never handed to the buddy allocator, so not part
of ``totalram_pages``):

* the whole first MiB (x86 reserves it since v5.13 for BIOS/real-mode use);
* the kernel image: ``KERNEL_IMAGE_BYTES`` at 16 MiB (``CONFIG_PHYSICAL_START``),
  capped at ram/8 and placed at 1 MiB on machines under 64 MiB;
* the memory map (``struct page`` array): x86_64 SPARSEMEM_VMEMMAP maps 2 MiB of
  ``struct page`` per 128 MiB section with any RAM in it; i386 FLATMEM uses 32 bytes per
  spanned page. It is carved from the top of each node (top of lowmem on i386), as
  memblock allocates top-down.

With this map a default x86_64 machine shows the kernel's familiar DMA numbers:
spanned 4095, present 3998, managed 3840.

NUMA: the present pages are split evenly across nodes at 4 MiB (max-order block)
boundaries; node 0 therefore holds ZONE_DMA (and DMA32 while below 4 GiB).

ARM boards (``arch="arm"``/``"arm64"``) have no e820 table: the device tree gives one
memory bank, modelled as ``[0, ram)`` (``PHYS_OFFSET`` 0, as on Raspberry Pi boards;
the page allocator model does not support another ``PHYS_OFFSET``). No hole, no
first-MiB reservation; the kernel image sits at the start of RAM (arm
``TEXT_OFFSET`` 0x8000; arm64 the first 2 MiB-aligned slot). Zones:

* arm (32-bit, no ``CONFIG_ZONE_DMA``): ZONE_NORMAL is lowmem, up to
  ``arm_lowmem_limit`` (:mod:`pyvmalloc.arch.arm`), ZONE_HIGHMEM the rest; the zone
  indices are those of i386 (DMA 0, empty; Normal 1; HighMem 2), and the memory map
  is FLATMEM like i386's.
* arm64: v5.4 has ZONE_DMA32 below 4 GiB and no ZONE_DMA; v6.x has ZONE_DMA below the
  smallest DMA limit the firmware describes, 4 GiB without one (the model's case),
  and an empty ZONE_DMA32; ZONE_NORMAL above 4 GiB. The memory map is
  SPARSEMEM_VMEMMAP like x86_64's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyvmalloc.config import PAGE_SHIFT, PAGE_SIZE, Machine

__all__ = [
    "ZONE_NAMES_I386",
    "ZONE_NAMES_X86_64",
    "MemoryLayout",
    "NodeLayout",
    "ZoneLayout",
    "build_layout",
]

MiB = 1 << 20
GiB = 1 << 30

#: Zone types in index order (``enum zone_type``), ZONE_DEVICE left out.
ZONE_NAMES_X86_64 = ("DMA", "DMA32", "Normal", "Movable")
ZONE_NAMES_I386 = ("DMA", "Normal", "HighMem", "Movable")

#: ``MAX_DMA_PFN``: 16 MiB.
MAX_DMA_PFN = (16 * MiB) >> PAGE_SHIFT
#: ``MAX_DMA32_PFN``: 4 GiB.
MAX_DMA32_PFN = (4 * GiB) >> PAGE_SHIFT
PCI_HOLE_START_PFN = (3 * GiB) >> PAGE_SHIFT
LOW_HOLE_START_PFN = 0x9F
ONE_MIB_PFN = MiB >> PAGE_SHIFT
KERNEL_LOAD_PFN = (16 * MiB) >> PAGE_SHIFT
KERNEL_IMAGE_BYTES = {"x86_64": 32 * MiB, "i386": 16 * MiB, "arm": 16 * MiB, "arm64": 32 * MiB}
#: Where the image starts on ARM boards (pfn): arm TEXT_OFFSET 0x8000, arm64 2 MiB.
ARM_IMAGE_PFN = {"arm": 0x8000 >> PAGE_SHIFT, "arm64": (2 * MiB) >> PAGE_SHIFT}
#: SPARSEMEM section: 128 MiB on x86_64, mapped by 2 MiB of struct pages.
SECTION_PAGES = (128 * MiB) >> PAGE_SHIFT
VMEMMAP_PAGES_PER_SECTION = (2 * MiB) >> PAGE_SHIFT
STRUCT_PAGE_BYTES_I386 = 32


@dataclass
class ZoneLayout:
    nid: int
    idx: int  # zone type index
    name: str
    start_pfn: int  # zone_start_pfn
    end_pfn: int  # zone_end_pfn (exclusive); spanned = end - start
    present: int = 0
    managed: int = 0

    @property
    def spanned(self) -> int:
        return self.end_pfn - self.start_pfn


@dataclass
class NodeLayout:
    nid: int
    ranges: list[tuple[int, int]]  # present pfn ranges [start, end)
    zones: list[ZoneLayout] = field(default_factory=list)

    @property
    def start_pfn(self) -> int:
        return self.ranges[0][0]

    @property
    def end_pfn(self) -> int:
        return self.ranges[-1][1]


@dataclass
class MemoryLayout:
    arch: str
    zone_names: tuple[str, ...]
    ram_ranges: list[tuple[int, int]]  # e820 RAM, pfn [start, end)
    reserved: list[tuple[int, int, str]]  # memblock reservations inside RAM
    nodes: list[NodeLayout]
    max_pfn: int
    max_low_pfn: int  # end of lowmem (directly mapped) on i386; max_pfn on x86_64

    #: End pfn (exclusive) of each zone type below Normal/HighMem: (DMA, DMA32 or Normal).
    low_bounds: tuple[int, int] = (MAX_DMA_PFN, MAX_DMA32_PFN)

    @property
    def zone_model(self) -> str:
        """Which zone indices apply: "x86_64" (DMA, DMA32, Normal) or "i386" (DMA,
        Normal, HighMem). arm uses i386's, arm64 x86_64's."""
        return "x86_64" if self.arch in ("x86_64", "arm64") else "i386"

    @property
    def zone_boundaries(self) -> list[int]:
        """End pfn (exclusive) of each zone type, in index order."""
        if self.zone_model == "x86_64":
            return [*self.low_bounds, 1 << 52, 1 << 52]
        return [self.low_bounds[0], self.max_low_pfn, 1 << 52, 1 << 52]


def _e820(machine: Machine) -> list[tuple[int, int]]:
    pages = machine.ram >> PAGE_SHIFT
    if machine.arch in ("arm", "arm64"):
        if machine.phys_offset:
            raise ValueError(
                "the page allocator model maps RAM from physical address 0; a PHYS_OFFSET "
                "other than 0 is supported by the layout (Machine.layout) only"
            )
        return [(0, pages)]
    ranges = [(1, LOW_HOLE_START_PFN)]
    if pages <= PCI_HOLE_START_PFN:
        ranges.append((ONE_MIB_PFN, pages))
    else:
        ranges.append((ONE_MIB_PFN, PCI_HOLE_START_PFN))
        ranges.append((MAX_DMA32_PFN, MAX_DMA32_PFN + pages - PCI_HOLE_START_PFN))
    if machine.arch == "i386":
        cap = (1 << 32) >> PAGE_SHIFT  # non-PAE: nothing above 4 GiB
        ranges = [(s, min(e, cap)) for s, e in ranges if s < cap]
    return ranges


def _clip(ranges: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    for s, e in ranges:
        s2, e2 = max(s, lo), min(e, hi)
        if s2 < e2:
            out.append((s2, e2))
    return out


def _split_nodes(ranges: list[tuple[int, int]], n: int) -> list[list[tuple[int, int]]]:
    total = sum(e - s for s, e in ranges)
    if n == 1:
        return [list(ranges)]
    # Node k starts at the pfn where the k/n-th present page lies, rounded down to a
    # max-order (1024-page) boundary so no buddy block straddles two nodes.
    cuts: list[int] = []
    for k in range(1, n):
        target = total * k // n
        acc = 0
        for s, e in ranges:
            if acc + (e - s) > target:
                cuts.append(((s + target - acc) >> 10) << 10)
                break
            acc += e - s
    bounds = [0, *cuts, 1 << 52]
    nodes = [_clip(ranges, bounds[i], bounds[i + 1]) for i in range(n)]
    if any(not r for r in nodes):
        raise ValueError(f"RAM too small to split across {n} NUMA nodes")
    return nodes


def build_layout(machine: Machine, max_order: int = 10) -> MemoryLayout:
    """The e820 map, reservations, nodes and zones of ``machine``."""
    ram = _e820(machine)
    max_pfn = ram[-1][1]
    arm = machine.arch in ("arm", "arm64")
    low_bounds = (MAX_DMA_PFN, MAX_DMA32_PFN)
    if machine.arch in ("i386", "arm"):
        max_low_pfn = min(max_pfn, machine.layout["MAX_LOW_PFN"])
        names = ZONE_NAMES_I386
        if machine.arch == "arm":
            if machine.ram > machine.layout["LOWMEM_BYTES"] + machine.layout["HIGHMEM_BYTES"]:
                raise ValueError(
                    "RAM above the lowmem limit without CONFIG_HIGHMEM is dropped by the "
                    "kernel; give the RAM it keeps (the layout's LOWMEM_BYTES)"
                )
            low_bounds = (0, max_low_pfn)  # no ZONE_DMA
    else:
        max_low_pfn = max_pfn
        names = ZONE_NAMES_X86_64
        if machine.arch == "arm64":
            # v5.4: only ZONE_DMA32 (<4 GiB); v6.x: ZONE_DMA up to 4 GiB, DMA32 empty
            dma32 = MAX_DMA32_PFN
            low_bounds = (0, dma32) if machine.kernel_release == "5.4" else (dma32, dma32)
    node_ranges = _split_nodes(ram, machine.numa_nodes)

    reserved: list[tuple[int, int, str]] = [] if arm else [(0, ONE_MIB_PFN, "first 1MiB")]
    image_pages = min(KERNEL_IMAGE_BYTES[machine.arch], machine.ram // 8) >> PAGE_SHIFT
    if arm:
        image_start = ARM_IMAGE_PFN[machine.arch]
    else:
        image_start = KERNEL_LOAD_PFN if machine.ram >= 64 * MiB else ONE_MIB_PFN
    reserved.append((image_start, image_start + image_pages, "kernel image"))
    for nid, nr in enumerate(node_ranges):
        if machine.arch in ("x86_64", "arm64"):
            sections: set[int] = set()
            for s, e in nr:
                sections.update(range(s // SECTION_PAGES, (e - 1) // SECTION_PAGES + 1))
            memmap = len(sections) * VMEMMAP_PAGES_PER_SECTION
            limit = nr[-1][1]
        else:
            spanned = nr[-1][1] - nr[0][0]
            memmap = -(-spanned * STRUCT_PAGE_BYTES_I386 // PAGE_SIZE)
            limit = min(nr[-1][1], max_low_pfn)
            if nid > 0 and nr[0][0] >= max_low_pfn:
                limit = nr[-1][1]
        # carve top-down from the node's memory below `limit`
        for s, e in reversed(_clip(nr, 0, limit)):
            take = min(memmap, e - s)
            if take:
                reserved.append((e - take, e, f"memmap node {nid}"))
                memmap -= take
            if not memmap:
                break

    bounds = [0, low_bounds[0]]
    if names is ZONE_NAMES_X86_64:
        bounds += [low_bounds[1], 1 << 52]
    else:
        bounds += [max_low_pfn, 1 << 52]
    nodes: list[NodeLayout] = []
    for nid, nr in enumerate(node_ranges):
        node = NodeLayout(nid, nr)
        for idx in range(3):
            lo, hi = max(bounds[idx], node.start_pfn), min(bounds[idx + 1], node.end_pfn)
            if lo >= hi:
                continue
            present = _clip(nr, lo, hi)
            if not present:
                continue
            z = ZoneLayout(nid, idx, names[idx], lo, hi)
            z.present = sum(e - s for s, e in present)
            res = sum(e - s for rs, re_, _ in reserved for s, e in _clip(present, rs, re_))
            z.managed = z.present - res
            node.zones.append(z)
        nodes.append(node)
    return MemoryLayout(machine.arch, names, ram, reserved, nodes, max_pfn, max_low_pfn, low_bounds)
