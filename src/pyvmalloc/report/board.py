"""Board inputs: a what-if from a board's ``/proc/vmallocinfo`` and its ``dmesg``.

The engineers who run out of vmalloc space usually have two files, not a trace: the
board's ``/proc/vmallocinfo`` and the kernel log with the failure. This module

* parses the failure lines of every era (:func:`parse_dmesg`); each request records
  the wording family it was found in (``FailedRequest.era``):

  - ``vmap allocation for size N failed: use vmalloc=<size> to increase size``
    (``alloc_vmap_area``; v4.19, v5.4 and still v6.2; N is the area size, guard page
    included);
  - ``vmalloc_node_range for size N failed: Address range restricted to S - E``
    (its successor, 2024: "vmalloc: modify the alloc_vmap_area() error message for
    better diagnostics"; v6.18 prints it), with the range asked for;
  - ``COMM: vmalloc: allocation failure: N bytes, mode:0x...(...)`` (``warn_alloc`` in
    ``__vmalloc_node_range``, v4.19/v5.4; N is the caller's size);
  - ``COMM: vmalloc size N allocation failure: vm_struct allocation failed`` (the
    short-lived v5.13 wording) and ``COMM: vmalloc error: size N, vm_struct allocation
    failed, mode:...`` (v5.14 onward, so v6.x);
  - page failures, which more ``vmalloc=`` does not cure: ``vmalloc: allocation
    failure, allocated X of N bytes`` (v4.19/v5.4), ``vmalloc error: size N, failed to
    allocate pages`` / ``page order K, failed to allocate pages`` / ``failed to map
    pages`` (6.x) and ``page allocation failure: order:K``.

  A ``vmap``/``vmalloc_node_range`` warning and the ``warn_alloc`` line that follows it
  for the same request are one request: the area size N covers the caller's size
  rounded to a page plus the guard page (with 4 KiB to 64 KiB pages).

* places the board's busy areas into a chosen layout (:func:`place_board`): areas of
  the modules area keep their offset from ``MODULES_VADDR``; the static mappings ARM
  makes at fixed addresses at boot (``iotable_init``, ``pci_reserve_io``,
  ``pmd_empty_section_gap``, ``vm_reserve_area_early``, ``debug_ll_io_init``) keep
  their address; every other area keeps its offset from ``VMALLOC_START`` — so when
  ``vmalloc=`` moves ``VMALLOC_START`` the areas move with it (**relocated**: the real
  kernel would have allocated them anew, lowest first, so the free space of the real
  board can be laid out differently), and an area that no longer fits where it was is
  given the lowest free place that fits. Lazily freed (``unpurged``) areas count as
  free: the allocator purges them before it fails.

* answers (:func:`board_whatif`): which failed requests fit in the target and where,
  the largest free block before and after, and the smallest ``vmalloc=`` that fits
  all of them while leaving a free block of at least the margin.

>>> reqs = parse_dmesg(["[  12.5] vmap allocation for size 8392704 failed: use vmalloc=<size> to increase size",
...                     "[  12.5] insmod: vmalloc: allocation failure: 8388608 bytes, mode:0xcc0(GFP_KERNEL), nodemask=(null)"])
>>> len(reqs), reqs[0].area_size, reqs[0].size, reqs[0].comm
(1, 8392704, 8388608, 'insmod')
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyvmalloc.config import PAGE_SIZE, Machine, get_profile
from pyvmalloc.errors import InputError
from pyvmalloc.kernel import Kernel
from pyvmalloc.trace.snapshot import (
    HashedAddressError,
    VmallocEntry,
    VmallocInfo,
    VmallocInfoError,
    parse_vmallocinfo,
)
from pyvmalloc.vmap.area import is_err
from pyvmalloc.vmap.space import VmapSpace

__all__ = [
    "STATIC_CALLERS",
    "TABLE_ROWS",
    "BoardResult",
    "FailedRequest",
    "Placement",
    "RequestOutcome",
    "board_whatif",
    "parse_dmesg",
    "place_board",
    "read_board_vmallocinfo",
    "smallest_vmalloc",
]

MiB = 1 << 20

#: Callers of ARM's boot-time static mappings (arch/arm/mm/mmu.c, ioremap.c): these
#: vm areas sit at addresses fixed by the platform, not chosen by the allocator.
STATIC_CALLERS = (
    "iotable_init",
    "pci_reserve_io",
    "pmd_empty_section_gap",
    "vm_reserve_area_early",
    "debug_ll_io_init",
)

Kind = Literal["vmap", "pages"]

_PREFIX = r"^(?:<\d+>)?(?:\[\s*[\d.]+\]\s*)?(?:.*?kernel:\s*)?(?:\[\s*[\d.]+\]\s*)?"
_MODE = r"(?:,\s*mode:(0x[0-9a-f]+)(?:\(([^)]*)\))?)?"
_R_VMAP_OLD = re.compile(
    r"vmap allocation for size (\d+) failed: use vmalloc=<size> to increase size"
)
_R_VMAP_NEW = re.compile(
    r"vmalloc_node_range for size (\d+) failed: Address range restricted to "
    r"(0x[0-9a-f]+) - (0x[0-9a-f]+)"
)
_R_VMALLOC_OLD = re.compile(
    _PREFIX + r"(?:(\S+): )?vmalloc: allocation failure: (\d+) bytes" + _MODE
)
_R_VMALLOC_PAGES_OLD = re.compile(
    _PREFIX + r"(?:(\S+): )?vmalloc: allocation failure, allocated (\d+) of (\d+) bytes" + _MODE
)
_WHAT = (
    r"(vm_struct allocation failed|failed to allocate pages|page order \d+, failed to "
    r"allocate pages|failed to map pages)(?:\. Retrying\.)?"
)
_R_VMALLOC_NEW = re.compile(_PREFIX + r"(?:(\S+): )?vmalloc error: size (\d+), " + _WHAT + _MODE)
_R_VMALLOC_513 = re.compile(
    _PREFIX + r"(?:(\S+): )?vmalloc size (\d+) allocation failure: " + _WHAT + _MODE
)
_R_PAGE_ALLOC = re.compile(_PREFIX + r"(?:(\S+): )?page allocation failure: order:(\d+)" + _MODE)
#: Failed requests the text answer lists one per row (``--json`` has them all): a log
#: with thousands of failures would otherwise print (and lay out) thousands of rows.
TABLE_ROWS = 40
#: How many lines after a vmap warning its warn_alloc line may come.
_PAIR_WINDOW = 8
#: Largest page size a log may come from (arm64 64K): pairs the two lines of a request.
_MAX_PAGE_SIZE = 65536
_ERA = {
    _R_VMALLOC_OLD.pattern: "vmalloc: allocation failure",
    _R_VMALLOC_NEW.pattern: "vmalloc error",
    _R_VMALLOC_513.pattern: "vmalloc size ... allocation failure",
}


def _page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass
class FailedRequest:
    """One failed request found in the kernel log."""

    line: int
    kind: Kind
    #: The caller's size in bytes (``real_size``), or the area size when only the
    #: vmap warning was printed.
    size: int
    #: Bytes of address space the request needs: ``PAGE_ALIGN(size) + PAGE_SIZE``.
    area_size: int
    text: str
    #: The wording family of the (first) line, see the module docstring.
    era: str
    comm: str | None = None
    mode: str | None = None
    #: The range asked for (6.x vmap warning only).
    vstart: int | None = None
    vend: int | None = None
    lines: list[int] = field(default_factory=list)


def parse_dmesg(source: str | os.PathLike[str] | Iterable[str]) -> list[FailedRequest]:
    """Failed vmalloc/vmap requests (and page failures) in a kernel log, in log order.

    ``source`` is a path, the log's text (a ``str`` with a newline) or its lines.
    Unrelated lines are skipped.
    """
    path: str | None = None
    if isinstance(source, str) and "\n" in source:
        lines: list[str] = source.split("\n")
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        # a log may hold any bytes; lines end at \n only (as the kernel writes them)
        try:
            data = Path(source).read_bytes()
        except OSError as e:  # a read error (EIO) carries no file name of its own
            raise InputError(f"cannot read: {e.strerror or e}", path=path) from None
        lines = data.decode("utf-8", "replace").split("\n")
    else:
        lines = list(source)

    def num(digits: str, no: int, text: str, what: str = "size", shift: int = 0) -> int:
        """A printed ``%lu``/``%u``: the value, or an InputError if no kernel prints it."""
        if not digits.isascii():
            raise InputError(f"{what} is not ASCII digits (the kernel prints ASCII)", path=path,
                             line=no, text=text)  # fmt: skip
        hexa = digits.startswith("0x")
        v = int(digits, 16 if hexa else 10) if len(digits) <= 40 else 1 << 64
        if (v >= 64 or (PAGE_SIZE << v) >> 64) if shift else v >> 64:
            raise InputError(
                f"{what} {digits[:24]}{'...' if len(digits) > 24 else ''} makes a request "
                "that does not fit in an unsigned long: no kernel prints this",
                path=path,
                line=no,
                text=text,
            )
        return v

    def vmap_size(digits: str, no: int, text: str) -> int:
        """The size of a vmap warning: what alloc_vmap_area was asked for, which is
        never 0 and always whole pages (it returns -EINVAL before the warning, or
        BUG()s in 4.19/5.4, otherwise)."""
        v = num(digits, no, text)
        if not v or v % PAGE_SIZE:
            raise InputError(
                f"size {v} is not a whole number of pages: the kernel's vmap warning "
                "prints the page-aligned area size",
                path=path,
                line=no,
                text=text,
            )
        return v

    out: list[FailedRequest] = []
    pending: FailedRequest | None = None  # a vmap warning waiting for its warn_alloc line
    for no, raw in enumerate(lines, 1):
        if "alloc" not in raw:  # in every failure wording ("vmalloc", "allocation")
            continue
        text = raw.rstrip()
        if pending is not None and no - pending.line > _PAIR_WINDOW:
            pending = None
        m = _R_VMAP_NEW.search(text)
        if m:
            size = vmap_size(m.group(1), no, text)
            pending = FailedRequest(
                no,
                "vmap",
                size,
                size,
                text,
                "vmalloc_node_range",
                vstart=num(m.group(2), no, text, "start"),
                vend=num(m.group(3), no, text, "end"),
                lines=[no],
            )
            out.append(pending)
            continue
        m = _R_VMAP_OLD.search(text)
        if m:
            size = vmap_size(m.group(1), no, text)
            pending = FailedRequest(no, "vmap", size, size, text, "vmap allocation", lines=[no])
            out.append(pending)
            continue
        m = (
            _R_VMALLOC_OLD.search(text)
            or _R_VMALLOC_NEW.search(text)
            or _R_VMALLOC_513.search(text)
        )
        if m:
            new = m.re is not _R_VMALLOC_OLD
            comm, size = m.group(1), num(m.group(2), no, text)
            what = m.group(3) if new else "vm_struct allocation failed"
            mode = m.group(4) if new else m.group(3)
            kind: Kind = "vmap" if what == "vm_struct allocation failed" else "pages"
            area = _page_align(size) + PAGE_SIZE
            era = _ERA[m.re.pattern]
            if (
                kind == "vmap"
                and pending is not None
                and pending.comm is None
                and 0 <= pending.area_size - size <= 2 * _MAX_PAGE_SIZE
            ):
                pending.size, pending.comm, pending.mode = size, comm, mode
                pending.lines.append(no)
                pending = None
                continue
            out.append(FailedRequest(no, kind, size, area, text, era, comm, mode, lines=[no]))
            pending = None
            continue
        m = _R_VMALLOC_PAGES_OLD.search(text)
        if m:
            num(m.group(2), no, text, "allocated")
            size = num(m.group(3), no, text)
            out.append(
                FailedRequest(
                    no,
                    "pages",
                    size,
                    _page_align(size) + PAGE_SIZE,
                    text,
                    "vmalloc: allocation failure",
                    m.group(1),
                    m.group(4),
                    lines=[no],
                )
            )
            continue
        m = _R_PAGE_ALLOC.search(text)
        if m:
            size = PAGE_SIZE << num(m.group(2), no, text, "order", shift=1)
            out.append(
                FailedRequest(
                    no,
                    "pages",
                    size,
                    size,
                    text,
                    "page allocation failure",
                    m.group(1),
                    m.group(3),
                    lines=[no],
                )
            )
    return out


def read_board_vmallocinfo(path: str | os.PathLike[str] | VmallocInfo) -> VmallocInfo:
    """Parse a board's vmallocinfo, explaining hashed or zeroed (``%pK``) addresses.

    On 32-bit boards a hashed pointer has 8 hex digits like a real one, so the parser
    only notices that ``end - start`` is not the size; that is reported as hashing.
    """
    if isinstance(path, VmallocInfo):
        return path
    try:
        return parse_vmallocinfo(path)
    except HashedAddressError:
        raise
    except VmallocInfoError as e:
        if e.reason.startswith("end - start") and re.match(r"^0x[0-9a-f]{8}-", e.text):
            from pyvmalloc.trace.snapshot import _HOW_TO_READ

            raise HashedAddressError(_HOW_TO_READ, path=e.path, line=e.line, text=e.text) from None
        raise


@dataclass
class Placement:
    """The board's areas placed into one layout."""

    machine: Machine
    space: VmapSpace
    kept: int = 0
    relocated: int = 0
    #: Areas that could not stay at their (relocated) place and went elsewhere.
    moved: list[tuple[VmallocEntry, int]] = field(default_factory=list)
    #: Areas that fit nowhere in the target.
    lost: list[VmallocEntry] = field(default_factory=list)
    delta: int = 0

    def largest_free(self, lo: int | None = None, hi: int | None = None) -> int:
        """Largest free block inside ``[lo, hi)`` (default: the vmalloc range)."""
        lo = self.space.vmalloc_start if lo is None else lo
        hi = self.space.vmalloc_end if hi is None else hi
        best = 0
        for va in self.space.free_areas():
            s, e = max(va.va_start, lo), min(va.va_end, hi)
            best = max(best, e - s)
        return best

    def free_bytes(self) -> int:
        return sum(self.space.range_sizes(self.space.free_areas()))

    def usable_free(self) -> int:
        """Free bytes a failed request can be given: those of the vmalloc range and
        of the modules area (counted once where they overlap)."""
        m = self.machine
        spans = sorted([(m.vmalloc_start, m.vmalloc_end), (m.modules_vaddr, m.modules_end)])
        (a0, a1), (b0, b1) = spans
        if b0 <= a1:  # overlapping or touching: one span
            spans = [(a0, max(a1, b1))]
        total = 0
        for va in self.space.free_areas():
            for lo, hi in spans:
                s, e = max(va.va_start, lo), min(va.va_end, hi)
                if e > s:
                    total += e - s
        return total


def _region(e: VmallocEntry, src: Machine) -> str:
    separate = src.modules_end <= src.vmalloc_start or src.modules_vaddr >= src.vmalloc_end
    if separate and src.modules_vaddr <= e.start and e.end <= src.modules_end:
        return "modules"
    caller = (e.caller or "").split("+", 1)[0]
    if caller in STATIC_CALLERS:
        return "static"
    return "vmalloc"


def place_board(
    info: VmallocInfo, target: Machine, source: Machine, profile: str = "6.18"
) -> Placement:
    """Place ``info``'s busy areas (read on ``source``) into ``target``'s layout."""
    k = Kernel(get_profile(profile), machine=target, deferred_work="manual")
    space = k.vmap_space
    pl = Placement(target, space, delta=target.vmalloc_start - source.vmalloc_start)
    mod_delta = target.modules_vaddr - source.modules_vaddr
    later: list[tuple[VmallocEntry, str]] = []
    for e in sorted(info.busy, key=lambda e: e.start):
        region = _region(e, source)
        if region == "modules":
            start, lo, hi = e.start + mod_delta, target.modules_vaddr, target.modules_end
        elif region == "static":
            start, lo, hi = e.start, target.vmalloc_start, target.vmalloc_end
        else:
            start, lo, hi = e.start + pl.delta, target.vmalloc_start, target.vmalloc_end
        end = start + e.size
        va = None
        if lo <= start and end <= hi:
            va = space.alloc_vmap_area(e.size, PAGE_SIZE, start, end, gfp_nowarn=True)
            va = None if is_err(va) else va
        if va is None:
            later.append((e, region))
            continue
        if start == e.start:
            pl.kept += 1
        else:
            pl.relocated += 1
    for e, region in later:
        lo, hi = (
            (target.modules_vaddr, target.modules_end)
            if region == "modules"
            else (target.vmalloc_start, target.vmalloc_end)
        )
        va = space.alloc_vmap_area(e.size, PAGE_SIZE, lo, hi, gfp_nowarn=True)
        if is_err(va):
            pl.lost.append(e)
        else:
            pl.moved.append((e, va.va_start))  # type: ignore[union-attr]
    return pl


@dataclass
class RequestOutcome:
    """Where one failed request lands in a layout (``addr`` None: it does not fit)."""

    request: FailedRequest
    addr: int | None
    where: str = ""


def _modules_request(r: FailedRequest, source: Machine) -> bool:
    return r.vstart is not None and r.vstart == source.modules_vaddr


def _try_requests(
    pl: Placement, requests: list[FailedRequest], source: Machine, *, stop_at_failure: bool = False
) -> list[RequestOutcome]:
    """Allocate each request in ``pl``, in log order; with ``stop_at_failure`` the
    outcomes end at the first request that does not fit."""
    m, space = pl.machine, pl.space
    out: list[RequestOutcome] = []
    for r in requests:
        if r.kind != "vmap":
            out.append(RequestOutcome(r, None, "page shortage: vmalloc= does not help"))
            continue
        ranges = [(m.vmalloc_start, m.vmalloc_end, "vmalloc range")]
        if _modules_request(r, source):
            ranges = [(m.modules_vaddr, m.modules_end, "modules area")]
            if m.layout.get("MODULES_FALLBACK_END"):
                ranges.append((m.vmalloc_start, m.vmalloc_end, "vmalloc range (module PLTs)"))
        got: RequestOutcome | None = None
        for lo, hi, name in ranges:
            va = space.alloc_vmap_area(r.area_size, PAGE_SIZE, lo, hi, gfp_nowarn=True)
            if not is_err(va):
                got = RequestOutcome(r, va.va_start, name)  # type: ignore[union-attr]
                break
        out.append(got or RequestOutcome(r, None, "no free block large enough"))
        if got is None and stop_at_failure:
            break
    return out


@dataclass
class BoardResult:
    """The answers of a board what-if."""

    source: Machine
    target: Machine
    profile: str
    requests: list[FailedRequest]
    before: list[RequestOutcome]
    after: list[RequestOutcome]
    largest_free_before: int
    largest_free_after: int
    largest_free_after_requests: int
    placement: Placement
    margin: int
    smallest_vmalloc: int | None = None
    smallest_vmalloc_lowmem: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def req(o: RequestOutcome) -> dict[str, Any]:
            r = o.request
            return {
                "line": r.line,
                "kind": r.kind,
                "size": r.size,
                "area_size": r.area_size,
                "comm": r.comm,
                "era": r.era,
                "fits": o.addr is not None,
                "addr": None if o.addr is None else f"{o.addr:#x}",
                "where": o.where,
            }

        t = self.target
        return {
            "profile": self.profile,
            "target": {
                "arch": t.arch,
                "ram": t.ram,
                "vmalloc": t.vmalloc_reserve,
                "vmalloc_start": f"{t.vmalloc_start:#x}",
                "vmalloc_end": f"{t.vmalloc_end:#x}",
            },
            "largest_free_before": self.largest_free_before,
            "largest_free_after": self.largest_free_after,
            "largest_free_after_requests": self.largest_free_after_requests,
            "requests_before": [req(o) for o in self.before],
            "requests_after": [req(o) for o in self.after],
            "relocated_by": self.placement.delta,
            "areas_moved": len(self.placement.moved),
            "areas_lost": len(self.placement.lost),
            "margin": self.margin,
            "smallest_vmalloc": self.smallest_vmalloc,
            "smallest_vmalloc_lowmem": self.smallest_vmalloc_lowmem,
            "notes": self.notes,
        }


def _fits_all(
    info: VmallocInfo,
    requests: list[FailedRequest],
    target: Machine,
    source: Machine,
    profile: str,
    margin: int,
) -> bool:
    """Every board area and every address-space request placed on ``target``, and a
    free block of ``margin`` bytes left."""
    vmap = [r for r in requests if r.kind == "vmap"]
    return _fits_vmap(info, vmap, sum(r.area_size for r in vmap), target, source, profile, margin)


def _fits_vmap(
    info: VmallocInfo,
    vmap: list[FailedRequest],
    demand: int,
    target: Machine,
    source: Machine,
    profile: str,
    margin: int,
) -> bool:
    """:func:`_fits_all` for the vmap requests ``vmap`` (``demand``: their area sizes
    summed). The requests and the margin block are disjoint pieces of the free space
    of the vmalloc range and the modules area, so a layout with less free space there
    than ``demand + margin``, or no free block of ``margin`` before the requests, fails
    without trying a request; otherwise the requests are tried in order up to the first that fails
    (each candidate ``vmalloc=`` costs the requests it fits, not the whole log)."""
    pl = place_board(info, target, source, profile)
    if pl.lost or pl.usable_free() < demand + margin or pl.largest_free() < margin:
        return False  # (requests only take space: the largest block never grows)
    outcomes = _try_requests(pl, vmap, source, stop_at_failure=True)
    return (
        len(outcomes) == len(vmap)
        and all(o.addr is not None for o in outcomes)
        and (pl.largest_free() >= margin)
    )


def smallest_vmalloc(
    info: VmallocInfo,
    requests: list[FailedRequest],
    target: Machine,
    source: Machine,
    profile: str = "6.18",
    margin: int = 32 * MiB,
    step: int = 8 * MiB,
) -> int | None:
    """The smallest ``vmalloc=`` (a multiple of ``step``) that fits everything.

    "Fits" means: every board area is placed, every failed address-space request is
    placed, and a free block of at least ``margin`` bytes is left. 8 MiB steps, since
    ``VMALLOC_START`` is rounded to ``VMALLOC_OFFSET`` anyway. None if even the
    largest ``vmalloc=`` the kernel accepts does not fit.
    """
    if target.arch not in ("arm", "i386"):
        raise ValueError("vmalloc= is a boot option of 32-bit kernels (arm, i386)")
    largest: int | None = None
    if target.arch == "arm":
        from pyvmalloc.arch.arm import early_vmalloc

        # the largest value early_vmalloc() accepts (a larger one is clamped to it)
        largest = early_vmalloc(target.with_(vmalloc_reserve=1 << 32))[0]
    vmap = [r for r in requests if r.kind == "vmap"]
    demand = sum(r.area_size for r in vmap)
    size = 16 * MiB
    while True:
        if largest is not None and size > largest:
            if size - step >= largest:
                return None
            size = largest  # the kernel's maximum, tried once
        try:
            m = target.with_(vmalloc_reserve=size)
        except ValueError:  # i386: no lowmem left
            return None
        if _fits_vmap(info, vmap, demand, m, source, profile, margin):
            return size
        if size == largest:
            return None
        size += step


def board_whatif(
    vmallocinfo: str | os.PathLike[str] | VmallocInfo,
    dmesg: str | os.PathLike[str] | Iterable[str] | None = None,
    *,
    target: Machine,
    source: Machine | None = None,
    profile: str = "6.18",
    margin: int = 32 * MiB,
) -> BoardResult:
    """Answer what the board's failed requests would do on ``target``.

    ``source`` is the board as it ran (default: ``target`` without ``vmalloc=``, the
    kernel's default 240 MiB).
    """
    prof = get_profile(profile)
    if target.kernel_release != prof.name:
        raise ValueError(
            f"the target machine has the {target.kernel_release} layout rules but the "
            f"profile is {prof.name}: build it with kernel_release={prof.name!r}"
        )
    info = read_board_vmallocinfo(vmallocinfo)
    requests = parse_dmesg(dmesg) if dmesg is not None else []
    source = source or target.with_(vmalloc_reserve=0)
    notes: list[str] = []
    lo_kernel = min(source.modules_vaddr, source.vmalloc_start)
    outside = [
        e
        for e in info.busy
        if not (source.vmalloc_start <= e.start and e.end <= source.vmalloc_end)
        and not (source.modules_vaddr <= e.start and e.end <= source.modules_end)
    ]
    if outside:
        e = outside[0]
        raise InputError(
            f"{len(outside)} areas of the vmallocinfo lie outside the board layout "
            f"(vmalloc {source.vmalloc_start:#x}-{source.vmalloc_end:#x}, modules "
            f"{source.modules_vaddr:#x}-{source.modules_end:#x}), first {e.start:#x}-{e.end:#x} "
            f"(line {e.line}); give the board's own RAM, split and vmalloc= (--board-ram, "
            f"--vmsplit, --board-vmalloc)"
            + (" or the board's arch" if e.start < lo_kernel else ""),
            path=info.path,
            line=e.line,
        )
    before_pl = place_board(info, source, source, profile)
    lf_before = before_pl.largest_free()
    before = _try_requests(before_pl, requests, source)
    pl = place_board(info, target, source, profile)
    lf_after = pl.largest_free()
    after = _try_requests(pl, requests, source)
    lf_after_req = pl.largest_free()
    if pl.delta:
        notes.append(
            f"VMALLOC_START moves by {pl.delta / MiB:+,.0f} MiB "
            f"({source.vmalloc_start:#x} -> {target.vmalloc_start:#x}): the board's areas are "
            "relocated with it, keeping their offsets; the real kernel would allocate them "
            "anew, lowest address first, so its free space may be laid out differently"
        )
    if pl.moved:
        notes.append(f"{len(pl.moved)} areas did not fit at their place and were put elsewhere")
    if pl.lost:
        notes.append(f"{len(pl.lost)} areas of the board do not fit the target at all")
    if info.unpurged:
        notes.append(
            f"{len(info.unpurged)} lazily freed areas count as free (the allocator purges "
            "them before it fails)"
        )
    fit_before = [o for o in before if o.addr is not None]
    if fit_before:
        notes.append(
            f"{len(fit_before)} failed requests fit the board's own layout as read: the "
            "space was taken by areas freed before the vmallocinfo was read (read it at the "
            "failure), or by lazily freed areas"
        )
    if not requests and dmesg is not None:
        notes.append("the log has no vmalloc failure lines")
    if any(r.kind == "pages" for r in requests):
        notes.append("page allocation failures are a memory shortage: vmalloc= does not cure them")
    res = BoardResult(
        source,
        target,
        profile,
        requests,
        before,
        after,
        lf_before,
        lf_after,
        lf_after_req,
        pl,
        margin,
        notes=notes,
    )
    if target.arch in ("arm", "i386"):
        default = target.with_(vmalloc_reserve=0)
        if _fits_all(info, requests, default, source, profile, margin):
            notes.append(
                f"the kernel's default layout (no vmalloc=, {default.vmalloc_total / MiB:,.0f} "
                "MiB) already fits them with the margin"
            )
        res.smallest_vmalloc = smallest_vmalloc(info, requests, target, source, profile, margin)
        if res.smallest_vmalloc is not None:
            best = target.with_(vmalloc_reserve=res.smallest_vmalloc)
            res.smallest_vmalloc_lowmem = best.layout.get("LOWMEM_BYTES")
    return res


def print_board(res: BoardResult, *, stderr: bool = False) -> None:
    """The answers, as text (on stderr when stdout carries the JSON)."""
    from rich.table import Table

    from pyvmalloc.cli_output import console

    c = console(stderr=stderr)
    t, s = res.target, res.source

    def mib(n: int) -> str:
        return f"{n / MiB:,.1f} MiB"

    vm_opt = f"{t.vmalloc_reserve >> 20}M" if t.vmalloc_reserve else "default"
    c.print(
        f"[bold]board what-if[/]: kernel {res.profile}, {t.arch}, {t.ram >> 20} MiB RAM, "
        f"vmalloc={vm_opt}: vmalloc range "
        f"{t.vmalloc_start:#x}-{t.vmalloc_end:#x} ({mib(t.vmalloc_total)}); board: "
        f"{s.vmalloc_start:#x}-{s.vmalloc_end:#x} ({mib(s.vmalloc_total)})"
    )
    tab = Table(show_header=False)
    tab.add_row("largest free block, board as read", mib(res.largest_free_before))
    tab.add_row("largest free block, target (board areas placed)", mib(res.largest_free_after))
    tab.add_row(
        "largest free block, target after the failed requests", mib(res.largest_free_after_requests)
    )
    c.print(tab)
    if res.requests:
        rt = Table(title="failed requests from the log")
        for col in ("log line", "who", "bytes", "area", "before", "target"):
            rt.add_column(col)
        shown = list(zip(res.before, res.after, strict=True))
        for b, a in shown[:TABLE_ROWS]:
            r = a.request
            rt.add_row(
                ",".join(map(str, r.lines)),
                r.comm or "-",
                f"{r.size:,}",
                f"{r.area_size >> 10:,} KiB" if r.kind == "vmap" else r.kind,
                "fits" if b.addr is not None else "fails",
                f"fits at {a.addr:#x} ({a.where})" if a.addr is not None else f"fails: {a.where}",
            )
        c.print(rt)
        if len(shown) > TABLE_ROWS:
            fit_b = sum(o.addr is not None for o in res.before)
            fit_a = sum(o.addr is not None for o in res.after)
            c.print(
                f"{len(shown) - TABLE_ROWS:,} more failed requests not shown; of all "
                f"{len(shown):,}, {fit_b:,} fit the board as read and {fit_a:,} fit the "
                "target (--json OUT lists every one)"
            )
    if res.smallest_vmalloc is not None:
        low = res.smallest_vmalloc_lowmem
        c.print(
            f"smallest vmalloc= that fits all of them and leaves a free block of "
            f"{mib(res.margin)}: [bold]vmalloc={res.smallest_vmalloc >> 20}M[/]"
            + (f" (lowmem then {mib(low)})" if low is not None else "")
        )
    elif t.arch in ("arm", "i386"):
        c.print(f"no vmalloc= fits them all with a {mib(res.margin)} margin")
    for n in res.notes:
        c.print(f"[yellow]note:[/] {n}")


def add_board_options(p: Any) -> None:
    """The board and layout options of ``pyvmalloc whatif`` (and ``sweep``)."""
    g = p.add_argument_group("board inputs and layout")
    g.add_argument(
        "--from-vmallocinfo",
        metavar="FILE",
        help="a board's /proc/vmallocinfo: its busy areas are the starting state",
    )
    g.add_argument("--dmesg", metavar="FILE", help="the board's kernel log: its failed requests")
    g.add_argument(
        "--board-vmalloc",
        metavar="SIZE",
        help="the vmalloc= the board ran with (default: none, the kernel's 240 MiB)",
    )
    g.add_argument("--board-ram", metavar="SIZE", help="the board's RAM (default: --ram)")
    g.add_argument(
        "--margin", default="32M", help="free block to keep when sizing vmalloc= (default 32M)"
    )
    g.add_argument(
        "--vmsplit", default="3G", help="arm: CONFIG_VMSPLIT_ 3G, 3G_OPT, 2G or 1G (default 3G)"
    )
    g.add_argument("--lpae", action="store_true", help="arm: CONFIG_ARM_LPAE")
    g.add_argument("--no-highmem", action="store_true", help="arm: CONFIG_HIGHMEM off")
    g.add_argument("--thumb2", action="store_true", help="arm: CONFIG_THUMB2_KERNEL")
    g.add_argument("--no-module-plts", action="store_true", help="arm: CONFIG_ARM_MODULE_PLTS off")
    g.add_argument(
        "--phys-offset", default="0", help="arm: PHYS_OFFSET (where RAM starts; default 0)"
    )
    g.add_argument(
        "--va-bits", type=int, default=48, help="arm64: CONFIG_ARM64_VA_BITS (default 48)"
    )


def machine_from_args(
    args: Any, *, cpus: int, ram: str | None = None, vmalloc: str | None = None
) -> Machine:
    """The target :class:`Machine` of the what-if/sweep command-line options."""
    from pyvmalloc.config import parse_size

    vm = args.vmalloc if vmalloc is None else vmalloc
    return Machine(
        arch=args.arch,
        paging_levels=args.paging_levels if args.arch == "x86_64" else 4,
        cpus_online=cpus,
        ram=parse_size(ram or args.ram),
        vmalloc_reserve=parse_size(vm) if vm else 0,
        kernel_release=get_profile(args.profile).name,
        vmsplit=getattr(args, "vmsplit", "3G"),
        lpae=getattr(args, "lpae", False),
        highmem=not getattr(args, "no_highmem", False),
        thumb2=getattr(args, "thumb2", False),
        module_plts=not getattr(args, "no_module_plts", False),
        phys_offset=parse_size(getattr(args, "phys_offset", "0")),
        va_bits=getattr(args, "va_bits", 48),
    )


def cmd_board_whatif(args: Any) -> int:
    """``pyvmalloc whatif --from-vmallocinfo FILE [--dmesg FILE] ...`` (no capture)."""
    import json

    from pyvmalloc.config import parse_size

    if not args.from_vmallocinfo:
        raise ValueError("give a capture directory, or --from-vmallocinfo FILE for a board what-if")
    target = machine_from_args(args, cpus=args.cpus or 2)
    source = machine_from_args(
        args,
        cpus=args.cpus or 2,
        ram=args.board_ram or args.ram,
        vmalloc=args.board_vmalloc or "",
    )
    res = board_whatif(
        args.from_vmallocinfo,
        args.dmesg,
        target=target,
        source=source,
        profile=args.profile,
        margin=parse_size(args.margin),
    )
    out = args.json  # --json OUT ('-': stdout) also serves the board what-if
    print_board(res, stderr=out == "-")  # --json OUT ('-': stdout) also serves the board what-if
    if out:
        from pyvmalloc.cli_output import jsonable

        text = json.dumps(jsonable(res.as_json()), indent=1)  # addresses as "0x..."
        if out == "-":
            print(text)
        else:
            from pyvmalloc.cli_output import write_output

            write_output(out, text)
    return 0
