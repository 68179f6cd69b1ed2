"""Regression tests for what the third fuzz round found (see docs/inputs.md and the
fuzz findings notes), plus small seeded fuzzers of the inputs the first round did not
reach: the ``--before``/``explain`` call language, board logs (``--dmesg``) and the
command-line options.

Every case goes through :func:`pyvmalloc.cli.main` in this process: the contract is
exit status 2 with one ``pyvmalloc: error: ...`` line (naming the file and line where a
file is involved), or success; never an escaping exception.

The fuzzers' seed varies from run to run (``PYVMALLOC_FUZZ_SEED`` fixes it); a failure
names the seed and the case, so it can be replayed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pyvmalloc.cli import main
from pyvmalloc.errors import InputError
from pyvmalloc.kernel import Kernel
from pyvmalloc.report.board import parse_dmesg

BOARD = Path(__file__).resolve().parents[1] / "data" / "boards" / "rpi-5.4"
SEED = int(os.environ.get("PYVMALLOC_FUZZ_SEED") or random.randrange(1 << 32))
EXAMPLES = int(os.environ.get("PYVMALLOC_FUZZ_EXAMPLES", "0"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, start: str = "pyvmalloc: error: ") -> str:
    assert rc == 2, err
    assert err.startswith(start) and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------- the call language


@pytest.mark.parametrize(
    ("calls", "says"),
    [
        ("vmalloc()", "missing a required argument: 'size'"),
        ("kvfree()", "missing a required argument: 'addr'"),
        ("ioremap(4096)", "missing a required argument: 'size'"),
        ("vmalloc(1, 2, 3, 4)", "too many positional arguments"),
        ("vmalloc_huge(8192, align=4096)", "unexpected keyword argument 'align'"),
        ("vmalloc(4096, cpu=1, cpu=0)", "given multiple values"),
        ("vunmap(0xffffc90000000000, None)", "cpu must be an integer, not None"),
        ("vfree('x')", "addr must be an integer, not 'x'"),
        ("vmalloc(8192, caller=5)", "caller must be a string, not 5"),
    ],
)
def test_calls_of_the_wrong_shape_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], calls: str, says: str
) -> None:
    """A call the API cannot take (TypeError inside the model before) is refused
    with the call and the signature."""
    for argv in (["explain", calls], ["walk", "0x0", "--before", calls], ["kmem", "-v", "--before", calls]):  # fmt: skip
        rc, _out, err = run(capsys, *argv, "--ram", "64M")
        one_line_error(rc, err)
        assert says in err and ("takes (" in err or "multiple" in err), err


def test_ioremap_beyond_host_memory_is_refused_before_any_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ioremap(0xfed00000, 16 TiB) is one the kernel serves (the vmalloc space is 32
    TiB); the model's per-page arrays would need 128 GiB: numpy's bare MemoryError
    escaped after the area was allocated."""
    k = Kernel(ram="64M")
    with pytest.raises(MemoryError, match="ioremap of 0x100000000000 bytes needs about"):
        k.ioremap(0xFED00000, 1 << 44)
    assert k.vmap_space.nr_busy == 0 and not k.vm.leaked
    k.check()
    rc, _out, err = run(capsys, "explain", "ioremap(0xfed00000, 1 << 44)", "--ram", "64M")
    assert "needs about" in one_line_error(rc, err)


def test_ram_beyond_host_memory_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Kernel(ram=...) says what fits in a MemoryError; the CLI let it escape."""
    for cmd in (["explain", "vmalloc(8192)"], ["walk", "0x0"], ["tour", "--ops", "1"]):
        rc, _out, err = run(capsys, *cmd, "--ram", "60T")
        assert "fits" in one_line_error(rc, err)


# ---------------------------------------------------------------- sweep


def test_sweep_checks_workers_outputs_and_files_before_the_cluster(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cap = Path(__file__).resolve().parents[1] / "data" / "captures" / "netns2"
    rc, _out, err = run(capsys, "sweep", str(cap), "--workers", "-1")  # hung in LocalCluster
    assert "--workers -1" in one_line_error(rc, err)
    rc, _out, err = run(capsys, "sweep", str(cap), "--json", str(tmp_path / "no" / "x.json"))
    assert "does not exist" in one_line_error(rc, err)
    rc, _out, err = run(capsys, "sweep", str(cap), "--plot", str(tmp_path))
    assert "is a directory" in one_line_error(rc, err)
    bad = tmp_path / "cap"
    bad.mkdir()
    for f in cap.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "vmallocinfo").write_text("garbage\n")
    # was: a dask worker's "Compute Failed" log block on stderr, then the error
    rc, _out, err = run(capsys, "sweep", str(bad))
    one_line_error(rc, err, f"pyvmalloc: error: {bad / 'vmallocinfo'}:1: ")


# ---------------------------------------------------------------- board logs


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("x: page allocation failure: order:99999999999999, mode:0xcc0(GFP_KERNEL)", "order 9"),
        ("x: page allocation failure: order:64, mode:0xcc0(GFP_KERNEL)", "order 64"),
        (
            "vmap allocation for size "
            + "9" * 5000
            + " failed: use vmalloc=<size> to increase size",
            "size 9999",
        ),
        (
            "m: vmalloc: allocation failure: 18446744073709551616 bytes, mode:0xcc0(GFP_KERNEL)",
            "unsigned long",
        ),
        (
            "vmalloc_node_range for size 8192 failed: Address range restricted to 0x1 - 0x"
            + "f" * 17,
            "end 0x",
        ),
        (
            "vmap allocation for size 0 failed: use vmalloc=<size> to increase size",
            "whole number of pages",
        ),
        (
            "vmap allocation for size 4097 failed: use vmalloc=<size> to increase size",
            "whole number of pages",
        ),
        (
            "vmap allocation for size \u0663\u0663 failed: use vmalloc=<size> to increase size",
            "not ASCII",
        ),
    ],
)
def test_dmesg_values_no_kernel_prints_are_refused_with_file_and_line(
    tmp_path: Path, line: str, says: str
) -> None:
    """Before: MemoryError (4096 << order), a bare 'Exceeds the limit (4300 digits)'
    ValueError, or a request of 0 bytes / 2^64 bytes replayed as if real."""
    log = tmp_path / "dmesg"
    log.write_text("[ 0.0] Booting Linux\n" + line + "\n")
    with pytest.raises(InputError, match=f"^{log}:2: ") as e:
        parse_dmesg(log)
    assert says in str(e.value)


def test_dmesg_lines_end_at_newline_only(tmp_path: Path) -> None:
    """A U+2028 or \\x0c inside a log line does not shift the line numbers."""
    log = tmp_path / "dmesg"
    log.write_bytes(
        b"[ 0.0] a\xe2\x80\xa8b\x0cc\x1d\n"
        b"[ 1.0] vmap allocation for size 8192 failed: use vmalloc=<size> to increase size\n"
    )
    assert [r.line for r in parse_dmesg(log)] == [2]


def test_board_areas_outside_the_layout_name_the_file_and_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, _out, err = run(
        capsys, "whatif", "--from-vmallocinfo", str(BOARD / "vmallocinfo"), "--arch", "x86_64"
    )
    one_line_error(rc, err, f"pyvmalloc: error: {BOARD / 'vmallocinfo'}:1: ")
    assert "lie outside the board layout" in err


# ---------------------------------------------------------------- seeded fuzzers


def _case_failure(what: str, index: int, argv: list[str], msg: str) -> AssertionError:
    return AssertionError(f"fuzz {what} case {index} (PYVMALLOC_FUZZ_SEED={SEED}): {argv!r}: {msg}")


def _check(capsys: pytest.CaptureFixture[str], what: str, i: int, argv: list[str]) -> None:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: usage, then "PROG: error: ...", status 2
        rc = 2 if e.code == 2 else -1
        _out, err = capsys.readouterr()
        if rc != 2 or "usage:" not in err or err.strip().splitlines()[-1].count("error: ") != 1:
            raise _case_failure(what, i, argv, f"exit {e.code}: {err[-400:]}") from e
        return
    except BaseException as e:  # anything else escaping main() is the failure
        raise _case_failure(what, i, argv, f"{type(e).__name__}: {e}") from e
    _out, err = capsys.readouterr()
    if rc not in (0, 2) or (rc == 2 and (err.count("\n") != 1 or "error: " not in err)):
        raise _case_failure(what, i, argv, f"rc {rc}: {err[-400:]}")


def test_fuzz_call_language(capsys: pytest.CaptureFixture[str]) -> None:
    """Random ``--before`` programs and ``explain`` calls: the API family with
    arguments of every shape (missing, extra, wrong type, huge, negative, results)."""
    from pyvmalloc.explain import API_CALLS

    rng = random.Random(f"{SEED}:calls")
    vals = ["0", "1", "-1", "8192", "(1<<64)-1", "1<<64", "1<<40", "_", "_1", "_2", "_+4096",
            "GFP_KERNEL", "GFP_ATOMIC|__GFP_NOFAIL", "'x'", "None", "3", "0xffffc90000000000",
            "0xfed00000", "70<<20", "2<<20"]  # fmt: skip
    kws = ["cpu", "caller", "node", "gfp", "align"]

    def call() -> str:
        args = [rng.choice(vals) for _ in range(rng.choice([0, 1, 2, 2, 3, 5]))]
        args += [f"{rng.choice(kws)}={rng.choice(vals)}" for _ in range(rng.choice([0, 0, 1]))]
        return f"{rng.choice(API_CALLS)}({', '.join(args)})"

    for i in range(EXAMPLES or 150):
        before = "; ".join(call() for _ in range(rng.choice([1, 2, 4])))
        cmd = rng.choice([["explain", call()], ["walk", rng.choice(["_", "_2", "0x0"])],
                          ["kmem", "-v"], ["kmem", rng.choice(["_", "_1", "0xffffc90000001000"])]])  # fmt: skip
        argv = [*cmd, "--before", before, "--ram", "64M", "--profile", rng.choice(["4.19", "5.4", "6.18"])]  # fmt: skip
        _check(capsys, "calls", i, argv)


def test_fuzz_board_logs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The board what-if on logs with failure lines of every era, damaged numbers and
    odd bytes, on every target architecture."""
    rng = random.Random(f"{SEED}:board")
    base = (BOARD / "dmesg").read_bytes().split(b"\n")
    lines = [
        b"[ 1.0] vmalloc_node_range for size %d failed: Address range restricted to 0x%x - 0x%x",
        b"[ 1.1] insmod: vmalloc error: size %d, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL)",
        b"[ 1.2] sh: vmalloc size %d allocation failure: failed to allocate pages, mode:0xdc0(GFP_KERNEL)",
        b"[ 1.3] x: page allocation failure: order:%d, mode:0x40cc0(GFP_KERNEL|__GFP_COMP)",
        b"vmap allocation for size %d failed: use vmalloc=<size> to increase size",
        b"m: vmalloc: allocation failure: %d bytes, mode:0xcc0(GFP_KERNEL)",
        b"m: vmalloc: allocation failure, allocated %d of %d bytes, mode:0xcc0(GFP_KERNEL)",
    ]  # fmt: skip
    nums = [0, 1, 4096, 8192, 4097, 1 << 20, 1 << 63, (1 << 64) - 1, 1 << 64, 10**30, 11, 64]
    log = tmp_path / "dmesg"
    for i in range(EXAMPLES or 60):
        text = list(base)
        for _ in range(rng.randrange(1, 4)):
            t = rng.choice(lines)
            t = t % tuple(rng.choice(nums) for _ in range(t.count(b"%")))
            if rng.random() < 0.2:
                k = rng.randrange(len(t))
                t = t[:k] + bytes([rng.randrange(256)]) + t[k + 1 :]
            text.insert(rng.randrange(len(text) + 1), t)
        log.write_bytes(b"\n".join(text))
        arch = rng.choice(["arm", "arm", "i386", "arm64", "x86_64"])
        argv = ["whatif", "--from-vmallocinfo", str(BOARD / "vmallocinfo"), "--dmesg", str(log),
                "--arch", arch, "--profile", rng.choice(["4.19", "5.4", "6.18"])]  # fmt: skip
        if arch in ("arm", "i386"):
            argv += ["--ram", rng.choice(["512M", "1G", "3G"])]
            if rng.random() < 0.5:
                argv += ["--vmalloc", rng.choice(["16M", "64M", "400M", "900M"])]
        _check(capsys, "board", i, argv)


def test_fuzz_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Cheap commands with bad option values: integers, sizes, paths."""
    rng = random.Random(f"{SEED}:options")
    cap = str(Path(__file__).resolve().parents[1] / "data" / "captures" / "netns2")
    ints = ["-1", "0", "1", "3", "99999999999999999999", "abc", "", "1e3", "0x10"]
    sizes = ["0", "-1G", "64", "4K", "16M", "1.5G", "abc", "1000000000G", "inf", ""]
    # (every path is below tmp_path: an output option must never write elsewhere)
    paths = [str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "empty"), "-", ""]
    outputs = [str(tmp_path / "no" / "out"), str(tmp_path), str(tmp_path / "out.json")]
    (tmp_path / "empty").write_bytes(b"")
    for i in range(EXAMPLES or 80):
        cmd = rng.choice(
            [
                ["explain", "vmalloc(8192)", "--cpus", rng.choice(ints)],
                ["explain", "vmalloc(8192)", "--ram", rng.choice(sizes)],
                ["walk", rng.choice([*ints, "_", "_9"]), "--ram", "64M"],
                ["kmem", rng.choice([*ints, "_0"]), "--ram", rng.choice(sizes + ["64M"] * 4)],
                ["report", cap, rng.choice(["--cpu", "--pid", "--since", "--until"]), rng.choice(ints)],
                ["report", rng.choice(paths)],
                ["report", cap, "--comm", rng.choice(["(", "[", "a{99999999999}", ".*", "\\"])],
                ["replay", cap, rng.choice(["--snapshot", "--end-snapshot"]), rng.choice(paths)],
                ["replay", cap, rng.choice(["--json", "--vmallocinfo-out"]), rng.choice(outputs)],
                ["whatif", cap, "--ram", rng.choice(sizes), "--samples", rng.choice(ints)],
                ["whatif", cap, "--arch", rng.choice(["arm", "i386"]), "--vmalloc", rng.choice(sizes)],
                ["tour", "--ops", rng.choice(["0", "1", "-1", "abc"]), "--cpus", rng.choice(ints)],
            ]
        )  # fmt: skip
        _check(capsys, "options", i, cmd)


# ---------------------------------------------------------------- report filters


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--comm", "a{99999999999}"], "not a regular expression"),  # OverflowError escaped
        (["--cpu", "\u00b2"], "not a CPU number"),  # isdigit() but int() refuses it
        (["--pid", "\u0663"], "not a pid"),
    ],
)
def test_report_filters_refuse_bad_values(
    capsys: pytest.CaptureFixture[str], option: list[str], says: str
) -> None:
    cap = Path(__file__).resolve().parents[1] / "data" / "captures" / "netns2"
    rc, _out, err = run(capsys, "report", str(cap), *option)
    assert says in one_line_error(rc, err)


def test_report_since_nan_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--since nan compared false with every timestamp: every event was printed."""
    cap = Path(__file__).resolve().parents[1] / "data" / "captures" / "netns2"
    with pytest.raises(SystemExit) as e:
        main(["report", str(cap), "--since", "nan"])
    assert e.value.code == 2
    assert "argument --since: not a time in seconds: 'nan'" in capsys.readouterr().err


# ---------------------------------------------------------------- the API


@pytest.mark.parametrize("profile", ["4.19", "5.4", "6.18"])
def test_free_vmap_area_noflush_refuses_areas_the_vmalloc_layer_owns(profile: str) -> None:
    """Kernel.free_vmap_area_noflush(addr) of a vmalloc'ed, vmap'ed or vm_map_ram
    area freed only the vmap_area: its vm_struct, PTEs and nr_vmalloc_pages stayed
    behind and check() failed from then on ("nr_vmalloc_pages 90 != 71 in areas")."""
    k = Kernel(profile, ram="64M")
    a = k.vmalloc(3 * 4096)
    pages = k.alloc_pages(2)
    m = k.vmap(pages)
    r = k.vm_map_ram(k.alloc_pages(1))
    bare = k.alloc_vmap_area(8192)
    for addr in (a, a + 4096, m, r):
        with pytest.raises(ValueError, match=r"holds (a vm_struct|vm_map_ram pages)"):
            k.free_vmap_area_noflush(addr)
        k.check()
    assert not isinstance(bare, int)
    k.free_vmap_area_noflush(bare.va_start)  # a bare area is still this call's to free
    k.vfree(a)
    k.check()


@pytest.mark.parametrize("profile", ["4.19", "5.4", "6.18"])
def test_free_vm_area_of_a_stale_area_is_refused_before_the_new_owner_loses_it(
    profile: str,
) -> None:
    """free_vm_area(vm) after vm was freed and its range reused by vmalloc: the
    model's remove_vm_area took the vmalloc'ed area away, then logged the BUG, and
    nr_vmalloc_pages no longer matched any area ("5717 != 5713 in areas")."""
    k = Kernel(profile, ram="64M")
    vm = k.get_vm_area(8192, 0x4)  # VM_IOREMAP-style reservation
    assert vm is not None
    k.free_vm_area(vm)
    k.vm_unmap_aliases()  # purge: the range is free again
    a = k.vmalloc(4096)
    k.free_vm_area(vm)  # stale: the kernel's BUG_ON(ret != area)
    assert "kernel BUG at mm/vmalloc.c:" in k.dmesg()
    assert "free_vm_area: remove_vm_area" in k.dmesg()
    assert k.find_vm_area(a) is not None
    k.check()
    k.vfree(a)
    k.check()


def test_sweep_empty_lists_and_explore_outputs_are_refused_up_front(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`sweep --profile ,,` (or --cpus/--vmalloc ,,) ran an empty grid and exited 0;
    `explore --png MISSING/x.png` failed only after the work."""
    cap = str(Path(__file__).resolve().parents[1] / "data" / "captures" / "netns2")
    for opt in (["--profile", ",,"], ["--cpus", ","], ["--vmalloc", ", ,"]):
        rc, _out, err = run(capsys, "sweep", cap, *opt)
        assert "no " in one_line_error(rc, err) and opt[0] in err
    rc, _out, err = run(capsys, "explore", "--tour", "--ops", "5", "--png", str(tmp_path / "no" / "x.png"))  # fmt: skip
    assert "--png" in one_line_error(rc, err) and "does not exist" in err
