"""Board inputs: dmesg failure lines of every era and the vmallocinfo-driven what-if.

The fixture tests/data/boards/rpi-5.4 (see its README) is laid out so the answers
follow by hand from the layout rules (tests/test_arch_arm.py) and first fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvmalloc.cli import main
from pyvmalloc.config import Machine
from pyvmalloc.report.board import board_whatif, parse_dmesg, read_board_vmallocinfo
from pyvmalloc.trace.snapshot import HashedAddressError

BOARD = Path(__file__).parent / "data" / "boards" / "rpi-5.4"
M = 1 << 20


def test_dmesg_v4_19_v5_4_wording():
    reqs = parse_dmesg(
        "[   25.104400] vmap allocation for size 8392704 failed: use vmalloc=<size> to increase size\n"
        "[   25.104431] modprobe: vmalloc: allocation failure: 8388608 bytes, mode:0x6000c0(GFP_KERNEL), nodemask=(null)\n"
        "[   25.104460] CPU: 2 PID: 311 Comm: modprobe Not tainted 4.19.97-v7+ #1294\n"
        "[   31.000001] vc_sm: vmalloc: allocation failure: 10000 bytes, mode:0xcc0(GFP_KERNEL), nodemask=(null)\n"
        "[   32.000001] insmod: vmalloc: allocation failure, allocated 8192 of 20480 bytes, mode:0xcc0(GFP_KERNEL)\n"
    )
    assert [(r.kind, r.size, r.area_size, r.comm, r.lines) for r in reqs] == [
        ("vmap", 8388608, 8392704, "modprobe", [1, 2]),
        # alone (the vmap warning is rate limited): PAGE_ALIGN(10000) + guard = 16384
        ("vmap", 10000, 16384, "vc_sm", [4]),
        ("pages", 20480, 24576, "insmod", [5]),
    ]
    assert reqs[0].era == "vmap allocation" and reqs[0].mode == "0x6000c0"


def test_dmesg_v5_13_and_v6_wording():
    reqs = parse_dmesg(
        [
            "vmalloc_node_range for size 16781312 failed: Address range restricted to 0xbf000000 - 0xbfe00000",
            "insmod: vmalloc error: size 16777216, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL), nodemask=(null),cpuset=/,mems_allowed=0",
            "modprobe: vmalloc size 40960 allocation failure: vm_struct allocation failed, mode:0xcc0(GFP_KERNEL)",
            "Dec  1 09:00:01 rpi kernel: [  12.3] kworker/1:2: vmalloc error: size 1048576, failed to allocate pages, mode:0xcc0(GFP_KERNEL)",
            "bpftool: vmalloc error: size 65536, page order 4, failed to allocate pages, mode:0xcc0(GFP_KERNEL)",
            "kworker/0:1: page allocation failure: order:4, mode:0x40cc0(GFP_KERNEL|__GFP_COMP)",
        ]
    )
    first = reqs[0]
    assert (first.era, first.vstart, first.vend, first.comm, first.size) == (
        "vmalloc_node_range",
        0xBF000000,
        0xBFE00000,
        "insmod",
        16777216,
    )
    assert [(r.kind, r.size, r.comm) for r in reqs[1:]] == [
        ("vmap", 40960, "modprobe"),
        ("pages", 1048576, "kworker/1:2"),
        ("pages", 65536, "bpftool"),
        ("pages", 65536, "kworker/0:1"),
    ]
    assert reqs[1].era == "vmalloc size ... allocation failure"


def test_dmesg_pairs_64k_page_lines_and_skips_noise():
    # arm64 with 64K pages (v6.2): PAGE_ALIGN(327680) + 64K guard = 393216
    reqs = parse_dmesg(
        [
            "[   64.181308] ipmi_ssif: IPMI SSIF Interface driver",
            "[   64.242492] vmap allocation for size 393216 failed: use vmalloc=<size> to increase size",
            "[   64.242499] systemd-udevd: vmalloc error: size 327680, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL), nodemask=(null),cpuset=/,mems_allowed=0-3",
        ]
    )
    assert [(r.size, r.area_size, r.comm, r.lines) for r in reqs] == [
        (327680, 393216, "systemd-udevd", [2, 3])
    ]
    assert parse_dmesg(["[ 1.0] Booting Linux on physical CPU 0x0"]) == []


def _board(profile, vmalloc, **kw):
    target = Machine(arch="arm", ram="1G", vmalloc_reserve=vmalloc, kernel_release=profile, **kw)
    return board_whatif(BOARD / "vmallocinfo", BOARD / "dmesg", target=target, profile=profile)


def test_board_whatif_v5_4_hand_checked():
    res = _board("5.4", "400M")
    # board: free = the 6 MiB gap 0xf8802000-0xf8e02000 (lazy area inside counts free)
    assert res.largest_free_before == 6 * M
    assert [o.addr for o in res.before] == [None, None, None]
    # target (5.4 rules): START 0xe7000000, areas relocated by -152 MiB except the static
    # pci_reserve_io mapping at 0xfee00000; the area of 0xff000000 lands at 0xf5800000,
    # ending 0xf5ffe000: free 0xf5ffe000-0xfee00000 = 0x8e02000
    assert res.placement.delta == 0xE7000000 - 0xF0800000
    assert res.largest_free_after == 0x8E02000
    # first fit: 8M+8K at 0xf5ffe000, then 16M+4K at 0xf67ff000; 0xfee00000-0xf7800000 left
    assert [o.addr for o in res.after] == [0xF5FFE000, 0xF67FF000, None]
    assert res.after[2].where.startswith("page shortage")
    assert res.largest_free_after_requests == 0xFEE00000 - 0xF7800000
    # smallest vmalloc= (8M steps, 32M margin): START + 0xeffe000 + 0x1803000 + 32M must stay
    # below 0xfee00000 -> START <= 0xec5ff000; START = 4G - SIZE -> SIZE = 320M
    assert res.smallest_vmalloc == 320 * M
    assert res.smallest_vmalloc_lowmem == 0xFF800000 - 320 * M - 0xC0000000
    assert any("relocated" in n for n in res.notes)


def test_board_whatif_v6_18_hand_checked():
    res = _board("6.18", "400M")
    # exact vmalloc=: START 0xe6800000 = 0xff800000 - 400M; the same offsets
    assert [o.addr for o in res.after[:2]] == [0xF57FE000, 0xF5FFF000]
    # START = 0xff800000 - SIZE <= 0xec5ff000 -> SIZE >= 306.004M -> 312M
    assert res.smallest_vmalloc == 312 * M
    data = res.as_json()
    assert data["requests_after"][0]["addr"] == "0xf57fe000"
    assert data["target"]["vmalloc_start"] == "0xe6800000"


def test_board_module_request_falls_back_with_plts(tmp_path):
    log = tmp_path / "dmesg"
    log.write_text(
        "vmalloc_node_range for size 16781312 failed: Address range restricted to 0xbf000000 - 0xbfe00000\n"
        "insmod: vmalloc error: size 16777216, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL)\n"
    )
    target = Machine(arch="arm", ram="1G", vmalloc_reserve="400M")
    res = board_whatif(BOARD / "vmallocinfo", log, target=target)
    # 16M does not fit the 14 MiB modules area; module PLTs: the vmalloc range, first fit
    assert (res.after[0].addr, res.after[0].where) == (0xF57FE000, "vmalloc range (module PLTs)")
    res = board_whatif(BOARD / "vmallocinfo", log, target=target.with_(module_plts=False))
    assert res.after[0].addr is None and res.smallest_vmalloc is None


def test_board_inputs_errors(tmp_path):
    hashed = tmp_path / "hashed"
    hashed.write_text("0x5d3e2a1b-0x0c4f3e2d    8192 of_iomap+0x38/0x48 phys=0x3f00b000 ioremap\n")
    with pytest.raises(HashedAddressError, match="kptr_restrict"):
        read_board_vmallocinfo(hashed)
    zeros = tmp_path / "zeros"
    zeros.write_text("0x00000000-0x00000000    8192 of_iomap+0x38/0x48 ioremap\n")
    with pytest.raises(HashedAddressError):
        read_board_vmallocinfo(zeros)
    low = tmp_path / "low"
    low.write_text("0xe7000000-0xe7002000    8192 of_iomap+0x38/0x48 ioremap\n")
    target = Machine(arch="arm", ram="1G")
    with pytest.raises(ValueError, match="--board-vmalloc"):
        board_whatif(low, None, target=target)
    # the board did run with vmalloc=400M (5.4 rules: START 0xe7000000)
    src = target.with_(vmalloc_reserve="400M", kernel_release="5.4")
    res = board_whatif(
        low, None, target=target.with_(kernel_release="5.4"), source=src, profile="5.4"
    )
    assert res.placement.delta == 0xF0800000 - 0xE7000000 and not res.placement.lost


def test_board_cli_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(
        [
            "whatif",
            "--from-vmallocinfo",
            str(BOARD / "vmallocinfo"),
            "--dmesg",
            str(BOARD / "dmesg"),
            "--arch",
            "arm",
            "--ram",
            "1G",
            "--vmalloc",
            "400M",
            "--profile",
            "5.4",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "vmalloc=320M" in text and "relocated" in text
    data = json.loads(out.read_text())
    assert data["smallest_vmalloc"] == 320 * M
    assert [r["addr"] for r in data["requests_after"]] == ["0xf5ffe000", "0xf67ff000", None]
    assert main(["whatif", "--arch", "arm"]) == 2  # neither a capture nor a vmallocinfo
    args = ["whatif", "--from-vmallocinfo", str(BOARD / "vmallocinfo"), "--arch", "arm"]
    assert main([*args, "--ram", "1G", "--json", "-"]) == 0
    # no requests: only the 32M margin, START + 0xeffe000 + 32M <= 0xfee00000 with
    # START = 0xff800000 - SIZE (6.18) -> SIZE >= 0x119fe000 -> 288M
    assert json.loads(capsys.readouterr().out)["smallest_vmalloc"] == 288 * M


def test_capture_whatif_from_vmallocinfo_on_arm(tmp_path):
    # --from-vmallocinfo with a capture: that snapshot is the starting state
    cap = Path(__file__).parent / "data" / "captures" / "mixed-spread"
    out = tmp_path / "w.json"
    rc = main(
        [
            "whatif",
            str(cap),
            "--from-vmallocinfo",
            str(cap / "vmallocinfo.end"),
            "--arch",
            "arm",
            "--ram",
            "1G",
            "--profile",
            "5.4",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    assert json.loads(out.read_text())["vmalloc_size"] == 240 * M


def test_board_whatif_on_i386(tmp_path):
    # i386, 2 GiB, 5.4: VMALLOC_START = 0xc0000000 + MAXMEM 0x373fe000 + 8M = 0xf7bfe000.
    info = tmp_path / "vmallocinfo"
    info.write_text("0xf7bfe000-0xfebfe000 117440512 foo+0x1/0x2 pages=28671 vmalloc\n")
    log = ["vmap allocation for size 33558528 failed: use vmalloc=<size> to increase size"]
    m = Machine(arch="i386", ram="2G", kernel_release="5.4")
    res = board_whatif(info, log, target=m.with_(vmalloc_reserve="256M"), profile="5.4")
    # vmalloc=256M: __VMALLOC_RESERVE 264M, START = 0xff3fe000 - 256M = 0xef3fe000; the
    # 112 MiB area moves down with it and the 32M+4K request follows it
    assert res.after[0].addr == 0xEF3FE000 + 112 * M
    # START + 112M + (32M + 4K) + 32M margin <= 0xff3fe000, START = 0xff3fe000 - SIZE
    # -> SIZE >= 176M + 4K -> 184M in 8 MiB steps
    assert res.smallest_vmalloc == 184 * M
    with pytest.raises(ValueError, match=r"kernel_release='6\.18'"):
        board_whatif(info, log, target=m, profile="6.18")


def test_board_whatif_ram_limited_board():
    # 512 MiB: all RAM is lowmem whatever vmalloc= (up to 496M), VMALLOC_START stays at
    # 0xe0800000 = high_memory + 8M, so the smallest vmalloc= is the smallest accepted
    target = Machine(arch="arm", ram="512M", kernel_release="5.4")
    res = board_whatif(BOARD / "vmallocinfo", BOARD / "dmesg", target=target, profile="5.4")
    assert target.vmalloc_start == 0xE0800000 and res.placement.delta == 0
    assert res.smallest_vmalloc == 16 * M
    assert any("default layout" in n for n in res.notes)
    # 1 GiB + guard never fits: 3G/1G gives 976 MiB at most; None after the largest
    big = ["vmap allocation for size 1073745920 failed: use vmalloc=<size> to increase size"]
    res = board_whatif(BOARD / "vmallocinfo", big, target=target, profile="5.4")
    assert res.smallest_vmalloc is None and res.after[0].addr is None


def _big_log(n: int, size: int = 64 * M) -> list[str]:
    """``n`` failed requests of ``size`` bytes, each logged by the 5.4 vmap warning
    (area: the size plus the guard page) and its warn_alloc line, with noise between."""
    out = []
    for i in range(n):
        out += [
            f"[ {i}.1] vmap allocation for size {size + 4096} failed: use vmalloc=<size> "
            "to increase size",
            f"[ {i}.1] insmod: vmalloc: allocation failure: {size} bytes, "
            "mode:0xcc0(GFP_KERNEL), nodemask=(null)",
            f"[ {i}.2] CPU: 0 PID: {i} Comm: insmod Not tainted 5.4.83-v7+ #1379",
        ]
    return out


def _count_tries(monkeypatch, lines, size_vmalloc="400M"):
    """Requests the what-if tries (every placement of a failed request, all candidate
    layouts together) for ``lines``."""
    from pyvmalloc.report import board

    tried = [0]
    real = board._try_requests

    def counting(*a, **kw):
        out = real(*a, **kw)
        tried[0] += len(out)
        return out

    monkeypatch.setattr(board, "_try_requests", counting)
    target = Machine(arch="arm", ram="1G", vmalloc_reserve=size_vmalloc, kernel_release="5.4")
    res = board_whatif(BOARD / "vmallocinfo", lines, target=target, profile="5.4")
    return res, tried[0]


@pytest.mark.parametrize("size", [64 * M, M, 4096])
def test_board_log_with_many_failures_costs_work_linear_in_the_log(monkeypatch, size):
    """A log of thousands of failures (a leak that fills vmalloc makes every later
    request fail) once cost ~100 full passes over the requests, one per candidate
    vmalloc=. Candidates whose free space cannot hold the requests plus the margin,
    or that have no margin block to begin with, are now refused without a pass, and a
    pass stops at the first request that fails: the requests tried grow with the log
    (1x vs 8x), a handful of passes each (board as read, target, few candidates)."""
    res1, t1 = _count_tries(monkeypatch, _big_log(40, size))
    res8, t8 = _count_tries(monkeypatch, _big_log(320, size))
    assert len(res1.requests) == 40 and len(res8.requests) == 320
    assert t1 <= 6 * 40 and t8 <= 6 * 320, (t1, t8)
    assert t8 <= 8 * t1 * 1.25, (t1, t8)


def test_board_many_64m_failures_by_hand(monkeypatch):
    """45 failed 64 MiB requests (area 0x4001000 each): the board as read has a 6 MiB
    gap, so none fits; the 400M target's free block 0xf5ffe000-0xfee00000 (0x8e02000)
    takes two, first fit: 0xf5ffe000 and 0xf9fff000 (ending 0xfe000000); 45 areas need
    2.8 GiB, more than any vmalloc= gives, so no candidate is tried at all."""
    res, tried = _count_tries(monkeypatch, _big_log(45))
    assert [o.addr for o in res.before] == [None] * 45
    assert [o.addr for o in res.after] == [0xF5FFE000, 0xF9FFF000] + [None] * 43
    assert res.smallest_vmalloc is None
    assert tried == 2 * 45  # board as read, target; no candidate vmalloc=


def test_board_text_lists_the_first_rows_and_counts_the_rest(tmp_path, capsys):
    from pyvmalloc.report.board import TABLE_ROWS

    log = tmp_path / "dmesg"
    log.write_text("\n".join(_big_log(TABLE_ROWS + 5)) + "\n")
    args = ["whatif", "--from-vmallocinfo", str(BOARD / "vmallocinfo"), "--dmesg", str(log)]
    assert (
        main([*args, "--arch", "arm", "--ram", "1G", "--vmalloc", "400M", "--profile", "5.4"]) == 0
    )
    text = capsys.readouterr().out
    # log lines 1,2 / 4,5 / ...: request i on lines 3i+1 and 3i+2
    rows = [ln for ln in text.splitlines() if "insmod" in ln and "67,108,864" in ln]
    assert len(rows) == TABLE_ROWS
    assert f"{3 * (TABLE_ROWS - 1) + 1},{3 * (TABLE_ROWS - 1) + 2}" in rows[-1]
    assert (
        f"5 more failed requests not shown; of all {TABLE_ROWS + 5}, 0 fit the board as "
        "read and 2 fit the target (--json OUT lists every one)"
    ) in " ".join(text.split())
