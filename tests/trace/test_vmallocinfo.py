"""Tests of the /proc/vmallocinfo parser and the 6.x lazy-node inference."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvmalloc.errors import InputError
from pyvmalloc.trace.snapshot import (
    HashedAddressError,
    VmallocInfoError,
    addr_node,
    infer_lazy_nodes,
    lazy_runs,
    parse_vmallocinfo,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = sorted(p for p in (DATA / "captures").iterdir() if p.is_dir())

# 6.18 lines as read on the live machine (real addresses, kptr_restrict=1).
LIVE = """\
0xffffc90000000000-0xffffc90000005000   20480 irq_init_percpu_irqstack+0xca/0x100 vmap
0xffffc90000005000-0xffffc90000007000    8192 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x00000000000a0000 ioremap
0xffffc9000000c000-0xffffc90000011000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4
0xffffc900005ce000-0xffffc900007d0000 2105344 htab_map_alloc+0x2e4/0x5a0 pages=513 vmalloc vpages N0=513
0xffffe8ffffc00000-0xffffe8ffffe00000 2097152 pcpu_get_vm_areas+0x0/0x1050 vmalloc
0xffffffffc0000000-0xffffffffc0201000 2101248 bpf_prog_pack_alloc+0x28b/0x3a0 pages=512 vmalloc N0=512
0xffffc900000c4000-0xffffc900000c9000   20480 unpurged vm_area
"""

# 5.4-era text (hand-written in the 5.4 format): no 'sparse', module callers, a
# vm_map_ram block, global address order, then the lazy list newest first.
V54 = """\
0xffffc90000000000-0xffffc90000002000    8192 acpi_os_map_iomem+0x1ac/0x1c0 phys=0x00000000fed00000 ioremap
0xffffc90000002000-0xffffc90000004000    8192 bpf_prog_alloc_no_stats+0x4c/0xe0 pages=1 vmalloc N0=1
0xffffc90000004000-0xffffc90000006000    8192 e1000_probe+0x3fa/0xd20 [e1000] pages=1 vmalloc N1=1
0xffffc90000010000-0xffffc90000050000  262144 vm_map_ram
0xffffc90000060000-0xffffc90000063000   12288 dma_direct_alloc+0x12/0x20 pages=2 vmap user dma-coherent N0=2
0xffffc90000054000-0xffffc90000058000   16384 unpurged vm_area
0xffffc90000070000-0xffffc90000072000    8192 unpurged vm_area
0xffffc90000050000-0xffffc90000052000    8192 unpurged vm_area
"""


def test_live_lines() -> None:
    info = parse_vmallocinfo(LIVE)
    a, b, c, d, _e, f, g = info.entries
    assert (a.start, a.end, a.size, a.kind) == (0xFFFFC90000000000, 0xFFFFC90000005000, 20480, "vm")
    assert a.caller == "irq_init_percpu_irqstack+0xca/0x100" and a.flags == {"vmap"}
    assert a.pages == 0 and a.phys is None and a.numa == {}
    assert b.phys == 0xA0000 and b.flags == {"ioremap"}
    assert c.pages == 4 and c.flags == {"vmalloc"} and c.numa == {0: 4} and not c.vpages
    assert d.vpages and d.pages == 513
    assert f.start == 0xFFFFFFFFC0000000
    assert g.kind == "unpurged" and g.caller is None and g.line == 7
    assert info.unpurged == [g] and len(info.busy) == 6


def test_5_4_format() -> None:
    info = parse_vmallocinfo(V54)
    assert not info.has_sparse
    e = info.entries[2]
    assert e.caller == "e1000_probe+0x3fa/0xd20" and e.module == "e1000"
    assert e.numa == {1: 1}
    assert info.entries[3].kind == "vm_map_ram" and info.entries[3].size == 262144
    assert info.entries[4].flags == {"vmap", "user", "dma-coherent"}
    assert info.busy_order_problems(1) == []  # global ascending order
    # 5.4's lazy list is newest first, so it has more descents than 1 node allows.
    assert [len(r) for r in lazy_runs(info)] == [2, 1]
    with pytest.raises(ValueError, match=r"not a 6\.x snapshot"):
        infer_lazy_nodes(info, 1)


def test_sparse_flag_order() -> None:
    info = parse_vmallocinfo(
        "0xffffea0000000000-0xffffea0000201000 2101248 vmemmap_populate+0x1/0x2 sparse vmalloc\n"
    )
    assert info.has_sparse and info.entries[0].flags == {"sparse", "vmalloc"}
    with pytest.raises(VmallocInfoError, match="out of order"):
        parse_vmallocinfo(
            "0xffffea0000000000-0xffffea0000201000 2101248 x+0x1/0x2 vmalloc sparse\n"
        )


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_real_snapshots(cap: Path) -> None:
    names = [n for n in ("vmallocinfo", "vmallocinfo.end") if (cap / n).exists()]
    assert names[0] == "vmallocinfo"  # the end snapshot is optional (--end-snapshot)
    for name in names:
        info = parse_vmallocinfo(cap / name)
        assert info.path == str(cap / name)
        assert len(info.busy) > 200
        # 6.18 with 2 vmap nodes: busy lines grouped by 64 KiB zone parity.
        assert info.busy_order_problems(2) == []
        assert info.busy_order_problems(1) != []  # and not globally sorted
        nodes = infer_lazy_nodes(info, 2)
        assert len(nodes) == len(info.unpurged)
        assert nodes == sorted(nodes)
        for e in info.entries:
            assert e.end - e.start == e.size


def test_node_order_problem_reported() -> None:
    text = (
        "0xffffc90000010000-0xffffc90000012000    8192 a+0x1/0x2 vmap\n"  # zone 1 → node 1
        "0xffffc90000000000-0xffffc90000002000    8192 a+0x1/0x2 vmap\n"  # node 0 after node 1
    )
    (problem,) = parse_vmallocinfo(text).busy_order_problems(2)
    assert problem.startswith("line 2: node 0 area after node 1")
    assert addr_node(0xFFFFC90000010000, 2) == 1


def test_infer_lazy_nodes_runs_and_ambiguity() -> None:
    def lazy(*starts: int) -> str:
        return "".join(f"0x{s:016x}-0x{s + 0x2000:016x}    8192 unpurged vm_area\n" for s in starts)

    base = 0xFFFFC90000000000
    info = parse_vmallocinfo(lazy(base + 0x5000, base + 0x9000, base + 0x1000, base + 0x3000))
    assert infer_lazy_nodes(info, 2) == [0, 0, 1, 1]
    # One ascending run: node 0 or node 1 (or split) — documented convention: node 0.
    info = parse_vmallocinfo(lazy(base + 0x1000, base + 0x9000))
    assert infer_lazy_nodes(info, 2) == [0, 0]
    assert infer_lazy_nodes(parse_vmallocinfo(LIVE), 2) == [0]
    with pytest.raises(ValueError):
        infer_lazy_nodes(info, 0)


def test_hashed_addresses_refused_real_sample() -> None:
    with pytest.raises(HashedAddressError) as ei:
        parse_vmallocinfo(DATA / "vmallocinfo_hashed.txt")
    msg = str(ei.value)
    assert ei.value.line == 1 and "vmallocinfo_hashed.txt:1:" in msg
    assert "kptr_restrict=1" in msg and "pyvmalloc capture" in msg


def test_zeroed_addresses_refused() -> None:
    with pytest.raises(HashedAddressError):
        parse_vmallocinfo("0x0000000000000000-0x0000000000000000    8192 a+0x1/0x2 vmap\n")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0xffffc90000000000-0xffffc90000002000    4096 a+0x1/0x2 vmap", "end - start = 8192"),
        ("ffffc90000000000-0xffffc90000002000    8192 a+0x1/0x2 vmap", "address range"),
        ("0xffffc90000000000-0xffffc90000002000    8k a+0x1/0x2 vmap", "size is not"),
        ("0xffffc90000000000-0xffffc90000002000    8192 a+0x1/0x2 vmap bogus", "unknown word"),
        ("0xffffc90000000000-0xffffc90000002000    8192 a+0x1/0x2 vmalloc pages=1", "misplaced"),
        ("0xffffc90000000000-0xffffc90000002000    8192 unpurged", "unexpected word"),
        ("0xffffc90000000000", "expected"),
    ],
)
def test_malformed_lines(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "vi"
    f.write_text(LIVE.splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(VmallocInfoError) as ei:
        parse_vmallocinfo(f)
    assert ei.value.line == 2 and ei.value.path == str(f)
    assert str(ei.value).startswith(f"{f}:2: ") and message in str(ei.value)


# ---------------------------------------------------------------- hostile input (issue 11)

A = "0xffffc90000010000-0xffffc90000013000   12288 foo+0x1/0x2 pages=2 vmalloc N0=2"
B = "0xffffc90000020000-0xffffc90000022000    8192 bar+0x1/0x2 pages=1 vmalloc N0=1"
U = "0xffffc90000030000-0xffffc90000032000    8192 unpurged vm_area"


def _bad(lines: list[str], tmp_path: Path) -> str:
    f = tmp_path / "vmallocinfo"
    f.write_text("\n".join(lines) + "\n", newline="")
    with pytest.raises(InputError) as ei:
        parse_vmallocinfo(f)
    assert isinstance(ei.value, VmallocInfoError)
    return str(ei.value).removeprefix(str(f))


@pytest.mark.parametrize(
    ("lines", "where", "says"),
    [
        ([A, B, A], ":3:", "the same area as line 1"),
        ([A, B, B.replace("bar", "baz")], ":3:", "the same area as line 2"),
        (
            [
                A,
                B,
                A.replace("13000   12288", "12000    8192").replace("2 vmalloc N0=2", "1 vmalloc"),
            ],
            ":3:",
            "overlapping line 1",
        ),
        (
            [A, B, "0xffffc90000012000-0xffffc90000014000    8192 unpurged vm_area"],
            ":3:",
            "overlapping line 1",
        ),
        ([U, A, "0xffffc90000030000-0xffffc90000031000    4096 vm_map_ram"], ":3:", "overlapping"),
        ([A, U, U], ":3:", "same area"),
    ],
)
def test_overlapping_areas_refused(tmp_path: Path, lines: list[str], where: str, says: str) -> None:
    msg = _bad(lines, tmp_path)
    assert msg.startswith(where) and says in msg and "never overlap" in msg


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (A.replace("pages=2", "pages=4"), "spans 3 pages"),
        (A.replace("pages=2", "pages=" + "9" * 5000), "misplaced or malformed"),
        (A.replace("12288", "1" + "0" * 5000), "size is not a decimal"),
        (A.replace("12288", "\u0661\u0662\u0662\u0668\u0668"), "size is not a decimal"),
        (A.replace("N0=2", "N1024=2"), "MAX_NUMNODES"),
        (A.replace("N0=2", "N1=1 N0=1"), "ascending"),
        (A.replace("N0=2", "N0=2 N1=0"), "only nodes holding"),
        (A.replace("vmalloc", "phys=0x" + "f" * 17 + " vmalloc"), "misplaced or malformed"),
        (A.replace(" pages", "\x0bpages"), "unexpected word"),
    ],
)
def test_impossible_lines(tmp_path: Path, line: str, says: str) -> None:
    msg = _bad([B, line], tmp_path)
    assert msg.startswith(":2:") and says in msg
    assert "the kernel" in msg


def test_line_numbers_split_only_at_newline(tmp_path: Path) -> None:
    f = tmp_path / "vmallocinfo"
    f.write_text(A + "\n" + B.replace("bar+0x1/0x2", "bar\x85x") + "\n", newline="")
    with pytest.raises(InputError, match=r"vmallocinfo:2: unexpected word 'bar\\x85x'"):
        parse_vmallocinfo(f)
    info = parse_vmallocinfo(A + "\n\n" + B + "\n")
    assert [e.line for e in info.entries] == [1, 3]


def test_not_utf8_and_gzip_damage(tmp_path: Path) -> None:
    import gzip

    f = tmp_path / "vmallocinfo"
    f.write_bytes((A + "\n").encode() + b"0x\xff\n")
    with pytest.raises(InputError, match=r"vmallocinfo:2: not UTF-8 text \(byte 0xff\)"):
        parse_vmallocinfo(f)
    g = tmp_path / "v.gz"
    g.write_bytes(b"")
    with pytest.raises(InputError, match="empty file, not gzip"):
        parse_vmallocinfo(g)
    g.write_bytes(gzip.compress((A + "\n").encode())[:-9])
    with pytest.raises(InputError, match=r"v\.gz: cannot read"):
        parse_vmallocinfo(g)


def test_symlink_in_capture_dir_refused(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    (tmp_path / "cap").mkdir()
    (tmp_path / "cap" / "vmallocinfo").symlink_to(secret)
    with pytest.raises(InputError) as ei:
        parse_vmallocinfo(tmp_path / "cap")
    assert "symbolic link" in str(ei.value) and "$6$" not in str(ei.value)


def test_too_many_lazy_runs_is_an_input_error() -> None:
    info = parse_vmallocinfo(V54, path="v54")
    with pytest.raises(InputError, match=r"^v54:8: 2 ascending runs"):
        infer_lazy_nodes(info, 1)


def test_long_line_linear() -> None:
    import time

    for text in (A + " " + "N0=1 " * 200_000, "0x" + "f" * 1_000_000, A + "\t" * 1_000_000 + "x"):
        t0 = time.perf_counter()
        with pytest.raises(InputError):
            parse_vmallocinfo(text + "\n")
        assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize(
    ("line", "cls", "says"),
    [
        ("0x0000000000000000-0x0000000000002000    8192 vm_map_ram", HashedAddressError, "hashed"),
        ("0x0000000000001000-0x0000000000003000    8192 vm_map_ram", HashedAddressError, "hashed"),
        (
            "0x0000700000001000-0x0000700000003000    8192 vm_map_ram",
            VmallocInfoError,
            "kernel half",
        ),
        ("0x00000000-0x00002000    8192 vm_map_ram", VmallocInfoError, "PAGE_OFFSET"),
        ("0x3ffff000-0x40001000    8192 vm_map_ram", VmallocInfoError, "PAGE_OFFSET"),
        ("0xf8000000-0xf8002000    8192 vm_map_ram\n" + B, VmallocInfoError, "one width"),
    ],
)
def test_addresses_the_kernel_cannot_hold(line: str, cls: type, says: str) -> None:
    """Address 0 or a user-half address would reach the replay model as an area it
    cannot place (issue 11: InvariantError 'cannot claim 0x0-0x2000')."""
    with pytest.raises(cls, match=says):
        parse_vmallocinfo(line + "\n")
