"""Capture directories, meta.json and the CLI contract for bad input (issue 11).

Every error in a user's file is a :class:`pyvmalloc.InputError` (a ``ValueError``)
whose message starts with ``PATH:LINE:`` or ``PATH:``; the CLI prints it as
``pyvmalloc: error: ...`` and exits 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pyvmalloc
from pyvmalloc.cli import main
from pyvmalloc.errors import InputError
from pyvmalloc.trace.capturedir import load_capture_dir, read_meta
from pyvmalloc.trace.replay import load_capture

DATA = Path(__file__).resolve().parents[1] / "data" / "captures"
SMALL = DATA / "churn-cpu0"


def test_input_error_is_exported_value_error() -> None:
    assert pyvmalloc.InputError is InputError and issubclass(InputError, ValueError)
    assert str(InputError("bad", path="f", line=3)) == "f:3: bad"
    assert str(InputError("bad", path="f")) == "f: bad"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[1]", "must hold a JSON object"),
        ("null", "must hold a JSON object"),
        ('"x"', "must hold a JSON object"),
        ('{"cpus_possible": 2}', "cpus_possible must be a non-empty list"),
        ('{"cpus_possible": []}', "cpus_possible must be a non-empty list"),
        ('{"cpus_possible": [0.5]}', "CPU numbers are integers"),
        ('{"cpus_possible": [true]}', "CPU numbers are integers"),
        ('{"cpus_possible": [-1]}', "CPU numbers are integers"),
        ('{"cpus_possible": [0, 0]}', "lists a CPU twice"),
        ('{"cpus_possible": [0], "cpus_online": [1]}', "not a subset"),
        ('{"drop_caches": "no"}', "drop_caches must be true/false"),
        ('{"drop_caches": 1}', "drop_caches must be true/false"),
        ('{"kernel_release": 6}', "kernel_release must be str"),
        ('{"lost_events": -1}', "must not be negative"),
        ('{"event_counts": {"alloc_vmap_area": "3"}}', "event_counts"),
        ('{"a": 1, "a": 2}', "duplicate key"),
        ('{"a": NaN}', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"n": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"a":\n 1,,}', "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_bad_meta_json(tmp_path: Path, text: str, says: str) -> None:
    f = tmp_path / "meta.json"
    f.write_text(text)
    with pytest.raises(InputError) as ei:
        read_meta(f)
    assert str(ei.value).startswith(f"{f}:") and says in str(ei.value)


def test_meta_json_line_number_and_encoding(tmp_path: Path) -> None:
    f = tmp_path / "meta.json"
    f.write_text('{\n"a": 1,\n"b": }\n')
    with pytest.raises(InputError, match=r"meta\.json:3: not valid JSON"):
        read_meta(f)
    f.write_bytes(b'{"a":\n "\xff"}')
    with pytest.raises(InputError, match=r"meta\.json:2: not UTF-8"):
        read_meta(f)


def test_real_meta_files_pass() -> None:
    for cap in sorted(p for p in DATA.iterdir() if p.is_dir()):
        meta = read_meta(cap / "meta.json")
        assert meta == json.loads((cap / "meta.json").read_text())


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "cap"
    shutil.copytree(SMALL, d)
    return d


def test_capture_dir_checks(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    cap = load_capture_dir(d)
    assert cap.trace.name == "trace.gz" and cap.end_snapshot is not None
    assert load_capture(d) == (cap.trace, cap.snapshot, cap.meta)
    with pytest.raises(InputError, match="no such capture directory"):
        load_capture(tmp_path / "nope")
    with pytest.raises(InputError, match="not a capture directory"):
        load_capture(d / "meta.json")
    (d / "vmallocinfo").unlink()
    with pytest.raises(InputError, match="no vmallocinfo"):
        load_capture(d)
    secret = tmp_path / "secret"
    secret.write_text('{"cpus_possible": "root:$6$hash"}')
    (d / "vmallocinfo").symlink_to(secret)
    with pytest.raises(InputError, match="symbolic link") as ei:
        load_capture(d)
    assert "$6$" not in str(ei.value)
    (d / "vmallocinfo").unlink()
    (d / "vmallocinfo").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        load_capture(d)
    (d / "vmallocinfo").rmdir()
    shutil.copy(SMALL / "vmallocinfo", d / "vmallocinfo")
    (d / "meta.json").unlink()
    (d / "meta.json").symlink_to(secret)
    with pytest.raises(InputError, match="symbolic link") as ei:
        load_capture(d)
    assert "$6$" not in str(ei.value)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("command", ["replay", "compare"])
def test_cli_prints_input_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    d = _copy(tmp_path)
    (d / "meta.json").write_text('{"drop_caches": "no"}')
    rc, err = _cli([command, str(d)], capsys)
    assert rc == 2 and err.startswith(f"pyvmalloc: error: {d / 'meta.json'}: drop_caches")
    assert "Traceback" not in err


@pytest.mark.parametrize("cpu", ["[002]", "[999999]"])
@pytest.mark.parametrize("command", ["replay", "whatif"])
def test_cli_cpu_beyond_meta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, cpu: str
) -> None:
    """The capture had CPUs 0-1: an event on CPU 2 is not folded onto CPU 0."""
    import gzip

    d = _copy(tmp_path)
    text = gzip.decompress((d / "trace.gz").read_bytes()).decode()
    lines = text.split("\n")
    i = next(i for i, ln in enumerate(lines) if "alloc_vmap_area:" in ln and "[000]" in ln)
    lines[i] = lines[i].replace("[000]", cpu, 1)
    (d / "trace.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    rc, err = _cli([command, str(d)], capsys)
    assert rc == 2
    n = int(cpu.strip("[]"))
    assert err.startswith(f"pyvmalloc: error: {d / 'trace.gz'}:{i + 1}: CPU {n} does not exist")
    assert "CPUs are 0-1 (cpus_possible in meta.json)" in err


def test_cli_whatif_bad_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(tmp_path)
    snap = (d / "vmallocinfo").read_text().split("\n")
    (d / "vmallocinfo").write_text("\n".join([snap[0], *snap]))
    rc, err = _cli(["whatif", str(d)], capsys)
    assert rc == 2 and f"{d / 'vmallocinfo'}:2: " in err and "same area as line 1" in err
