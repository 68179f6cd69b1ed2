"""Tests of ``pyvmalloc capture`` and the BPF workload.

The live tests (``-m live``) need root, tracefs with the vmalloc events, and BPF;
they are skipped with a reason elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvmalloc.trace import bpfload, capture
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.snapshot import parse_vmallocinfo

TRACEFS = Path("/sys/kernel/tracing")


def _live_reason() -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "needs root"
    problems = capture.check_environment()
    if problems:
        return problems[0]
    return bpfload.bpf_available()


def _machine_state() -> dict[str, object]:
    """What a capture may change, as found now (tracefs may be unmounted)."""
    base = capture._find_tracefs()
    mounted = base is not None
    return {
        "instances": sorted(p.name for p in (base / "instances").iterdir()) if mounted else [],
        "kptr": capture.KPTR.read_text(),
        "enabled": [(base / "events/vmalloc" / e / "enable").read_text() for e in capture.EVENTS]
        if mounted
        else [],
        "mounted": base,
        "affinity": os.sched_getaffinity(0),
    }


live = pytest.mark.skipif(_live_reason() is not None, reason=str(_live_reason()))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyvmalloc")
    sub = p.add_subparsers(dest="command", required=True)
    capture.register_cli(sub)
    return p


def test_cli_arguments() -> None:
    p = _parser()
    a = p.parse_args(["capture", "out", "--workload", "bpf", "--seed", "3", "--cpus", "1"])
    assert a.func is capture._handler and capture._split_rest(a) == []
    assert a.seed == 3 and a.drop_caches and a.cpus == "1"
    a = p.parse_args(["capture", "--seed", "4", "out", "--no-drop-caches", "--", "sleep", "-x"])
    assert capture._split_rest(a) == ["sleep", "-x"] and not a.drop_caches and a.seed == 4
    assert "dentry" in p._subparsers._group_actions[0].choices["capture"].format_help()  # type: ignore[union-attr]


def test_handler_rejects_two_modes(capsys: pytest.CaptureFixture[str]) -> None:
    a = _parser().parse_args(["capture", "out", "--duration", "1", "--", "true"])
    assert a.func(a) == 2
    assert "only one of" in capsys.readouterr().err


def test_not_root_explains(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if sys.platform != "linux":
        pytest.skip("Linux only")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert any("root" in p for p in capture.check_environment())
    a = _parser().parse_args(["capture", str(tmp_path / "o"), "--duration", "0"])
    assert a.func(a) == 1
    err = capsys.readouterr().err
    assert "must run as root" in err and "sudo" in err
    assert not (tmp_path / "o").exists()


def test_summarize_counts_window_and_lost() -> None:
    text = "\n".join(
        [
            "# entries-in-buffer/entries-written: 5/7   #P:2",
            "  p-1 [000] ...1. 1.000000: tracing_mark_write: pyvmalloc: drop-caches-end",
            "  k-2 [000] ..... 1.000001: purge_vmap_area_lazy: start=0x1 end=0x2 num_purged=3",
            "  p-1 [000] ...1. 1.000002: tracing_mark_write: pyvmalloc: snapshot-begin",
            "  p-1 [000] ..... 1.000003: alloc_vmap_area: va_start: 1 size=8192 align=1 "
            "vstart=0x0 vend=0x1 failed=0",
            "  p-1 [000] ...1. 1.000004: tracing_mark_write: pyvmalloc: snapshot-end",
            "  k-2 [000] ....1 1.000005: free_vmap_area_noflush: va_start=0x1 nr_lazy=2 "
            "nr_lazy_max=16384",
        ]
    )
    s = capture._summarize(text)
    assert s["lost_events"] == 2
    assert s["events_in_snapshot_window"] == 1
    assert s["purges_between_drop_and_snapshot"] == 1
    assert s["nr_lazy_max_observed"] == [16384]
    assert s["marker_lines"]["snapshot-end"] == 6


def test_workload_config_is_seeded() -> None:
    import random

    a = [bpfload._pick_pages(random.Random(5), "mixed") for _ in range(1)]
    rng1, rng2 = random.Random(5), random.Random(5)
    a = [bpfload._pick_pages(rng1, "mixed") for _ in range(200)]
    b = [bpfload._pick_pages(rng2, "mixed") for _ in range(200)]
    assert a == b
    assert min(a) >= bpfload.MIN_AREA_PAGES and max(a) > 514  # some nested pages arrays


@pytest.mark.live
@live
def test_live_bpf_workload_sizes(tmp_path: Path) -> None:
    """A capture with the BPF workload shows our exact sizes; the machine is restored."""
    before = _machine_state()
    cfg = bpfload.WorkloadConfig(
        seed=11, profile="small", cpus="0", churn_bytes=2 << 20, max_ops=60, long_lived=0
    )
    meta = capture.capture(
        capture.CaptureOptions(
            outdir=tmp_path / "cap",
            workload="bpf",
            workload_config=cfg,
            drop_caches=False,
            buffer_mb=8,
            settle=0.2,
            log=lambda s: None,
        )
    )
    assert _machine_state() == before
    assert meta["complete"] and meta["mode"] == "workload"
    assert meta["cpus_online"] and meta["kernel_release"] == os.uname().release
    res = parse_trace(tmp_path / "cap")
    begin = res.marker("workload-begin")
    end = res.marker("workload-end")
    assert begin is not None and end is not None
    ours = [
        e.size
        for e in res.events
        if e.name == "alloc_vmap_area"
        and begin.line < e.line < end.line
        and e.cpu == 0
        and e.align == 1
        and e.pid == os.getpid()
    ]
    sizes = meta["workload"]["stats"]
    assert sizes["allocs"] > 0
    assert len(ours) >= sizes["allocs"]
    frees = [e for e in res.events if e.name == "free_vmap_area_noflush" and e.line > begin.line]
    assert len(frees) >= sizes["frees"]
    info = parse_vmallocinfo(tmp_path / "cap")
    assert info.busy and all(e.start >> 32 for e in info.busy)
    json.loads((tmp_path / "cap" / "meta.json").read_text())


@pytest.mark.live
@live
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_live_interrupt_restores_machine(tmp_path: Path, sig: int) -> None:
    before = _machine_state()
    base = capture._find_tracefs() or TRACEFS
    inst = base / "instances"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyvmalloc.trace.capture",
            str(tmp_path / "c"),
            "--duration",
            "30",
            "--no-drop-caches",
            "--buffer-mb",
            "4",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Generous limits: a loaded 2-core CI machine can be slow to start Python.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "c" / "vmallocinfo").exists():
                break
            time.sleep(0.02)
        else:
            pytest.fail("capture did not start")
        assert any(p.name.startswith("pyvmalloc-") for p in inst.iterdir())
        assert capture.KPTR.read_text().strip() == "1"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            # Never SIGKILL first: the capture restores the machine on SIGINT.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + sig
    assert "restored" in err
    after = _machine_state()
    after["affinity"] = before["affinity"]  # (another process's affinity)
    assert after == before


@pytest.mark.live
@live
def test_live_sigkilled_capture_is_recovered_by_the_next(tmp_path: Path) -> None:
    """SIGKILL cannot be handled; the next capture undoes what the killed one left."""
    before = _machine_state()
    base = capture._find_tracefs() or TRACEFS
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyvmalloc.trace.capture",
            str(tmp_path / "c"),
            "--duration",
            "60",
            "--no-drop-caches",
            "--buffer-mb",
            "4",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "c" / "vmallocinfo").exists():
            assert time.monotonic() < deadline, "capture did not start"
            time.sleep(0.02)
    finally:
        proc.kill()  # the point of the test
        proc.wait()
    try:
        assert (base / "instances" / f"pyvmalloc-{proc.pid}").exists()
        messages: list[str] = []
        assert capture.recover_stale_captures(base, messages.append) == 1
        assert f"capture {proc.pid} (killed)" in messages[0]
    finally:
        capture.recover_stale_captures(base, lambda _m: None)
    after = _machine_state()
    after["affinity"] = before["affinity"]
    assert after == before


@pytest.mark.live
@live
def test_live_two_captures_at_once_leave_the_machine_as_found(tmp_path: Path) -> None:
    """The first to finish neither unmounts tracefs nor restores kptr_restrict under the
    second; the second's snapshots keep real addresses; the last one restores both."""
    before = _machine_state()

    def start(name: str, *activity: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pyvmalloc.trace.capture", str(tmp_path / name),
             "--no-drop-caches", "--no-kstate", "--buffer-mb", "4", "--end-snapshot",
             *activity],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    first = start("a", "--duration", "1")
    deadline = time.monotonic() + 60
    while not (tmp_path / "a" / "vmallocinfo").exists():
        assert time.monotonic() < deadline, "first capture did not start"
        time.sleep(0.02)
    second = start(
        "b", "--", sys.executable, "-c", "import time; time.sleep(4); raise SystemExit(5)"
    )
    _, err_a = first.communicate(timeout=120)
    _, err_b = second.communicate(timeout=120)
    assert first.returncode == 0, err_a
    assert second.returncode == 5, err_b  # the command's own status
    assert "cleanup problem" not in err_a + err_b
    end = (tmp_path / "b" / "vmallocinfo.end").read_text()
    # real addresses (kptr_restrict stayed 1 for b after a ended), not hashed ones
    assert end.startswith("0xffff"), end[:80]
    after = _machine_state()
    after["affinity"] = before["affinity"]
    assert after == before
