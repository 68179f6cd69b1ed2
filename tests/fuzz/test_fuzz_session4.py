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
from pyvmalloc.kernel import Kernel

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


# ---------------------------------------------------------------- the kernel-named API


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_free_vmap_area_refuses_what_it_would_merge_twice(profile: str) -> None:
    """`Kernel.free_vmap_area` checked nothing: None gave AttributeError; a vmalloc'ed
    area left its vm_struct ("nr_vmalloc_pages 2 != 0"); a lazily freed one and a
    stale one (freed, range reused) were merged twice ("... overlaps", "leaves a
    gap"); another model's area was unlinked from a tree it is not in."""
    k = Kernel(profile, ram="64M")
    with pytest.raises(TypeError, match="expected a VmapArea"):
        k.free_vmap_area(None)  # type: ignore[arg-type]
    p = k.vmalloc(8192)
    owned = k.find_vmap_area(p)
    assert owned is not None
    with pytest.raises(ValueError, match="holds a vm_struct"):
        k.free_vmap_area(owned)
    other = Kernel(profile, ram="64M").alloc_vmap_area(8192)
    assert not isinstance(other, int)
    with pytest.raises(ValueError, match="not a busy area of this model"):
        k.free_vmap_area(other)
    lazy = k.alloc_vmap_area(8192)
    assert not isinstance(lazy, int)
    k.free_vmap_area_noflush(lazy)
    k.free_vmap_area(lazy)
    assert "is already freed" in k.dmesg()
    k.purge_vmap_area_lazy()
    stale = k.alloc_vmap_area(4096)
    assert not isinstance(stale, int)
    k.free_vmap_area(stale)
    reuse = k.alloc_vmap_area(4096)
    assert not isinstance(reuse, int) and reuse.va_start == stale.va_start
    k.free_vmap_area(stale)
    assert "its range reused since" in k.dmesg()
    k.check()
    # a plain double free (the range still one free block): the kernel's overlap WARN
    k.free_vmap_area(reuse)
    k.free_vmap_area(reuse)
    assert "vmalloc bug:" in k.dmesg()
    k.check()


@pytest.mark.parametrize("profile", ["5.4", "6.18"])
def test_pcpu_free_vm_areas_refuses_areas_it_does_not_own(profile: str) -> None:
    """`pcpu_free_vm_areas([None])` gave AttributeError; a vmalloc'ed area freed its
    vmap_area under the vm_struct ("nr_vmalloc_pages 2 != 0 in areas")."""
    k = Kernel(profile, ram="64M")
    p = k.vmalloc(8192)
    with pytest.raises(ValueError, match="holds a vm_struct"):
        k.pcpu_free_vm_areas([k.find_vmap_area(p)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expected a VmapArea"):
        k.pcpu_free_vm_areas([None])  # type: ignore[list-item]
    vas = k.pcpu_get_vm_areas([0, 1 << 20], [8192, 8192], 4096)
    assert vas is not None
    k.pcpu_free_vm_areas(vas)
    k.pcpu_free_vm_areas(vas)  # freed already: the model's WARN per area
    assert k.dmesg().count("is not busy") == 2
    k.check()


def test_a_trace_subscriber_that_raises_cannot_corrupt_the_model() -> None:
    """A subscriber's exception escaped from inside the tracepoint, mid-operation:
    `get_vm_area_caller` left the free tree with a hole ("leaves a gap before ...").
    A probe cannot abort the traced operation: the call completes and then raises."""
    k = Kernel("6.18", ram="64M")
    seen: list[object] = []

    def probe(event: object) -> None:
        seen.append(event)
        raise RuntimeError("subscriber fails")

    k.trace_subscribe("all", probe)
    with pytest.raises(RuntimeError, match="subscriber fails"):
        k.vmalloc(20000)
    k.check()
    assert k.find_vm_area(k.VMALLOC_START) is not None  # the call completed
    with pytest.raises(RuntimeError):
        k.get_vm_area_caller(8192, 0x44, "x")
    k.check()
    k.trace_unsubscribe(probe)
    k.vmalloc(4096)  # unsubscribed: no more events
    n = len(seen)
    k.vmalloc(4096)
    assert len(seen) == n
    k.check()


# ---------------------------------------------------------------- command-line options


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["compare", str(CAP), "--policy", "../../etc:passwd"], "dotted module name, not a path"),
        (["compare", str(CAP), "--policy", ".x:Y"], "dotted module name"),
        (
            ["explore", str(CAP), "--policy", "", "-o", "{tmp}/x.html"],
            "unknown placement policy ''",
        ),
        (["explore", "--tour", "--cpus", "0", "-o", "{tmp}/x.html"], "at least one CPU"),
        (["demo", "--ops", "-1"], "must not be negative"),
        (["main", "--ops", "-1"], "must not be negative"),
        (["replay", str(CAP), "--cpus", "9000", "--no-progress"], "CONFIG_NR_CPUS is at most 8192"),
    ],
)
def test_options_the_earlier_rounds_let_through(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], says: str
) -> None:
    """`--policy ../../etc:passwd` escaped importlib's TypeError as a traceback;
    `explore --policy ''` and `explore --tour --cpus 0` silently meant the defaults;
    `demo/main --ops -1` ran; `replay --cpus 9000` built a machine no kernel builds."""
    rc, _out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert says in one_line_error(rc, err)


def test_a_policy_module_that_fails_to_import_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brokenpolicy4.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    rc, _out, err = run(capsys, "compare", str(CAP), "--policy", "brokenpolicy4:P")
    assert "failed: RuntimeError: boom" in one_line_error(rc, err)


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", str(CAP), "--no-progress", "--json"],
        ["replay", str(CAP), "--no-progress", "--vmallocinfo-out"],
        ["explain", "vmalloc(1)", "--json"],
        ["walk", "0x0", "--json"],
        ["profiles", "--json"],
        ["explore", "--tour", "--ops", "5", "-o"],
    ],
)
def test_write_errors_name_the_file(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """A full disk (/dev/full) printed '[Errno 28] No space left on device' alone."""
    rc, _out, err = run(capsys, *argv, "/dev/full")
    assert "/dev/full: cannot write: No space left on device" in one_line_error(rc, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "vmalloc(1)", "--json", ""],
        ["walk", "0x0", "--json", ""],
        ["profiles", "--json", ""],
        ["whatif", str(CAP), "--plot", ""],
        ["replay", str(CAP), "--no-progress", "--json", ""],
    ],
)
def test_an_empty_output_name_is_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """`--json ''` wrote nothing and exited 0 (explain, walk, profiles, whatif --plot)."""
    rc, _out, err = run(capsys, *argv)
    assert "an empty file name" in one_line_error(rc, err)


def test_plots_are_written_under_the_name_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """matplotlib appended '.png' to a name without an image suffix: `--plot
    /dev/full` wrote /dev/full.png and exited 0."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "frag"
    rc, _out, err = run(capsys, "whatif", str(CAP), "--plot", str(out), "--samples", "5")
    assert rc == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "frag.png").exists()
    rc, _out, err = run(capsys, "whatif", str(CAP), "--plot", "/dev/full", "--samples", "5")
    assert "/dev/full: cannot write" in one_line_error(rc, err)
    assert not Path("/dev/full.png").exists()


# ---------------------------------------------------------------- Machine objects


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("cpus_online", 2.5, "cpus_online must be an integer"),
        ("nr_cpus", 1.5, "nr_cpus must be an integer"),
        ("paging_levels", True, "paging_levels must be an integer"),
        ("lpae", "no", "lpae must be True or False"),
        ("smp", 0, "smp must be True or False"),
        ("arch", 5, "arch must be a string"),
        ("ram", 4.5e9, "a size is an integer or a string"),
        ("ram", True, "a size is an integer or a string"),
    ],
)
def test_machine_fields_of_the_wrong_type_are_refused(field: str, value: object, says: str) -> None:
    """`Machine(cpus_online=2.5)` was accepted and failed in Kernel() with
    "'float' object has no attribute 'bit_length'"; `lpae="no"` meant LPAE on."""
    with pytest.raises(TypeError, match=says):
        Machine(**{field: value})  # type: ignore[arg-type]


def test_machine_numpy_integers_are_plain_ints() -> None:
    """`Machine(cpus_online=np.int32(4))` failed in Kernel() ('numpy.int32' object has
    no attribute 'bit_length'); a numpy integer is an integer."""
    np = pytest.importorskip("numpy")
    m = Machine(cpus_online=np.int32(4), ram=np.int64(64 << 20))
    assert type(m.cpus_online) is int and m.ram == 64 << 20
    Kernel("6.18", machine=m).check()


def test_more_numa_nodes_than_the_model_holds_are_refused() -> None:
    """`Machine(numa_nodes=1024)` (the kernel's MAX_NUMNODES) overflowed the model's
    uint8 node column on the first vmalloc: 'Python integer 256 out of bounds'."""
    with pytest.raises(ValueError, match="at most 128"):
        Machine(numa_nodes=1024)
    k = Kernel("6.18", machine=Machine(numa_nodes=128, ram="4G"))
    k.vfree(k.vmalloc(8192))
    k.check()


@pytest.mark.parametrize("addr", ["١٢", "0x_ff", "+0x10", " 0x10", "0o7"])
def test_addresses_are_ascii_hex_or_decimal(capsys: pytest.CaptureFixture[str], addr: str) -> None:
    """`walk ١٢` walked address 12 (int() takes Unicode digits), `0x_ff`, `+0x10`,
    `0o7` were Python literals, not addresses crash or the kernel print."""
    rc, _out, err = run(capsys, "walk", addr, "--ram", "64M")
    assert "is not an address" in one_line_error(rc, err)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--since", "١"), ("--until", "1_0"), ("--pid", ""), ("--cpu", ","), ("--event", "")],
)
def test_report_filters_refuse_values_that_filtered_nothing(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """`--since ١` was 1 s (float() takes Unicode digits and '_'); `--pid ''`,
    `--cpu ,` and `--event ''` silently printed every event."""
    if option in ("--since", "--until"):  # an argparse type: usage, then exit 2
        with pytest.raises(SystemExit) as e:
            run(capsys, "report", str(CAP), option, value)
        assert e.value.code == 2 and "not a time in seconds" in capsys.readouterr().err
        return
    rc, _out, err = run(capsys, "report", str(CAP), option, value)
    assert "an empty value" in one_line_error(rc, err)
