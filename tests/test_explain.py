"""The call-tree recorder and the CLI commands."""

from __future__ import annotations

import argparse

import pytest

from pyvmalloc import cli_vmalloc
from pyvmalloc.explain import parse_calls, record
from pyvmalloc.kernel import Kernel


def test_tree_mirrors_the_seed_flow_54() -> None:
    k = Kernel("5.4")
    text = record(k, lambda: k.vmalloc(20000), "vmalloc(20000)").render()
    names = [line.split("+-> ")[1].split("(")[0] for line in text.splitlines() if "+-> " in line]
    assert names[:4] == [
        "__vmalloc_node_flags",
        "__vmalloc_node",
        "__vmalloc_node_range",
        "__get_vm_area_node",
    ]
    assert names[4:7] == ["kzalloc_node", "alloc_vmap_area", "setup_vmalloc_vm"]
    assert "map_vm_area" in names and "__vmalloc_area_node" in names
    assert "nr_vmalloc_pages                    0 -> 5" in text
    assert "NE_FIT_TYPE" in text
    # recorder detached: no instance shadows remain
    assert "_vmalloc_node_range" not in k.vm.__dict__


def test_parse_rejects_unsafe() -> None:
    with pytest.raises(ValueError):
        parse_calls("__import__('os')")
    with pytest.raises(ValueError):
        parse_calls("vmalloc(open('x'))")
    assert len(parse_calls("vmalloc(8192); vfree(_)")) == 2


def _cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    cli_vmalloc.register_cli(sub)
    args = ap.parse_args(argv)
    assert args.func(args) == 0


def test_cli_explain_walk_tour(capsys: pytest.CaptureFixture[str]) -> None:
    _cli(["explain", "vfree(_1)", "--before", "vmalloc(8192, cpu=1); vmalloc(4096)"])
    out = capsys.readouterr().out
    assert "remove_vm_area" in out and "free_unmap_vmap_area" in out
    _cli(["walk", "_", "--before", "vmalloc(8192)"])
    assert "PTE" in capsys.readouterr().out
    _cli(["tour", "--ops", "300"])
    out = capsys.readouterr().out
    assert "VmallocTotal" in out and "all invariants hold" in out


def test_void_call_has_no_result_and_null_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """vfree returns void: its line ends at the call; a failed vmalloc returns NULL."""
    _cli(["explain", "vfree(_)", "--before", "vmalloc(8192)"])
    first = capsys.readouterr().out.splitlines()[1]
    assert first == "vfree(_)"
    # 2^62 bytes exceed the machine's pages: __vmalloc_node_range returns NULL.
    _cli(["explain", "vmalloc(1 << 62)"])
    assert capsys.readouterr().out.splitlines()[1] == "vmalloc(1 << 62) = 0x0"
