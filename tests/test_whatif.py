"""What-if replays of a real capture on other machines and kernels."""

from __future__ import annotations

import json
from pathlib import Path

from pyvmalloc.cli import main
from pyvmalloc.config import Machine
from pyvmalloc.report.whatif import Fragmentation, whatif
from pyvmalloc.trace.events import AllocVmapArea, FreeVmapAreaNoflush
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.replay import load_capture
from pyvmalloc.trace.snapshot import parse_vmallocinfo

CAP = Path(__file__).parent / "data" / "captures" / "mixed-spread"


def peak_demand(trace: Path, snap: Path) -> int:
    """Most bytes the workload ever holds busy: snapshot busy areas + live trace areas,
    computed from the trace alone (independent of any allocator)."""
    live: dict[int, int] = {}
    base = sum(e.size for e in parse_vmallocinfo(snap).busy)
    peak = cur = 0
    for ev in parse_trace(trace).events:
        if isinstance(ev, AllocVmapArea) and not ev.failed:
            live[ev.addr] = ev.size
            cur += ev.size
        elif isinstance(ev, FreeVmapAreaNoflush):
            cur -= live.pop(ev.va_start, 0)
        peak = max(peak, cur)
    return base + peak


def test_same_machine_as_the_capture_never_fails():
    # The real 6.18 kernel served every request of this capture on this machine.
    trace, snap, _ = load_capture(CAP)
    res = whatif(trace, snap, profile="6.18", machine=Machine(cpus_online=2))
    assert res.requests == 284 and res.failures == 0 and res.snapshot_failures == 0


def test_a_vmalloc_area_smaller_than_the_peak_demand_fails():
    # vmalloc=48M on i386 gives a 48 MiB range; the workload holds more than that busy
    # at its peak (guard pages included, counted from the trace alone), so some
    # request must fail whatever the placement.
    trace, snap, _ = load_capture(CAP)
    m = Machine(arch="i386", ram=1 << 30, vmalloc_reserve=48 << 20)
    assert m.vmalloc_end - m.vmalloc_start == 48 << 20
    assert peak_demand(trace, snap) > 48 << 20
    res = whatif(trace, snap, profile="5.4", machine=m)
    assert res.failures >= 1 and res.first_failure_line is not None
    assert res.peak_busy_bytes <= 48 << 20


def test_fragmentation_metric():
    f = Fragmentation(free_bytes=4 << 20, largest_free=1 << 20, free_blocks=4)
    assert f.external == 0.75
    assert Fragmentation(0, 0, 0).external == 0.0


def test_whatif_cli_json(tmp_path):
    out = tmp_path / "w.json"
    rc = main(
        [
            "whatif",
            str(CAP),
            "--arch",
            "i386",
            "--ram",
            "1G",
            "--profile",
            "5.4",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["requests"] == 284 and data["samples"]
    assert 0.0 <= data["samples"][-1]["external"] <= 1.0


def test_whatif_plot_is_a_png(tmp_path):
    out = tmp_path / "w.png"
    assert main(["whatif", str(CAP), "--arch", "i386", "--ram", "1G", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
