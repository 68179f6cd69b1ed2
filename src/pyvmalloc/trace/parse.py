"""Strict, fast parsers of ftrace text holding the ``vmalloc:`` events.

Accepted inputs (detected per file, reported as :attr:`TraceParseResult.format`):

``tracefs``
    ``/sys/kernel/tracing/trace`` (with its ``#`` header) or ``trace_pipe`` (without)::

        python-4180    [000] .....   453.995057: alloc_vmap_area: va_start: ...

    The flags column may be absent (``trace_options`` ``noirq-info``), and a
    ``(  tgid)`` column may be present (``record-tgid``).

``trace-cmd``
    ``trace-cmd report`` output: an optional ``instance: `` prefix, no flags column,
    the event name padded; ``trace-cmd report -l`` (latency) glues the CPU number to
    the flags (``0.....``). Its ``cpus=N`` / ``version = N`` / ``CPU N is empty``
    lines are accepted::

        pvtc:   python-5003  [001]   489.995518: alloc_vmap_area:      va_start: ...

Lost events are detected and counted: ``CPU:1 [LOST 123 EVENTS]`` (``trace_pipe``),
``CPU:1 [123 EVENTS DROPPED]`` or ``CPU:0 [EVENTS DROPPED]`` (count unknown;
trace-cmd), and an ``# entries-in-buffer/entries-written: A/B`` header with ``B > A``
(the ring buffer overwrote ``B − A`` events; ``trace`` prints no LOST lines then).

Other events are skipped and counted, except ``trace_marker`` writes, which are
collected as :class:`Marker` records (``pyvmalloc capture`` writes
``pyvmalloc: snapshot-begin`` etc., see :mod:`pyvmalloc.trace.capture`).

Any other line is an error: :class:`TraceParseError` (a :class:`pyvmalloc.InputError`)
names the file and line, says what is wrong and what the kernel prints there. So is a
``vmalloc:`` event the kernel cannot emit (a size that is zero or not page aligned, an
alignment that is not a power of two, an allocation outside ``[vstart, vend)``, a
number that does not fit the field's C type, a CPU beyond the machine's, ...): it is
never replayed as if it could have happened.

Lines end at ``\n`` only, as in the kernel's files (a ``\x0b``, ``\x0c``, ``\x1c``,
``\x85`` or U+2028 inside a line does not start a new one). The text is UTF-8; bytes
that are not (a task may name itself with any bytes, ``prctl(PR_SET_NAME)``) are kept
as surrogate escapes. Every regular expression here runs in time linear in the line.

Files ending in ``.gz`` are decompressed transparently; a capture directory stands for
its ``trace`` (or ``trace.gz``) file.
"""

from __future__ import annotations

import gc
import gzip
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from pyvmalloc._accel import speedups as _speedups
from pyvmalloc.config import PAGE_SIZE
from pyvmalloc.errors import InputError
from pyvmalloc.trace.events import (
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    TraceEvent,
)

__all__ = [
    "LostEvents",
    "Marker",
    "TraceParseError",
    "TraceParseResult",
    "iter_trace",
    "open_text",
    "parse_trace",
]

TraceFormat = Literal["tracefs", "trace-cmd"]
Source = str | os.PathLike[str] | Iterable[str]


class TraceParseError(InputError):
    """A line that is not valid ftrace text, or an event the kernel cannot emit;
    ``str()`` is ``path:line: message``."""

    unnamed = "<lines>"


#: ``ULONG_MAX`` on a 64-bit kernel: the largest value a ``%lu`` / ``0x%lx`` field holds.
ULONG_MAX = (1 << 64) - 1
#: ``MAX_ERRNO``: ``IS_ERR_VALUE(x)`` is ``x >= -MAX_ERRNO`` as unsigned long.
MAX_ERRNO = 4095
#: The largest ``CONFIG_NR_CPUS`` on x86-64 (``CONFIG_MAXSMP``): the CPU bound when
#: the caller does not know the machine's CPUs.
NR_CPUS_MAX = 8192
#: ``PID_MAX_LIMIT`` on 64-bit kernels (``4 * 1024 * 1024``).
PID_MAX_LIMIT = 4 * 1024 * 1024
#: ``num_purged`` is an ``unsigned int``.
UINT_MAX = (1 << 32) - 1

_ALLOC_FMT = "va_start: %lu size=%lu align=%lu vstart=0x%lx vend=0x%lx failed=%d"
_FREE_FMT = "va_start=0x%lx nr_lazy=%lu nr_lazy_max=%lu"
_PURGE_FMT = "start=0x%lx end=0x%lx num_purged=%u"
_PRINT_FMT = {
    "alloc_vmap_area": _ALLOC_FMT,
    "free_vmap_area_noflush": _FREE_FMT,
    "purge_vmap_area_lazy": _PURGE_FMT,
}


@dataclass(slots=True, frozen=True)
class Marker:
    """A ``trace_marker`` write (``tracing_mark_write: TEXT``)."""

    line: int
    timestamp: float
    cpu: int
    pid: int
    task: str
    text: str


@dataclass(slots=True, frozen=True)
class LostEvents:
    """A place where the ring buffer lost events; ``count`` None = not reported."""

    line: int
    cpu: int | None
    count: int | None


@dataclass(slots=True)
class TraceParseResult:
    """Everything :func:`parse_trace` found in one file."""

    path: str | None = None
    events: list[TraceEvent] = field(default_factory=list)
    #: Number of other (non-``vmalloc:``, non-marker) event lines.
    skipped: int = 0
    #: Sum of the reported lost-event counts (see :attr:`lost_records`).
    lost: int = 0
    lost_records: list[LostEvents] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    format: TraceFormat = "tracefs"
    #: Total lines read (including comments and blank lines).
    lines: int = 0
    #: The ``trace-cmd`` instance name, if lines carried one.
    instance: str | None = None

    @property
    def incomplete(self) -> bool:
        """True if the ring buffer lost any event (also when the count is unknown)."""
        return bool(self.lost_records)

    def marker(self, text: str) -> Marker | None:
        """The first marker whose text is ``text`` or ``"pyvmalloc: " + text``."""
        for m in self.markers:
            if m.text == text or m.text == "pyvmalloc: " + text:
                return m
        return None


# One regex for every line: header, then one of the three payloads or any other event.
# Linear by construction: possessive quantifiers where the next token cannot start
# with the repeated character, bounded digit runs (no number longer than its C type
# prints, so no int() of thousands of digits), and a task name of bounded length (the
# kernel's comm is at most TASK_COMM_LEN - 1 = 15 bytes; 64 leaves room for UTF-8 and
# trace-cmd's "<...>"), so the lazy task match can end at only a bounded number of
# places. The text of other events is taken whole and stripped in Python (a lazy
# ``(.*?)\s*$`` made a line of many tabs quadratic).
_D20 = r"[0-9]{1,20}"  # %lu
_X16 = r"[0-9a-f]{1,16}"  # %lx
_HEADER = (
    r"(?:([^ :]++): ++)?"  # 1 trace-cmd instance prefix
    r" *+(.{1,64}?)-([0-9]{1,10}) ++"  # 2 task (may hold spaces and dashes), 3 pid
    r"(?:\( *+[0-9-]{1,10}\) ++)?"  # optional (tgid) column
    r"(?:\[([0-9]{1,10})\] ++(?:([^ 0-9]\S*+) ++)?"  # 4 [cpu], 5 optional flags
    r"|([0-9]{1,10})([^ 0-9]\S*+) ++)"  # 6 cpu + 7 flags glued (trace-cmd -l)
    r"([0-9]{1,20}(?:\.[0-9]{1,12})?): ++"  # 8 timestamp
)
_PAYLOADS = (
    rf"(?:alloc_vmap_area: ++va_start: ({_D20}) size=({_D20}) align=({_D20})"  # 9 10 11
    rf" vstart=0x({_X16}) vend=0x({_X16}) failed=(-?[0-9]{{1,10}})"  # 12 13 14
    rf"|free_vmap_area_noflush: ++va_start=0x({_X16}) nr_lazy=({_D20})"  # 15 16
    rf" nr_lazy_max=({_D20})"  # 17
    rf"|purge_vmap_area_lazy: ++start=0x({_X16}) end=0x({_X16})"  # 18 19
    r" num_purged=([0-9]{1,10})"  # 20
    r")[ \t\r\f\v]*+$"
    r"|([^\s:]++):(.*+)$"  # 21 other event name, 22 its text
)
_LINE_RE = re.compile(_HEADER + "(?:" + _PAYLOADS + ")", re.ASCII)
# Fast path: the exact tracefs layout (``%16s-%-7d [%03d] flags %12s: ``), in which the
# task name is right-aligned in 16 columns, so no backtracking is needed to find where
# a task name holding dashes ends. Lines it does not match take the general regex.
_FAST_RE = re.compile(
    r"^(.{16})-([0-9]{1,10}) ++\[([0-9]{1,10})\] ([^ 0-9]\S*+) ++([0-9]{1,20}\.[0-9]{1,12}): "
    rf"(?:alloc_vmap_area: va_start: ({_D20}) size=({_D20}) align=({_D20})"  # 6 7 8
    rf" vstart=0x({_X16}) vend=0x({_X16}) failed=(-?[0-9]{{1,10}})"  # 9 10 11
    rf"|free_vmap_area_noflush: va_start=0x({_X16}) nr_lazy=({_D20})"  # 12 13
    rf" nr_lazy_max=({_D20})"  # 14
    rf"|purge_vmap_area_lazy: start=0x({_X16}) end=0x({_X16})"  # 15 16
    r" num_purged=([0-9]{1,10}))\n",  # 17
    re.ASCII | re.MULTILINE,
)
_LOST_RE = re.compile(
    r"^(?:[^\s:]++: ++)?CPU:([0-9]{1,10}) "
    r"\[(?:LOST ([0-9]{1,20}) EVENTS|(?:([0-9]{1,20}) )?EVENTS DROPPED)\]\s*+$",
    re.ASCII,
)
_ENTRIES_RE = re.compile(r"^# entries-in-buffer/entries-written: ([0-9]{1,20})/([0-9]{1,20})")
_TRACE_CMD_INFO_RE = re.compile(
    r"^(?:cpus=[0-9]{1,10}|version = \S++|CPU [0-9]{1,10} is empty)\s*+$", re.ASCII
)
_VMALLOC_NAMES = frozenset(("alloc_vmap_area", "free_vmap_area_noflush", "purge_vmap_area_lazy"))


def _resolve(path: str | os.PathLike[str]) -> Path:
    """A trace file; a capture directory stands for its ``trace`` / ``trace.gz``."""
    p = Path(path)
    if p.is_dir():
        from pyvmalloc.trace.capturedir import trace_file

        return trace_file(p)
    return p


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a trace for reading as text; ``.gz`` is decompressed; a directory stands
    for its ``trace`` or ``trace.gz`` (a capture directory). Lines end at ``\n`` only
    (no newline translation); bytes that are not UTF-8 become surrogate escapes."""
    p = _resolve(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8", errors="surrogateescape", newline="")
    return open(p, encoding="utf-8", errors="surrogateescape", newline="")


def iter_trace(
    source: Source,
    *,
    path: str | None = None,
    result: TraceParseResult | None = None,
    cpus: int | None = None,
) -> Iterator[TraceEvent]:
    """Yield the ``vmalloc:`` events of ``source`` in file order.

    ``source`` is a path (``str``/``PathLike``; ``.gz`` and capture directories are
    accepted) or an iterable of lines (then ``path`` names it in errors). If
    ``result`` is given, its counters (skipped, lost, markers, format, lines) are
    updated while the stream is consumed. ``cpus`` is the machine's ``nr_cpu_ids``:
    an event on a CPU at or above it is an error. By default it comes from the
    ``cpus_possible`` of the ``meta.json`` beside the trace (a capture directory's),
    else :data:`NR_CPUS_MAX`.
    """
    res = result if result is not None else TraceParseResult()
    out: list[TraceEvent] = []
    for _ in _parse(source, path, res, out, cpus):
        yield from out
        out.clear()


def parse_trace(
    source: Source, *, path: str | None = None, cpus: int | None = None
) -> TraceParseResult:
    """Parse a whole trace; see :func:`iter_trace` for ``source`` and ``cpus``."""
    res = TraceParseResult()
    # Keep the cyclic GC paused for the whole file: re-enabling it between chunks lets
    # it rescan the growing (acyclic) event list again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in _parse(source, path, res, res.events, cpus):
            pass
    finally:
        if gc_was_enabled:
            gc.enable()
    return res


_CHUNK = 1 << 22

# Positional record builders. A keyword call of the dataclasses' keyword-only
# ``__init__`` costs ~0.45 µs (about a quarter of the per-line budget); filling the
# slots directly costs ~0.2 µs. The classes define no ``__post_init__``; the tests
# check that these builders give records equal to the keyword-built ones.
_new = object.__new__


def _mk_alloc(
    task: str,
    pid: int,
    cpu: int,
    flags: str,
    timestamp: float,
    line: int,
    addr: int,
    size: int,
    align: int,
    vstart: int,
    vend: int,
    failed: int,
) -> AllocVmapArea:
    e: AllocVmapArea = _new(AllocVmapArea)
    e.task = task
    e.pid = pid
    e.cpu = cpu
    e.flags = flags
    e.timestamp = timestamp
    e.line = line
    e.addr = addr
    e.size = size
    e.align = align
    e.vstart = vstart
    e.vend = vend
    e.failed = failed
    return e


def _mk_free(
    task: str,
    pid: int,
    cpu: int,
    flags: str,
    timestamp: float,
    line: int,
    va_start: int,
    nr_lazy: int,
    nr_lazy_max: int,
) -> FreeVmapAreaNoflush:
    e: FreeVmapAreaNoflush = _new(FreeVmapAreaNoflush)
    e.task = task
    e.pid = pid
    e.cpu = cpu
    e.flags = flags
    e.timestamp = timestamp
    e.line = line
    e.va_start = va_start
    e.nr_lazy = nr_lazy
    e.nr_lazy_max = nr_lazy_max
    return e


def _mk_purge(
    task: str,
    pid: int,
    cpu: int,
    flags: str,
    timestamp: float,
    line: int,
    start: int,
    end: int,
    npurged: int,
) -> PurgeVmapAreaLazy:
    e: PurgeVmapAreaLazy = _new(PurgeVmapAreaLazy)
    e.task = task
    e.pid = pid
    e.cpu = cpu
    e.flags = flags
    e.timestamp = timestamp
    e.line = line
    e.start = start
    e.end = end
    e.npurged = npurged
    return e


def _chunks_from_binary(f: IO[bytes], name: str, st: _State) -> Iterator[str]:
    """Pieces of ``f`` of about 4 MiB, each ending at a ``\n``, decoded as UTF-8.

    Undecodable bytes become surrogate escapes. Read errors (a damaged ``.gz``) are
    :class:`TraceParseError` naming the line reached. A long line is gathered piece by
    piece (no quadratic re-copying).
    """
    pending: list[bytes] = []
    try:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                pending.append(block)
                continue
            pending.append(block[:cut])
            yield b"".join(pending).decode("utf-8", "surrogateescape")
            pending = [block[cut:]] if cut < len(block) else []
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a truncated member is an EOFError; a damaged
        # deflate stream is a zlib.error.
        what = "truncated" if isinstance(e, EOFError) else "damaged"
        raise TraceParseError(
            f"cannot read: the gzip data is {what} ({e})"
            if name.endswith(".gz")
            else f"cannot read: {e}",
            path=name,
            line=st.lineno + 1,
        ) from None
    if pending:
        yield b"".join(pending).decode("utf-8", "surrogateescape") + "\n"


def _chunks_from_lines(lines: Iterable[str]) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for ln in lines:
        if not ln.endswith("\n"):
            ln += "\n"
        buf.append(ln)
        size += len(ln)
        if size >= _CHUNK:
            yield "".join(buf)
            buf.clear()
            size = 0
    if buf:
        yield "".join(buf)


def _capture_cpus(trace: Path) -> int | None:
    """``nr_cpu_ids`` from the ``meta.json`` beside a capture's trace, if there is one."""
    from pyvmalloc.trace.capturedir import member, nr_cpus, read_meta

    try:
        meta_path = member(trace.parent, "meta.json")
    except InputError:
        return None  # a link or a directory named meta.json: not a capture's
    return nr_cpus(read_meta(meta_path)) if meta_path is not None else None


def _open_binary(p: Path, name: str) -> tuple[IO[bytes], IO[bytes]]:
    """(reader, underlying file): the file, or a gzip reader on it for ``.gz``."""
    try:
        raw = open(p, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        raise TraceParseError(f"cannot open: {e.strerror}", path=name) from None
    if p.suffix != ".gz":
        return raw, raw
    if os.fstat(raw.fileno()).st_size == 0:
        raw.close()
        raise TraceParseError(
            "empty file, not gzip data (gzip writes a header even for empty input)",
            path=name,
        )
    return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]


def _parse(
    source: Source,
    path: str | None,
    res: TraceParseResult,
    out: list[TraceEvent],
    cpus: int | None,
) -> Iterator[None]:
    """Parse ``source`` chunk by chunk, appending events to ``out``; yields per chunk."""
    if isinstance(source, (str, os.PathLike)):
        p = _resolve(source)
        if cpus is None:
            cpus = _capture_cpus(p)
    state = _State(cpus=NR_CPUS_MAX if cpus is None else cpus, cpus_known=cpus is not None)
    if isinstance(source, (str, os.PathLike)):
        name = path if path is not None else os.fspath(p)
        res.path = name
        f, raw = _open_binary(p, name)
        try:
            for chunk in _chunks_from_binary(f, name, state):
                _parse_chunk(chunk, name, res, out, state)
                yield None
        finally:
            f.close()
            raw.close()
    else:
        res.path = path
        for chunk in _chunks_from_lines(source):
            _parse_chunk(chunk, path, res, out, state)
            yield None


@dataclass(slots=True)
class _State:
    lineno: int = 0
    fmt: str | None = None
    #: Events must be on a CPU below this (``nr_cpu_ids``).
    cpus: int = NR_CPUS_MAX
    #: Whether ``cpus`` came from the caller (the capture's meta.json).
    cpus_known: bool = False


if _speedups is not None:
    _speedups.init_trace_events(AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy)


def _parse_chunk(
    text: str,
    path: str | None,
    res: TraceParseResult,
    out: list[TraceEvent],
    st: _State,
) -> None:
    """Parse ``text`` (whole lines, each ending in a newline).

    With the compiled accelerator (and an ASCII chunk) the lines in the exact tracefs
    layout whose values need no message are parsed in C (``parse_tracefs``, the
    :data:`_FAST_RE` step below in one pass); every other line goes through
    :func:`_parse_chunk_ref`, in file order, so events, counters and errors are the
    reference's."""
    if _speedups is None or not text.isascii():
        _parse_chunk_ref(text, path, res, out, st)
        return
    fast = _speedups.parse_tracefs
    search = _FAST_RE.search
    tasks: dict[str, str] = {}
    first = st.lineno
    n = len(text)
    pos = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while pos < n:
            pos, st.lineno = fast(text, pos, st.lineno, st.cpus, out, tasks)
            if pos >= n:
                break
            # The line at pos is not one the C scan takes: the reference step for it.
            m = search(text, pos)
            if m is None:
                st.lineno = _slow(text[pos:], st.lineno, path, res, out, st)
                break
            if m.start() != pos:
                st.lineno = _slow(text[pos : m.start()], st.lineno, path, res, out, st)
                pos = m.start()
                continue
            # One fast-regex match; the regex looks no further than the match's end,
            # so the reference on just this text sees the same match.
            _parse_chunk_ref(text[pos : m.end()], path, res, out, st, final=False)
            pos = m.end()
        if st.fmt is None and st.lineno > first:
            st.fmt = "tracefs"  # only fast-path lines so far
    finally:
        if gc_was_enabled:
            gc.enable()
        res.lines = st.lineno
        if st.fmt is not None:
            res.format = st.fmt  # type: ignore[assignment]


def _parse_chunk_ref(
    text: str,
    path: str | None,
    res: TraceParseResult,
    out: list[TraceEvent],
    st: _State,
    final: bool = True,
) -> None:
    """Parse ``text`` (whole lines, each ending in a newline): the reference.

    ``final`` False: a piece of a chunk (the format is decided at the chunk's end)."""
    alloc = _mk_alloc
    free = _mk_free
    purge = _mk_purge
    append = out.append
    # vstart/vend repeat on nearly every line: convert each distinct string once.
    # Likewise pids, CPUs, sizes and alignments repeat: one cache per field, each
    # value checked when it is first converted.
    hexcache: dict[str, int] = {}
    pids: dict[str, int] = {}
    cpus: dict[str, int] = {}
    sizes: dict[str, int] = {}
    aligns: dict[str, int] = {}
    tasks: dict[str, str] = {}
    lineno = st.lineno
    pos = 0
    umax = ULONG_MAX
    # Millions of small acyclic records: the cyclic GC would rescan them again and
    # again while the list grows (a third of the run time); pause it per chunk.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for m in _FAST_RE.finditer(text):
            if m.start() != pos:
                lineno = _slow(text[pos : m.start()], lineno, path, res, out, st)
            pos = m.end()
            lineno += 1
            g = m.groups()
            task = tasks.get(g[0])
            if task is None:
                task = tasks[g[0]] = g[0].lstrip(" ")
            pid = pids.get(g[1])
            if pid is None:
                pid = pids[g[1]] = _check_pid(int(g[1]), path, lineno, m)
            cpu = cpus.get(g[2])
            if cpu is None:
                cpu = cpus[g[2]] = _check_cpu(int(g[2]), st, path, lineno, m)
            if g[5] is not None:
                size = sizes.get(g[6])
                if size is None:
                    size = sizes[g[6]] = _check_size(int(g[6]), path, lineno, m)
                align = aligns.get(g[7])
                if align is None:
                    align = aligns[g[7]] = _check_align(int(g[7]), path, lineno, m)
                vstart = hexcache.get(g[8])
                if vstart is None:
                    vstart = hexcache[g[8]] = int(g[8], 16)
                vend = hexcache.get(g[9])
                if vend is None:
                    vend = hexcache[g[9]] = int(g[9], 16)
                addr = int(g[5])
                failed = int(g[10])
                # The common case, a success inside its range, checked inline.
                if not (
                    failed == 0
                    and addr > 0
                    and vstart <= addr
                    and addr + size <= vend
                    and not addr & (align - 1)
                    and not addr & 0xFFF
                ):
                    _check_alloc(addr, size, align, vstart, vend, failed, path, lineno, m)
                append(
                    alloc(
                        task,
                        pid,
                        cpu,
                        g[3],
                        float(g[4]),
                        lineno,
                        addr,
                        size,
                        align,
                        vstart,
                        vend,
                        failed,
                    )
                )
            elif g[11] is not None:
                va_start = int(g[11], 16)
                nr_lazy = int(g[12])
                nr_lazy_max = int(g[13])
                if va_start & 0xFFF or not 0 < nr_lazy <= umax or nr_lazy_max > umax:
                    _check_free(va_start, nr_lazy, nr_lazy_max, path, lineno, m)
                append(
                    free(task, pid, cpu, g[3], float(g[4]), lineno, va_start, nr_lazy, nr_lazy_max)
                )
            else:
                start = int(g[14], 16)
                end = int(g[15], 16)
                npurged = int(g[16])
                if not (start < end and not (start | end) & 0xFFF and npurged <= UINT_MAX):
                    _check_purge(start, end, npurged, path, lineno, m)
                append(purge(task, pid, cpu, g[3], float(g[4]), lineno, start, end, npurged))
        if pos != len(text):
            lineno = _slow(text[pos:], lineno, path, res, out, st)
        if final and st.fmt is None and lineno > st.lineno:
            st.fmt = "tracefs"  # only fast-path lines so far
    finally:
        if gc_was_enabled:
            gc.enable()
        res.lines = st.lineno = lineno
        if st.fmt is not None:
            res.format = st.fmt  # type: ignore[assignment]


# ---------------------------------------------------------------- what the kernel emits
#
# The checks below hold for every event the kernel can write (mm/vmalloc.c, 6.2-6.18):
# alloc_vmap_area() returns -EINVAL for a zero or unaligned size or an alignment that is
# not a power of two before it reaches its tracepoint; a success lies inside
# [vstart, vend) and is aligned (the BUG_ON()s right after the tracepoint); a failure's
# va_start is an error code (6.16+: IS_ERR_VALUE) or vend (6.2-6.15: addr == vend);
# free_vmap_area_noflush() prints the running lazy page count after adding the area's
# pages; a purge prints the flushed range, or ULONG_MAX/0 when it found nothing.


def _fail(msg: str, path: str | None, lineno: int, m: re.Match[str] | str) -> TraceParseError:
    text = m if isinstance(m, str) else m.group(0).rstrip("\n")
    return TraceParseError(msg, path=path, line=lineno, text=text)


def _check_pid(pid: int, path: str | None, lineno: int, m: re.Match[str] | str) -> int:
    if pid > PID_MAX_LIMIT:
        raise _fail(
            f"pid {pid} is above PID_MAX_LIMIT ({PID_MAX_LIMIT}); the kernel prints the "
            "pid of the task that ran the event",
            path,
            lineno,
            m,
        )
    return pid


def _check_cpu(cpu: int, st: _State, path: str | None, lineno: int, m: re.Match[str] | str) -> int:
    if cpu >= st.cpus:
        where = (
            f"the captured machine's CPUs are 0-{st.cpus - 1} (cpus_possible in meta.json)"
            if st.cpus_known
            else f"no x86-64 kernel has more than {NR_CPUS_MAX} CPUs (CONFIG_NR_CPUS)"
        )
        raise _fail(
            f"CPU {cpu} does not exist: {where}; the kernel prints [%03d] with the CPU "
            "the event ran on",
            path,
            lineno,
            m,
        )
    return cpu


def _check_size(size: int, path: str | None, lineno: int, m: re.Match[str] | str) -> int:
    if size == 0 or size % PAGE_SIZE or size > ULONG_MAX:
        why = (
            "does not fit an unsigned long (%lu)"
            if size > ULONG_MAX
            else "is zero"
            if size == 0
            else f"is not a multiple of PAGE_SIZE ({PAGE_SIZE})"
        )
        raise _fail(
            f"alloc_vmap_area size={size} {why}: alloc_vmap_area() returns -EINVAL for "
            "such a size before its tracepoint, so the kernel never prints it (traced "
            "sizes are page aligned and include the guard page, e.g. size=8192)",
            path,
            lineno,
            m,
        )
    return size


def _check_align(align: int, path: str | None, lineno: int, m: re.Match[str] | str) -> int:
    if align == 0 or align & (align - 1) or align > ULONG_MAX:
        raise _fail(
            f"alloc_vmap_area align={align} is not a power of two: alloc_vmap_area() "
            "returns -EINVAL for it before its tracepoint, so the kernel never prints "
            "it (e.g. align=1, align=16384)",
            path,
            lineno,
            m,
        )
    return align


def _check_alloc(
    addr: int,
    size: int,
    align: int,
    vstart: int,
    vend: int,
    failed: int,
    path: str | None,
    lineno: int,
    m: re.Match[str] | str,
) -> None:
    """Raise unless the kernel can print this alloc_vmap_area event."""

    def bad(msg: str) -> TraceParseError:
        return _fail(f"alloc_vmap_area {msg}", path, lineno, m)

    if addr > ULONG_MAX:
        raise bad(f"va_start: {addr} does not fit an unsigned long (the kernel prints %lu)")
    if failed not in (0, 1):
        raise bad(f"failed={failed}: the kernel prints failed=0 or failed=1 (IS_ERR_VALUE)")
    if vstart > vend:
        raise bad(
            f"vstart={vstart:#x} is above vend={vend:#x}: the kernel's callers ask for a "
            "range with vstart < vend (VMALLOC_START-VMALLOC_END, the module range, ...)"
        )
    if failed:
        if addr >= ULONG_MAX - MAX_ERRNO + 1 or addr == vend:
            return
        raise bad(
            f"failed=1 with va_start: {addr}, which the kernel never prints for a failure: "
            f"that is neither an error code (6.16+ prints -ENOENT as {ULONG_MAX - 1}, "
            f"-ERANGE, -ENOMEM, -EINVAL likewise) nor vend (6.2-6.15 print va_start: {vend})"
        )
    if addr >= ULONG_MAX - MAX_ERRNO + 1:
        raise bad(
            f"failed=0 with the error code va_start: {addr}: the kernel prints failed=1 "
            "with an error code"
        )
    if addr == vend:
        raise bad(f"failed=0 with va_start: {addr} = vend: the kernel (6.2-6.15) prints failed=1")
    if addr == 0:
        raise bad(
            "va_start: 0: the kernel never hands out address 0 (its free vmap space begins at 1)"
        )
    if addr < vstart:
        raise bad(
            f"va_start {addr:#x} is below vstart={vstart:#x}: the kernel allocates inside "
            "[vstart, vend) (alloc_vmap_area() BUG()s otherwise)"
        )
    if addr + size > vend:
        raise bad(
            f"area {addr:#x}-{addr + size:#x} ends past vend={vend:#x}: the kernel "
            "allocates inside [vstart, vend) (alloc_vmap_area() BUG()s otherwise)"
        )
    if addr & 0xFFF or addr & (align - 1):
        raise bad(
            f"va_start {addr:#x} is not aligned to align={align} and PAGE_SIZE: the kernel's "
            "areas are (alloc_vmap_area() BUG()s otherwise)"
        )


def _check_free(
    va_start: int,
    nr_lazy: int,
    nr_lazy_max: int,
    path: str | None,
    lineno: int,
    m: re.Match[str] | str,
) -> None:
    if va_start & 0xFFF:
        raise _fail(
            f"free_vmap_area_noflush va_start={va_start:#x} is not page aligned: every "
            "vmap area starts on a page",
            path,
            lineno,
            m,
        )
    if nr_lazy == 0:
        raise _fail(
            "free_vmap_area_noflush nr_lazy=0: the kernel prints the lazy page count after "
            "adding the freed area's pages, so at least 1",
            path,
            lineno,
            m,
        )
    for name, v in (("nr_lazy", nr_lazy), ("nr_lazy_max", nr_lazy_max)):
        if v > ULONG_MAX:
            raise _fail(
                f"free_vmap_area_noflush {name}={v} does not fit an unsigned long (%lu)",
                path,
                lineno,
                m,
            )


def _check_purge(
    start: int, end: int, npurged: int, path: str | None, lineno: int, m: re.Match[str] | str
) -> None:
    if npurged > UINT_MAX:
        raise _fail(
            f"purge_vmap_area_lazy num_purged={npurged} does not fit an unsigned int (%u)",
            path,
            lineno,
            m,
        )
    if start == ULONG_MAX and end == 0 and npurged == 0:
        return  # a purge that found nothing: the initial ULONG_MAX/0 range
    if not start < end:
        raise _fail(
            f"purge_vmap_area_lazy start={start:#x} end={end:#x}: the kernel prints the "
            f"flushed range (start < end), or start={ULONG_MAX:#x} end=0x0 num_purged=0 "
            "when nothing was purged",
            path,
            lineno,
            m,
        )
    if (start | end) & 0xFFF:
        raise _fail(
            f"purge_vmap_area_lazy range {start:#x}-{end:#x} is not page aligned: it is "
            "the union of page-aligned areas",
            path,
            lineno,
            m,
        )


def _slow(
    text: str,
    lineno: int,
    path: str | None,
    res: TraceParseResult,
    out: list[TraceEvent],
    st: _State,
) -> int:
    """The general parser for lines the fast path did not take; returns the line number.

    Lines end at ``\n`` only: ``str.splitlines`` would also split at ``\x0b``,
    ``\x0c``, ``\x1c``-``\x1e``, ``\x85`` and U+2028, and number the lines wrong.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for raw in lines:
        lineno += 1
        m = _LINE_RE.match(raw)
        if m is None:
            _other_line(raw, lineno, path, res)
            if st.fmt is None:
                if raw.startswith("# tracer:"):
                    st.fmt = "tracefs"
                elif _TRACE_CMD_INFO_RE.match(raw):
                    st.fmt = "trace-cmd"
            continue
        g = m.groups()
        if st.fmt is None:
            # trace-cmd: instance prefix, no flags, or cpu glued to flags (-l).
            st.fmt = "tracefs" if g[0] is None and g[4] is not None else "trace-cmd"
        if g[0] is not None and res.instance is None:
            res.instance = g[0]
        if g[3] is not None:
            cpu = int(g[3])
            flags = g[4] or ""
        else:
            cpu = int(g[5])
            flags = g[6]
        _check_cpu(cpu, st, path, lineno, raw)
        task = g[1]
        pid = _check_pid(int(g[2]), path, lineno, raw)
        ts = float(g[7])
        if g[8] is not None:
            size = _check_size(int(g[9]), path, lineno, raw)
            align = _check_align(int(g[10]), path, lineno, raw)
            addr, vstart, vend, failed = int(g[8]), int(g[11], 16), int(g[12], 16), int(g[13])
            _check_alloc(addr, size, align, vstart, vend, failed, path, lineno, raw)
            out.append(
                AllocVmapArea(
                    task=task,
                    pid=pid,
                    cpu=cpu,
                    flags=flags,
                    timestamp=ts,
                    line=lineno,
                    addr=addr,
                    size=size,
                    align=align,
                    vstart=vstart,
                    vend=vend,
                    failed=failed,
                )
            )
        elif g[14] is not None:
            va_start, nr_lazy, nr_lazy_max = int(g[14], 16), int(g[15]), int(g[16])
            _check_free(va_start, nr_lazy, nr_lazy_max, path, lineno, raw)
            out.append(
                FreeVmapAreaNoflush(
                    task=task,
                    pid=pid,
                    cpu=cpu,
                    flags=flags,
                    timestamp=ts,
                    line=lineno,
                    va_start=va_start,
                    nr_lazy=nr_lazy,
                    nr_lazy_max=nr_lazy_max,
                )
            )
        elif g[17] is not None:
            start, end, npurged = int(g[17], 16), int(g[18], 16), int(g[19])
            if not (start < end and not (start | end) & 0xFFF and npurged <= UINT_MAX):
                _check_purge(start, end, npurged, path, lineno, raw)
            out.append(
                PurgeVmapAreaLazy(
                    task=task,
                    pid=pid,
                    cpu=cpu,
                    flags=flags,
                    timestamp=ts,
                    line=lineno,
                    start=start,
                    end=end,
                    npurged=npurged,
                )
            )
        else:
            ev = g[20]
            etext: str = g[21].lstrip(" ")
            if ev in _VMALLOC_NAMES:
                raise TraceParseError(
                    f"malformed {ev} event: the kernel prints '{ev}: {_PRINT_FMT[ev]}'",
                    path=path,
                    line=lineno,
                    text=raw,
                )
            if ev == "tracing_mark_write" or (
                ev == "print" and etext.startswith("tracing_mark_write: ")
            ):
                if ev == "print":
                    etext = etext[len("tracing_mark_write: ") :]
                res.markers.append(Marker(lineno, ts, cpu, pid, task, etext.rstrip()))
            else:
                res.skipped += 1
    return lineno


def _other_line(raw: str, lineno: int, path: str | None, res: TraceParseResult) -> None:
    """A line that is not an event: comment, blank, lost marker, trace-cmd info."""
    s = raw.strip()
    if not s:
        return
    if s[0] == "#":
        m = _ENTRIES_RE.match(s)
        if m:
            in_buf, written = int(m.group(1)), int(m.group(2))
            if written > in_buf:
                res.lost += written - in_buf
                res.lost_records.append(LostEvents(lineno, None, written - in_buf))
        return
    m = _LOST_RE.match(s)
    if m:
        n = m.group(2) or m.group(3)
        cnt = int(n) if n is not None else None
        res.lost_records.append(LostEvents(lineno, int(m.group(1)), cnt))
        res.lost += cnt or 0
        return
    if _TRACE_CMD_INFO_RE.match(s):
        return
    raise TraceParseError(
        "not an ftrace event line (the kernel prints 'TASK-PID [CPU] FLAGS TIMESTAMP: "
        "EVENT: FIELDS', comments starting with '#', or 'CPU:N [LOST M EVENTS]')",
        path=path,
        line=lineno,
        text=s,
    )
