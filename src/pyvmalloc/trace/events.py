"""The ``vmalloc`` tracepoint records, as the trace tools see them.

They are defined beside the allocator that emits them,
:mod:`pyvmalloc.vmap.tracepoints` (``include/trace/events/vmalloc.h``); this module
re-exports them for the parsers, capture and replay.
"""

from pyvmalloc.vmap.tracepoints import (
    EVENT_NAMES,
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    TraceEvent,
)

__all__ = [
    "EVENT_NAMES",
    "AllocVmapArea",
    "FreeVmapAreaNoflush",
    "PurgeVmapAreaLazy",
    "TraceEvent",
]
