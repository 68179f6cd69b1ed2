"""Sweeps on a dask.distributed LocalCluster give the same rows as serial runs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from pyvmalloc.cli import main
from pyvmalloc.report.sweep import grid, run_point, run_serial, sweep

distributed = pytest.importorskip("distributed")

CAPS = Path(__file__).parent / "data" / "captures"
M = 1 << 20


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None
    ) as c:
        yield c


def test_sweep_on_local_cluster_equals_serial(cluster):
    points = grid(
        [CAPS / "churn-cpu0", CAPS / "mixed-spread"],
        vmallocs=[48 * M, 128 * M],
        cpus=[1, 2],
        profiles=["5.4", "6.18"],
        arch="arm",
        ram=1 << 30,
    )
    assert len(points) == 16
    seen = []
    with distributed.Client(cluster) as client:
        rows = sweep(points, client=client, on_done=lambda done, total: seen.append(done))
    assert rows == run_serial(points)
    assert seen == list(range(1, 17))
    # grid order, one row per point, addresses as strings
    assert [(r["profile"], r["vmalloc"], r["cpus"]) for r in rows[:4]] == [
        ("5.4", 48 * M, 1),
        ("5.4", 48 * M, 2),
        ("5.4", 128 * M, 1),
        ("5.4", 128 * M, 2),
    ]
    assert rows[0]["vmalloc_start"] == "0xfd000000"  # 5.4: vmalloc_min 0xfc800000 + 8M
    # 48M of vmalloc holds less than the mixed-spread peak: failures; a bigger range fails less
    for small, big in zip(rows[8:16:4], rows[10:16:4], strict=True):
        assert small["failures"] > 0 and big["failures"] <= small["failures"]


def test_point_is_deterministic_and_picklable():
    (p,) = grid([CAPS / "churn-cpu0"], vmallocs=[64 * M], cpus=[2], arch="i386", ram=1 << 30)
    assert pickle.loads(pickle.dumps(p)) == p
    assert pickle.loads(pickle.dumps(run_point)) is run_point  # a module-level function
    assert run_point(p) == run_point(p)


def test_sweep_cli_json_to_stdout(cluster, capsys, tmp_path):
    png = tmp_path / "s.png"
    rc = main(
        [
            "sweep",
            str(CAPS / "churn-cpu0"),
            "--vmalloc",
            "64M,240M",
            "--cpus",
            "1,2",
            "--profile",
            "5.4,6.18",
            "--arch",
            "arm",
            "--ram",
            "1G",
            "--scheduler",
            cluster.scheduler_address,
            "--json",
            "-",
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # the table goes to stderr
    assert len(data["results"]) == 8 and len(data["grid"]) == 8
    assert {r["vmalloc_end"] for r in data["results"]} == {"0xff800000"}
    assert png.stat().st_size > 0


def test_sweep_cli_refuses_bad_grid(capsys):
    # vmalloc= is not an x86_64 boot option: refused before any task runs
    assert main(["sweep", str(CAPS / "churn-cpu0"), "--vmalloc", "64M"]) == 2
    assert "32-bit kernels" in capsys.readouterr().err
