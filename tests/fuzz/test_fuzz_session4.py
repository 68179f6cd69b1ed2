"""Regression tests for what the fourth fuzz round found (see the fuzz findings notes
and docs/inputs.md), plus small seeded fuzzers of surfaces the earlier rounds did not
reach.

CLI cases go through :func:`pyvmalloc.cli.main` in this process: exit status 2 with one
``pyvmalloc: error: ...`` line, or success; never an escaping exception. The seeded
fuzzers' seed is ``PYVMALLOC_FUZZ_SEED`` (random locally, fixed under CI).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pyvmalloc.cli import main
from pyvmalloc.config import Machine, parse_size

DATA = Path(__file__).resolve().parents[1] / "data"
BOARD = DATA / "boards" / "rpi-5.4"
CAP = DATA / "captures" / "churn-cpu0"
SEED = int(os.environ.get("PYVMALLOC_FUZZ_SEED") or random.randrange(1 << 32))
EXAMPLES = int(os.environ.get("PYVMALLOC_FUZZ_EXAMPLES", "0"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> str:
    assert rc == 2, err
    assert err.startswith("pyvmalloc: error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------- sizes and machines


@pytest.mark.parametrize(
    ("text", "value"),
    [("4G", 4 << 30), ("64KiB", 64 << 10), ("0x80000000", 1 << 31), ("0X10k", 16 << 10),
     (" 512M ", 512 << 20), ("18446744073709551615", (1 << 64) - 1)],
)  # fmt: skip
def test_sizes_take_memparse_forms(text: str, value: int) -> None:
    """memparse() reads 0x hex too: `--phys-offset 0x80000000` was 'not a size'."""
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [("٣G", "not a size"), ("9" * 5000, "more digits than a 64-bit number"),
     ("0x" + "f" * 17, "more digits"), ("1_000", "not a size"), ("-1", "not a size")],
)  # fmt: skip
def test_sizes_refuse_non_ascii_digits_and_endless_numbers(text: str, says: str) -> None:
    """`--ram ٣G` was 3 GiB (re's \\d is Unicode); 5000 digits gave Python's bare
    'Exceeds the limit (4300 digits)' message."""
    with pytest.raises(ValueError, match=says):
        parse_size(text)


@pytest.mark.parametrize(
    ("arch", "fits", "too_much"),
    [("x86_64", "64T", "65T"), ("arm64", "256T", "257T"), ("i386", "4G", "5G")],
)
def test_ram_past_max_physmem_bits_is_refused(arch: str, fits: str, too_much: str) -> None:
    """`whatif CAPTURE --ram 99999999999999999999T` ran a target of 10^17 PiB."""
    Machine(arch=arch, ram=fits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MAX_PHYSMEM_BITS"):
        Machine(arch=arch, ram=too_much)  # type: ignore[arg-type]


def test_whatif_ram_beyond_the_arch_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(capsys, "whatif", str(CAP), "--ram", "99999999999999999999T")
    assert "MAX_PHYSMEM_BITS" in one_line_error(rc, err)


# ---------------------------------------------------------------- board logs


def test_dmesg_read_error_names_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    """`--dmesg /proc/self/mem` (EIO on read) printed '[Errno 5] Input/output error'
    with no file name."""
    rc, _out, err = run(capsys, "whatif", "--arch", "arm", "--from-vmallocinfo",
                        str(BOARD / "vmallocinfo"), "--dmesg", "/proc/self/mem")  # fmt: skip
    assert "/proc/self/mem: cannot read" in one_line_error(rc, err)
