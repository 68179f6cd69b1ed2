"""/proc/vmallocinfo and /proc/meminfo formats against real 6.18 lines."""

from __future__ import annotations

from pathlib import Path

from pyvmalloc.kernel import Kernel
from pyvmalloc.vmalloc import VM_MAP

CAPTURES = Path(__file__).parent / "data" / "captures"
THREAD_SIZE = THREAD_ALIGN = 16384


def _real_lines() -> list[str]:
    return (CAPTURES / "mixed-spread" / "vmallocinfo").read_text().splitlines()


def _boot(k: Kernel) -> int:
    """The live VM's first areas: irq stack (vmap), two ACPI ioremaps, a thread stack."""
    area = k.get_vm_area_caller(16384, VM_MAP, "irq_init_percpu_irqstack+0xca/0x100")
    assert area is not None
    k.ioremap(0xA0000, 4096, caller="acpi_os_map_iomem+0x1bc/0x1e0")
    k.ioremap(0x9F000, 8192, caller="acpi_os_map_iomem+0x1bc/0x1e0")
    stack: int = getattr(k, "__vmalloc_node_range")(
        THREAD_SIZE, THREAD_ALIGN, caller="kernel_clone+0x94/0x3e0"
    )
    return stack


def test_vmallocinfo_matches_real_618_lines() -> None:
    k = Kernel("6.18")
    stack = _boot(k)
    assert stack == 0xFFFFC9000000C000
    real = _real_lines()
    assert k.vmallocinfo().splitlines() == real[:4]
    assert real[3] == (
        "0xffffc9000000c000-0xffffc90000011000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4"
    )


def test_vmallocinfo_unpurged_and_54_order() -> None:
    k = Kernel("5.4")
    a = k.vmalloc(4096)
    b = k.vmalloc(4096)
    c = k.vmalloc(4096)
    k.vfree(a)
    k.vfree(c)
    lines = k.vmallocinfo().splitlines()
    # busy list first, then the purge list newest first
    assert lines[1:] == [
        f"0x{c:016x}-0x{c + 8192:016x}    8192 unpurged vm_area",
        f"0x{a:016x}-0x{a + 8192:016x}    8192 unpurged vm_area",
    ]
    k.vfree(b)
    assert k.vmallocinfo() == ""  # 5.4 prints the purge list only after a busy entry


def test_vmallocinfo_618_node_grouping() -> None:
    k = Kernel("6.18")
    addrs = [k.vmalloc(60 * 1024) for _ in range(3)]  # 64 KiB each incl. guard
    lines = k.vmallocinfo().splitlines()
    starts = [int(line.split("-")[0], 16) for line in lines]
    # node = (addr >> 16) % 2: even zones first, then odd
    assert starts == sorted(addrs, key=lambda x: ((x >> 16) % 2, x))
    k.vfree(addrs[1], cpu=1)
    assert k.vmallocinfo().splitlines()[-1].endswith("65536 unpurged vm_area")


def test_vm_map_ram_line_and_kptr_restrict() -> None:
    k = Kernel()
    pages = k.alloc_pages(2)
    a = k.vm_map_ram(pages)
    line = k.vmallocinfo().splitlines()[0]
    assert line == f"0x{a:016x}-0x{a + (4 << 20):016x} 4194304 vm_map_ram"
    k.kptr_restrict = 2
    assert k.vmallocinfo().startswith("0x0000000000000000-0x0000000000000000 4194304 vm_map_ram")
    k.vm_unmap_ram(a, 2)
    k.free_pages(pages)
    k.check()


def test_uninitialized_areas() -> None:
    from pyvmalloc.vmalloc import VM_UNINITIALIZED

    for profile, shown in (("6.18", False), ("5.4", True)):
        k = Kernel(profile)
        area = k.get_vm_area(8192, VM_UNINITIALIZED | 0x2)
        assert area is not None
        text = k.vmallocinfo()
        assert (" vmalloc" in text) is shown


def test_meminfo_format() -> None:
    k = Kernel()
    a = k.vmalloc(5 * 4096)
    assert k.meminfo() == (
        "VmallocTotal:   34359738367 kB\nVmallocUsed:          20 kB\nVmallocChunk:          0 kB\n"
    )
    k.vfree(a)
    k5 = Kernel("6.18", paging_levels=5)
    assert k5.meminfo().splitlines()[0] == "VmallocTotal:   13743895347199 kB"
    assert k.buddyinfo().startswith("Node 0, zone      DMA")
