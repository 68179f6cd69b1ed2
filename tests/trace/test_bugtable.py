"""The ``__bug_table`` reader, over a hand-built memory image; and, with
``PYVMALLOC_LIVE=1``, the 6.18 line table of :mod:`pyvmalloc.bugsites` against the
running kernel's own bug table (so a kernel update that moves a line shows up)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from pyvmalloc.bugsites import BUG_SITES
from pyvmalloc.trace import btf
from pyvmalloc.trace.bugtable import (
    BUGFLAG_WARNING,
    BugEntry,
    BugTableError,
    EntryLayout,
    Symbols,
    layout_from_btf,
    read_bug_table,
    read_live_bug_table,
)
from pyvmalloc.trace.kread import kstate_unavailable

PAGE = 4096
TEXT = 0xFFFFFFFF81000000
TABLE = 0xFFFFFFFF82000100  # not page aligned: the reader must not assume it is
STRINGS = 0xFFFFFFFF81800FF8  # the first string runs across a page boundary
HIGH_STRINGS = 0xFFFFFFFF83000000  # above the table: positive displacements

KALLSYMS = [
    f"{TEXT + 0x000:016x} T _stext",
    f"{TEXT + 0x100:016x} T vmap_range_noflush",
    f"{TEXT + 0x2F0:016x} t __pfx_vm_unmap_ram",
    f"{TEXT + 0x300:016x} T vm_unmap_ram",
    f"{TEXT + 0x500:016x} t vfree.part.0",
    f"{TEXT + 0x700:016x} T vfree",
    f"{TEXT + 0x340:016x} D some_data",  # not text: never a function
    f"{TEXT + 0x800:016x} t mod_func\t[some_module]",  # module: not vmlinux
    "garbage line",
    f"{TABLE:016x} D __start___bug_table",
]


class Image:
    """Sparse kernel memory: regions of bytes; any other address is unmapped."""

    def __init__(self) -> None:
        self.regions: dict[int, bytearray] = {}
        self.reads: list[tuple[int, int]] = []

    def put(self, addr: int, data: bytes) -> None:
        self.regions[addr] = bytearray(data)

    def peek(self, addr: int, length: int) -> bytes | None:
        assert 0 < length <= 4096  # the BPF peek buffer
        self.reads.append((addr, length))
        out = bytearray()
        pos = addr
        while len(out) < length:
            for base, data in self.regions.items():
                if base <= pos < base + len(data):
                    take = min(length - len(out), base + len(data) - pos)
                    out += data[pos - base : pos - base + take]
                    pos += take
                    break
            else:
                return None
        return bytes(out)


def _strings(img: Image) -> None:
    """The file names, in whole mapped pages (as kernel .rodata is)."""
    low = bytearray(2 * PAGE)
    names = b"mm/vmalloc.c\0include/linux/gfp.h\0"  # 8 bytes before a page end, 5 after
    off = STRINGS - (STRINGS & ~(PAGE - 1))
    low[off : off + len(names)] = names
    img.put(STRINGS & ~(PAGE - 1), bytes(low))
    high = bytearray(PAGE)
    high[:22] = b"arch/x86/mm/init_64.c\0"
    img.put(HIGH_STRINGS, bytes(high))


def _build(entries: list[tuple[int, int, int, int]]) -> tuple[Image, int]:
    """Image with the table ``entries`` (text offset, file address, line, flags) at TABLE;
    returns the image and the table's end."""
    img = Image()
    _strings(img)
    table = bytearray()
    for i, (text_off, file_at, line, flags) in enumerate(entries):
        at = TABLE + 12 * i
        table += struct.pack("<iiHH", TEXT + text_off - at, file_at - (at + 4), line, flags)
    img.put(TABLE, bytes(table))
    return img, TABLE + len(table)


VM = STRINGS
GFP = STRINGS + len(b"mm/vmalloc.c\0")
INIT = HIGH_STRINGS


def test_entries_resolve_to_function_file_line_and_kind() -> None:
    img, stop = _build(
        [
            (0x105, VM, 116, 0x0),  # BUG in vmap_range_noflush
            (0x310, VM, 3001, 0x0),
            (0x312, GFP, 159, 0x0),
            (0x520, VM, 3430, 0x909),  # WARN(...) with TAINT_WARN, NO_CUT_HERE
            (0x700, INIT, 977, 0x903),  # WARN_ON_ONCE, first byte of vfree
            (0x050, VM, 7, 0x1),  # in _stext
        ]
    )
    got = read_bug_table(img.peek, TABLE, stop, Symbols(KALLSYMS))
    assert got == [
        BugEntry(TEXT + 0x105, "vmap_range_noflush", "mm/vmalloc.c", 116, 0),
        BugEntry(TEXT + 0x310, "vm_unmap_ram", "mm/vmalloc.c", 3001, 0),
        BugEntry(TEXT + 0x312, "vm_unmap_ram", "include/linux/gfp.h", 159, 0),
        BugEntry(TEXT + 0x520, "vfree.part.0", "mm/vmalloc.c", 3430, 0x909),
        BugEntry(TEXT + 0x700, "vfree", "arch/x86/mm/init_64.c", 977, 0x903),
        BugEntry(TEXT + 0x050, "_stext", "mm/vmalloc.c", 7, 1),
    ]
    assert [e.kind for e in got] == ["BUG", "BUG", "BUG", "WARN", "WARN", "WARN"]
    # keep only some files
    only = read_bug_table(img.peek, TABLE, stop, Symbols(KALLSYMS), files=["include/linux/gfp.h"])
    assert [(e.function, e.line) for e in only] == [("vm_unmap_ram", 159)]


def test_a_table_longer_than_one_read_and_shared_strings() -> None:
    n = 800  # 9600 bytes: three peeks of whole entries
    img, stop = _build([(0x300 + i % 0x100, VM, i, i & 1) for i in range(n)])
    got = read_bug_table(img.peek, TABLE, stop, Symbols(KALLSYMS))
    assert [e.line for e in got] == list(range(n))
    assert {e.function for e in got} == {"vm_unmap_ram"}
    assert sum(e.warning for e in got) == n // 2
    table_reads = [r for r in img.reads if TABLE <= r[0] < stop]
    assert all(length % 12 == 0 for _, length in table_reads) and len(table_reads) == 3
    assert len(img.reads) == 3 + 2  # the string's two pages are read once each


def test_address_below_every_symbol_has_no_function() -> None:
    img = Image()
    _strings(img)
    img.put(TABLE, struct.pack("<iiHH", TEXT - 0x10 - TABLE, STRINGS - (TABLE + 4), 1, 0))
    (e,) = read_bug_table(img.peek, TABLE, TABLE + 12, Symbols(KALLSYMS))
    assert e.function == "" and e.addr == TEXT - 0x10


def test_custom_layout() -> None:
    # a 16-byte entry with the fields elsewhere (e.g. a later format_disp field)
    lay = EntryLayout(size=16, bug_addr_disp=0, file_disp=8, line=12, flags=14)
    img = Image()
    _strings(img)
    img.put(
        TABLE,
        struct.pack("<iiiHH", TEXT + 0x301 - TABLE, 0, STRINGS - (TABLE + 8), 42, 1),
    )
    (e,) = read_bug_table(img.peek, TABLE, TABLE + 16, Symbols(KALLSYMS), lay)
    assert (e.function, e.file, e.line, e.warning) == ("vm_unmap_ram", "mm/vmalloc.c", 42, True)


def test_errors_are_clear() -> None:
    img, stop = _build([(0x105, VM, 1, 0)])
    syms = Symbols(KALLSYMS)
    with pytest.raises(BugTableError, match="not a whole number of 12-byte entries"):
        read_bug_table(img.peek, TABLE, stop + 1, syms)
    with pytest.raises(BugTableError, match="not a whole number"):
        read_bug_table(img.peek, stop, TABLE, syms)
    with pytest.raises(BugTableError, match="cannot read the bug table at"):
        read_bug_table(img.peek, TABLE, stop + 12, syms)
    bad = Image()
    bad.put(TABLE, struct.pack("<iiHH", 0, 0x1000, 1, 0))  # string in unmapped memory
    with pytest.raises(BugTableError, match="cannot read the file name string at"):
        read_bug_table(bad.peek, TABLE, TABLE + 12, syms)
    endless = Image()
    endless.put(STRINGS & ~(PAGE - 1), b"x" * (2 * PAGE))
    endless.put(TABLE, struct.pack("<iiHH", 0, STRINGS - (TABLE + 4), 1, 0))
    with pytest.raises(BugTableError, match="has no NUL in 512 bytes"):
        read_bug_table(endless.peek, TABLE, TABLE + 12, syms)
    with pytest.raises(BugTableError, match="zero addresses"):
        Symbols(["0000000000000000 T vfree", "0000000000000000 t vunmap"])
    with pytest.raises(BugTableError, match="nosuch is not in kallsyms"):
        syms.address("nosuch")
    assert syms.address("__start___bug_table") == TABLE  # data symbols can be looked up
    with pytest.raises(BugTableError, match="cannot read"):
        Symbols.load(Path("/nonexistent/kallsyms"))


def _btf_with_bug_entry(fields: list[tuple[str, int, int]], size: int) -> btf.Btf:
    """A BTF blob with ``int``, ``unsigned short`` and ``struct bug_entry``."""
    strings = bytearray(b"\0")

    def s(name: str) -> int:
        strings.extend(name.encode() + b"\0")
        return len(strings) - len(name) - 1

    types = bytearray()
    types += struct.pack("<IIII", s("int"), btf.KIND_INT << 24, 4, (1 << 24) | 32)
    types += struct.pack("<IIII", s("short unsigned int"), btf.KIND_INT << 24, 2, 16)
    members = b"".join(
        struct.pack("<III", s(n), 1 if width == 4 else 2, off * 8) for n, width, off in fields
    )
    types += struct.pack("<III", s("bug_entry"), (btf.KIND_STRUCT << 24) | len(fields), size)
    types += members
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return btf.Btf(hdr + bytes(types) + bytes(strings))


def test_layout_from_btf() -> None:
    six18 = [("bug_addr_disp", 4, 0), ("file_disp", 4, 4), ("line", 2, 8), ("flags", 2, 10)]
    assert layout_from_btf(_btf_with_bug_entry(six18, 12)) == EntryLayout()
    later = [*six18[:1], ("format_disp", 4, 4), ("file_disp", 4, 8), ("line", 2, 12)]
    with pytest.raises(BugTableError, match="format_disp"):
        layout_from_btf(_btf_with_bug_entry([*later, ("flags", 2, 14)], 16))


# ---------------------------------------------------------------------- live kernel


def _live_configs() -> set[str]:
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return set()
    return {ln.split("=")[0] for ln in text.splitlines() if ln.endswith("=y")}


#: Static functions whose BUG_ON lands in the function they are inlined into on the
#: 6.18.44 build (the bug entry's address is in the caller's code).
INLINED_INTO = {"vb_free": {"vm_unmap_ram"}}


@pytest.mark.live
@pytest.mark.skipif(kstate_unavailable() is not None, reason=str(kstate_unavailable()))
def test_live_bug_table_has_every_618_line() -> None:
    kptr = Path("/proc/sys/kernel/kptr_restrict")
    before = kptr.read_text()
    files = {s.file for s in BUG_SITES["6.18"].values()}
    entries = read_live_bug_table(files)
    assert kptr.read_text() == before  # the reader leaves kptr_restrict alone
    at = {(e.file, e.line): e for e in entries}
    by_line: dict[tuple[str, int], list[BugEntry]] = {}
    for e in entries:
        by_line.setdefault((e.file, e.line), []).append(e)
    assert len([e for e in entries if e.file == "mm/vmalloc.c"]) > 50, entries[:5]
    configs = _live_configs()
    checked = []
    for name, site in BUG_SITES["6.18"].items():
        if site.panic:  # panic() has no bug entry
            continue
        if site.config == "CONFIG_DEBUG_ATOMIC_SLEEP":  # __might_sleep(), no bug entry
            continue
        if site.config and site.config not in configs:
            # compiled out here: then the kernel has no entry at that line either
            assert (site.file, site.line) not in at, (name, at[(site.file, site.line)])
            continue
        func = name.split(":")[0]
        found = by_line.get((site.file, site.line), [])
        homes = {func} | INLINED_INTO.get(func, set())
        ok = [
            e for e in found if e.function.split(".")[0] in homes and not e.flags & BUGFLAG_WARNING
        ]
        assert ok, f"{name}: no live BUG entry at {site.file}:{site.line} in {homes}: {found}"
        checked.append(name)
    assert len(checked) >= 12, checked


def test_a_peek_only_peeker_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    # Peeker() without a chase shape (what the bug table reader makes) used to fail
    # packing the missing chase program's fd -1 into the test-run attribute.
    from pyvmalloc.trace import bpfpeek

    fds = iter([900, 901])
    calls: list[int] = []

    def fake_bpf(cmd: int, attr: object) -> int:
        calls.append(cmd)
        return next(fds)

    closed: list[int] = []
    monkeypatch.setattr(bpfpeek, "_bpf", fake_bpf)
    monkeypatch.setattr(bpfpeek.os, "close", closed.append)
    with bpfpeek.Peeker() as p:
        assert (p.map_fd, p.prog_fd, p.chase_fd) == (900, 901, -1)
        with pytest.raises(bpfpeek.PeekError, match="without a chase shape"):
            p.chase(0, 0, 1)
    assert calls == [bpfpeek.BPF_MAP_CREATE, bpfpeek.BPF_PROG_LOAD]
    assert sorted(closed) == [900, 901]
