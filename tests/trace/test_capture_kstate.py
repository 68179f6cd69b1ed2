"""``pyvmalloc capture`` and ``kstate.json``: the option, the writer, the markers, and
(``-m live``) a real capture with both readouts that leaves the machine as found."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc.trace import bpfload, capture, kread
from pyvmalloc.trace.parse import parse_trace


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyvmalloc")
    sub = p.add_subparsers(dest="command", required=True)
    capture.register_cli(sub)
    kread.register_cli(sub)
    return p


def test_kstate_option() -> None:
    p = _parser()
    a = p.parse_args(["capture", "out", "--duration", "1"])
    assert a.kstate is True
    a = p.parse_args(["capture", "--no-kstate", "out", "--duration", "1"])
    assert a.kstate is False
    a = p.parse_args(["capture", "out", "--duration", "1", "--no-kstate"])
    capture._split_rest(a)  # options after OUTDIR are parsed there
    assert a.kstate is False
    a = p.parse_args(["kstate", "--out", "k.json"])
    assert a.func is kread._handler and a.out == Path("k.json")
    for name in ("kstate.json", "kstate.json.gz", "kstate.end.json", "kstate.end.json.gz"):
        assert name in capture.OUTPUT_FILES  # --force replaces them too


class FakeReader:
    """Stands in for :class:`kread.Reader` (no kernel)."""

    def __init__(self, doc: dict[str, Any] | None, error: str | None = None) -> None:
        self.doc = doc
        self.error = error
        self.taken: list[str] = []

    def read(self, taken: str) -> dict[str, Any]:
        self.taken.append(taken)
        if self.error:
            raise kread.KreadError(self.error)
        assert self.doc is not None
        return {**self.doc, "taken": taken}


def _doc() -> dict[str, Any]:
    return {
        "format": kread.FORMAT,
        "version": 1,
        "consistent": True,
        "attempts": 2,
        "read_seconds": 0.0012,
        "nr_vmap_nodes": 1,
        "free_tree": {
            "root": 0,
            "nodes": [["0x1", "0xffffffffffffffff", None, None, True, "0xfffffffffffffffe"]],
        },
        "vmap_nodes": [
            {
                "id": 0,
                "busy": [],
                "lazy": [],
                "pools": [{"pages": 2, "len": 1, "areas": [["0x1000", "0x3000"]]}],
            }
        ],
        "errors": ["attempt 1: raced"],
    }


@pytest.mark.parametrize("gz", [False, True])
def test_read_kstate_writes_the_file_between_markers(tmp_path: Path, gz: bool) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    marks: list[str] = []
    (inst / "trace_marker").touch()
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    real_mark = capture._mark

    def mark(i: Path, what: str) -> None:
        marks.append(what)
        real_mark(i, what)

    try:
        capture._mark = mark  # type: ignore[assignment]
        reader = FakeReader(_doc())
        snap = "0x0000000000001000-0x0000000000003000    8192 x\n0xffffc90000000000-0xffffc90000002000    8192 y\n"
        s1 = capture._read_kstate(reader, inst, fd, "kstate", "after-snapshot", gz, print, snap)  # type: ignore[arg-type]
        s2 = capture._read_kstate(  # type: ignore[arg-type]
            reader, inst, fd, "end-kstate", "after-end-snapshot", gz, print
        )
    finally:
        capture._mark = real_mark  # type: ignore[assignment]
        os.close(fd)
    assert marks == ["kstate-begin", "kstate-end", "end-kstate-begin", "end-kstate-end"]
    assert (inst / "trace_marker").read_text() == "pyvmalloc: end-kstate-end"
    suffix = ".gz" if gz else ""
    assert s1 == {
        "file": "kstate.json" + suffix,
        "consistent": True,
        "attempts": 2,
        "read_seconds": 0.0012,
        "free_blocks": 1,
        "pooled": 1,
        "nr_vmap_nodes": 1,
        "snapshot_areas": 2,
        "snapshot_areas_not_held": 2,  # the fake readout holds no busy or lazy area
    }
    assert s2["file"] == "kstate.end.json" + suffix
    for name, taken in (
        ("kstate.json", "after-snapshot"),
        ("kstate.end.json", "after-end-snapshot"),
    ):
        f = out / (name + suffix)
        assert stat.S_IMODE(f.stat().st_mode) == capture.PRIVATE_MODE
        raw = gzip.decompress(f.read_bytes()) if gz else f.read_bytes()
        assert json.loads(raw) == {**_doc(), "taken": taken}


def test_read_kstate_failure_is_recorded_not_fatal(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "trace_marker").touch()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    logged: list[str] = []
    try:
        s = capture._read_kstate(  # type: ignore[arg-type]
            FakeReader(None, "reading kernel memory failed: Bad address"),
            inst, fd, "kstate", "after-snapshot", False, logged.append,
        )  # fmt: skip
    finally:
        os.close(fd)
    assert s == {"error": "reading kernel memory failed: Bad address"}
    assert not (tmp_path / "kstate.json").exists()
    assert (inst / "trace_marker").read_text() == "pyvmalloc: kstate-end"
    assert len(logged) == 1 and "could not be read" in logged[0]


def test_unavailable_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform != "linux":
        pytest.skip("Linux only")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    why = kread.kstate_unavailable()
    assert why is not None and "root" in why
    r = kread.Reader()
    with pytest.raises(kread.KreadError, match="root"):
        r.prepare()
    r.close()


# ---------------------------------------------------------------------- live kernel


def _live_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux"
    problems = capture.check_environment()
    return problems[0] if problems else kread.kstate_unavailable() or bpfload.bpf_available()


live = pytest.mark.skipif(_live_reason() is not None, reason=str(_live_reason()))


def _machine() -> dict[str, object]:
    base = capture._find_tracefs()
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return {
        "mounted": base,
        "ours": sorted(
            p.name
            for p in ((base / "instances").iterdir() if base else [])
            if p.name == f"pyvmalloc-{os.getpid()}"
        ),
        "bpf_fds": sorted(f for f in fds if "bpf" in f),
    }


@pytest.mark.live
@live
def test_live_capture_reads_kstate_twice(tmp_path: Path) -> None:
    before = _machine()
    cfg = bpfload.WorkloadConfig(
        seed=3, profile="small", cpus="0", churn_bytes=1 << 20, max_ops=20, long_lived=0
    )
    logged: list[str] = []
    meta = capture.capture(
        capture.CaptureOptions(
            outdir=tmp_path / "cap",
            workload="bpf",
            workload_config=cfg,
            drop_caches=False,
            buffer_mb=8,
            settle=0.1,
            end_snapshot=True,
            gzip=True,
            log=logged.append,
        )
    )
    assert _machine() == before
    k = meta["kstate"]
    assert k["read"] is True and k["found"]
    for taken, name in (("after-snapshot", "kstate.json.gz"),
                        ("after-end-snapshot", "kstate.end.json.gz")):  # fmt: skip
        assert k[taken]["file"] == name
        f = tmp_path / "cap" / name
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        doc = json.loads(gzip.decompress(f.read_bytes()))
        assert doc["taken"] == taken and doc["format"] == kread.FORMAT
        assert doc["consistent"] == k[taken]["consistent"]
        if doc["consistent"]:  # the snapshot read just before: the same areas, but for
            # the few the machine changed in between
            assert k[taken]["snapshot_areas"] > 100
            assert k[taken]["snapshot_areas_not_held"] <= 10
        assert doc["nr_vmap_nodes"] >= 1
    res = parse_trace(tmp_path / "cap")
    order = ["snapshot-end", "kstate-begin", "kstate-end", "workload-begin",
             "end-snapshot-end", "end-kstate-begin", "end-kstate-end", "capture-end"]  # fmt: skip
    lines = [res.marker(m).line for m in order]  # type: ignore[union-attr]
    assert lines == sorted(lines)
    # The reader allocates no vmalloc area while it reads.
    ours = [
        e for e in res.events
        if lines[1] < e.line < lines[2] and e.name == "alloc_vmap_area" and e.pid == os.getpid()
    ]  # fmt: skip
    assert ours == []


@pytest.mark.live
@live
def test_live_capture_without_kstate(tmp_path: Path) -> None:
    meta = capture.capture(
        capture.CaptureOptions(
            outdir=tmp_path / "cap", duration=0.1, drop_caches=False, buffer_mb=4,
            settle=0, kstate=False, log=lambda s: None,
        )
    )  # fmt: skip
    assert meta["kstate"] == {"read": False, "reason": "--no-kstate"}
    assert not list((tmp_path / "cap").glob("kstate*"))


def test_summary_word() -> None:
    ok = {"consistent": True}
    assert capture._kstate_word({"kstate": {"read": False, "reason": "--no-kstate"}}) == "off"
    assert capture._kstate_word({}) == "off"
    assert capture._kstate_word({"kstate": {"read": True, "after-snapshot": ok}}) == "consistent"
    raced = {"read": True, "after-snapshot": ok, "after-end-snapshot": {"consistent": False}}
    assert capture._kstate_word({"kstate": raced}) == "raced"
    failed = {"read": True, "after-snapshot": {"error": "x"}}
    assert capture._kstate_word({"kstate": failed}) == "failed"
