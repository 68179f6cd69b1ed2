"""``pyvmalloc report``: a capture's vmalloc events, like ``trace-cmd report``.

Reads a capture directory (its ``trace`` or ``trace.gz``), a raw ftrace text file
(tracefs or trace-cmd layout, ``.gz`` allowed) or stdin (``-``), and prints each
``vmalloc:`` event as ``/sys/kernel/tracing/trace`` does, in file order. Filters, all
of which must hold for an event to be printed:

* ``--event NAME`` (repeatable, or comma-separated): ``alloc_vmap_area``,
  ``free_vmap_area_noflush``, ``purge_vmap_area_lazy``;
* ``--cpu N`` (repeatable, or comma-separated): the CPU column;
* ``--pid N`` (repeatable, or comma-separated): the pid after the task name (the task
  name is ``<...>`` when the kernel's saved_cmdlines had no room for the pid);
* ``--comm RE``: a Python regular expression searched in the task name;
* ``--since T`` / ``--until T``: timestamps in seconds, both ends included.

``--markers`` also prints the capture's ``trace_marker`` lines (snapshot-begin...),
which pass the CPU, comm and time filters but not ``--event``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyvmalloc.trace.events import EVENT_NAMES, TraceEvent
from pyvmalloc.trace.parse import Marker, parse_trace

__all__ = ["ReportFilter", "marker_line", "register_cli", "report_events"]


@dataclass
class ReportFilter:
    """Which events ``pyvmalloc report`` keeps."""

    events: frozenset[str] | None = None
    cpus: frozenset[int] | None = None
    pids: frozenset[int] | None = None
    comm: re.Pattern[str] | None = None
    since: float | None = None
    until: float | None = None

    def header_ok(self, cpu: int, task: str, timestamp: float, pid: int | None = None) -> bool:
        if self.cpus is not None and cpu not in self.cpus:
            return False
        if self.pids is not None and pid not in self.pids:
            return False
        if self.comm is not None and not self.comm.search(task):
            return False
        if self.since is not None and timestamp < self.since:
            return False
        return self.until is None or timestamp <= self.until

    def __call__(self, ev: TraceEvent) -> bool:
        if self.events is not None and ev.name not in self.events:
            return False
        return self.header_ok(ev.cpu, ev.task, ev.timestamp, ev.pid)


def marker_line(m: Marker) -> str:
    """A ``trace_marker`` write as tracefs prints it (flags are not kept: ``.....``)."""
    ts = f"{m.timestamp:.6f}"
    return f"{m.task:>16}-{m.pid:<7d} [{m.cpu:03d}] ..... {ts:>12}: tracing_mark_write: {m.text}"


def report_events(
    source: str | Path, flt: ReportFilter, *, markers: bool = False
) -> tuple[list[TraceEvent | Marker], int]:
    """The events (and markers) of ``source`` that pass ``flt``, in file order.

    Returns them with the trace's lost-event count. ``source`` ``-`` reads stdin.
    """
    if str(source) == "-":
        parsed = parse_trace(sys.stdin, path="<stdin>")
    else:
        p = Path(source)
        if not p.exists():
            raise ValueError(f"{p}: no such file or directory")
        parsed = parse_trace(p)
    out: list[TraceEvent | Marker] = [e for e in parsed.events if flt(e)]
    if markers:
        out += [m for m in parsed.markers if flt.header_ok(m.cpu, m.task, m.timestamp, m.pid)]
        out.sort(key=lambda e: e.line)
    return out, parsed.lost


def _as_json(e: TraceEvent | Marker) -> dict[str, Any]:
    if isinstance(e, Marker):
        return {"name": "tracing_mark_write", **asdict(e)}
    d: dict[str, Any] = {"name": e.name}
    d.update(asdict(e))
    return d


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for text in values or [] for v in text.split(",") if v.strip()]


def _seconds(text: str) -> float:
    """A ``--since``/``--until`` time: a number of seconds (NaN would match every event)."""
    try:
        t = float(text) if text.isascii() and "_" not in text else math.nan
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time in seconds: {text!r}") from None
    if math.isnan(t):
        raise argparse.ArgumentTypeError(f"not a time in seconds: {text!r}")
    return t


def _filter_from_args(args: argparse.Namespace) -> ReportFilter:
    for opt, given in (("--event", args.event), ("--cpu", args.cpu), ("--pid", args.pid)):
        if given is not None and not _split(given):
            raise ValueError(f"{opt}: an empty value (give a name or number, or leave it out)")
    events = _split(args.event)
    unknown = [e for e in events if e not in EVENT_NAMES]
    if unknown:
        raise ValueError(
            f"--event {', '.join(unknown)}: not a vmalloc event; known: {', '.join(EVENT_NAMES)}"
        )
    cpus: list[int] = []
    for c in _split(args.cpu):
        if not (c.isascii() and c.isdigit()):
            raise ValueError(f"--cpu {c}: not a CPU number")
        cpus.append(int(c))
    pids: list[int] = []
    for c in _split(args.pid):
        if not (c.isascii() and c.isdigit()):
            raise ValueError(f"--pid {c}: not a pid")
        pids.append(int(c))
    comm = None
    if args.comm is not None:
        try:
            comm = re.compile(args.comm)
        except (re.error, OverflowError, RecursionError) as e:  # a{99999999999}, ((((...
            raise ValueError(f"--comm {args.comm!r}: not a regular expression ({e})") from None
    if args.since is not None and args.until is not None and args.since > args.until:
        raise ValueError(f"--since {args.since} is after --until {args.until}")
    return ReportFilter(
        events=frozenset(events) or None,
        cpus=frozenset(cpus) if cpus else None,
        pids=frozenset(pids) if pids else None,
        comm=comm,
        since=args.since,
        until=args.until,
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from pyvmalloc.cli_output import check_writable, write_json

    flt = _filter_from_args(args)
    check_writable(args.json, "--json")
    rows, lost = report_events(args.capture, flt, markers=args.markers)
    if args.json:
        write_json([_as_json(e) for e in rows], args.json)
    if args.json != "-":
        out = sys.stdout
        for e in rows:
            out.write((marker_line(e) if isinstance(e, Marker) else str(e)) + "\n")
    if lost:
        print(f"report: the trace lost {lost} events", file=sys.stderr)
    if not rows and flt.comm is not None:
        _hint_unnamed_tasks(args.capture, flt)
    return 0


def _hint_unnamed_tasks(source: str, flt: ReportFilter) -> None:
    """Say why ``--comm`` found nothing when some tasks have no name in the trace.

    tracefs prints ``<...>`` for a pid whose name fell out of its saved_cmdlines
    table (128 entries by default), which happens when many tasks run."""
    unnamed = ReportFilter(events=flt.events, cpus=flt.cpus, pids=flt.pids,
                           comm=re.compile(r"^<\.\.\.>$"), since=flt.since, until=flt.until)  # fmt: skip
    rows, _ = report_events(source, unnamed)
    if rows:
        pids = sorted({e.pid for e in rows})
        some = ", ".join(map(str, pids[:5])) + (", ..." if len(pids) > 5 else "")
        print(
            f"report: no event matches --comm {flt.comm.pattern if flt.comm else ''!r}, but "
            f"{len(rows)} events of {len(pids)} pids ({some}) have the task name <...> (the "
            "kernel's saved_cmdlines had no room for them): select those with --pid",
            file=sys.stderr,
        )


def register_cli(sub: Any) -> None:
    """Add the ``report`` subcommand."""
    from pyvmalloc.cli_output import add_json_argument

    p = sub.add_parser(
        "report",
        help="list a capture's vmalloc events, like trace-cmd report",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "capture",
        metavar="CAPTURE",
        help="a capture directory, a trace file (.gz allowed), or - for stdin",
    )
    p.add_argument(
        "--event",
        action="append",
        metavar="NAME",
        help=f"only these events (repeatable; {', '.join(EVENT_NAMES)})",
    )
    p.add_argument("--cpu", action="append", metavar="N", help="only events on CPU N (repeatable)")
    p.add_argument("--pid", action="append", metavar="N", help="only events of pid N (repeatable)")
    p.add_argument("--comm", metavar="RE", help="only tasks whose name matches RE (re.search)")
    p.add_argument("--since", type=_seconds, metavar="T", help="only events at T seconds or later")
    p.add_argument("--until", type=_seconds, metavar="T", help="only events at T seconds or before")
    p.add_argument("--markers", action="store_true", help="also print trace_marker lines")
    add_json_argument(p, "the events")
    p.set_defaults(func=_cmd_report)
