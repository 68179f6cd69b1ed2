"""The explorer's data, against values derived by hand from the kernel's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvmalloc.cli import main
from pyvmalloc.kernel import Kernel
from pyvmalloc.report.explore import (
    GUARD_KNOWN,
    Timeline,
    build_replay_data,
    build_tour_data,
    snapshot_state,
    state_at,
)
from pyvmalloc.trace.replay import load_capture, replay
from pyvmalloc.trace.snapshot import parse_vmallocinfo

from .conftest import kernel_busy_counts

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
P = 4096


@pytest.fixture
def three() -> Kernel:
    """vmalloc(8192), vmalloc(4096), ioremap(phys, 8192) on a fresh 6.18 model.

    By the kernel's rules (__get_vm_area_node adds a guard page; vmalloc asks for
    align 1, ioremap for 1 << get_count_order(size) = 8 KiB; the lowest match wins):
    [vs, vs+3p) 2 pages + guard, [vs+3p, vs+5p) 1 page + guard, a one-page hole at
    vs+5p (8 KiB alignment), [vs+6p, vs+9p) the ioremap, then free up to VMALLOC_END.
    """
    k = Kernel("6.18", cpus=2)
    k.vmalloc(8192, caller="first+0x0/0x10")
    k.vmalloc(4096, cpu=1)
    k.ioremap(0xFE000000, 0x2000, caller="test_ioremap+0x0/0x10")
    return k


def test_three_areas_records(three: Kernel) -> None:
    k = three
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    tl = Timeline()
    tl.observe(k)
    recs = tl.as_json()["init"]
    busy = sorted(r for r in recs if r[0] == "b")
    free = sorted(r for r in recs if r[0] == "f")
    # [kind, start, end, node, caller, vm_flags, va_flags, nr_pages, guard] in pages
    assert [(r[1], r[2], r[7], r[8]) for r in busy] == [
        (0, 3, 2, GUARD_KNOWN),
        (3, 5, 1, GUARD_KNOWN),
        (6, 9, 0, GUARD_KNOWN),
    ]
    # All three start in the first 64 KiB zone: vmap_node[0]'s busy tree.
    assert {r[3] for r in busy} == {0}
    # VM_ALLOC, VM_ALLOC, VM_IOREMAP; the second was allocated on CPU 1, node 1.
    assert [r[5] for r in busy] == [0x2, 0x2, 0x1]
    assert [r[6] >> 8 for r in busy] == [1, 2, 1]
    strings = tl.strings
    assert [strings[r[4]] for r in busy] == ["first+0x0/0x10", "", "test_ioremap+0x0/0x10"]
    # Free blocks clipped to the vmalloc range: the hole and the rest.
    assert [(r[1], r[2]) for r in free] == [(5, 6), (9, (ve - vs) // P)]
    assert tl.frag["count"] == [2]
    assert tl.frag["largest"] == [(ve - vs) // P - 9]
    assert tl.frag["used"] == [3 + 2 + 3]


def test_lazy_free_record(three: Kernel) -> None:
    k = three
    vs = k.VMALLOC_START
    tl = Timeline()
    tl.observe(k)
    k.vfree(vs + 3 * P, cpu=1)
    tl.observe(k)
    added, removed = tl.diffs[0]
    # The area leaves the busy tree for vmap_node[1]'s lazy list (allocated on CPU 1).
    assert [r[:3] for r in removed] == [["b", 3, 5]]
    assert added == [["l", 3, 5, 1]]
    assert tl.frag["lazy"] == [0, 2]
    tl.check_against(k)


def test_search_matches_hand_derived_descent(three: Kernel) -> None:
    k = three
    vs, ve = k.VMALLOC_START, k.VMALLOC_END
    # One page: the hole at vs+5p is the lowest block where it fits (the block below
    # VMALLOC_START cannot hold it above vstart).
    s = snapshot_state(k, window=(0, 0), search=(P, 1, vs, ve, 0))["search"]
    assert s["found"] == [f"{vs + 5 * P:#x}", f"{vs + 6 * P:#x}"]
    assert s["addr"] == f"{vs + 5 * P:#x}"
    assert s["steps"][-1][4].endswith("fits")
    assert s["pool"] is None  # no pooled area of one page yet
    # Two pages do not fit the hole: the block after the ioremap.
    s = snapshot_state(k, window=(0, 0), search=(2 * P, 1, vs, ve, 0))["search"]
    assert s["addr"] == f"{vs + 9 * P:#x}"
    # The descent starts at the root of free_vmap_area_root, which is black.
    tree = snapshot_state(k, window=(0, 0), tree=True)["tree"]
    assert s["steps"][0][:2] == tree[0][:2]
    assert tree[0][3] is False
    # And the allocator agrees with the walk.
    assert k.vmalloc(4096) == vs + 9 * P


def test_tree_nodes_are_the_free_list_in_order(three: Kernel) -> None:
    tree = snapshot_state(three, window=(0, 0), tree=True)["tree"]

    def inorder(i: int) -> list[str]:
        if i < 0:
            return []
        n = tree[i]
        return [*inorder(n[4]), n[0], *inorder(n[5])]

    free = [f"{va.va_start:#x}" for va in three.vmap_space.free_areas()]
    assert inorder(0) == free
    # subtree_max_size of the root is the largest free block (the one above the range).
    sizes = [va.va_end - va.va_start for va in three.vmap_space.free_areas()]
    assert int(tree[0][2], 16) == max(sizes)


def test_pool_records_lifo_order() -> None:
    """A purge puts lazily freed areas at the head of their node's exact-size pool."""
    k = Kernel("6.18", cpus=2, deferred_work="manual")
    vs = k.VMALLOC_START
    addrs = [k.vmalloc(4096) for _ in range(3)]  # 2 pages each, cpu 0 -> node 0
    tl = Timeline()
    tl.observe(k)
    for a in addrs:
        k.vfree(a)
    k.vmap_space.purge_vmap_area_lazy()
    tl.observe(k)
    tl.check_against(k)
    pooled = [r for r in state_at(tl.as_json() | {"events": [0, 1]}, 1).values() if r[0] == "p"]
    if not pooled:  # the profile merged them instead: nothing to check here
        pytest.skip("no pool refill in this profile")
    # purge_vmap_node walks the node's list in address order, list_add()ing each at
    # the head: the highest address ends up first (the next one handed out).
    head_first = [r[1] for r in sorted(pooled, key=lambda r: -r[5])]
    assert head_first == sorted(((a - vs) // P for a in addrs), reverse=True)
    assert {(r[3], r[4]) for r in pooled} == {(0, 1)}  # vmap_node[0].pool[1]: 2 pages


@pytest.fixture(scope="module")
def churn() -> dict:
    return build_replay_data(CAPTURES / "churn-cpu0")


def test_replay_timeline_follows_the_trace(churn: dict) -> None:
    _, counts = kernel_busy_counts(CAPTURES / "churn-cpu0")
    assert len(churn["events"]) == len(counts)
    # Busy areas after each event, by the kernel's trace: +1 per allocation, -1 per
    # lazy free; the records must follow (spot checks along the timeline).
    for i in sorted({0, 1, len(counts) // 3, len(counts) // 2, len(counts) - 1}):
        busy = [r for r in state_at(churn, i).values() if r[0] == "b"]
        assert len(busy) == counts[i], i


def test_replay_matches_its_json(churn: dict) -> None:
    trace, snap, meta = load_capture(CAPTURES / "churn-cpu0")
    res = replay(
        trace, snap, meta=meta, end_snapshot=CAPTURES / "churn-cpu0" / "vmallocinfo.end"
    ).as_json()
    got = churn["replay"]["counts"]
    for key in ("allocs_compared", "allocs_matched", "purges", "end_free_blocks_in_range"):
        assert got[key] == res[key]
    pct = f"{100 * res['agreement']:.2f} %"
    assert churn["replay"]["headline"].endswith(
        f"{res['allocs_matched']}/{res['allocs_compared']} allocations agree ({pct})"
    )
    assert [(m["line"], m["kernel"], m["model"]) for m in churn["mismatches"]] == [
        (m["line"], f"{m['kernel']:#x}", f"{m['model']:#x}" if m["model"] else None)
        for m in res["mismatches"]
    ]
    assert all(m["cause"] for m in churn["mismatches"])
    # The chart's last point is what replay reports at the end.
    assert churn["frag"]["count"][-1] == res["end_free_blocks_in_range"]
    assert churn["frag"]["largest"][-1] == res["end_largest_free_in_range"] // P


@pytest.mark.parametrize("profile", ["5.4", "4.19"])
def test_older_profiles_follow_the_trace(profile: str) -> None:
    """Busy areas follow the trace under every profile (4.19 keeps lazy areas in its
    busy tree: they must be listed once, as lazily freed)."""
    cap = CAPTURES / "mixed-spread"
    data = build_replay_data(cap, profile=profile)
    _, counts = kernel_busy_counts(cap)
    for i in (0, len(counts) // 2, len(counts) - 1):
        recs = state_at(data, i).values()
        assert sum(r[0] == "b" for r in recs) == counts[i]
    kinds = [r[0] for r in data["init"]]
    assert kinds.count("l") == len(parse_vmallocinfo(cap / "vmallocinfo").unpurged)


def test_descents_predict_the_models_choice(churn: dict) -> None:
    """Each stored descent (pool head if it hits, else the tree walk) ends where the
    model's allocator went: the kernel's address, or the model's own at a mismatch."""
    by_index = {m["index"]: m for m in churn["mismatches"]}
    assert churn["walks"]
    for key, w in churn["walks"].items():
        i = int(key)
        ev = churn["events"][i]
        assert ev[0] == "alloc"
        got = w["pool"]["head"] if w["pool"] and w["pool"]["hit"] else w["addr"]
        want = by_index[i]["model"] if i in by_index else ev[3]
        assert got == want, (i, w)


@pytest.mark.parametrize("profile", ["6.18", "4.19"])
def test_timeline_equals_full_read_after_every_event(profile: str) -> None:
    """The windowed diffs never drift from a full read of the model (a small capture;
    4.19 has no free tree, its free blocks are the gaps between areas)."""
    trace, snap, meta = load_capture(CAPTURES / "mixed-spread")
    tl = Timeline()

    def observer(i: int, ev: object, k: Kernel) -> None:
        tl.observe(k, ev)
        tl.check_against(k)

    replay(trace, snap, meta=meta, observer=observer, profile=profile)
    assert tl.full_reads < len(tl.diffs)  # most events took the windowed path


def test_tour_data() -> None:
    data = build_tour_data(ops=40, seed=3)
    assert len(data["calls"]) == len(data["events"])
    first = data["calls"][0]["tree"]
    assert first[0].startswith(data["events"][0][3])  # the root is the call itself

    def names(node: list) -> list[str]:
        return [node[0].split("(")[0], *(n for c in node[3] for n in names(c))]

    assert "alloc_vmap_area" in names(first)
    walk = data["walks"]["0"]
    assert walk["request"][1] >= 1
    assert walk["addr"] == data["events"][0][4]  # the descent found where it went


def test_explain_mode_hand_derived() -> None:
    """vmalloc(8192) at vs, vmalloc(4096) at vs+3p, vfree of the first (lazy, so still
    unusable): vmalloc(20000) needs 5 pages + guard and lands at vs+5p."""
    data = build_tour_data(
        calls=["vmalloc(8192)", "vmalloc(4096)", "vfree(_1)", "vmalloc(20000, cpu=1)"]
    )
    vs = int(data["meta"]["vmalloc_start"], 16)
    assert data["start"] == 3
    assert data["events"][3][4] == f"{vs + 5 * P:#x}"
    walk = data["walks"]["3"]
    assert walk["request"][:2] == [6 * P, 1]
    assert walk["addr"] == f"{vs + 5 * P:#x}"
    recs = state_at(data, 3)
    assert sorted((r[0], r[1], r[2]) for r in recs.values() if r[0] != "f") == [
        ("b", 3, 5),
        ("b", 5, 11),
        ("l", 0, 3),
    ]


def test_cli_writes_page_and_png(tmp_path: Path) -> None:
    out = tmp_path / "tour.html"
    png = tmp_path / "tour.png"
    assert main(["explore", "--tour", "--ops", "30", "-o", str(out), "--png", str(png)]) == 0
    text = out.read_text()
    assert "<script" in text and "http://" not in text and "https://" not in text
    payload = text.split('id="explore-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(payload)["mode"] == "tour"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explore", "-o", "x.html"], "CAPTURE directory, --tour or --call"),
        (["explore", "--tour"], "nothing to write"),
        (["explore", "/nonexistent", "-o", "x.html"], "not a capture directory"),
        (["explore", "--tour", "-o", "x.html", "--profile", "9.9"], "9.9"),
        (["explore", "--tour", "-o", "x.html", "--policy", "nocolon"], "unknown placement"),
        (["explore", "--tour", "-o", "x.html", "--policy", "no_such_mod:X"], "cannot import"),
        (["explore", "--tour", "-o", "x.html", "--ops", "0"], "--ops"),
        (["explore", "--call", "vmalloc(1); vfree(_)", "-o", "x.html"], "exactly one call"),
        (["explore", "--call", "os.system(1)", "-o", "x.html"], "not a call"),
    ],
)
def test_cli_errors(argv: list[str], message: str, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors (--profile's choices)
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_policy_passes_through(tmp_path: Path) -> None:
    """--policy names a placement policy the model knows (docs/policy.md)."""
    data = build_replay_data(CAPTURES / "mixed-spread", policy="best-fit")
    assert data["walks"] == {} and "best-fit" in data["walk_note"]
    assert data["replay"]["counts"]["allocs_compared"] > 0
    out = tmp_path / "t.html"
    assert main(["explore", "--tour", "--ops", "10", "--policy", "best-fit", "-o", str(out)]) == 0
