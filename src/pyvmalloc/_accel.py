"""Which implementation of the hot paths runs: the compiled accelerator or the reference.

The pure-Python code is the reference (it is what the docs and the tests describe);
``pyvmalloc._speedups`` is a C extension with the same behaviour for the red-black
tree's fix-ups, the free tree's ``subtree_max_size`` propagation, the lowest-match
descent and the busy-tree lookups, and — for the kernel's own policies — for whole
mechanism operations (``alloc_vmap_area_once``, ``find_unlink_vmap_area``,
``free_vmap_area_noflush``, the purge's per-node loop), which decline any call they do
not mirror before changing anything (the ``heapq``/``_heapq`` pattern). It is used when
it can be imported; ``PYVMALLOC_PURE=1`` in the environment forces the reference.
The choice is made once, at import, for the whole process.
The extension also has twins of the page allocator's bulk order-0 column work, the PTE
fills and the trace parser's tracefs line scan (phys/buddy.py, pgtable.py, trace/parse.py),
and the unobserved common case of ``vmalloc``/``vzalloc``/``__vmalloc`` and ``vfree``
as one call each (``vmalloc_node_range``, ``vfree``: vmalloc.py).

>>> isinstance(ACCELERATED, bool) and isinstance(DESCRIPTION, str)
True
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["ACCELERATED", "DESCRIPTION", "SUMMARY", "speedups"]

#: Functions of the current _speedups.c that the Python side calls.
_WHOLE_OPERATIONS = (
    "alloc_vmap_area_once",
    "find_unlink_vmap_area",
    "free_vmap_area_noflush",
    "purge_vmap_node",
    "pvm_find_va_enclose_addr",
    "init_space",
    "vmalloc_node_range",
    "vfree",
    # replay batch (replayc)
    "replay_run",
    "replay_adopt",
    "hidden_guess",
    "seed_busy",
    "ranges_below",  # replayc2
    "alloc_index",
    "overlapping",  # rtail
    "pooled_overlapping",
    # bulk pages and multi-page vmalloc (bulkc)
    "init_bulk_pages",
    "phys_alloc_pages_bulk",
    "phys_free_pages_bulk",
    "init_bulk_ptes",
    "pte_map_cached",
    "pte_clear_cached",
    # test-vmalloc harness (tvharness)
    "tv_loops",
    # replay purge (rpurge)
    "begin_purge_nodes",
    "batch_without",
    "stamp",
    "insert_from",
    # replay divergence (rdiverge)
    "event_table",
    "lock_order_next",
    "next_alloc_in",
    "untouched",
    "prev_of_task",
    "last_alloc_at",
    "shrink_fit",
    "cpu_before",
    "where_tree",
    "undo_alloc",
)

#: Set (to anything but "" or "0") to force the pure-Python reference.
PURE = os.environ.get("PYVMALLOC_PURE", "") not in ("", "0")

speedups: ModuleType | None
_why = _short = ""
if PURE:
    speedups = None
    _why = "PYVMALLOC_PURE is set"
    _short = "PYVMALLOC_PURE=1"
else:
    try:
        import pyvmalloc._speedups as speedups
    except ImportError as e:  # no compiler at install time: the reference is complete
        speedups = None
        _why = f"no compiled accelerator: {e}"
        _short = "not compiled"
    else:
        # A build older than the source (an editable install not rebuilt after an
        # update) lacks functions the Python side calls: use the reference, and say so.
        _missing = [name for name in _WHOLE_OPERATIONS if not hasattr(speedups, name)]
        if _missing:
            speedups = None
            _why = (
                f"the compiled accelerator is older than the source (no {_missing[0]}); "
                "rebuild it with pip install -e ."
            )
            _short = "stale build"

#: True when the compiled accelerator is in use.
ACCELERATED: bool = speedups is not None

#: One line for ``pyvmalloc --version``.
DESCRIPTION: str = (
    "accelerated (C extension pyvmalloc._speedups)"
    if ACCELERATED
    else f"pure Python reference ({_why})"
)

#: The short form ``pyvmalloc --version`` prints.
SUMMARY: str = "C accelerator" if ACCELERATED else f"pure Python, {_short}"
