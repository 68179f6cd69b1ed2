"""How ``pyvmalloc capture`` creates its files (no live kernel: a fake tracefs).

A capture runs as root and writes real kernel addresses: its output directory and
files are opened without following symbolic links and created exclusively, the files
holding addresses are mode 0600, and the state files it reads back for recovery are
neither followed nor trusted blindly.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pyvmalloc.trace import capture

SNAP = "0xffffc90000000000-0xffffc90000002000    8192 foo+0x0/0x10 pages=1 vmalloc\n"
MARK = "          python-1       [000] .....     1.000000: tracing_mark_write: pyvmalloc: {}\n"


@pytest.fixture
def fake_tracefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tracefs stand-in: control writes land in plain files, markers in ``trace``."""
    base = tmp_path / "tracefs"
    (base / "instances").mkdir(parents=True)
    for ev in capture.EVENTS:
        (base / "events" / "vmalloc" / ev).mkdir(parents=True)
    kptr = tmp_path / "kptr_restrict"
    kptr.write_text("0\n")

    def write(path: Path, value: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "trace_marker":
            with (path.parent / "trace").open("a") as f:
                f.write(MARK.format(value.removeprefix(capture.MARKER_PREFIX)))
        else:
            path.write_text(value)

    monkeypatch.setattr(capture, "check_environment", lambda tracefs=None: [])
    monkeypatch.setattr(capture, "_find_tracefs", lambda: base)
    monkeypatch.setattr(capture, "_write", write)
    monkeypatch.setattr(capture, "KPTR", kptr)
    monkeypatch.setattr(capture, "DROP_CACHES", tmp_path / "drop_caches")
    monkeypatch.setattr(capture, "STATE_DIR", tmp_path / "run")
    monkeypatch.setattr(capture, "_read_snapshot", lambda path="/proc/vmallocinfo": SNAP)
    monkeypatch.setattr(capture, "_cleanup", lambda st, log: [])
    return base


def _opts(out: Path, **kw: object) -> capture.CaptureOptions:
    return capture.CaptureOptions(
        outdir=out, duration=0.0, settle=0.0, end_snapshot=True, log=lambda s: None, **kw
    )  # type: ignore[arg-type]


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_files_private_and_directory_0700(fake_tracefs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    old = os.umask(0)  # a permissive umask must not widen the modes
    try:
        meta = capture.capture(_opts(out))
    finally:
        os.umask(old)
    assert meta["kptr_restrict_was"] == 0
    assert _mode(out) == 0o700
    for name in ("vmallocinfo", "vmallocinfo.end", "trace"):
        assert _mode(out / name) == 0o600, name
    assert _mode(out / "meta.json") == 0o644
    assert (out / "vmallocinfo").read_text() == SNAP
    assert "snapshot-begin" in (out / "trace").read_text()
    assert json.loads((out / "meta.json").read_text())["format"] == "pyvmalloc-capture"


def test_gzip_trace_private(fake_tracefs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    capture.capture(_opts(out, gzip=True))
    assert _mode(out / "trace.gz") == 0o600 and not (out / "trace").exists()


def test_planted_links_are_not_followed(fake_tracefs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in ("vmallocinfo", "trace", "meta.json", "vmallocinfo.end"):
        (out / name).symlink_to(victim)
    with pytest.raises(capture.CaptureError, match="not empty"):
        capture.capture(_opts(out))
    capture.capture(_opts(out, force=True))
    assert victim.read_text() == "precious\n"
    for name in ("vmallocinfo", "trace", "meta.json", "vmallocinfo.end"):
        assert not (out / name).is_symlink() and (out / name).is_file()


def test_outdir_symlink_refused(fake_tracefs: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "cap"
    link.symlink_to(real)
    with pytest.raises(capture.CaptureError, match="symbolic link"):
        capture.capture(_opts(link, force=True))
    assert list(real.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    with pytest.raises(capture.CaptureError, match="not a directory"):
        capture.capture(_opts(tmp_path / "afile"))


def test_create_is_exclusive_and_nofollow(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        capture._write_output(fd, "vmallocinfo", SNAP)
        with pytest.raises(FileExistsError):
            capture._write_output(fd, "vmallocinfo", SNAP)
        (tmp_path / "trace").symlink_to(tmp_path / "target")
        with pytest.raises(OSError):
            capture._write_output(fd, "trace", "x")
        assert not (tmp_path / "target").exists()
    finally:
        os.close(fd)


def test_state_files_not_followed_nor_trusted(tmp_path: Path) -> None:
    base = tmp_path / "tracefs"
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"instance": str(base / "instances" / "pyvmalloc-1")}))
    link = tmp_path / "capture-1.json"
    link.symlink_to(secret)
    assert capture._read_state(link, base) == {}
    forged = tmp_path / "capture-2.json"
    forged.write_text(json.dumps({"instance": "/etc", "kptr_old": "; rm", "mounted": 3}))
    assert capture._read_state(forged, base) == {}
    good = {"instance": str(base / "instances" / "pyvmalloc-2"), "kptr_old": "0"}
    forged.write_text(json.dumps({**good, "mounted": None}))
    assert capture._read_state(forged, base) == good
    forged.write_text("[" * 100_000)
    assert capture._read_state(forged, base) == {}


def test_state_file_written_without_following(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr(capture, "STATE_DIR", run)
    run.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    capture._state_file(os.getpid()).symlink_to(victim)
    with pytest.raises(OSError):
        capture._save_state(capture._State(kptr_old="1"))
    assert victim.read_text() == "precious"


def test_trace_bytes_kept_as_the_kernel_wrote_them(
    fake_tracefs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task may name itself with any bytes (and a \\r): the trace is copied byte for
    byte, and the marker line numbers in meta.json count \\n only, like the parser."""
    odd = (
        b"    pyth\xffn\r\x0bx-7       [001] .....     2.000000: alloc_vmap_area: va_start: "
        b"18446683600570023936 size=8192 align=1 vstart=0xffffc90000000000 "
        b"vend=0xffffe8ffffffffff failed=0\n"
    )

    def activity(opts: object, st: capture._State, meta: object, log: object) -> tuple[str, None]:
        assert st.instance is not None
        with (st.instance / "trace").open("ab") as f:
            f.write(odd)
        return "duration", None

    monkeypatch.setattr(capture, "_run_activity", activity)
    out = tmp_path / "cap"
    meta = capture.capture(_opts(out))
    data = (out / "trace").read_bytes()
    assert odd in data
    from pyvmalloc.trace.parse import parse_trace

    res = parse_trace(out)
    assert res.events[0].task == "pyth\udcffn\r\x0bx"
    for name, line in meta["marker_lines"].items():
        assert res.marker(name) is not None and res.marker(name).line == line  # type: ignore[union-attr]


def test_recovery_acts_only_on_captures_of_this_pid_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead-looking pid of another pid namespace may be a live capture: its instance
    and state stay; an instance with no record at all is named, not removed."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(capture, "STATE_DIR", run)
    base = tmp_path / "tracefs"
    (base / "instances").mkdir(parents=True)
    monkeypatch.setattr(capture, "_pid_alive", lambda pid: False)
    cleaned: list[object] = []
    monkeypatch.setattr(capture, "_cleanup", lambda st, log: cleaned.append(st.instance) or [])
    ours = capture._pid_namespace()
    assert ours is not None
    for pid, ns in ((101, ours), (102, ours + 1)):
        inst = base / "instances" / f"pyvmalloc-{pid}"
        inst.mkdir()
        (run / f"capture-{pid}.json").write_text(json.dumps({"instance": str(inst), "pidns": ns}))
    (base / "instances" / "pyvmalloc-103").mkdir()  # no state file
    log: list[str] = []
    assert capture.recover_stale_captures(base, log.append) == 1
    assert cleaned == [base / "instances" / "pyvmalloc-101"]
    assert not (run / "capture-101.json").exists()
    assert (run / "capture-102.json").exists()  # another namespace's: untouched
    assert any("pyvmalloc-103 alone" in m for m in log)


def _record(run: Path, pid: int, **data: object) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / f"capture-{pid}.json").write_text(
        json.dumps({"pidns": capture._pid_namespace(), **data})
    )


def test_a_capture_started_beside_another_restores_the_value_before_both(
    fake_tracefs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture 777 set kptr_restrict 0 -> 1 and still runs: this one must not take
    its 1 for the machine's value (the last to finish would leave 1 behind)."""
    (tmp_path / "kptr_restrict").write_text("1\n")
    inst = fake_tracefs / "instances" / "pyvmalloc-777"
    inst.mkdir()
    _record(tmp_path / "run", 777, instance=str(inst), kptr_old="0")
    monkeypatch.setattr(capture, "_pid_alive", lambda pid: pid in (777, os.getpid()))
    meta = capture.capture(_opts(tmp_path / "cap"))
    assert meta["kptr_restrict_was"] == 0


def test_the_first_to_finish_leaves_the_machine_to_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two captures at once: the first to end neither restores kptr_restrict nor
    unmounts tracefs under the other; it hands the mount over, and the last one to end
    unmounts it."""
    run = tmp_path / "run"
    monkeypatch.setattr(capture, "STATE_DIR", run)
    base = tmp_path / "tracefs"
    (base / "instances").mkdir(parents=True)
    monkeypatch.setattr(capture, "_find_tracefs", lambda: base)
    alive = {777, os.getpid()}
    monkeypatch.setattr(capture, "_pid_alive", lambda pid: pid in alive)
    _record(run, 777, instance=str(base / "instances" / "pyvmalloc-777"), kptr_old="0")
    # this capture mounted tracefs and changed kptr_restrict; 777 still runs
    first = capture._State(mounted=base, kptr_old="0")
    handed = capture._share_machine_state(first, base, lambda m: None)
    assert first.kptr_old is None and first.mounted is None  # nothing to undo now
    assert handed is not None and handed.mounted == base
    # it ended (pid 888) leaving the mount record; then 777 ends, the last one
    _record(run, 888, mounted=str(base))
    (run / "capture-777.json").unlink()
    alive.discard(777)
    last = capture._State(kptr_old="0")
    assert capture._share_machine_state(last, base, lambda m: None) is None
    assert last.mounted == base and last.kptr_old == "0"  # it unmounts and restores
    assert not (run / "capture-888.json").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_duration_must_be_a_finite_number_of_seconds(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyvmalloc.cli import main

    with pytest.raises(SystemExit) as e:
        main(["capture", "/nonexistent/out", "--duration", value])
    assert e.value.code == 2
    assert "--duration" in capsys.readouterr().err


def test_a_command_that_does_not_exist_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyvmalloc.cli import main

    out = tmp_path / "cap"
    assert main(["capture", str(out), "--", "no-such-command-pyvmalloc"]) == 2
    assert "no-such-command-pyvmalloc: command not found" in capsys.readouterr().err
    assert not out.exists()
