"""/proc/meminfo's Low/High lines on CONFIG_HIGHMEM kernels (issue 14: "/proc/meminfo's
Vmalloc and Low/High lines").

fs/proc/meminfo.c (4.19 to 6.18) prints, under CONFIG_HIGHMEM, ``HighTotal``
(totalhigh_pages(): managed pages of the highmem zones), ``HighFree``
(nr_free_highpages()), ``LowTotal`` (totalram - totalhigh) and ``LowFree`` (freeram -
freehigh), each as show_val_kb() does: the label, the value in kB right-aligned in 8
columns, " kB". x86_64 has no CONFIG_HIGHMEM and prints none of them.
"""

from __future__ import annotations

from pyvmalloc import Kernel
from pyvmalloc.config import Machine

GIB = 1 << 30


def _kb(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, value, unit = line.split()
        assert unit == "kB"
        out[name.rstrip(":")] = int(value)
    return out


def test_i386_high_and_low_lines() -> None:
    k = Kernel("5.4", arch="i386", ram="1G")
    text = k.meminfo()
    assert text.splitlines()[0] == "HighTotal:        143368 kB"
    kb = _kb(text)
    # i386 lowmem ends at 0x373fe000 with the default 128 MiB vmalloc reserve
    # (__VMALLOC_RESERVE, VMALLOC_OFFSET and the fixmap below 4 GiB); all RAM above it
    # is ZONE_HIGHMEM, and the kernel reserves none of it at boot.
    assert kb["HighTotal"] == (GIB - 0x373FE000) >> 10 == 143368
    assert kb["HighFree"] == kb["HighTotal"]
    assert kb["LowTotal"] + kb["HighTotal"] == k.phys.totalram_pages * 4
    assert list(kb) == [
        "HighTotal", "HighFree", "LowTotal", "LowFree",
        "VmallocTotal", "VmallocUsed", "VmallocChunk",
    ]  # fmt: skip
    # vmalloc's pages are __GFP_HIGHMEM: 16 pages of 64 KiB come from ZONE_HIGHMEM (a
    # pcp refill may take a few more out of the buddy lists); the vm_struct, the page
    # array and the page tables are lowmem allocations.
    p = k.vmalloc(64 << 10)
    after = _kb(k.meminfo())
    assert kb["HighFree"] - after["HighFree"] >= 64
    assert after["HighTotal"] == kb["HighTotal"] and after["LowTotal"] == kb["LowTotal"]
    assert after["LowFree"] < kb["LowFree"]
    k.vfree(p)
    k.check()


def test_arm_highmem_lines_follow_config_highmem() -> None:
    # 3G/1G split, 1 GiB RAM, the default vmalloc=240M: VMALLOC_START = 0xff800000 -
    # 240 MiB - the 8 MiB VMALLOC_OFFSET hole = 0xf0000000, so lowmem is 768 MiB above
    # PAGE_OFFSET 0xc0000000 and the remaining 256 MiB are highmem.
    kb = _kb(Kernel("6.18", arch="arm", ram="1G").meminfo())
    assert kb["HighTotal"] == 256 << 10
    assert kb["VmallocTotal"] == 240 << 10
    no_high = Kernel("6.18", machine=Machine(arch="arm", ram="512M", highmem=False))
    assert not any(line.startswith(("High", "Low")) for line in no_high.meminfo().splitlines())


def test_x86_64_prints_no_high_or_low_lines() -> None:
    k = Kernel("6.18", ram="1G")
    assert k.meminfo().splitlines()[0].startswith("VmallocTotal:")
    assert "_phys" not in vars(k) or vars(k)["_phys"] is None  # meminfo built no phys
