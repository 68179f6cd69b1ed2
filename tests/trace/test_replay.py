"""Replays of real 6.18 captures from this machine (tests/data/captures).

The expected values are the kernel's own: every address in the trace was chosen by
the real kernel; the model must reach the same choice from the snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvmalloc.cli import main
from pyvmalloc.trace.replay import load_capture, replay

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
# Drained captures of new kinds on which the replay is below these targets yet; their
# floors and the unmet targets (strict xfail) are in tests/test_captures_fresh.py.
# mix3: causes of 2-4 mismatches (overlapping purges with helpers); forkbomb: a node of
# a big purge finishes early and the model's split of its pages rests on guessed nodes
# (nr_lazy differs for 21 frees); both are exact where kstate.json gives the nodes.
# bursts (730 allocations, 98.63 %): 8 tree-shape and pool one-offs, 2 purge races;
# sng-nlproc (90.41 %): the nodes of 3,000 areas older than the snapshot, purged in the
# trace, are guesses (exact with kstate.json: 99.97 %; tests/test_captures_fresh.py).
BELOW_TARGET = {
    "bpfjit-busy", "busy60", "mixed2", "percpu", "mix3", "forkbomb", "bursts", "sng-nlproc"
}  # fmt: skip
DRAINED = sorted(
    p
    for p in CAPTURES.iterdir()
    if p.is_dir() and "nodrop" not in p.name and p.name not in BELOW_TARGET
)


@pytest.mark.parametrize("capture", DRAINED, ids=lambda p: p.name)
def test_drained_captures_agree_at_least_99_percent(capture):
    trace, snap, meta = load_capture(capture)
    assert meta["drop_caches"] is True
    res = replay(trace, snap, profile="6.18", meta=meta)
    # Allocations between the snapshot markers are checked against it, not compared.
    window = res.window_applied + res.window_reflected
    count = meta["event_counts"]["alloc_vmap_area"]
    assert count - res.skipped_before_snapshot - window <= res.allocs_compared <= count
    if res.allocs_compared >= 500:
        assert res.agreement >= 0.99, res.mismatches[:3]
    # Small captures (netns2, duration30: 97-156 allocations) have a few tree-shape
    # one-offs each. No hidden-state cause repeats; a purge in flight (a race) costs
    # at most a few: each allocation racing a refill is its own race, and a decay not
    # yet in the kernel's tree is held out of the model's (threads-long: 14 -> 11
    # races in one purge, none sharing a cause with more than one other).
    for c in res.causes:
        assert c["mismatches"] == 1 or c["class"] == "race", c
        assert c["mismatches"] <= 3, c
    # The model's lazy accounting follows the kernel's nr_lazy at every free.
    assert res.lazy_drift == 0
    assert res.frees_unknown == 0
    assert res.purges == meta["event_counts"]["purge_vmap_area_lazy"]


def test_all_drained_captures_agree_together():
    matched = compared = 0
    for capture in DRAINED:
        trace, snap, meta = load_capture(capture)
        res = replay(trace, snap, meta=meta)
        matched += res.allocs_matched
        compared += res.allocs_compared
    assert compared > 2000
    assert matched / compared >= 0.995  # 99.88 % when written (19,690/19,713)


def test_undrained_capture_replays_but_cannot_know_the_pools():
    # Without drop_caches the kernel's pools at snapshot time are invisible: early
    # pool hits cannot be predicted. The replay still runs to the end consistently.
    trace, snap, meta = load_capture(CAPTURES / "small-spread-nodrop")
    res = replay(trace, snap, meta=meta)
    assert res.drop_caches is False
    assert res.allocs_compared == meta["event_counts"]["alloc_vmap_area"]
    assert 0 < res.agreement < 0.99
    assert all(m.kernel is not None for m in res.mismatches)


def test_replay_cli_fixed_interface(tmp_path, capsys):
    cap = CAPTURES / "mixed-spread"
    out = tmp_path / "r.json"
    rc = main(
        [
            "replay",
            str(cap / "trace"),
            "--snapshot",
            str(cap / "vmallocinfo"),
            "--profile",
            "6.18",
            "--cpus",
            "2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("allocs_compared", "allocs_matched", "agreement", "mismatches"):
        assert key in data
    assert data["allocs_compared"] == 284
    assert data["agreement"] == data["allocs_matched"] / data["allocs_compared"]
    assert "allocations agree" in capsys.readouterr().out


def test_replay_cli_on_capture_directory(tmp_path):
    out = tmp_path / "r.json"
    assert main(["replay", str(CAPTURES / "longlived-any"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["allocs_compared"] == 199


def test_mismatch_records_have_the_fixed_fields(tmp_path):
    out = tmp_path / "r.json"
    main(["replay", str(CAPTURES / "small-spread-nodrop"), "--json", str(out)])
    m = json.loads(out.read_text())["mismatches"][0]
    assert {"line", "kernel", "model", "size", "align", "cpu"} <= set(m)
    assert m["line"] > 0 and m["kernel"] != m["model"]


def test_replay_without_snapshot_is_a_clear_error(capsys):
    rc = main(["replay", str(CAPTURES / "mixed-spread" / "trace")])
    assert rc == 2
    assert "--snapshot" in capsys.readouterr().err


def test_54_profile_replays_with_its_own_purges():
    trace, snap, meta = load_capture(CAPTURES / "mixed-spread")
    res = replay(trace, snap, profile="5.4", meta=meta)
    assert res.allocs_compared == 284
    # No pools in 5.4: lowest-fit placement differs from the 6.18 kernel's pool hits.
    assert res.agreement < 1.0


@pytest.mark.parametrize(
    "capture", [p for p in DRAINED if (p / "vmallocinfo.end").exists()], ids=lambda p: p.name
)
def test_end_state_matches_the_kernels_end_snapshot(capture):
    # The kernel's own final vmallocinfo: every busy and every lazily freed area the
    # model ends with is there, and vice versa (lazy nodes agree up to a few areas
    # freed by racing CPUs around a purge).
    trace, snap, meta = load_capture(capture)
    res = replay(trace, snap, meta=meta, end_snapshot=capture / "vmallocinfo.end")
    e = res.end_check
    assert e is not None
    assert e["busy_only_model"] == e["busy_only_kernel"] == 0 and e["busy_agree"] > 200
    assert e["lazy_only_model"] == e["lazy_only_kernel"] == 0
    # Areas busy before the snapshot and freed without a purge keep a guessed node.
    known_differs = e["lazy_node_differs"] - e["lazy_node_differs_guessed"]
    assert known_differs <= max(2, e["lazy_agree"] // 200)
