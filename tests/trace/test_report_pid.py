"""`pyvmalloc report --pid`, and the hint when --comm meets tasks without a name.

In tests/data/captures/bpfjit-busy every bpfjit line reads ``<...>-PID``: under a
thread storm the kernel's saved_cmdlines (128 entries) had no room for its pid.
"""

from __future__ import annotations

from pathlib import Path

from pyvmalloc.cli import main

CAP = Path(__file__).parent.parent / "data" / "captures" / "bpfjit-busy"


def _run(capsys, *argv):
    rc = main(["report", str(CAP), *argv])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err


def test_pid_filter_keeps_only_that_pid(capsys):
    rc, lines, _ = _run(capsys, "--pid", "15721")
    assert rc == 0 and len(lines) == 213
    assert all(line.lstrip().startswith("<...>-15721 ") for line in lines)
    rc, both, _ = _run(capsys, "--pid", "15721,16213")
    assert len(both) > len(lines)
    assert {line.split()[0] for line in both} == {"<...>-15721", "<...>-16213"}


def test_comm_without_match_names_the_unnamed_pids(capsys):
    rc, lines, err = _run(capsys, "--comm", "bpfjit")
    assert rc == 0 and lines == []
    assert "have the task name <...>" in err and "15721" in err and "--pid" in err
    # when something matches, no hint
    rc, lines, err = _run(capsys, "--comm", "^threads$")
    assert rc == 0 and len(lines) > 1000 and err == ""


def test_pid_must_be_a_number(capsys):
    rc = main(["report", str(CAP), "--pid", "x"])
    assert rc == 2 and "--pid x: not a pid" in capsys.readouterr().err
