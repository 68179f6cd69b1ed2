"""Read the running kernel's ``__bug_table``: the file and line of every ``BUG()`` and
``WARN()`` site built into vmlinux, so the model's ``kernel BUG at FILE:LINE!`` lines can
be checked against the kernel that runs here rather than against a source tree.

Every ``BUG()``/``BUG_ON()``/``WARN*()`` on x86 emits a ``ud2`` and a ``struct
bug_entry`` in the ``__bug_table`` section, between the linker symbols
``__start___bug_table`` and ``__stop___bug_table``; on a trap ``report_bug()``
(lib/bug.c) looks the trapping address up there and prints the entry's file and line.
In Linux 6.18 (include/asm-generic/bug.h, read in linux-6.18.2, github
gfunkmonk/linux-6.18.2 @ 062668f4d, SUBLEVEL 2) with ``CONFIG_GENERIC_BUG_RELATIVE_POINTERS`` (x86_64)
and ``CONFIG_DEBUG_BUGVERBOSE`` the entry is 12 bytes:

* ``bug_addr_disp`` (s32): the ``ud2`` address minus the field's own address;
* ``file_disp`` (s32): the file name string's address minus the field's own address;
* ``line`` (u16), ``flags`` (u16): ``BUGFLAG_WARNING`` (bit 0) marks a WARN,
  ``BUGFLAG_ONCE``/``BUGFLAG_DONE`` the ``WARN_ONCE`` state, the taint in bits 8-15.

(6.18 has no ``format_disp`` field; the live kernel's BTF says the same: see
:func:`layout_from_btf`.) The bug address is mapped to the function that holds it with
``/proc/kallsyms``. The memory is read with :class:`pyvmalloc.trace.bpfpeek.Peeker`, or
any ``peek(addr, length) -> bytes | None``, which is how the tests feed a fake image.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pyvmalloc.trace.bpfpeek import Peeker
from pyvmalloc.trace.btf import Btf

__all__ = [
    "BUGFLAG_DONE",
    "BUGFLAG_ONCE",
    "BUGFLAG_WARNING",
    "BugEntry",
    "BugTableError",
    "EntryLayout",
    "Symbols",
    "layout_from_btf",
    "read_bug_table",
    "read_live_bug_table",
]

BUGFLAG_WARNING = 1 << 0
BUGFLAG_ONCE = 1 << 1
BUGFLAG_DONE = 1 << 2

Peek = Callable[[int, int], bytes | None]

#: Largest single read (the BPF peek buffer); table reads are whole entries inside it.
_CHUNK = 4096
#: Longest file name accepted (``__FILE__`` of a kernel source file is far shorter).
_MAX_FILE = 512


class BugTableError(RuntimeError):
    """The bug table cannot be read or makes no sense (with the reason)."""


@dataclass(frozen=True, slots=True)
class EntryLayout:
    """Offsets of ``struct bug_entry`` (relative-pointer form) and its size."""

    size: int = 12
    bug_addr_disp: int = 0
    file_disp: int = 4
    line: int = 8
    flags: int = 10


@dataclass(frozen=True, slots=True)
class BugEntry:
    """One ``struct bug_entry``, resolved."""

    addr: int  # the ud2 the site traps with
    function: str  # the kallsyms function holding addr ("" if none)
    file: str
    line: int
    flags: int

    @property
    def warning(self) -> bool:
        """A ``WARN`` site (``BUGFLAG_WARNING``), not a ``BUG``."""
        return bool(self.flags & BUGFLAG_WARNING)

    @property
    def kind(self) -> str:
        return "WARN" if self.warning else "BUG"


class Symbols:
    """Address -> function, from ``/proc/kallsyms`` text (vmlinux ``t``/``T`` symbols)."""

    def __init__(self, lines: Iterable[str]) -> None:
        pairs: list[tuple[int, str]] = []
        self.data: dict[str, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if len(parts) == 3:  # no "[module]" column: vmlinux
                self.data.setdefault(parts[2], addr)
                if parts[1] in ("t", "T"):
                    pairs.append((addr, parts[2]))
        if pairs and max(a for a, _ in pairs) == 0:
            raise BugTableError("kallsyms shows zero addresses (kptr_restrict, not root?)")
        pairs.sort()
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]

    @classmethod
    def load(cls, path: Path = Path("/proc/kallsyms")) -> Symbols:
        try:
            return cls(path.read_text().splitlines())
        except OSError as e:
            raise BugTableError(f"cannot read {path}: {e.strerror}") from None

    def function(self, addr: int) -> str:
        """The text symbol at or below ``addr`` (``""`` below the first one).

        ``__pfx_*`` padding symbols (CFI prefixes) and ``__cfi_*`` stubs sit just before
        their function, never around a ``ud2`` of its body, so they need no special case.
        """
        i = bisect.bisect_right(self._addrs, addr) - 1
        return self._names[i] if i >= 0 else ""

    def address(self, name: str) -> int:
        try:
            return self.data[name]
        except KeyError:
            raise BugTableError(f"{name} is not in kallsyms") from None


class _Pages:
    """Reads through ``peek`` page by page, keeping each page (strings share pages)."""

    def __init__(self, peek: Peek) -> None:
        self._peek = peek
        self._pages: dict[int, bytes | None] = {}
        self.reads = 0

    def page(self, base: int) -> bytes | None:
        if base not in self._pages:
            self.reads += 1
            got = self._peek(base, _CHUNK)
            self._pages[base] = got if got is not None and len(got) == _CHUNK else None
        return self._pages[base]

    def cstring(self, addr: int) -> str:
        out = bytearray()
        pos = addr
        while len(out) < _MAX_FILE:
            base = pos & ~(_CHUNK - 1)
            page = self.page(base)
            if page is None:
                raise BugTableError(f"cannot read the file name string at {addr:#x}")
            chunk = page[pos - base :]
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return out.decode("utf-8", errors="replace")
            out += chunk
            pos = base + _CHUNK
        raise BugTableError(f"file name at {addr:#x} has no NUL in {_MAX_FILE} bytes")


def _s32(v: int) -> int:
    return v - (1 << 32) if v & (1 << 31) else v


def read_bug_table(
    peek: Peek,
    start: int,
    stop: int,
    symbols: Symbols,
    layout: EntryLayout = EntryLayout(),
    files: Iterable[str] | None = None,
) -> list[BugEntry]:
    """Every entry of the bug table ``[start, stop)``, resolved, in table order.

    ``files``: keep only entries of these files (all are resolved anyway: the file is
    only known once its string is read). Raises :class:`BugTableError` when the bounds
    are not a whole number of entries or a part of the table cannot be read.
    """
    if stop < start or (stop - start) % layout.size:
        raise BugTableError(
            f"bug table [{start:#x}, {stop:#x}) is not a whole number of {layout.size}-byte entries"
        )
    keep = None if files is None else set(files)
    per_read = _CHUNK // layout.size
    mem = _Pages(peek)
    out: list[BugEntry] = []
    pos = start
    while pos < stop:
        n = min(per_read, (stop - pos) // layout.size)
        raw = peek(pos, n * layout.size)
        if raw is None or len(raw) != n * layout.size:
            raise BugTableError(f"cannot read the bug table at {pos:#x} ({n} entries)")
        for i in range(n):
            o = i * layout.size
            here = pos + o
            addr_disp = _s32(struct.unpack_from("<I", raw, o + layout.bug_addr_disp)[0])
            file_disp = _s32(struct.unpack_from("<I", raw, o + layout.file_disp)[0])
            (line,) = struct.unpack_from("<H", raw, o + layout.line)
            (flags,) = struct.unpack_from("<H", raw, o + layout.flags)
            addr = here + layout.bug_addr_disp + addr_disp
            file = mem.cstring(here + layout.file_disp + file_disp)
            if keep is not None and file not in keep:
                continue
            out.append(BugEntry(addr, symbols.function(addr), file, line, flags))
        pos += n * layout.size
    return out


def layout_from_btf(btf: Btf) -> EntryLayout:
    """``struct bug_entry``'s layout from the kernel's BTF, refusing any other shape
    (an absolute-pointer or ``format_disp`` layout would be misread)."""
    tid = btf.find("bug_entry")
    fields = {m.name: (m.offset, m.size) for m in btf.members(tid)}
    want = {"bug_addr_disp": 4, "file_disp": 4, "line": 2, "flags": 2}
    if set(fields) != set(want) or any(fields[k][1] != v for k, v in want.items()):
        raise BugTableError(
            f"struct bug_entry has fields {sorted(fields)}; this reader knows only "
            "bug_addr_disp, file_disp, line, flags (relative pointers, DEBUG_BUGVERBOSE)"
        )
    return EntryLayout(
        size=btf.sizeof(tid),
        bug_addr_disp=fields["bug_addr_disp"][0],
        file_disp=fields["file_disp"][0],
        line=fields["line"][0],
        flags=fields["flags"][0],
    )


def read_live_bug_table(files: Iterable[str] | None = None) -> list[BugEntry]:
    """The running kernel's bug table through BPF (root; ``kptr_restrict`` must let
    root see addresses). Needs ``/sys/kernel/btf/vmlinux`` for the entry layout."""
    symbols = Symbols.load()
    start = symbols.address("__start___bug_table")
    stop = symbols.address("__stop___bug_table")
    layout = layout_from_btf(Btf.load())
    with Peeker() as p:
        return read_bug_table(p.peek, start, stop, symbols, layout, files)


def main(argv: list[str] | None = None) -> int:
    """``python -m pyvmalloc.trace.bugtable [FILE...]``: print ``KIND FILE:LINE FUNCTION``
    for the live bug table's entries (default: mm/vmalloc.c)."""
    import sys

    files = (argv if argv is not None else sys.argv[1:]) or ["mm/vmalloc.c"]
    try:
        entries = read_live_bug_table(files)
    except (BugTableError, OSError) as err:
        print(f"bugtable: {err}", file=sys.stderr)
        return 1
    for e in sorted(entries, key=lambda x: (x.file, x.line)):
        print(f"{e.kind:4} {e.file}:{e.line} {e.function} flags={e.flags:#x} at {e.addr:#x}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
