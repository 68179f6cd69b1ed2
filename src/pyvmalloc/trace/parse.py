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

Any other line is an error: :class:`TraceParseError` names the file and line. Files
ending in ``.gz`` are decompressed transparently; a capture directory stands for its
``trace`` (or ``trace.gz``) file.
"""

from __future__ import annotations

import gc
import gzip
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

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


class TraceParseError(ValueError):
    """A line that is not valid ftrace text; ``str()`` is ``path:line: message``."""

    def __init__(self, message: str, *, path: str | None, line: int, text: str = "") -> None:
        self.path = path
        self.line = line
        self.text = text
        self.reason = message
        where = f"{path or '<lines>'}:{line}"
        shown = text if len(text) <= 160 else text[:157] + "..."
        super().__init__(f"{where}: {message}" + (f": {shown!r}" if text else ""))


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
_HEADER = (
    r"(?:([^ :]+): +)?"  # 1 trace-cmd instance prefix
    r" *(.+?)-([0-9]+) +"  # 2 task (may hold spaces and dashes), 3 pid
    r"(?:\( *[0-9-]+\) +)?"  # optional (tgid) column
    r"(?:\[([0-9]+)\] +(?:([^ 0-9]\S*) +)?"  # 4 [cpu], 5 optional flags
    r"|([0-9]+)([^ 0-9]\S*) +)"  # 6 cpu + 7 flags glued (trace-cmd -l)
    r"([0-9]+(?:\.[0-9]+)?): +"  # 8 timestamp
)
_PAYLOADS = (
    r"(?:alloc_vmap_area: +va_start: ([0-9]+) size=([0-9]+) align=([0-9]+)"  # 9 10 11
    r" vstart=0x([0-9a-f]+) vend=0x([0-9a-f]+) failed=(-?[0-9]+)"  # 12 13 14
    r"|free_vmap_area_noflush: +va_start=0x([0-9a-f]+) nr_lazy=([0-9]+)"  # 15 16
    r" nr_lazy_max=([0-9]+)"  # 17
    r"|purge_vmap_area_lazy: +start=0x([0-9a-f]+) end=0x([0-9a-f]+)"  # 18 19
    r" num_purged=([0-9]+)"  # 20
    r"|([^\s:]+): *(.*?))"  # 21 other event name, 22 its text
    r"\s*$"
)
_LINE_RE = re.compile(_HEADER + _PAYLOADS, re.ASCII)
# Fast path: the exact tracefs layout (``%16s-%-7d [%03d] flags %12s: ``), in which the
# task name is right-aligned in 16 columns, so no backtracking is needed to find where
# a task name holding dashes ends. Lines it does not match take the general regex.
_FAST_RE = re.compile(
    r"^(.{16})-([0-9]+) +\[([0-9]+)\] ([^ 0-9]\S*) +([0-9]+\.[0-9]+): "  # 1-5
    r"(?:alloc_vmap_area: va_start: ([0-9]+) size=([0-9]+) align=([0-9]+)"  # 6 7 8
    r" vstart=0x([0-9a-f]+) vend=0x([0-9a-f]+) failed=(-?[0-9]+)"  # 9 10 11
    r"|free_vmap_area_noflush: va_start=0x([0-9a-f]+) nr_lazy=([0-9]+)"  # 12 13
    r" nr_lazy_max=([0-9]+)"  # 14
    r"|purge_vmap_area_lazy: start=0x([0-9a-f]+) end=0x([0-9a-f]+)"  # 15 16
    r" num_purged=([0-9]+))\n",  # 17
    re.ASCII | re.MULTILINE,
)
_LOST_RE = re.compile(
    r"^(?:[^\s:]+: +)?CPU:(\d+) \[(?:LOST (\d+) EVENTS|(?:(\d+) )?EVENTS DROPPED)\]\s*$"
)
_ENTRIES_RE = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)")
_TRACE_CMD_INFO_RE = re.compile(r"^(?:cpus=\d+|version = \S+|CPU \d+ is empty)\s*$")
_VMALLOC_NAMES = frozenset(("alloc_vmap_area", "free_vmap_area_noflush", "purge_vmap_area_lazy"))


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a text file for reading; ``.gz`` is decompressed; a directory stands for
    its ``trace`` or ``trace.gz`` (a capture directory)."""
    p = Path(path)
    if p.is_dir():
        for name in ("trace", "trace.gz"):
            if (p / name).exists():
                p = p / name
                break
        else:
            raise FileNotFoundError(f"{path}: no trace or trace.gz in this directory")
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8", errors="strict")
    return open(p, encoding="utf-8", errors="strict")


def iter_trace(
    source: Source,
    *,
    path: str | None = None,
    result: TraceParseResult | None = None,
) -> Iterator[TraceEvent]:
    """Yield the ``vmalloc:`` events of ``source`` in file order.

    ``source`` is a path (``str``/``PathLike``; ``.gz`` and capture directories are
    accepted) or an iterable of lines (then ``path`` names it in errors). If
    ``result`` is given, its counters (skipped, lost, markers, format, lines) are
    updated while the stream is consumed.
    """
    res = result if result is not None else TraceParseResult()
    out: list[TraceEvent] = []
    for _ in _parse(source, path, res, out):
        yield from out
        out.clear()


def parse_trace(source: Source, *, path: str | None = None) -> TraceParseResult:
    """Parse a whole trace; see :func:`iter_trace` for ``source``."""
    res = TraceParseResult()
    # Keep the cyclic GC paused for the whole file: re-enabling it between chunks lets
    # it rescan the growing (acyclic) event list again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in _parse(source, path, res, res.events):
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


def _chunks_from_file(f: IO[str]) -> Iterator[str]:
    """Pieces of ``f`` of about 4 MiB, each ending at a line end."""
    tail = ""
    while True:
        block = f.read(_CHUNK)
        if not block:
            if tail:
                yield tail + "\n"
            return
        block = tail + block
        cut = block.rfind("\n") + 1
        if cut == 0:
            tail = block
            continue
        tail = block[cut:]
        yield block[:cut]


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


def _parse(
    source: Source, path: str | None, res: TraceParseResult, out: list[TraceEvent]
) -> Iterator[None]:
    """Parse ``source`` chunk by chunk, appending events to ``out``; yields per chunk."""
    state = _State()
    if isinstance(source, (str, os.PathLike)):
        name = path if path is not None else os.fspath(source)
        res.path = name
        with open_text(source) as f:
            try:
                for chunk in _chunks_from_file(f):
                    _parse_chunk(chunk, name, res, out, state)
                    yield None
            except UnicodeDecodeError as e:
                raise TraceParseError(
                    f"not UTF-8 text ({e.reason})", path=name, line=state.lineno + 1
                ) from None
            except (OSError, EOFError) as e:  # e.g. a truncated .gz
                raise TraceParseError(f"read error: {e}", path=name, line=state.lineno) from e
    else:
        res.path = path
        for chunk in _chunks_from_lines(source):
            _parse_chunk(chunk, path, res, out, state)
            yield None


@dataclass(slots=True)
class _State:
    lineno: int = 0
    fmt: str | None = None


def _parse_chunk(
    text: str,
    path: str | None,
    res: TraceParseResult,
    out: list[TraceEvent],
    st: _State,
) -> None:
    """Parse ``text`` (whole lines, each ending in a newline)."""
    alloc = _mk_alloc
    free = _mk_free
    purge = _mk_purge
    append = out.append
    # vstart/vend repeat on nearly every line: convert each distinct string once.
    # Likewise pids, CPUs, sizes and alignments repeat: one cache of small decimals.
    hexcache: dict[str, int] = {}
    dec: dict[str, int] = {}
    tasks: dict[str, str] = {}
    lineno = st.lineno
    pos = 0
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
            pid = dec.get(g[1])
            if pid is None:
                pid = dec[g[1]] = int(g[1])
            cpu = dec.get(g[2])
            if cpu is None:
                cpu = dec[g[2]] = int(g[2])
            if g[5] is not None:
                size = dec.get(g[6])
                if size is None:
                    size = dec[g[6]] = int(g[6])
                align = dec.get(g[7])
                if align is None:
                    align = dec[g[7]] = int(g[7])
                vstart = hexcache.get(g[8])
                if vstart is None:
                    vstart = hexcache[g[8]] = int(g[8], 16)
                vend = hexcache.get(g[9])
                if vend is None:
                    vend = hexcache[g[9]] = int(g[9], 16)
                append(
                    alloc(
                        task,
                        pid,
                        cpu,
                        g[3],
                        float(g[4]),
                        lineno,
                        int(g[5]),
                        size,
                        align,
                        vstart,
                        vend,
                        int(g[10]),
                    )
                )
            elif g[11] is not None:
                append(
                    free(
                        task,
                        pid,
                        cpu,
                        g[3],
                        float(g[4]),
                        lineno,
                        int(g[11], 16),
                        int(g[12]),
                        int(g[13]),
                    )
                )
            else:
                append(
                    purge(
                        task,
                        pid,
                        cpu,
                        g[3],
                        float(g[4]),
                        lineno,
                        int(g[14], 16),
                        int(g[15], 16),
                        int(g[16]),
                    )
                )
        if pos != len(text):
            lineno = _slow(text[pos:], lineno, path, res, out, st)
        if st.fmt is None and lineno > st.lineno:
            st.fmt = "tracefs"  # only fast-path lines so far
    finally:
        if gc_was_enabled:
            gc.enable()
        res.lines = st.lineno = lineno
        if st.fmt is not None:
            res.format = st.fmt  # type: ignore[assignment]


def _slow(
    text: str,
    lineno: int,
    path: str | None,
    res: TraceParseResult,
    out: list[TraceEvent],
    st: _State,
) -> int:
    """The general parser for lines the fast path did not take; returns the line number."""
    for raw in text.splitlines():
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
        task = g[1]
        pid = int(g[2])
        ts = float(g[7])
        if g[8] is not None:
            out.append(
                AllocVmapArea(
                    task=task,
                    pid=pid,
                    cpu=cpu,
                    flags=flags,
                    timestamp=ts,
                    line=lineno,
                    addr=int(g[8]),
                    size=int(g[9]),
                    align=int(g[10]),
                    vstart=int(g[11], 16),
                    vend=int(g[12], 16),
                    failed=int(g[13]),
                )
            )
        elif g[14] is not None:
            out.append(
                FreeVmapAreaNoflush(
                    task=task,
                    pid=pid,
                    cpu=cpu,
                    flags=flags,
                    timestamp=ts,
                    line=lineno,
                    va_start=int(g[14], 16),
                    nr_lazy=int(g[15]),
                    nr_lazy_max=int(g[16]),
                )
            )
        elif g[17] is not None:
            out.append(
                PurgeVmapAreaLazy(
                    task=task,
                    pid=pid,
                    cpu=cpu,
                    flags=flags,
                    timestamp=ts,
                    line=lineno,
                    start=int(g[17], 16),
                    end=int(g[18], 16),
                    npurged=int(g[19]),
                )
            )
        else:
            ev = g[20]
            etext: str = g[21]
            if ev in _VMALLOC_NAMES:
                raise TraceParseError(f"malformed {ev} event", path=path, line=lineno, text=raw)
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
    raise TraceParseError("not an ftrace event line", path=path, line=lineno, text=s)
