"""``pyvmalloc kmem`` and the drgn-style helpers on hand-built states.

Expected answers follow the kernel's rules: the lowest fitting address of the free
tree, the guard page at the end of every vm_struct area, lazily freed areas on their
allocating node's list (6.9+: ``decode_vn_id(va->flags)``, the CPU's node
``cpu % nr_vmap_nodes``), purged areas of at most MAX_VA_SIZE_PAGES pages put in that
node's pool of their exact page count.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import pyvmalloc
from pyvmalloc import Kernel
from pyvmalloc.cli import main
from pyvmalloc.cli_kmem import what_is
from pyvmalloc.helpers import (
    find_vmap_area,
    for_each_vm_area,
    for_each_vmap_area,
    vmalloc_to_page,
    vmalloc_to_pfn,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "src" / "pyvmalloc" / "data" / "captures" / "default"
VS = 0xFFFFC90000000000
MODULES = 0xFFFFFFFFC0000000
P = 4096


def state_a() -> tuple[Kernel, int, int]:
    k = Kernel("6.18", cpus=2)
    a = k.vmalloc(8192, cpu=0)  # 2 pages + guard: [VS, VS + 3P), node 0
    b = k.vmalloc(20000, cpu=1)  # 5 pages + guard: [VS + 3P, VS + 9P), node 1
    k.vfree(a, cpu=0)
    return k, a, b


def test_each_kind_of_address() -> None:
    k, a, b = state_a()
    assert (a, b) == (VS, VS + 3 * P)
    lazy = what_is(k, VS + P)
    assert (lazy.kind, lazy.start, lazy.end, lazy.offset, lazy.node) == (
        "lazy",
        VS,
        VS + 3 * P,
        P,
        0,
    )
    assert "node 0's lazy list" in lazy.text
    busy = what_is(k, b + 2 * P + 5)
    assert (busy.kind, busy.start, busy.end, busy.offset, busy.node) == (
        "busy",
        VS + 3 * P,
        VS + 9 * P,
        2 * P + 5,
        1,
    )
    assert busy.pfn == k.vmalloc_to_pfn(b + 2 * P) != 0
    guard = what_is(k, VS + 8 * P)
    assert (guard.kind, guard.start, guard.offset) == ("guard", VS + 3 * P, 5 * P)
    free = what_is(k, VS + 9 * P)
    assert (free.kind, free.start) == ("free", VS + 9 * P)
    out = what_is(k, 0x1000)
    assert out.kind == "outside" and "below PAGE_OFFSET" in out.text
    mod = what_is(k, MODULES)
    assert mod.kind == "free" and "modules range" in mod.text


def test_pooled_and_single_list_profiles() -> None:
    k = Kernel("6.18", cpus=2)
    a = k.vmalloc(8192, cpu=1)
    k.vfree(a, cpu=1)
    k.purge_vmap_area_lazy()
    pool = what_is(k, a + 100)
    # Node 1's pool of 3-page areas (pools[2]), at its head.
    assert (pool.kind, pool.node, pool.pool_pages, pool.pool_position) == ("pool", 1, 3, 0)
    assert "pool[2]" in pool.text
    k5 = Kernel("5.4", cpus=2)
    a = k5.vmalloc(8192)
    k5.vfree(a)
    lazy = what_is(k5, a)
    assert lazy.kind == "lazy" and lazy.node is None and "the purge list" in lazy.text


def test_kmem_command(capsys: pytest.CaptureFixture[str]) -> None:
    before = "vmalloc(8192); vmalloc(20000); vfree(_1)"
    assert main(["kmem", "-v", "--before", before]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "   VMAP_AREA         VM_STRUCT                 ADDRESS RANGE                SIZE"
    )
    # crash's columns: %16lx  %16lx  %16lx - %16lx  %7ld
    assert re.fullmatch(
        r" {15}-  [0-9a-f]{16}  ffffc90000003000 - ffffc90000009000    24576", out[2]
    )
    assert len(out) == 3
    assert main(["kmem", "_2", "0xffffc90000008000", "ffffc90000001000", "--before", before]) == 0
    text = capsys.readouterr().out
    assert "ffffc90000003000: vm_struct area 0xffffc90000003000-0xffffc90000009000" in text
    assert "ffffc90000008000: the guard page of 0xffffc90000003000" in text
    assert "ffffc90000001000: lazily freed 0xffffc90000000000-0xffffc90000003000" in text
    assert main(["kmem", "0xffffc90000001000", "--before", before, "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["start"] == "0xffffc90000000000" and rows[0]["kind"] == "lazy"


def _busy_lines(path: Path) -> int:
    lines = path.read_text().splitlines()
    return sum(1 for ln in lines if ln.strip() and not ln.endswith("unpurged vm_area"))


def test_kmem_on_a_capture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kmem", "-v", str(DEFAULT), "--at", "start"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) - 2 == _busy_lines(DEFAULT / "vmallocinfo")
    # After the replay, the busy areas are the kernel's at its end snapshot.
    assert main(["kmem", "-v", str(DEFAULT)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) - 2 == _busy_lines(DEFAULT / "vmallocinfo.end")


def test_drgn_style_helpers() -> None:
    k, a, b = state_a()
    assert [va.va_start for va in for_each_vmap_area(k)] == [b]
    vms = list(for_each_vm_area(k))
    assert [vm.addr for vm in vms] == [b] and vms[0].nr_pages == 5
    assert find_vmap_area(k, b + 5 * P).va_end == b + 6 * P  # the guard page is inside
    assert find_vmap_area(k, a) is None  # lazily freed: not busy
    page = vmalloc_to_page(k, b + 3 * P)
    assert page is not None
    assert page.pfn == vmalloc_to_pfn(k, b + 3 * P) == int(vms[0].pages[3])
    assert page.refcount == 1 and page.node == 0
    # x86_64 zones: DMA below 16 MiB, DMA32 below 4 GiB, Normal above.
    zone = "Normal" if page.pfn >= 1 << 20 else "DMA32" if page.pfn >= 1 << 12 else "DMA"
    assert page.zone == zone
    assert page.area is vms[0] and page.vmap_area.va_start == b
    assert f"pfn {page.pfn:#x}" in repr(page)
    assert vmalloc_to_page(k, b + 5 * P) is None  # guard page
    assert pyvmalloc.for_each_vmap_area is for_each_vmap_area


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert pyvmalloc.__version__ == version("pyvmalloc")
