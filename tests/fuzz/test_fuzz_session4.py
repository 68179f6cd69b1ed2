"""Regression tests for what the fourth fuzz round found (see the fuzz findings notes
and docs/inputs.md), plus small seeded fuzzers of surfaces the earlier rounds did not
reach.

CLI cases go through :func:`pyvmalloc.cli.main` in this process: exit status 2 with one
``pyvmalloc: error: ...`` line, or success; never an escaping exception. The seeded
fuzzers' seed is ``PYVMALLOC_FUZZ_SEED`` (random locally, fixed under CI).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvmalloc.cli import main
from pyvmalloc.config import Machine, parse_size
from pyvmalloc.kernel import Kernel

DATA = Path(__file__).resolve().parents[1] / "data"
BOARD = DATA / "boards" / "rpi-5.4"
CAP = DATA / "captures" / "churn-cpu0"
SEED = int(os.environ.get("PYVMALLOC_FUZZ_SEED") or random.randrange(1 << 32))
EXAMPLES = int(os.environ.get("PYVMALLOC_FUZZ_EXAMPLES", "0"))

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("chaos_api4", _HERE / "chaos_api4.py")
assert _spec is not None and _spec.loader is not None
chaos4 = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("chaos_api4", chaos4)
_spec.loader.exec_module(chaos4)


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


# ---------------------------------------------------------------- seeded fuzzers


def test_fuzz_api_surfaces_round4() -> None:
    """The calls chaos_api.py leaves out (tests/fuzz/chaos_api4.py): pcpu areas,
    free_vmap_area, raising and re-entrant trace subscribers, nested interrupts."""
    for label, rng, profile, strict, steps in chaos4.plan(SEED, EXAMPLES or 6):
        try:
            chaos4.run(rng, profile, strict, steps, label=label)
        except chaos4.ChaosFailure as e:
            raise AssertionError(f"PYVMALLOC_FUZZ_SEED={SEED} {e}") from e


def test_accelerated_and_pure_agree_on_round4_sequences(fresh_python: Callable[..., str]) -> None:
    """Call by call, the accelerated build and PYVMALLOC_PURE=1 print the same."""
    from pyvmalloc import accelerator

    if accelerator().startswith("pure"):
        pytest.skip("the accelerator is not built")
    runs = str(EXAMPLES or 3)
    script = str(_HERE / "chaos_api4.py")
    fast = fresh_python(script, str(SEED), runs, pure=False).splitlines()
    ref = fresh_python(script, str(SEED), runs, pure=True).splitlines()
    for i, (a, b) in enumerate(zip(fast, ref, strict=False)):
        assert a == b, f"PYVMALLOC_FUZZ_SEED={SEED}, output line {i + 1}:\n accel: {a}\n pure:  {b}"
    assert len(fast) == len(ref)


_MACHINE_VALUES: dict[str, list[object]] = {
    "arch": ["x86_64", "i386", "arm", "arm64", "mips", "", None, 5],
    "paging_levels": [2, 3, 4, 5, 0, -1, 6, True, 4.0, "4"],
    "cpus_online": [1, 2, 3, 64, 257, 0, -1, 8192, 2.5, "2", True],
    "cpus_possible": [0, 1, 2, 4, 300, -1, "x"],
    "nr_cpus": [1, 2, 256, 8192, 8193, 0, -5, 1.5],
    "ram": [16 << 20, 64 << 20, "64M", 15 << 20, 0, -1, "abc", 4.5e9, 1 << 46,
            (1 << 46) + 1, True],
    "numa_nodes": [1, 2, 4, 128, 129, 1024, 0, -1, 2.0],
    "vmalloc_reserve": [0, 1, 16 << 20, 1 << 30, "128M", -1, "x", 1 << 40],
    "kernel_release": ["6.18", "5.4", "4.19", "3.0", ""],
    "vmsplit": ["3G", "2G", "1G", "3G_OPT", "4G", ""],
    "lpae": [True, False, 1, "no"],
    "highmem": [True, False, None],
    "phys_offset": [0, 0x80000000, 1 << 32, -1, "0x40000000", 4095],
    "va_bits": [39, 42, 47, 48, 52, 36, 0, 64],
    "page_size": [4096, 16384, 0],
}  # fmt: skip


def test_fuzz_machines() -> None:
    """Random Machine fields of every type: a TypeError/ValueError with a message, or
    a machine a model can run on (a vmalloc, a vfree, the views and check())."""
    rng = random.Random(f"machines:{SEED}")
    for i in range(EXAMPLES or 120):
        kw = {k: rng.choice(v) for k, v in _MACHINE_VALUES.items() if rng.random() < 0.4}
        where = f"PYVMALLOC_FUZZ_SEED={SEED} case {i}: Machine(**{kw!r})"
        try:
            m = Machine(**kw)  # type: ignore[arg-type]
        except (TypeError, ValueError) as e:
            assert str(e), where
            continue
        except Exception as e:
            raise AssertionError(f"{where}: {type(e).__name__}: {e}") from e
        for name in ("lpae", "highmem"):
            assert type(getattr(m, name)) is bool, where
        if m.ram > 512 << 20:
            continue  # the layout checks are the point; big page arrays cost time
        try:
            k = Kernel(rng.choice(["4.19", "5.4", "6.18"]), machine=m)
            k.vfree(k.vmalloc(rng.choice([4096, 1 << 20])))
            k.vmallocinfo()
            k.meminfo()
            k.check()
        except (TypeError, ValueError, MemoryError, NotImplementedError) as e:
            assert str(e), where
        except Exception as e:
            raise AssertionError(f"{where}: Kernel: {type(e).__name__}: {e}") from e


_WORDS = st.text(
    alphabet=st.sampled_from("0123456789abcdefxXkKmMgGtTiIbB _+-.\n\u0663\u00b2eE"),
    max_size=30,
)


@settings(max_examples=EXAMPLES or 300, deadline=None)
@given(text=_WORDS)
def test_fuzz_number_words(text: str) -> None:
    """The parsers of sizes, addresses and module parameters take ASCII only, agree
    with an independent reading of the accepted forms, and never raise anything but a
    ValueError with a message."""
    import re

    from pyvmalloc.cli_vmalloc import parse_address
    from pyvmalloc.workloads.test_vmalloc import kstrtoint

    try:
        v = parse_size(text)
    except ValueError as e:
        assert str(e)
    else:
        m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
        assert m is not None and text.isascii(), text
        base = 16 if m.group(1)[:2].lower() == "0x" else 10
        shift = 10 * " kmgt".index(m.group(2).lower() or " ")
        assert v == int(m.group(1), base) << shift
    try:
        a = parse_address(text, [])
    except ValueError as e:
        assert str(e)
    else:
        assert text.isascii() and text.strip() == text and "_" not in text, text
        assert a == (int(text) if text.isdigit() and (text == "0" or text[0] != "0")
                     else int(text[2:] if text[:2].lower() == "0x" else text, 16))  # fmt: skip
    try:
        n = kstrtoint(text)
    except ValueError as e:
        assert str(e)
    else:
        assert text.isascii() and " " not in text and "_" not in text, text
        body = text.rstrip("\n").lstrip("+-")
        base = 16 if body[:2].lower() == "0x" else 8 if body[:1] == "0" and len(body) > 1 else 10
        value = int(body[2:] if base == 16 else body, base)
        assert n == (-value if text.startswith("-") else value)


def test_parsers_stay_linear_on_long_lines(tmp_path: Path) -> None:
    """A 4 MiB line of a trace, a snapshot and a board log is refused or skipped in
    well under a second each (no regex backtracking, no rescans)."""
    from pyvmalloc.errors import InputError
    from pyvmalloc.report.board import parse_dmesg
    from pyvmalloc.trace.parse import parse_trace
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    n = 4 << 20
    cases = [
        (parse_trace, "# tracer: nop\n" + "  a-1 [000] ..." + " " * n + "x\n"),
        (parse_trace, "# tracer: nop\n" + "#" + "x" * n + "\n"),
        (parse_vmallocinfo, "0xffffc90000000000-0xffffc90000002000 8192 " + "a+" * (n // 2) + "\n"),
        (
            parse_vmallocinfo,
            "0xffffc90000000000-0xffffc90000002000 8192" + " N0=1" * (n // 5) + "\n",
        ),
        (parse_dmesg, "vmap allocation for size " * (n // 25) + "\n"),
        (parse_dmesg, "[ 1.0] " + "[" * n + "\n"),
    ]
    for i, (parse, text) in enumerate(cases):
        path = tmp_path / f"case{i}"
        path.write_text(text)
        t0 = time.process_time()
        try:
            parse(path)  # type: ignore[operator]
        except InputError as e:
            assert str(path) in str(e)
        assert time.process_time() - t0 < 1.0, f"case {i} took {time.process_time() - t0:.2f} s"


@pytest.mark.parametrize(("value", "says"), [("run_test_mask=١", "not an integer"),
                                             ("run_test_mask=1_0", "not an integer")])  # fmt: skip
def test_module_parameters_are_read_as_kstrtoint_reads_them(
    capsys: pytest.CaptureFixture[str], value: str, says: str
) -> None:
    """`test-vmalloc run_test_mask=١` ran mask 1 (int() takes Unicode digits and '_';
    the kernel's kstrtoint takes neither)."""
    rc, _out, err = run(capsys, "test-vmalloc", "--no-progress", value, "test_loop_count=1")
    assert says in one_line_error(rc, err)


def test_module_parameters_take_the_kernels_octal() -> None:
    """kstrtoint(s, 0) reads a leading 0 as octal (int(s, 0) refused '010')."""
    from pyvmalloc.workloads.test_vmalloc import kstrtoint

    assert [kstrtoint(v) for v in ("010", "0x10", "10", "-3", "7\n")] == [8, 16, 10, -3, 7]


def test_whatif_of_a_capture_with_no_event_reports_the_snapshot(tmp_path: Path) -> None:
    """A trace with no event after the snapshot gave 'peak busy 0 B' and (in sweep)
    a largest free block of 0 with the snapshot's 227 areas placed: no sample was
    ever taken."""
    import shutil

    from pyvmalloc.report.whatif import whatif

    for name in ("meta.json", "vmallocinfo"):
        shutil.copy(CAP / name, tmp_path / name)
    (tmp_path / "trace").write_text("# tracer: nop\n#\n")
    res = whatif(tmp_path / "trace", tmp_path / "vmallocinfo")
    assert res.requests == 0 and len(res.samples) == 1
    from pyvmalloc.trace.snapshot import parse_vmallocinfo

    busy = sum(e.size for e in parse_vmallocinfo(tmp_path / "vmallocinfo").busy)
    assert 0 < res.peak_busy_bytes <= busy  # (areas outside the vmalloc range not counted)
    assert res.samples[0][1].largest_free > 0


def test_a_capture_with_both_trace_and_trace_gz_is_ambiguous(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A directory holding `trace` and `trace.gz` (two different traces) was replayed
    from one of them without a word."""
    import gzip
    import shutil

    shutil.copytree(CAP, tmp_path / "cap")
    (tmp_path / "cap" / "trace").write_bytes(
        gzip.decompress((CAP / "trace.gz").read_bytes())[:5000]
    )
    for cmd in ("replay", "report"):
        rc, _out, err = run(capsys, cmd, str(tmp_path / "cap"))
        assert "holds both trace and trace.gz" in one_line_error(rc, err)


def test_explore_before_without_a_call_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`explore --tour --before CALLS` ignored the setup calls."""
    rc, _out, err = run(capsys, "explore", "--tour", "--before", "vmalloc(1)", "-o",
                        str(tmp_path / "x.html"))  # fmt: skip
    assert "give --call too" in one_line_error(rc, err)


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["--lpae"], "--lpae: an option of 32-bit arm, not x86_64"),
     (["--arch", "i386", "--vmsplit", "1G", "--thumb2"], "--vmsplit, --thumb2: options of 32-bit arm"),
     (["--arch", "x86_64", "--va-bits", "39"], "--va-bits is arm64's")],
)  # fmt: skip
def test_whatif_refuses_options_of_another_arch(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """`whatif CAPTURE --lpae` (x86_64) or `--arch i386 --vmsplit 1G` ran and ignored them."""
    rc, _out, err = run(capsys, "whatif", str(CAP), *argv)
    assert says in one_line_error(rc, err)


@pytest.mark.parametrize(
    ("call", "says"),
    [("vmalloc(0x" + "f" * 5000 + ")", "an integer of 20000 bits"),
     ("vmalloc(" + "-" * 100000 + "1)", "nested too deeply"),
     ("vmalloc(" + "*".join(["99999999999"] * 400) + ")", "too long an expression"),
     ("vmalloc(" + "*".join(["99999999999"] * 20) + ")", "far past 64 bits"),
     ("vmalloc(1 << 70)", "a shift by 70 (0..64)"),
     ("vmalloc(1 << -1)", "a shift by -1")],
)  # fmt: skip
def test_call_language_numbers_stay_printable(
    capsys: pytest.CaptureFixture[str], call: str, says: str
) -> None:
    """A 5000-digit hex literal ended in Python's 'Exceeds the limit (4300 digits)'
    (from ast.unparse of the label); 100,000 minus signs in 'out of host memory'; a
    400-term product in a RecursionError traceback; '1<<70' said only 'shift too large'."""
    rc, _out, err = run(capsys, "explain", call, "--ram", "64M")
    assert says in one_line_error(rc, err)
    assert len(err) < 400


@pytest.mark.parametrize("value", [3, -1, "x", None, True])
def test_kptr_restrict_takes_the_sysctls_range(value: object) -> None:
    """`k.kptr_restrict = 'x'` was accepted and vmallocinfo() then failed with "'>=' not
    supported"; 3 printed zeros. The sysctl takes 0..2 (-EINVAL otherwise)."""
    k = Kernel("6.18", ram="64M")
    with pytest.raises(ValueError, match="0, 1 or 2"):
        k.kptr_restrict = value  # type: ignore[assignment]
    assert k.kptr_restrict == 1
    k.kptr_restrict = 2
    k.vmalloc(4096)
    assert k.vmallocinfo().startswith("0x0000000000000000-0x0000000000000000")


def test_compare_refuses_a_profile_listed_twice(capsys: pytest.CaptureFixture[str]) -> None:
    """`compare --profiles 6.18,6.18` replayed the same column twice."""
    rc, _out, err = run(capsys, "compare", str(CAP), "--profiles", "6.18,5.4,6.18")
    assert "listed twice" in one_line_error(rc, err)


@pytest.mark.parametrize("option", ["--board-ram", "--board-vmalloc"])
def test_board_options_need_a_board(capsys: pytest.CaptureFixture[str], option: str) -> None:
    """`whatif CAPTURE --board-ram 1G` ran and ignored it."""
    rc, _out, err = run(capsys, "whatif", str(CAP), option, "64M")
    assert "board what-if" in one_line_error(rc, err)


@pytest.mark.parametrize(
    "option",
    [["--settle", "inf"], ["--settle", "-1"], ["--buffer-mb", "-1"], ["--buffer-mb", "0"],
     ["--pause", "nan"], ["--pause", "-1"], ["--churn-mb", "-1"], ["--max-ops", "-5"],
     ["--long-lived", "١"], ["--duration", "١"]],
)  # fmt: skip
def test_capture_options_are_checked_before_anything_starts(option: list[str]) -> None:
    """Parsing only (nothing touches the kernel): `--settle inf` reached time.sleep
    (OverflowError) and `--pause -1` ValueError in the middle of a capture; `--buffer-mb
    -1` became 1 MiB; negative counts were taken. argparse refuses them (exit 2)."""
    from pyvmalloc.cli import build_parser
    from pyvmalloc.trace.capture import _split_rest

    for argv in (
        ["capture", "/nonexistent/out", *option],
        ["capture", *option, "/nonexistent/out"],
    ):
        with pytest.raises(SystemExit) as e:
            _split_rest(build_parser().parse_args(argv))
        assert e.value.code == 2


@pytest.mark.parametrize("cpus", ["١", "0,1", "1_0", "-1"])
def test_sweep_cpu_lists_are_ascii_counts(capsys: pytest.CaptureFixture[str], cpus: str) -> None:
    """`sweep --cpus ١` was 1 CPU and `--cpus 0` silently meant the capture's (int())."""
    rc, _out, err = run(capsys, "sweep", str(CAP), "--cpus", cpus)
    assert "whole numbers >= 1" in one_line_error(rc, err)


@pytest.mark.parametrize(
    "argv",
    [["explain", "vmalloc(1)", "--cpus", "٣"], ["tour", "--ops", "1_0"],
     ["whatif", str(CAP), "--samples", " 5"], ["test-vmalloc", "--loops", "٣"]],
)  # fmt: skip
def test_integer_options_take_ascii_digits_only(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """argparse's type=int is int(): `--cpus ٣` was 3 CPUs, `--ops 1_0` ten."""
    with pytest.raises(SystemExit) as e:
        run(capsys, *argv)
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err
