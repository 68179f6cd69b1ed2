"""``/proc/vmallocinfo`` parser (both eras) and the 6.x node inference.

One line per area (spec §10.1)::

    0xffffc9000000c000-0xffffc90000011000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4
    0xffffc90000005000-0xffffc90000007000    8192 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x00000000000a0000 ioremap
    0xffffe8ffff400000-0xffffe8ffff800000 4194304 vm_map_ram
    0xffffc900000c4000-0xffffc900000c9000   20480 unpurged vm_area

Fields after the size, each optional, in this order: caller (``%pS``, maybe followed
by ``[module]``), ``pages=N``, ``phys=0x…``, flag words (``ioremap``, ``sparse`` [6.9+],
``vmalloc``, ``vmap``, ``user``, ``dma-coherent``), ``vpages``, ``N<node>=<pages>``.

Era differences: 5.4 prints the busy list in global address order and then the lazily
freed areas newest first; 6.x prints node by node (busy areas grouped by the address
zone node ``(addr >> 16) % N``, each group ascending), then each node's lazy list
ascending (node = the CPU node that *allocated* the area). See
:func:`infer_lazy_nodes`.

With ``kernel.kptr_restrict=0`` the kernel prints hashed pointers (16 hex digits with
the upper 8 zero, unrelated to the real addresses); these are refused with
:class:`HashedAddressError`, since nothing can be replayed from them.

The parser is strict (every error is a :class:`VmallocInfoError`, a
:class:`pyvmalloc.InputError` naming file and line): lines end at ``\n`` only, words
are separated by spaces, numbers have at most the digits of their C type, and what
the kernel cannot print is refused: ``pages=`` beyond the area's pages, a node beyond
``MAX_NUMNODES``, and two areas (busy or lazily freed) that overlap — the kernel's
areas never do, and an overlap would otherwise make the model drop one of them. The
one overlap a real read produces, an area freed while the file was printed (busy,
then ``unpurged vm_area`` further down), keeps the later line
(:attr:`VmallocInfo.freed_while_read` lists the busy lines set aside).
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pyvmalloc.errors import InputError

__all__ = [
    "FLAG_WORDS",
    "HashedAddressError",
    "VmallocEntry",
    "VmallocInfo",
    "VmallocInfoError",
    "addr_node",
    "infer_lazy_nodes",
    "lazy_runs",
    "parse_vmallocinfo",
]

#: The flag words, in the order the kernel prints them.
FLAG_WORDS: tuple[str, ...] = ("ioremap", "sparse", "vmalloc", "vmap", "user", "dma-coherent")
_FLAG_SET = frozenset(FLAG_WORDS)
_FLAG_ORDER = {w: i for i, w in enumerate(FLAG_WORDS)}

Kind = Literal["vm", "vm_map_ram", "unpurged"]

_HOW_TO_READ = (
    "/proc/vmallocinfo shows hashed addresses (kernel.kptr_restrict=0), from which "
    "nothing can be replayed. Read the real ones as root with `sudo sysctl "
    "kernel.kptr_restrict=1; sudo cat /proc/vmallocinfo > vmallocinfo; sudo sysctl "
    "kernel.kptr_restrict=0`, or record a whole capture with `sudo pyvmalloc capture "
    "OUTDIR ...`, which does this and restores the setting"
)


class VmallocInfoError(InputError):
    """A malformed vmallocinfo line; ``str()`` is ``path:line: message``."""

    unnamed = "<text>"


class HashedAddressError(VmallocInfoError):
    """The snapshot was read with ``kptr_restrict=0`` (hashed) or ``2`` (zeros)."""


@dataclass(slots=True, frozen=True)
class VmallocEntry:
    """One ``/proc/vmallocinfo`` line."""

    start: int
    end: int
    #: Bytes, guard page included (``end - start``).
    size: int
    kind: Kind
    line: int
    caller: str | None = None
    #: ``[module]`` suffix of the caller, without brackets.
    module: str | None = None
    pages: int = 0
    phys: int | None = None
    flags: frozenset[str] = frozenset()
    vpages: bool = False
    numa: dict[int, int] = field(default_factory=dict)

    @property
    def nr_pages_span(self) -> int:
        """Pages of address space, guard included."""
        return self.size >> 12


@dataclass(slots=True)
class VmallocInfo:
    """A parsed snapshot."""

    entries: list[VmallocEntry]
    path: str | None = None
    #: Busy lines of areas freed while the kernel printed the file: the same range is
    #: printed again later as ``unpurged vm_area`` (that later line is in ``entries``).
    freed_while_read: list[VmallocEntry] = field(default_factory=list)

    @property
    def busy(self) -> list[VmallocEntry]:
        """Areas in use (``vm`` and ``vm_map_ram`` lines), in file order."""
        return [e for e in self.entries if e.kind != "unpurged"]

    @property
    def unpurged(self) -> list[VmallocEntry]:
        """Lazily freed areas not yet purged, in file order."""
        return [e for e in self.entries if e.kind == "unpurged"]

    @property
    def has_sparse(self) -> bool:
        return any("sparse" in e.flags for e in self.entries)

    def busy_order_problems(self, nr_nodes: int) -> list[str]:
        """Check the 6.x busy order: grouped by address-zone node, ascending in each.

        Returns human-readable problems (empty if the order is the 6.x one). For a
        5.4 snapshot use ``nr_nodes=1`` (global ascending order).
        """
        problems: list[str] = []
        prev: VmallocEntry | None = None
        for e in self.busy:
            if prev is not None:
                pn, en = addr_node(prev.start, nr_nodes), addr_node(e.start, nr_nodes)
                if en < pn:
                    problems.append(
                        f"line {e.line}: node {en} area after node {pn} area (line {prev.line})"
                    )
                elif en == pn and e.start < prev.end:
                    problems.append(
                        f"line {e.line}: {e.start:#x} not above the previous area "
                        f"(line {prev.line}, ends {prev.end:#x})"
                    )
            prev = e
        return problems


def addr_node(addr: int, nr_nodes: int) -> int:
    """The 6.x busy-tree node of an address: 64 KiB zones dealt round-robin."""
    return (addr >> 16) % nr_nodes


_RANGE_RE = re.compile(r"^0x([0-9a-f]{8}|[0-9a-f]{16})-0x([0-9a-f]{8}|[0-9a-f]{16})$")
_NUMA_RE = re.compile(r"^N([0-9]{1,4})=([0-9]{1,10})$")
_CALLER_RE = re.compile(
    r"^(?:[\w.$]{1,512}\+0x[0-9a-f]{1,16}/0x[0-9a-f]{1,16}|0x[0-9a-f]{1,16})$", re.ASCII
)
_DEC_RE = re.compile(r"^[0-9]{1,20}$")
_PHYS_RE = re.compile(r"^0x[0-9a-f]{1,16}$")
#: The lowest x86-64 kernel address (5-level paging; 4-level starts at 0xffff8...).
KERNEL_HALF = 0xFF00000000000000
#: The lowest i386 ``PAGE_OFFSET`` (``CONFIG_VMSPLIT_1G``).
I386_LOWEST = 0x40000000
#: ``MAX_NUMNODES`` with the largest x86-64 ``CONFIG_NODES_SHIFT`` (10).
MAX_NUMNODES = 1024
#: ``pages=%d`` and ``N%u=%u`` print an int / unsigned int.
_INT_MAX = (1 << 31) - 1
_UINT_MAX = (1 << 32) - 1
_FORMAT = (
    "the kernel prints '0xSTART-0xEND SIZE [CALLER [MODULE]] [pages=N] [phys=0x...] "
    "[FLAGS] [vpages] [N<node>=<pages>...]', 'START-END SIZE vm_map_ram' or "
    "'START-END SIZE unpurged vm_area'"
)


def _read_lines(p: Path, name: str) -> list[str]:
    """The lines of a (possibly gzipped) snapshot file, split at ``\\n`` only."""
    try:
        if p.suffix == ".gz":
            if p.stat().st_size == 0:
                raise VmallocInfoError(
                    "empty file, not gzip data (gzip writes a header even for empty input)",
                    path=name,
                )
            with gzip.open(p, "rb") as g:
                raw = g.read()
        else:
            raw = p.read_bytes()
    except VmallocInfoError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        what = (
            f"cannot read: {e.strerror}"
            if isinstance(e, OSError) and e.strerror
            else (f"cannot read: the gzip data is damaged or truncated ({e})")
        )
        raise VmallocInfoError(what, path=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise VmallocInfoError(
            f"not UTF-8 text (byte {raw[e.start]:#04x}); the kernel prints ASCII here",
            path=name,
            line=line,
        ) from None
    return _split(text)


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_vmallocinfo(
    source: str | os.PathLike[str] | Iterable[str], *, path: str | None = None
) -> VmallocInfo:
    """Parse a snapshot.

    ``source`` is a path (a capture directory stands for its ``vmallocinfo``), the
    file's text (a ``str`` containing a newline), or an iterable of lines.
    Raises :class:`VmallocInfoError` (file and line named) on malformed lines, on
    overlapping areas, and :class:`HashedAddressError` on hashed or zeroed addresses.
    """
    if isinstance(source, str) and "\n" in source:
        lines: Iterable[str] = _split(source)
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            from pyvmalloc.trace.capturedir import member

            m = member(p, "vmallocinfo")
            if m is None:
                raise VmallocInfoError("no vmallocinfo in this capture directory", path=str(p))
            p = m
        path = path if path is not None else os.fspath(p)
        lines = _read_lines(p, path)
    else:
        lines = source
    entries: list[VmallocEntry] = []
    width = 0
    for lineno, raw in enumerate(lines, 1):
        text = raw.rstrip("\n").rstrip(" \t\r")
        if not text.strip(" "):
            continue
        e = _parse_line(text, lineno, path)
        w = text.index("-")
        if width and w != width:
            raise VmallocInfoError(
                f"{w - 2}-digit addresses after {width - 2}-digit ones (line "
                f"{entries[0].line}): the kernel prints every pointer with one width",
                path=path,
                line=lineno,
                text=text,
            )
        width = w
        entries.append(e)
    entries, freed = _drop_freed_while_read(entries)
    _check_overlaps(entries, path)
    return VmallocInfo(entries, path, freed)


def _drop_freed_while_read(
    entries: list[VmallocEntry],
) -> tuple[list[VmallocEntry], list[VmallocEntry]]:
    """Resolve the one overlap the kernel itself prints.

    The file is not one atomic picture: 6.x prints each node's busy list under that
    node's lock and, as a last step, the nodes' lazy lists (``vmalloc_info_show`` and
    ``show_purge_info`` in mm/vmalloc.c); 5.4 drops its locks between read chunks. An
    area freed in between is printed busy and then, later in the file, as ``unpurged
    vm_area`` with the same range. The later line is the newer state: the busy line
    is set aside. Any other overlap is still refused by :func:`_check_overlaps`.
    """
    lazy = {(e.start, e.end): e.line for e in entries if e.kind == "unpurged"}
    seen: set[tuple[int, int]] = set()
    keep: list[VmallocEntry] = []
    freed: list[VmallocEntry] = []
    for e in entries:
        key = (e.start, e.end)
        later = lazy.get(key)
        if e.kind != "unpurged" and later is not None and later > e.line and key not in seen:
            seen.add(key)
            freed.append(e)
        else:
            keep.append(e)
    return keep, freed


def _check_overlaps(entries: list[VmallocEntry], path: str | None) -> None:
    """The kernel's areas, busy and lazily freed, never overlap: refuse a file where
    two do (a duplicated line, or lines from two different reads)."""
    order = sorted(entries, key=lambda e: (e.start, e.line))
    for prev, e in itertools.pairwise(order):
        if e.start < prev.end:
            first, second = (prev, e) if prev.line < e.line else (e, prev)
            what = (
                "the same area as"
                if (e.start, e.end) == (prev.start, prev.end)
                else ("an area overlapping")
            )
            raise VmallocInfoError(
                f"{second.start:#x}-{second.end:#x} ({second.kind}) is {what} line "
                f"{first.line} ({first.start:#x}-{first.end:#x}, {first.kind}): the "
                "kernel's areas, busy or lazily freed, never overlap",
                path=path,
                line=second.line,
            )


def _parse_line(text: str, lineno: int, path: str | None) -> VmallocEntry:
    def err(msg: str, cls: type[VmallocInfoError] = VmallocInfoError) -> VmallocInfoError:
        return cls(msg, path=path, line=lineno, text=text)

    toks = [t for t in text.split(" ") if t]
    if len(toks) < 2:
        raise err(f"expected 'START-END SIZE ...'; {_FORMAT}")
    m = _RANGE_RE.match(toks[0])
    if not m:
        raise err("address range is not 0x<hex>-0x<hex> (the kernel prints 0x%pK-0x%pK)")
    start, end = int(m.group(1), 16), int(m.group(2), 16)
    if not _DEC_RE.match(toks[1]):
        raise err("size is not a decimal number (the kernel prints %7ld)")
    size = int(toks[1])
    wide = len(m.group(1)) == 16
    hashed = (start == 0 and end == 0) or (wide and start >> 32 == 0 and end >> 32 == 0)
    if hashed and end - start != size:
        raise err(_HOW_TO_READ, HashedAddressError)
    if end - start != size:
        raise err(f"end - start = {end - start} but size is {size}; the kernel prints end - start")
    if size <= 0 or size & 0xFFF or start & 0xFFF:
        raise err("area not page aligned or empty; the kernel's areas are whole pages")
    if wide and start < KERNEL_HALF:
        if start >> 32 == 0 and end >> 32 == 0:
            raise err(_HOW_TO_READ, HashedAddressError)
        raise err(
            f"{start:#x} is not a kernel address: on x86-64 every vmap area lies in the "
            f"kernel half, from {KERNEL_HALF:#x} (5-level paging) or 0xffff800000000000 up"
        )
    if not wide and start < I386_LOWEST:
        raise err(
            f"{start:#x} is not a kernel address: i386 kernel addresses start at "
            f"PAGE_OFFSET, at least {I386_LOWEST:#x} (or is it a hashed pointer, "
            "kptr_restrict=0?)"
        )
    rest = toks[2:]
    if rest == ["unpurged", "vm_area"]:
        return VmallocEntry(start, end, size, "unpurged", lineno)
    if rest == ["vm_map_ram"]:
        return VmallocEntry(start, end, size, "vm_map_ram", lineno)
    i = 0
    caller: str | None = None
    module: str | None = None
    if i < len(rest) and not _is_attr(rest[i]):
        if not _CALLER_RE.match(rest[i]):
            raise err(f"unexpected word {rest[i]!r}; {_FORMAT}")
        caller = rest[i]
        i += 1
        if i < len(rest) and rest[i].startswith("[") and rest[i].endswith("]"):
            module = rest[i][1:-1]
            i += 1
    pages = 0
    phys: int | None = None
    flags: set[str] = set()
    vpages = False
    numa: dict[int, int] = {}
    last_flag = -1
    for tok in rest[i:]:
        if tok.startswith("pages="):
            if flags or vpages or numa or phys is not None or not _DEC_RE.match(tok[6:]):
                raise err(f"misplaced or malformed {tok!r}; {_FORMAT}")
            pages = int(tok[6:])
            if pages > size >> 12 or pages > _INT_MAX:
                raise err(
                    f"pages={pages} but the area spans {size >> 12} pages; the kernel "
                    "prints the pages mapped in the area"
                )
        elif tok.startswith("phys="):
            if flags or vpages or numa or not _PHYS_RE.match(tok[5:]):
                raise err(f"misplaced or malformed {tok!r}; {_FORMAT}")
            phys = int(tok[5:], 16)
        elif tok in _FLAG_SET:
            order = _FLAG_ORDER[tok]
            if order <= last_flag or vpages or numa:
                raise err(f"flag word {tok!r} out of order; the kernel prints {FLAG_WORDS}")
            last_flag = order
            flags.add(tok)
        elif tok == "vpages":
            if vpages or numa:
                raise err(f"misplaced 'vpages'; {_FORMAT}")
            vpages = True
        elif (mn := _NUMA_RE.match(tok)) is not None:
            node = int(mn.group(1))
            count = int(mn.group(2))
            if node >= MAX_NUMNODES:
                raise err(
                    f"node {node}: the kernel has at most MAX_NUMNODES ({MAX_NUMNODES}) nodes"
                )
            if node in numa:
                raise err(f"node {node} listed twice; the kernel prints each node once")
            if numa and node < max(numa):
                raise err(f"node {node} after node {max(numa)}; the kernel prints nodes ascending")
            if count == 0 or count > _UINT_MAX:
                raise err(f"{tok!r}: the kernel prints only nodes holding some of the pages")
            numa[node] = count
        else:
            raise err(f"unknown word {tok!r}; {_FORMAT}")
    return VmallocEntry(
        start,
        end,
        size,
        "vm",
        lineno,
        caller=caller,
        module=module,
        pages=pages,
        phys=phys,
        flags=frozenset(flags),
        vpages=vpages,
        numa=numa,
    )


def _is_attr(tok: str) -> bool:
    return (
        tok.startswith(("pages=", "phys="))
        or tok in _FLAG_SET
        or tok == "vpages"
        or _NUMA_RE.match(tok) is not None
    )


def lazy_runs(info: VmallocInfo) -> list[list[VmallocEntry]]:
    """The ``unpurged vm_area`` lines split into maximal ascending runs (file order)."""
    runs: list[list[VmallocEntry]] = []
    prev: VmallocEntry | None = None
    for e in info.unpurged:
        if prev is None or e.start < prev.start:
            runs.append([])
        runs[-1].append(e)
        prev = e
    return runs


def infer_lazy_nodes(info: VmallocInfo, nr_nodes: int) -> list[int]:
    """The vmap node whose lazy list held each ``unpurged`` entry (6.9+ snapshots).

    6.x prints node 0's lazy list in ascending address order, then node 1's, and so
    on, so a descent in address marks the start of the next node's list. Returns one
    node index per entry of ``info.unpurged``, in the same order.

    Ambiguity: a boundary is only visible as a descent. If a node's list is empty, or
    if every address of node *k*'s list is below every address of node *k+1*'s, two
    lists print as one ascending run and the split cannot be seen. With fewer runs than
    nodes, this function assigns run *i* to node *i* — right when the missing lists
    are those of the highest nodes (e.g. only one run: all entries are attributed to
    node 0 although they may belong to node 1). Use :func:`lazy_runs` to inspect.
    Raises :class:`ValueError` if there are more runs than nodes (e.g. a 5.4 snapshot,
    whose single lazy list is printed newest first).
    """
    if nr_nodes < 1:
        raise ValueError("nr_nodes must be >= 1")
    runs = lazy_runs(info)
    if len(runs) > nr_nodes:
        first = runs[nr_nodes][0]
        raise VmallocInfoError(
            f"{len(runs)} ascending runs of unpurged lines but only {nr_nodes} vmap "
            f"nodes: not a 6.x snapshot with {nr_nodes} nodes (6.x prints each node's "
            "lazy list ascending; 5.4 prints its single list newest first)",
            path=info.path,
            line=first.line,
        )
    out: list[int] = []
    for node, run in enumerate(runs):
        out.extend([node] * len(run))
    return out
