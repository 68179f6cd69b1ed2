"""``pyvmalloc kmem``: crash's ``kmem -v`` and ``kmem ADDR`` on a model state.

* ``kmem -v`` lists the busy vmap areas as crash does (``VMAP_AREA  VM_STRUCT
  ADDRESS RANGE  SIZE``). The model keeps no kernel address for ``struct vmap_area``
  objects (a kmem_cache the model does not allocate from), so that column shows
  ``-``; ``VM_STRUCT`` is the vm_struct's kmalloc address, ``-`` for areas without
  one (``vm_map_ram``, and areas seeded from a snapshot).
* ``kmem ADDR ...`` says what each address is: inside which busy area at which offset
  (and whether that is the guard page, which is never mapped), lazily freed (on which
  node's purge list), being purged, pooled (node and size class), part of a free
  block, or outside the ranges the vmap allocator serves.

The state is a fresh model, the model after ``--before "CALLS"`` (as for ``explain``),
or a capture: its start snapshot (``--at start``) or the model after replaying the
whole capture (``--at end``, the default).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvmalloc.config import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from pyvmalloc.kernel import Kernel
    from pyvmalloc.vmap.area import VmapArea

__all__ = ["AddressInfo", "kmem_lines", "kmem_v", "load_state", "register_cli", "what_is"]

KMEM_V_HEADER = "   VMAP_AREA         VM_STRUCT                 ADDRESS RANGE                SIZE"


@dataclass
class AddressInfo:
    """What one address is in a model state (``pyvmalloc kmem ADDR``)."""

    addr: int
    #: busy, guard, lazy, purging, pool, free, outside
    kind: str
    text: str
    start: int | None = None
    end: int | None = None
    offset: int | None = None
    node: int | None = None
    #: Pool size class: areas of exactly this many pages (guard included).
    pool_pages: int | None = None
    #: Position in the pool (0: the head, handed out next).
    pool_position: int | None = None
    caller: str | None = None
    vm_struct: int | None = None
    pfn: int | None = None
    page: dict[str, Any] = field(default_factory=dict)


def _range_name(k: Kernel, addr: int) -> str | None:
    m = k.machine
    if m.vmalloc_start <= addr < m.vmalloc_end:
        return "vmalloc"
    if m.arch == "x86_64" and m.modules_vaddr <= addr < m.modules_end:
        return "modules"
    return None


def _region(k: Kernel, addr: int) -> str:
    lay = k.machine.layout
    po = lay.get("PAGE_OFFSET", 0)
    if po <= addr < k.machine.vmalloc_start:
        return "in the direct map (PAGE_OFFSET..VMALLOC_START)"
    if addr < po:
        return "below PAGE_OFFSET (user space, or the non-canonical hole)"
    return "elsewhere in kernel space (vmemmap, fixmap, kernel text...)"


def _busy_info(k: Kernel, addr: int, va: VmapArea) -> AddressInfo:
    from pyvmalloc.helpers import vmalloc_to_page
    from pyvmalloc.vmalloc import VM_NO_GUARD
    from pyvmalloc.vmap.area import VMAP_BLOCK, VMAP_RAM

    off = addr - va.va_start
    vm = va.vm
    info = AddressInfo(addr, "busy", "", va.va_start, va.va_end, off)
    size = va.va_end - va.va_start
    if vm is not None:
        info.caller = vm.caller
        info.vm_struct = vm.kaddr or None
        guard = not vm.flags & VM_NO_GUARD
        what = "vm_struct area"
        if guard and addr >= vm.addr + vm.size - PAGE_SIZE:
            info.kind = "guard"
            info.text = (
                f"the guard page of {va.va_start:#x}-{va.va_end:#x} ({size} bytes"
                f"{', ' + vm.caller if vm.caller else ''}), offset {off:#x}: never mapped, "
                "a stray access faults"
            )
            return info
    elif va.flags & VMAP_BLOCK:
        what = "vmap block (vm_map_ram's per-CPU block)"
    elif va.flags & VMAP_RAM:
        what = "vm_map_ram area"
    else:
        what = "busy area without a vm_struct (seeded from a snapshot, or being set up)"
    node = ""
    if k.vmap_space.nr_vmap_nodes > 1:
        vn = k.vmap_space.decode_vn_id(va.flags)
        if vn >= 0:
            info.node = vn
            node = f", allocated on node {vn}"
    text = f"{what} {va.va_start:#x}-{va.va_end:#x} ({size} bytes{node}"
    if info.caller:
        text += f", {info.caller}"
    text += f"), offset {off:#x} (page {off >> PAGE_SHIFT})"
    page = vmalloc_to_page(k, addr) if vm is not None or va.flags & VMAP_RAM else None
    if page is not None:
        info.pfn = page.pfn
        info.page = {
            "pfn": page.pfn,
            "phys_addr": page.phys_addr + (addr & (PAGE_SIZE - 1)),
            "node": page.node,
            "zone": page.zone,
            "refcount": page.refcount,
            "flags": list(page.flags),
        }
        text += f", mapped to pfn {page.pfn:#x}"
    elif vm is not None or va.flags & VMAP_RAM:
        text += ", not mapped"
    info.text = text
    return info


def what_is(k: Kernel, addr: int) -> AddressInfo:
    """What ``addr`` is in ``k``'s vmap allocator, by the kernel's own structures."""
    space = k.vmap_space
    va = space.find_vmap_area(addr)
    if va is not None:
        return _busy_info(k, addr, va)
    several = space.nr_vmap_nodes > 1
    for lazy in space.lazy:
        if lazy.va_start <= addr < lazy.va_end:
            node = space.lazy_node_of(lazy)
            where = f"node {node}'s lazy list" if several else "the purge list"
            return AddressInfo(
                addr,
                "lazy",
                f"lazily freed {lazy.va_start:#x}-{lazy.va_end:#x} "
                f"({lazy.va_end - lazy.va_start} bytes), offset {addr - lazy.va_start:#x}: "
                f"on {where}, unmapped, reusable only after the next purge",
                lazy.va_start,
                lazy.va_end,
                addr - lazy.va_start,
                node if several else None,
            )
    for pending in space.in_purge:
        for pva in pending.batch:
            if pva.va_start <= addr < pva.va_end:
                return AddressInfo(
                    addr,
                    "purging",
                    f"being purged {pva.va_start:#x}-{pva.va_end:#x} (detached from the "
                    "lazy lists, not yet back in the free tree or a pool)",
                    pva.va_start,
                    pva.va_end,
                    addr - pva.va_start,
                )
    for node_id, idx, pva in space.pooled_areas():
        if pva.va_start <= addr < pva.va_end:
            pos = list(space.nodes[node_id].pools[idx]).index(pva)
            pages = idx + 1
            return AddressInfo(
                addr,
                "pool",
                f"pooled {pva.va_start:#x}-{pva.va_end:#x}: node {node_id}'s pool of "
                f"{pages}-page areas (pool[{idx}]), position {pos} from the head "
                f"({'next to be reused' if pos == 0 else 'reused after the ones before it'}), "
                f"offset {addr - pva.va_start:#x}",
                pva.va_start,
                pva.va_end,
                addr - pva.va_start,
                node_id,
                pages,
                pos,
            )
    rng = _range_name(k, addr)
    if rng is None:
        return AddressInfo(
            addr, "outside", f"outside the vmalloc and module ranges: {_region(k, addr)}"
        )
    for free in space.free_areas():
        if free.va_start <= addr < free.va_end:
            lo = max(free.va_start, _range_lo(k, rng))
            hi = min(free.va_end, _range_hi(k, rng))
            return AddressInfo(
                addr,
                "free",
                f"free: in the free block {free.va_start:#x}-{free.va_end:#x}, of which "
                f"{hi - lo} bytes lie in the {rng} range ({lo:#x}-{hi:#x})",
                free.va_start,
                free.va_end,
                addr - free.va_start,
            )
        if free.va_start > addr:
            break
    raise AssertionError(f"{addr:#x} is in no structure of the vmap allocator")


def _range_lo(k: Kernel, rng: str) -> int:
    return k.machine.vmalloc_start if rng == "vmalloc" else k.machine.modules_vaddr


def _range_hi(k: Kernel, rng: str) -> int:
    return k.machine.vmalloc_end if rng == "vmalloc" else k.machine.modules_end


def kmem_v(k: Kernel) -> list[dict[str, Any]]:
    """``kmem -v``: the busy areas in address order."""
    rows = []
    for va in sorted(k.vmap_space.busy_areas(), key=lambda a: a.va_start):
        vm = va.vm
        rows.append(
            {
                "vmap_area": None,
                "vm_struct": vm.kaddr if vm is not None and vm.kaddr else None,
                "start": va.va_start,
                "end": va.va_end,
                "size": va.va_end - va.va_start,
                "caller": vm.caller if vm is not None else None,
            }
        )
    return rows


def _row(r: dict[str, Any]) -> str:
    vm = f"{r['vm_struct']:16x}" if r["vm_struct"] is not None else f"{'-':>16}"
    return f"{'-':>16}  {vm}  {r['start']:16x} - {r['end']:16x}  {r['size']:7d}"


def kmem_lines(k: Kernel, info: AddressInfo) -> list[str]:
    """The text ``kmem ADDR`` prints for one address."""
    out = [f"{info.addr:x}: {info.text}"]
    if info.kind in ("busy", "guard") and info.start is not None and info.end is not None:
        out += [
            "",
            KMEM_V_HEADER,
            _row(
                {
                    "vm_struct": info.vm_struct,
                    "start": info.start,
                    "end": info.end,
                    "size": info.end - info.start,
                }
            ),
        ]
        if info.page:
            pg = info.page
            out += [
                "",
                "         PFN          PHYSICAL  NODE  ZONE     CNT  FLAGS",
                f"{pg['pfn']:12x}  {pg['phys_addr']:16x}  {pg['node']:4d}  {pg['zone']:<7}"
                f"  {pg['refcount']:3d}  {'|'.join(pg['flags']) or '0'}",
            ]
    return out


def load_state(args: argparse.Namespace, capture: str | None) -> tuple[Kernel, str, list[int]]:
    """The model state ``kmem`` looks at, a one-line description, ``--before`` results."""
    from pyvmalloc.cli_vmalloc import prepare
    from pyvmalloc.kernel import Kernel

    if capture is not None and args.before:
        raise ValueError("give either a CAPTURE or --before CALLS, not both")
    if capture is None:
        k = Kernel(profile=args.profile, cpus=args.cpus, ram=args.ram)
        results = prepare(k, args.before)
        what = f"--before {args.before!r}" if args.before else "a freshly booted model"
        return k, f"kernel {args.profile}, {args.cpus} CPUs: {what}", results
    from pyvmalloc.trace.replay import Replayer, load_capture, replay
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    p = Path(capture)
    meta: dict[str, Any] = {}
    if p.is_dir():
        trace, snap, meta = load_capture(p)
    else:
        trace, snap = None, p  # a vmallocinfo file: its state only
    possible = meta.get("cpus_possible")
    cpus = len(possible) if isinstance(possible, list) and possible else args.cpus
    if args.at == "start" or trace is None:
        rp = Replayer(parse_vmallocinfo(snap), profile=args.profile, cpus=cpus)
        return rp.kernel, f"kernel {args.profile}, {cpus} CPUs, seeded from {snap}", []
    kernels: list[Kernel] = []
    end = p / "vmallocinfo.end"
    replay(
        trace,
        snap,
        profile=args.profile,
        cpus=cpus,
        meta=meta,
        end_snapshot=end if end.exists() else None,  # stop where the kernel's end was read
        on_kernel=kernels.append,
    )
    return kernels[0], f"kernel {args.profile}, {cpus} CPUs, after replaying {p}", []


def _cmd_kmem(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable, write_json
    from pyvmalloc.cli_vmalloc import parse_address

    capture: str | None = None
    words: list[str] = []
    for w in args.words:
        if Path(w).exists() and not w.startswith("_"):
            if capture is not None:
                raise ValueError(f"two captures given: {capture} and {w}")
            capture = w
        elif "/" in w:  # no address has a slash: a capture path that is not there
            raise ValueError(f"{w}: no such file or directory (CAPTURE)")
        else:
            words.append(w)
    if args.v and words:
        raise ValueError(f"kmem -v takes no address (got {' '.join(words)})")
    if not args.v and not words:
        raise ValueError("kmem: give -v, or one or more addresses (0x..., or _N after --before)")
    check_writable(args.json, "--json")
    k, state, results = load_state(args, capture)
    addrs = [parse_address(w, results) for w in words]
    to_stdout = args.json == "-"
    out = sys.stdout
    if args.v:
        rows = kmem_v(k)
        if args.json:
            write_json(rows, args.json)
        if not to_stdout:
            out.write(f"# {state}: {len(rows)} busy areas\n{KMEM_V_HEADER}\n")
            out.writelines(_row(r) + "\n" for r in rows)
        return 0
    infos = [what_is(k, a) for a in addrs]
    if args.json:
        write_json([asdict(i) for i in infos], args.json)
    if not to_stdout:
        out.write(f"# {state}\n")
        for n, info in enumerate(infos):
            if n:
                out.write("\n")
            out.writelines(line + "\n" for line in kmem_lines(k, info))
    return 0


def register_cli(sub: Any) -> None:
    """Add the ``kmem`` subcommand."""
    from pyvmalloc.cli_output import add_json_argument, add_profile_argument

    p = sub.add_parser(
        "kmem",
        help="crash's kmem -v (busy vmap areas) and kmem ADDR (what an address is)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="ADDR|CAPTURE",
        help="addresses (0x..., bare hex, or _N: the N-th --before result) and at most "
        "one capture directory or vmallocinfo file",
    )
    p.add_argument("-v", action="store_true", help="list the busy vmap areas (crash kmem -v)")
    p.add_argument("--before", metavar="CALLS", help='setup calls, e.g. "vmalloc(8192); vfree(_1)"')
    p.add_argument(
        "--at",
        choices=["start", "end"],
        default="end",
        help="a capture's state: its start snapshot, or after replaying it (default end)",
    )
    add_profile_argument(p)
    p.add_argument("--cpus", type=int, default=2, help="online CPUs (default 2; a capture's own)")
    p.add_argument("--ram", default="4G", help="machine RAM, e.g. 64M, 4G (default 4G)")
    add_json_argument(p, "the areas or answers")
    p.set_defaults(func=_cmd_kmem)
