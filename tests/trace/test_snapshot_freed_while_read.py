"""/proc/vmallocinfo read while areas are freed.

The kernel prints the busy areas node by node and the lazily freed ones last
(mm/vmalloc.c, vmalloc_info_show then show_purge_info, 6.x): an area freed in between
appears twice, busy and further down as "unpurged vm_area" with the same range. Seen
in tests/data/captures/bpfjit-busy-nodrop/vmallocinfo.end (line 210, then 958).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvmalloc.errors import InputError
from pyvmalloc.trace.snapshot import parse_vmallocinfo

A = "0xffffc90000010000-0xffffc90000013000   12288 foo+0x1/0x2 pages=2 vmalloc N0=2"
B = "0xffffc90000020000-0xffffc90000022000    8192 bar+0x1/0x2 pages=1 vmalloc N0=1"
UA = "0xffffc90000010000-0xffffc90000013000   12288 unpurged vm_area"
CAPTURES = Path(__file__).parent.parent / "data" / "captures"


def test_busy_then_unpurged_keeps_the_later_line():
    info = parse_vmallocinfo("\n".join([A, B, UA]) + "\n")
    assert [(e.line, e.kind) for e in info.entries] == [(2, "vm"), (3, "unpurged")]
    assert [e.line for e in info.freed_while_read] == [1]
    assert [e.start for e in info.unpurged] == [0xFFFFC90000010000]


@pytest.mark.parametrize(
    "lines",
    [
        [UA, B, A],  # lazy lines come last: an unpurged line before its busy one is not a read
        [A, A, UA],  # the same busy area twice
        [A, UA, UA],  # the same lazy area twice
    ],
)
def test_other_duplicates_still_refused(lines):
    with pytest.raises(InputError, match="never overlap"):
        parse_vmallocinfo("\n".join(lines) + "\n")


def test_real_end_snapshot_of_a_busy_machine():
    info = parse_vmallocinfo(CAPTURES / "bpfjit-busy-nodrop" / "vmallocinfo.end")
    freed = info.freed_while_read
    assert (freed[0].line, freed[0].start) == (210, 0xFFFFC9000CBC8000)
    lazy = {(e.start, e.end): e.line for e in info.unpurged}
    assert len(freed) == 3 and all(lazy[(e.start, e.end)] > e.line for e in freed)
    assert lazy[(freed[0].start, freed[0].end)] == 958


def test_real_start_snapshot_frees_in_the_window_are_reflected():
    # storm-nodrop: a thread storm while the snapshot was read. Two stacks were printed
    # busy (lines 140, 142) and again as unpurged (479, 480); their frees are the first
    # two events between the snapshot markers, and the replay finds them in the snapshot.
    from pyvmalloc.trace.replay import load_capture, replay

    cap = CAPTURES / "storm-nodrop"
    info = parse_vmallocinfo(cap)
    assert [(e.line, e.start) for e in info.freed_while_read] == [
        (140, 0xFFFFC90008A40000),
        (142, 0xFFFFC90008A60000),
    ]
    trace, snap, meta = load_capture(cap)
    res = replay(trace, snap, meta=meta, end_snapshot=cap / "vmallocinfo.end")
    assert res.window_reflected == 2 and res.window_applied == 30
    assert res.lazy_drift == 0 and res.frees_unknown == 0
    e = res.end_check
    assert e is not None and e["busy_only_model"] == e["busy_only_kernel"] == 0
    assert e["lazy_only_model"] == e["lazy_only_kernel"] == 0
