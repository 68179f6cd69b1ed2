"""Interfaces the issues name, as a user reaches them.

* issue 9: "any importable ``module:Class`` on the command line: ``pyvmalloc compare
  CAPTURE --policy pyvmalloc.policies:BestFit``" — also a module in the current
  directory when the installed ``pyvmalloc`` script runs (its ``sys.path[0]`` is the
  script's directory, not the current one, unlike ``python -m pyvmalloc``);
* issue 12: "every command that prints a table or a report has ``--json``", the main
  job included; ``--profile`` choices listed the same way everywhere; errors that
  point the right way (a capture path that does not exist is not "an address").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyvmalloc
from pyvmalloc.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
CHURN_ANY = ROOT / "tests" / "data" / "captures" / "churn-any"


def test_policy_module_in_the_current_directory_as_the_console_script_runs(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mypolicy.py").write_text(
        "from pyvmalloc.policies import BestFit\n\n"
        "class MyPolicy(BestFit):\n"
        '    name = "my-policy"\n'
    )
    # A runner outside the current directory, as the console script is: sys.path[0]
    # is the runner's directory.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = bindir / "pyvmalloc-script.py"
    runner.write_text("import sys\nfrom pyvmalloc.cli import main\nsys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    src = str(Path(pyvmalloc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src
    base = [sys.executable, str(runner), "compare", str(CHURN_ANY), "--profiles", "6.18"]
    r = subprocess.run(
        [*base, "--policy", "mypolicy:MyPolicy", "--json", "-"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["label"] for row in rows] == ["6.18", "6.18 + mypolicy:MyPolicy"]
    assert rows[1]["placement"] == "my-policy"
    # A module that is nowhere still gets the one-line error, exit 2.
    r = subprocess.run(
        [*base, "--policy", "nosuchmodule:X"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("pyvmalloc: error: cannot import 'nosuchmodule'")
    assert str(work) not in sys.path


def test_main_job_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["main", "--ops", "200", "--json", "-"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # nothing but the JSON on stdout
    assert set(doc) == {"capture", "replay", "compare", "tour"}
    # The bundled capture: 284 allocations, all agreeing (README, "The main job").
    assert doc["replay"]["allocs_compared"] == 284
    assert doc["replay"]["allocs_matched"] == 284
    assert [r["label"] for r in doc["compare"]] == ["4.19", "5.4", "6.18"]
    assert doc["tour"]["operations"] == 200
    addrs = [m["kernel"] for r in doc["compare"] for m in r["replay"]["mismatches"]]
    assert addrs and all(isinstance(a, str) and a.startswith("0xffff") for a in addrs)


def test_main_job_json_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "main.json"
    assert main(["main", "--ops", "100", "--json", str(out)]) == 0
    assert "check(): all invariants hold" in capsys.readouterr().out  # the report too
    assert json.loads(out.read_text())["tour"]["operations"] == 100


def test_kmem_missing_capture_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-capture"
    assert main(["kmem", "-v", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"pyvmalloc: error: {missing}: no such file or directory (CAPTURE)\n"
    )


def test_kernel_profile_choices_are_the_same_everywhere() -> None:
    from pyvmalloc.config import PROFILES

    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    assert isinstance(sub.choices, dict)
    single = []
    for name, p in sub.choices.items():
        for a in p._actions:
            if "--profile" in a.option_strings and name not in ("capture", "sweep"):
                single.append(name)
                assert list(a.choices or []) == list(PROFILES), name
    # capture's --profile is the BPF workload's mix; sweep's a comma-separated list.
    assert {"replay", "explain", "kmem", "explore", "whatif", "test-vmalloc"} <= set(single)


def test_every_subcommand_help_says_what_it_does() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    assert isinstance(sub.choices, dict)
    for name, p in sub.choices.items():
        assert p.description, f"pyvmalloc {name} --help has no description"
        for a in p._actions:
            if a.option_strings and "-h" not in a.option_strings:
                assert a.help, f"pyvmalloc {name} {a.option_strings[0]} has no help text"


def test_explore_checks_its_outputs_before_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.html"
    assert main(["explore", str(CHURN_ANY), "-o", str(tmp_path / "no" / "p.html")]) == 2
    assert "directory" in capsys.readouterr().err and not page.exists()
    # --png without matplotlib fails before the page is written (issue 12: outputs and
    # options are checked before working).
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["explore", str(CHURN_ANY), "-o", str(page), "--png", str(tmp_path / "m.png")]) == 2
    assert "--png needs matplotlib" in capsys.readouterr().err
    assert not page.exists()


def test_walk_with_5_level_paging_shows_a_real_p4d(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 3: "x86_64 4-level and 5-level paging ... pyvmalloc can print the
    PGD/P4D/PUD/PMD/PTE walk of an address"; with 4 levels the P4D is folded."""
    assert main(["walk", "_1", "--before", "vmalloc(8192)", "--paging-levels", "5"]) == 0
    out = capsys.readouterr().out
    # LA57: vmalloc starts at 0xffa0000000000000 (Documentation/arch/x86/x86_64/mm.rst);
    # its PGD index is bits 56-48: 0xffa0 & 0x1ff = 416; the P4D index (bits 47-39) is 0.
    assert out.splitlines()[0] == "walk of 0xffa0000000000000 (x86_64, 5-level)"
    assert re.search(r"^  PGD  \[ 416\] \(bits 56-48\) entry ", out, re.M)
    assert re.search(r"^  P4D  \[   0\] \(bits 47-39\) entry ", out, re.M)
    assert "folded" not in out
    assert main(["walk", "_1", "--before", "vmalloc(8192)"]) == 0
    assert "P4D        (folded into PGD with 4-level paging)" in capsys.readouterr().out
    assert main(["explain", "vmalloc(8192)", "--paging-levels", "5"]) == 0
    assert "vmalloc(8192) = 0xffa0000000000000" in capsys.readouterr().out
