"""The command line, run in-process (``main(argv)``) with stdout captured (not a TTY).

Expected values come from the raw trace files and from the kernel's rules, not from
the model's own output.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from pyvmalloc.cli import main, profile_field_docs
from pyvmalloc.cli_output import jsonable

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "src" / "pyvmalloc" / "data" / "captures" / "default"
CHURN_ANY = ROOT / "tests" / "data" / "captures" / "churn-any"
VS = 0xFFFFC90000000000  # x86_64 4-level VMALLOC_START
P = 4096


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "/nonexistent"], "/nonexistent: no such file or directory"),
        (["compare", "x[/]y"], "x[/]y: no such file or directory"),
        (["test-vmalloc", "foo=1"], "unknown parameter 'foo'"),
        (["test-vmalloc", "manual_x"], "unknown mode 'manual_x'"),
        (["walk", "_5", "--before", "vmalloc(8192)"], "_5: there is no such --before result"),
        (["walk", "_0", "--before", "vmalloc(8192)"], "_0: there is no such --before result"),
        (["walk", "_"], "there is no --before"),
        (["whatif", str(DEFAULT), "--arch", "i386", "--ram", "16G"], "at most 4 GiB"),
        (["whatif", str(DEFAULT), "--plot", "/nonexistent/dir/x.png"], "does not exist"),
        (["whatif", str(DEFAULT), "--vmalloc", "64M"], "the 32-bit vmalloc= boot option"),
        (["report", str(DEFAULT), "--event", "alloc"], "not a vmalloc event"),
        (["report", str(DEFAULT), "--comm", "("], "not a regular expression"),
        (["compare", str(DEFAULT), "--profiles", "4.19,9.9"], "unknown profile 9.9"),
        (["kmem"], "give -v, or one or more addresses"),
    ],
)
def test_errors_are_one_clear_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, _out, err = run(capsys, *argv)
    assert rc == 2
    assert message in err and err.startswith("pyvmalloc: error: ")
    assert "Traceback" not in err and err.count("\n") == 1


def test_key_value_after_an_option_is_a_module_parameter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # run_test_mask=1: fix_size_alloc_test only; 3 repeats x 10 loops.
    rc, out, err = run(capsys, "test-vmalloc", "performance", "--loops", "10", "run_test_mask=1")
    assert rc == 0
    assert "run_test_mask=1" in err and "test_loop_count=10" in err
    assert "about 60 API calls" in err  # 2 calls (vmalloc + vfree) x 10 loops x 3 repeats
    assert out.startswith("Summary: fix_size_alloc_test passed: 3 failed: 0")
    with pytest.raises(SystemExit) as e:
        main(["test-vmalloc", "performance", "--loops", "10", "--bogus"])
    assert e.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_explain_takes_gfp_names(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "explain", "__vmalloc(8192, GFP_KERNEL | __GFP_ZERO)")
    assert rc == 0
    # GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS, printed by name as %pGg does.
    assert "gfp=GFP_KERNEL|__GFP_ZERO" in out
    assert f"= {VS:#x}" in out


# --- JSON --------------------------------------------------------------------------
def test_jsonable_writes_addresses_as_hex() -> None:
    d = jsonable({"kernel": VS, "model": None, "size": 8192, "x": [1 << 60]})
    assert d == {
        "kernel": "0xffffc90000000000",
        "model": None,
        "size": 8192,
        "x": ["0x1" + "0" * 15],
    }


def test_replay_json_to_stdout_hex_addresses_match_the_raw_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run(capsys, "replay", str(CHURN_ANY), "--json", "-")
    assert rc == 0
    data = json.loads(out)  # nothing but JSON on stdout
    with gzip.open(CHURN_ANY / "trace.gz", "rt") as f:
        lines = f.read().splitlines()
    assert data["mismatches"]
    for m in data["mismatches"]:
        raw = lines[m["line"] - 1]
        va_start = int(re.search(r"va_start: (\d+)", raw).group(1))  # type: ignore[union-attr]
        assert m["kernel"] == f"{va_start:#x}"
        size = int(re.search(r" size=(\d+)", raw).group(1))  # type: ignore[union-attr]
        assert m["size"] == size
        assert m["vstart"] == "0xffffc90000000000" and m["vend"] == "0xffffe8ffffffffff"
        assert m["model"] is None or re.fullmatch(r"0x[0-9a-f]+", m["model"])


def test_fail_under(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # churn-any: 942 of 944 allocations agree (99.79 %).
    rc, out, err = run(capsys, "replay", str(CHURN_ANY), "--fail-under", "99.9")
    assert rc == 1 and "below --fail-under 99.9 %" in err and "99.79 %" in out
    rc, _, _ = run(capsys, "replay", str(CHURN_ANY), "--fail-under", "99")
    assert rc == 0
    rc, _, _ = run(capsys, "replay", str(CHURN_ANY), "--fail-under", "99.5%")
    assert rc == 0
    for bad in ("\u0663", "9_9", "nan", "1e2", "-1", "101", "", " 99"):
        with pytest.raises(SystemExit) as e:
            run(capsys, "replay", str(CHURN_ANY), "--fail-under", bad)
        assert e.value.code == 2 and "--fail-under" in capsys.readouterr().err
    out_json = tmp_path / "c.json"
    rc, _, err = run(
        capsys, "compare", str(DEFAULT), "--fail-under", "100", "--json", str(out_json)
    )
    # 4.19 and 5.4 purge on their own threshold and place differently: below 100 %.
    assert rc == 1 and "kernel 6.18" not in err
    assert [r["profile"] for r in json.loads(out_json.read_text())] == ["4.19", "5.4", "6.18"]


def test_vmallocinfo_out_is_the_models_final_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "vi"
    rc, _, _ = run(capsys, "replay", str(DEFAULT), "--vmallocinfo-out", str(out_file))
    assert rc == 0
    text = out_file.read_text()
    # Every line is a vmallocinfo line; the kernel's end snapshot shares its lazy lines.
    assert all(re.match(r"0x[0-9a-f]{16}-0x[0-9a-f]{16} +\d+ ", ln) for ln in text.splitlines())
    end = (DEFAULT / "vmallocinfo.end").read_text().splitlines()
    model_lazy = [ln for ln in text.splitlines() if ln.endswith("unpurged vm_area")]
    kernel_lazy = [ln for ln in end if ln.endswith("unpurged vm_area")]
    assert model_lazy == kernel_lazy


# --- markup, wrapping, tables --------------------------------------------------------
def test_user_text_is_never_markup(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cap = tmp_path / "cap[bold]x[/][link=http://example.invalid]y[/link]"
    shutil.copytree(DEFAULT, cap)
    rc, out, err = run(capsys, "compare", str(cap), "--profiles", "6.18")
    assert rc == 0, err
    assert str(cap) in out  # printed literally, on one line
    assert "\x1b" not in out


def test_profiles_shows_differing_rules_with_their_docs(capsys: pytest.CaptureFixture[str]) -> None:
    docs = profile_field_docs()
    rc, out, _ = run(capsys, "profiles")
    assert rc == 0
    assert "vmallocinfo_skips_uninitialized" in out  # no truncated names when piped
    assert docs["vmap_nodes"] in out  # each explained, on one line
    assert "max_page_order" not in out  # 10 in every profile
    rc, out, _ = run(capsys, "profiles", "--all")
    assert "max_page_order" in out
    rc, out, _ = run(capsys, "profiles", "--json", "-")
    rules = {r["rule"]: r for r in json.loads(out)}
    assert all(r["doc"] for r in rules.values())  # every rule explained
    assert rules["vmap_nodes"]["values"] == {"4.19": False, "5.4": False, "6.18": True}


def test_profile_choices_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("demo", "replay", "explain", "walk", "tour", "test-vmalloc", "whatif", "kmem"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "4.19, 5.4, 6.18" in out, cmd


def test_whatif_units_fit_the_number(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "whatif", str(DEFAULT))
    assert rc == 0
    # x86_64 4-level: VMALLOC_SIZE_TB = 32, i.e. a 32 TiB range (less one byte).
    assert "vmalloc space 32.0 TiB" in out
    rc, out, _ = run(capsys, "whatif", str(DEFAULT), "--json", "-")
    assert json.loads(out)["vmalloc_size"] == 32 * 2**40 - 1


def test_tour_prints_the_full_vmallocinfo(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "tour", "--ops", "400", "--full-vmallocinfo")
    assert rc == 0
    head = re.search(r"/proc/vmallocinfo \((\d+) lines\):\n", out)
    assert head is not None
    n = int(head.group(1))
    body = out[head.end() :].split("\n/proc/meminfo")[0].strip("\n").splitlines()
    assert len(body) == n > 10 and all(ln.startswith("0x") for ln in body)  # none wrapped


def test_completion_script(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "completion", "bash")
    assert rc == 0 and "complete" in out and "kmem" in out and "--vmallocinfo-out" in out


# --- report ----------------------------------------------------------------------------
RAW = (DEFAULT / "trace").read_text().splitlines()
HDR = re.compile(r"^\s*(.+)-(\d+)\s+\[(\d{3})\] \S+\s+(\d+\.\d+): (\w+): ")


def _raw_events() -> list[tuple[str, int, float, str, str]]:
    out = []
    for ln in RAW:
        m = HDR.match(ln)
        if m and m.group(5) != "tracing_mark_write":
            out.append((m.group(1), int(m.group(3)), float(m.group(4)), m.group(5), ln))
    return out


def test_report_filters_match_the_raw_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ev = _raw_events()
    rc, out, _ = run(capsys, "report", str(DEFAULT))
    assert rc == 0 and out.splitlines() == [e[4] for e in ev]
    rc, out, _ = run(capsys, "report", str(DEFAULT), "--cpu", "1", "--event", "alloc_vmap_area")
    want = [e[4] for e in ev if e[1] == 1 and e[3] == "alloc_vmap_area"]
    assert want and out.splitlines() == want
    rc, out, _ = run(capsys, "report", str(DEFAULT), "--comm", "^kworker")
    want = [e[4] for e in ev if e[0].startswith("kworker")]
    assert want and out.splitlines() == want
    t0, t1 = ev[20][2], ev[60][2]
    rc, out, _ = run(
        capsys,
        "report",
        str(DEFAULT),
        "--since",
        str(t0),
        "--until",
        str(t1),
        "--event",
        "free_vmap_area_noflush,purge_vmap_area_lazy",
    )
    want = [e[4] for e in ev if t0 <= e[2] <= t1 and e[3] != "alloc_vmap_area"]
    assert want and out.splitlines() == want
    gz = tmp_path / "trace.gz"
    with gzip.open(gz, "wt") as f:
        f.write("\n".join(RAW) + "\n")
    rc, out_gz, _ = run(capsys, "report", str(gz), "--cpu", "0")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(RAW) + "\n"))
    rc, out_stdin, _ = run(capsys, "report", "-", "--cpu", "0")
    want = [e[4] for e in ev if e[1] == 0]
    assert out_gz.splitlines() == out_stdin.splitlines() == want
    rc, out, _ = run(capsys, "report", str(DEFAULT), "--markers", "--event", "purge_vmap_area_lazy")
    assert "tracing_mark_write: pyvmalloc: snapshot-end" in out
    rc, out, _ = run(capsys, "report", str(DEFAULT), "--json", "-", "--cpu", "1")
    rows = json.loads(out)
    assert len(rows) == sum(e[1] == 1 for e in ev)
    allocs = [r for r in rows if r["name"] == "alloc_vmap_area"]
    first = next(e[4] for e in ev if e[1] == 1 and e[3] == "alloc_vmap_area")
    m = re.search(r"va_start: (\d+)", first)
    assert m is not None and allocs[0]["addr"] == f"{int(m.group(1)):#x}"


def test_progress_on_a_stream_that_is_not_a_terminal() -> None:
    from pyvmalloc.cli_output import Ticker

    buf = io.StringIO()
    t = Ticker("test_vmalloc", 1000, unit="calls", every=0.0, file=buf)
    t(250)
    t(500)
    t.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in buf.getvalue()
    assert re.fullmatch(
        r"test_vmalloc: 250/1,000 calls \(25 %\), \d+ s, about \d+ s left", lines[0]
    )


def test_zsh_completion(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "completion", "zsh")
    assert rc == 0 and out.startswith("#compdef pyvmalloc") and "test-vmalloc" in out


HEX = re.compile(r"0x[0-9a-f]+")


def _ints(obj: object) -> list[int]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int):
        return [obj]
    if isinstance(obj, dict):
        return [i for v in obj.values() for i in _ints(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in _ints(v)]
    return []


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--ops", "500"],
        ["explain", "vmalloc(20000)"],
        ["walk", "_1", "--before", "vmalloc(8192)"],
        ["tour", "--ops", "300"],
        ["test-vmalloc", "smoke", "--loops", "5", "run_test_mask=1"],
        ["kmem", "-v", "--before", "vmalloc(8192)"],
        ["report", str(DEFAULT), "--event", "purge_vmap_area_lazy"],
        ["profiles"],
        ["replay", str(DEFAULT)],
        ["compare", str(DEFAULT), "--profiles", "5.4"],
        ["whatif", str(DEFAULT), "--samples", "3"],
    ],
)
def test_every_report_has_json_on_stdout(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    rc, out, _ = run(capsys, *argv, "--json", "-")
    assert rc == 0
    data = json.loads(out)  # stdout holds the JSON alone
    assert data
    # No integer a JSON reader would round: kernel addresses are "0x..." strings.
    assert all(abs(i) < 2**53 for i in _ints(data))
    if argv[0] in ("explain", "walk", "kmem", "report"):  # these report addresses
        assert HEX.search(out)


def test_every_option_has_help() -> None:
    import argparse

    from pyvmalloc.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub, sp in a.choices.items():
                    walk(sp, sub)
            elif not a.help and not isinstance(a, argparse._HelpAction):
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")

    walk(build_parser(), "pyvmalloc")
    assert missing == []
