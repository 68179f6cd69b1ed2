"""ARM and arm64 layouts against values derived by hand from the kernel's rules.

32-bit ARM (arch/arm/mm/mmu.c, include/asm/pgtable.h, memory.h, Kconfig):
``VMALLOC_END = 0xff800000``, ``VMALLOC_OFFSET = 8 MiB``,
``VMALLOC_START = (high_memory + 8 MiB) & ~(8 MiB - 1)``; v5.14+ (so "6.18"): lowmem
limit ``= VMALLOC_END - vmalloc_size - 8 MiB``, vmalloc= clamped to
[16 MiB, VMALLOC_END - (PAGE_OFFSET + 32 MiB + 8 MiB)]; v4.19/v5.4: ``vmalloc_min =
VMALLOC_END - SIZE`` (default ``VMALLOC_END - 240 MiB - 8 MiB``), clamp
[16 MiB, VMALLOC_END - (PAGE_OFFSET + 32 MiB)].
"""

from __future__ import annotations

import pytest

from pyvmalloc.arch.arm import early_vmalloc, meminfo_lines
from pyvmalloc.arch.arm64 import compute_layout
from pyvmalloc.config import Machine

M = 1 << 20


def arm(ram="1G", release="6.18", **kw):
    return Machine(arch="arm", ram=ram, kernel_release=release, **kw)


@pytest.mark.parametrize(
    ("kw", "start", "lowmem", "highmem"),
    [
        # 3G/1G, 1 GiB: limit 0xff800000-240M-8M-0xc0000000 = 768M; high_memory 0xf0000000
        ({}, 0xF0800000, 768 * M, 256 * M),
        # 512 MiB is all lowmem: high_memory 0xe0000000 (496 MiB of vmalloc)
        ({"ram": "512M"}, 0xE0800000, 512 * M, 0),
        # vmalloc=400M (v5.14+ exact): limit 0x26000000, START 0xe6800000
        ({"vmalloc_reserve": "400M"}, 0xE6800000, 608 * M, 416 * M),
        # 2G/2G with 2 GiB: limit 0x7f800000-0x0f800000 = 1792M, START 0xf0800000
        ({"ram": "2G", "vmsplit": "2G"}, 0xF0800000, 1792 * M, 256 * M),
        # 1G/3G: limit 2816M > 1 GiB RAM: high_memory 0x80000000
        ({"vmsplit": "1G"}, 0x80800000, 1024 * M, 0),
        # vmalloc=100M: high_memory 0xf8c00000, +8M = 0xf9400000 rounds down to 0xf9000000
        ({"vmalloc_reserve": "100M"}, 0xF9000000, 0x38C00000, 1024 * M - 0x38C00000),
        # PHYS_OFFSET 0x80000000 (AM335x-style): the same virtual layout
        ({"phys_offset": 0x80000000}, 0xF0800000, 768 * M, 256 * M),
        # the 3G_OPT split (0xb0000000): limit 0x4f800000-0x0f800000 = 1 GiB > RAM
        ({"vmsplit": "3G_OPT"}, 0xF0800000, 1024 * M, 0),
    ],
)
def test_arm_layout_v5_14_rules(kw, start, lowmem, highmem):
    m = arm(**kw)
    assert m.vmalloc_start == start
    assert m.vmalloc_end == 0xFF800000
    assert m.layout["LOWMEM_BYTES"] == lowmem
    assert m.layout["HIGHMEM_BYTES"] == highmem
    assert meminfo_lines(m)["VmallocTotal"] == (0xFF800000 - start) >> 10


def test_arm_vmalloc_bounds_v5_14():
    # too small: 16 MiB; limit 0xff800000-16M-8M-0xc0000000 = 0x3e000000; START 0xfe800000
    m = arm(vmalloc_reserve="8M")
    assert early_vmalloc(m) == (16 * M, ["vmalloc area is too small, limiting to 16MiB"])
    assert (m.vmalloc_start, m.vmalloc_total) == (0xFE800000, 16 * M)
    # too big: 0xff800000 - (0xc0000000 + 32M + 8M) = 976 MiB; 32 MiB of lowmem left
    m = arm(vmalloc_reserve="1000M")
    assert early_vmalloc(m) == (976 * M, ["vmalloc area is too big, limiting to 976MiB"])
    assert (m.vmalloc_start, m.vmalloc_total, m.layout["LOWMEM_BYTES"]) == (
        0xC2800000,
        976 * M,
        32 * M,
    )


def test_arm_vmalloc_rules_v4_19_and_v5_4():
    for release in ("4.19", "5.4"):
        # default: vmalloc_min = 0xff800000 - 240M - 8M = 0xf0000000, as in 6.18
        assert arm(release=release).vmalloc_start == 0xF0800000
        # vmalloc=400M: vmalloc_min = 0xe6800000 = high_memory; START 0xe7000000 (392 MiB)
        m = arm(release=release, vmalloc_reserve="400M")
        assert (m.vmalloc_start, m.vmalloc_total) == (0xE7000000, 392 * M)
        assert m.layout["LOWMEM_BYTES"] == 0x26800000
        # too big: 0xff800000 - (0xc0000000 + 32M) = 984 MiB; START ALIGN(0xc2000000+8M)
        m = arm(release=release, vmalloc_reserve="1000M")
        assert early_vmalloc(m)[1] == ["vmalloc area is too big, limiting to 984MB"]
        assert (m.vmalloc_start, m.vmalloc_total) == (0xC2800000, 976 * M)
        m = arm(release=release, vmalloc_reserve="8M")
        assert early_vmalloc(m)[1] == ["vmalloc area too small, limiting to 16MB"]
        assert (m.vmalloc_start, m.vmalloc_total) == (0xFF000000, 8 * M)


def test_arm_modules_area_and_page_tables():
    m = arm()
    assert (m.modules_vaddr, m.modules_end) == (0xBF000000, 0xBFE00000)  # pkmap: top 2M
    assert m.layout["PKMAP_BASE"] == 0xBFE00000 and m.paging_levels == 2
    assert m.layout["PGDIR_SHIFT"] == 21 and m.bits_per_long == 32
    assert arm(thumb2=True).modules_vaddr == 0xBF800000
    assert arm(highmem=False).modules_end == 0xC0000000
    assert (arm(vmsplit="2G").modules_vaddr, arm(vmsplit="2G").modules_end) == (
        0x7F000000,
        0x7FE00000,
    )
    lpae = arm(lpae=True, ram="6G")
    assert lpae.paging_levels == 3 and lpae.layout["PGDIR_SHIFT"] == 30
    assert lpae.layout["HIGHMEM_BYTES"] == 6 * 1024 * M - 768 * M
    # module_alloc falls back to the vmalloc range only with CONFIG_ARM_MODULE_PLTS
    assert m.layout["MODULES_FALLBACK_END"] == 0xFF800000
    assert arm(module_plts=False).layout["MODULES_FALLBACK_END"] == 0
    # !HIGHMEM: RAM above the lowmem limit is dropped ("Ignoring RAM at ...")
    assert arm(highmem=False).layout["IGNORED_RAM_BYTES"] == 256 * M
    # IOREMAP_MAX_ORDER: 24 on UP non-LPAE, else the generic 7 + PAGE_SHIFT
    assert arm(smp=False).layout["IOREMAP_MAX_ORDER"] == 24
    assert m.layout["IOREMAP_MAX_ORDER"] == 19


def test_arm_bad_configurations():
    with pytest.raises(ValueError, match="VMSPLIT_3G_OPT depends on !ARM_LPAE"):
        arm(vmsplit="3G_OPT", lpae=True)
    with pytest.raises(ValueError, match="unknown VMSPLIT"):
        arm(vmsplit="4G")
    with pytest.raises(ValueError, match="needs LPAE"):
        arm(ram="8G")
    with pytest.raises(ValueError, match="32-bit kernels"):
        Machine(arch="arm64", vmalloc_reserve="64M")
    with pytest.raises(ValueError, match="kernel_release"):
        arm(release="3.10")


def h(lay, *keys):
    return tuple(lay[k] for k in keys)


def test_arm64_v6_18_ranges():
    # 4K/48: PAGE_END 0xffff800000000000 + 2G modules; VMEMMAP_SIZE 2^47/4K*64 = 2^41,
    # VMEMMAP_START = -1G - 2^41, VMALLOC_END = VMEMMAP_START - 256M
    lay = compute_layout(page_size=4096, va_bits=48, release="6.18")
    assert h(lay, "MODULES_VADDR", "MODULES_END", "VMALLOC_START", "VMALLOC_END") == (
        0xFFFF800000000000,
        0xFFFF800080000000,
        0xFFFF800080000000,
        0xFFFFFDFFB0000000,
    )
    assert lay["PGTABLE_LEVELS"] == 4 and lay["BPF_JIT_REGION_START"] == 0
    # 4K/39: 3 levels, VMEMMAP_SIZE 2^38/4K*64 = 4G
    lay = compute_layout(page_size=4096, va_bits=39, release="6.18")
    assert h(lay, "PAGE_OFFSET", "VMALLOC_START", "VMALLOC_END", "PGTABLE_LEVELS") == (
        0xFFFFFF8000000000,
        0xFFFFFFC080000000,
        0xFFFFFFFEB0000000,
        3,
    )
    # 64K/52: VA_BITS_MIN 48, VMEMMAP_SIZE (2^52-2^47)/64K*64 = 0x3e000000000
    lay = compute_layout(page_size=65536, va_bits=52, release="6.18")
    assert h(lay, "VA_BITS_MIN", "VMALLOC_START", "VMALLOC_END", "PGTABLE_LEVELS") == (
        48,
        0xFFFF800080000000,
        0xFFFFFC1FB0000000,
        3,
    )
    # 16K/47: 3 levels, PGDIR_SHIFT 36, PMD_SHIFT 25; VMEMMAP_SIZE 2^46/16K*64 = 2^38
    lay = compute_layout(page_size=16384, va_bits=47, release="6.18")
    assert h(lay, "PGTABLE_LEVELS", "PGDIR_SHIFT", "PMD_SHIFT") == (3, 36, 25)
    assert h(lay, "VMALLOC_START", "VMALLOC_END") == (0xFFFFC00080000000, 0xFFFFFFBFB0000000)
    # 4K/52 (LPA2): 5 levels; 16K/52: VA_BITS_MIN 47
    assert compute_layout(page_size=4096, va_bits=52)["PGTABLE_LEVELS"] == 5
    assert compute_layout(page_size=16384, va_bits=52)["VA_BITS_MIN"] == 47


def test_arm64_v5_4_ranges():
    # flipped layout: BPF JIT region (128M) at PAGE_END, then 128M of modules
    lay = compute_layout(page_size=4096, va_bits=48, release="5.4")
    assert h(lay, "BPF_JIT_REGION_START", "BPF_JIT_REGION_END", "MODULES_VADDR") == (
        0xFFFF800000000000,
        0xFFFF800008000000,
        0xFFFF800008000000,
    )
    # VMALLOC_END = -(PUD_SIZE + VMEMMAP_SIZE + 64K) = -(1G + 2^41 + 64K)
    assert h(lay, "VMALLOC_START", "VMALLOC_END") == (0xFFFF800010000000, 0xFFFFFDFFBFFF0000)
    assert (lay["VMALLOC_END"] - lay["VMALLOC_START"]) >> 10 == 135290159040
    # 64K/42: 2 levels, PUD folded into the PGD (512M); VMEMMAP_SIZE 2^41 >> 10 = 2G
    lay = compute_layout(page_size=65536, va_bits=42, release="5.4")
    assert h(lay, "PGTABLE_LEVELS", "PUD_SHIFT", "VMALLOC_START", "VMALLOC_END") == (
        2,
        29,
        0xFFFFFE0010000000,
        0xFFFFFFFF5FFF0000,
    )


def test_arm64_v4_19_ranges():
    # before the flip: modules at VA_START, PAGE_OFFSET the top half;
    # VMALLOC_END = PAGE_OFFSET - 1G - 2^(39-12-1+6) - 64K
    lay = compute_layout(page_size=4096, va_bits=39, release="4.19")
    assert h(lay, "MODULES_VADDR", "VMALLOC_START", "VMALLOC_END", "PAGE_OFFSET") == (
        0xFFFFFF8000000000,
        0xFFFFFF8008000000,
        0xFFFFFFBEBFFF0000,
        0xFFFFFFC000000000,
    )


def test_arm64_machine_and_page_sizes():
    m = Machine(arch="arm64", kernel_release="5.4")
    assert m.bits_per_long == 64 and m.paging_levels == 4
    assert m.vmalloc_start == 0xFFFF800010000000
    assert Machine(arch="arm64", va_bits=39).paging_levels == 3
    with pytest.raises(ValueError, match=r"4 KiB pages only.*compute_layout"):
        Machine(arch="arm64", page_size=16384)
    with pytest.raises(ValueError, match="not offered"):
        compute_layout(page_size=16384, va_bits=39)
    with pytest.raises(ValueError, match="LPA2"):
        compute_layout(page_size=4096, va_bits=52, release="5.4")


def test_page_allocator_zones_on_arm_boards():
    from pyvmalloc.phys.layout import build_layout

    # arm, 1 GiB: ZONE_NORMAL = lowmem (768 MiB = 196608 pages), ZONE_HIGHMEM the rest;
    # managed Normal = present - image (16 MiB) - FLATMEM memmap (32 B x 262144 pages)
    lay = build_layout(arm())
    zones = [(z.name, z.start_pfn, z.end_pfn, z.managed) for z in lay.nodes[0].zones]
    assert zones == [
        ("Normal", 0, 196608, 196608 - 4096 - 2048),
        ("HighMem", 196608, 262144, 65536),
    ]
    # arm64 (6.x): ZONE_DMA up to 4 GiB without firmware DMA limits; 5.4: ZONE_DMA32
    six = build_layout(Machine(arch="arm64", ram="6G"))
    assert [(z.name, z.end_pfn) for z in six.nodes[0].zones] == [
        ("DMA", 1 << 20),
        ("Normal", 6 << 18),
    ]
    five = build_layout(Machine(arch="arm64", ram="6G", kernel_release="5.4"))
    assert [(z.name, z.start_pfn) for z in five.nodes[0].zones] == [
        ("DMA32", 0),
        ("Normal", 1 << 20),
    ]
    with pytest.raises(ValueError, match="PHYS_OFFSET"):
        build_layout(arm(phys_offset=0x80000000))
    # /proc/meminfo: LowTotal = managed lowmem pages, HighTotal = managed highmem pages
    assert meminfo_lines(arm(), build_layout(arm())) == {
        "VmallocTotal": 245760,
        "LowTotal": (196608 - 4096 - 2048) * 4,
        "HighTotal": 65536 * 4,
    }


def test_full_kernel_on_arm_and_arm64():
    from pyvmalloc.kernel import Kernel

    k = Kernel("6.18", machine=arm())
    addr = k.vmalloc(8192)
    assert addr == 0xF0800000  # the first area of an empty 240 MiB range
    # 32-bit vmalloc takes highmem pages; 2048 PGD entries of 2 MiB: index 0xf08 >> 1
    walk = k.pgtables.render_walk(addr)
    assert "PGD  [1924]" in walk and "(arm, 2-level)" in walk
    assert k.pgtables.translate(addr) >> 12 >= 196608
    assert "VmallocTotal:     245760 kB" in k.meminfo()
    k.vfree(addr)
    k.check()
    k64 = Kernel("5.4", machine=Machine(arch="arm64", ram="2G", kernel_release="5.4"))
    addr = k64.vmalloc(3 << 20)
    assert addr == 0xFFFF800010000000
    assert "(arm64, 4-level)" in k64.pgtables.render_walk(addr)
    k64.check()
