"""The ``vmalloc`` tracepoints (``include/trace/events/vmalloc.h``, added in v6.2).

Each event is a small record with the ftrace header fields (task, pid, CPU, flags,
timestamp) and the event's own fields, named as in the kernel's ``format`` file.
``str(event)`` renders the line exactly as ``/sys/kernel/tracing/trace`` prints it,
so the model's output and a real machine's can be diffed.

>>> e = AllocVmapArea(addr=0xffffc90000000000, size=8192, align=1,
...                   vstart=0xffffc90000000000, vend=0xffffe8ffffffffff, failed=0)
>>> e.payload()
'va_start: 18446683600570023936 size=8192 align=1 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "EVENT_NAMES",
    "AllocVmapArea",
    "FreeVmapAreaNoflush",
    "PurgeVmapAreaLazy",
    "TraceEvent",
]


@dataclass(slots=True, kw_only=True)
class TraceEvent:
    """Common ftrace header of one event line."""

    name: ClassVar[str] = ""
    task: str = "<model>"
    pid: int = 0
    cpu: int = 0
    #: The ``irqs-off/need-resched/hardirq/preempt/migrate`` flag column, e.g. ``.....``.
    flags: str = "....."
    timestamp: float = 0.0
    #: Line number in the file this event was parsed from (0 for model events).
    line: int = 0

    def payload(self) -> str:
        """The event's text after ``name: `` (its ``print fmt``)."""
        raise NotImplementedError

    def header(self) -> str:
        """The ftrace header, as tracefs prints it for the default ``trace`` file."""
        ts = f"{self.timestamp:.6f}"
        return f"{self.task:>16}-{self.pid:<7d} [{self.cpu:03d}] {self.flags} {ts:>12}: "

    def __str__(self) -> str:
        return f"{self.header()}{self.name}: {self.payload()}"


@dataclass(slots=True, kw_only=True)
class AllocVmapArea(TraceEvent):
    """``alloc_vmap_area``: one allocation attempt (also pool hits and failures).

    ``addr`` is the start, or the error value as unsigned long when ``failed``.
    ``size`` includes the guard page; ``align`` is the effective alignment.
    """

    name: ClassVar[str] = "alloc_vmap_area"
    addr: int
    size: int
    align: int
    vstart: int
    vend: int
    failed: int

    def payload(self) -> str:
        return (
            f"va_start: {self.addr} size={self.size} align={self.align} "
            f"vstart={self.vstart:#x} vend={self.vend:#x} failed={self.failed}"
        )


@dataclass(slots=True, kw_only=True)
class FreeVmapAreaNoflush(TraceEvent):
    """``free_vmap_area_noflush``: a lazy free; ``nr_lazy`` in pages after adding it."""

    name: ClassVar[str] = "free_vmap_area_noflush"
    va_start: int
    nr_lazy: int
    nr_lazy_max: int

    def payload(self) -> str:
        return f"va_start={self.va_start:#x} nr_lazy={self.nr_lazy} nr_lazy_max={self.nr_lazy_max}"


@dataclass(slots=True, kw_only=True)
class PurgeVmapAreaLazy(TraceEvent):
    """``purge_vmap_area_lazy``: end of one purge; ``npurged`` lazy areas taken.

    Emitted even when nothing was purged (then start=ULONG_MAX, end=0, npurged=0).
    """

    name: ClassVar[str] = "purge_vmap_area_lazy"
    start: int
    end: int
    npurged: int

    def payload(self) -> str:
        return f"start={self.start:#x} end={self.end:#x} num_purged={self.npurged}"


EVENT_NAMES: dict[str, type[TraceEvent]] = {
    cls.name: cls for cls in (AllocVmapArea, FreeVmapAreaNoflush, PurgeVmapAreaLazy)
}
