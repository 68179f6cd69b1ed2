"""The command as users run it: a subprocess with stdout piped (not a terminal)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "src" / "pyvmalloc" / "data" / "captures" / "default"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    env.update(extra)
    return env


def pyvmalloc(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyvmalloc", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
        **kw,  # type: ignore[arg-type]
    )


def test_version_and_python_m() -> None:
    r = pyvmalloc("--version")
    assert r.returncode == 0
    # "C accelerator" when pyvmalloc._speedups is built and in use, else "pure Python, why"
    assert re.fullmatch(
        r"pyvmalloc \d+\.\d+\.\d+ \((C accelerator|pure Python, [^;]+); Python 3\.\d+\.\d+\)\n",
        r.stdout,
    )


def test_piped_output_is_not_wrapped_and_has_no_ansi() -> None:
    r = pyvmalloc("replay", str(DEFAULT), "--no-progress", "--vmallocinfo-out", "/dev/null")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout + r.stderr
    # The end-state line is ~150 columns: one line when piped.
    assert re.search(
        r"^end state vs the kernel's end snapshot: .* on another node$", r.stdout, re.M
    )
    # Forced colour (FORCE_COLOR) is honoured.
    forced = subprocess.run(
        [sys.executable, "-m", "pyvmalloc", "profiles"],
        capture_output=True,
        text=True,
        env=_env(FORCE_COLOR="1"),
        check=False,
        timeout=60,
    )
    assert "\x1b[" in forced.stdout


def _bad_exit(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    return proc.communicate()[1]


def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path) -> None:
    # A long run that says when it starts working: test-vmalloc prints its estimate first.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvmalloc", "test-vmalloc", "performance", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stderr is not None
    lines = [proc.stderr.readline(), proc.stderr.readline()]
    assert lines[1].startswith("about "), _bad_exit(proc)
    # The kernel's defaults: 3 x 1,000,000 loops of 3 tests take minutes, and say so.
    assert re.search(r"roughly \d+ min", lines[1])
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_live_tests_are_opt_in() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-m",
            "live",
            str(ROOT / "tests" / "trace" / "test_capture.py"),
        ],
        capture_output=True,
        text=True,
        env=_env(PYVMALLOC_LIVE="0"),
        check=False,
        timeout=120,
        cwd=ROOT,
    )
    assert "passed" not in r.stdout.splitlines()[-1]
    assert "skipped" in r.stdout and "opt in with PYVMALLOC_LIVE=1" in r.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")
def test_ctrl_c_during_a_replay(tmp_path: Path) -> None:
    """A replay long enough to be interrupted: the model's own seeded trace."""
    from pyvmalloc import Kernel
    from pyvmalloc.workloads.demo import seeded_workload

    k = Kernel("6.18", cpus=2)
    lines: list[str] = []
    k.trace_subscribe("all", lambda e: lines.append(str(e)))
    seeded_workload(k, 120_000, 7)
    trace = tmp_path / "trace"
    trace.write_text("\n".join(lines) + "\n")
    snap = tmp_path / "vmallocinfo"
    snap.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvmalloc", "compare", str(trace), "--snapshot", str(snap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    time.sleep(1.5)  # started (imports take ~0.4 s); three replays of 120,000 events last longer
    assert proc.poll() is None, _bad_exit(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
