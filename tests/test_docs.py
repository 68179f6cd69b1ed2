"""The README and docs/*.md say what the code does.

* Every ``python`` block of README.md and docs/policy.md runs. In the README's, a
  statement whose comment starts with a Python literal (``# '0x...'``, ``# [...]``) or
  with ``<...>`` (a repr, ``...`` standing for anything) must evaluate to exactly that:
  the values there are derived by hand in the comments (the first area of a fresh 6.18
  model at VMALLOC_START, a 2-page area pooled by a purge keeping the next allocation
  above it).
* Every subcommand and every ``--option`` the README's command table names exists in
  the parser, and every subcommand the parser has is in the table.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Any

import pytest

from pyvmalloc.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def _expected(comment: str) -> tuple[str, Any] | None:
    """The value a ``# ...`` comment promises, as ("literal", v) or ("repr", regex)."""
    c = comment.lstrip("#").strip()
    if c.startswith("<"):
        end = c.index(">") + 1
        parts = [re.escape(p) for p in c[:end].split("...")]
        return "repr", "^" + ".*".join(parts) + "$"
    if c[:1] in "'\"[":
        close = {"'": "'", '"': '"', "[": "]"}[c[0]]
        end = c.index(close, 1) + 1
        return "literal", ast.literal_eval(c[:end])
    return None


def run_block(code: str, checked: list[str]) -> dict[str, Any]:
    """Run ``code`` statement by statement, checking each promised value."""
    lines = code.splitlines()
    g: dict[str, Any] = {}
    for node in ast.parse(code).body:
        src = ast.get_source_segment(code, node) or ""
        rest = lines[(node.end_lineno or node.lineno) - 1][node.end_col_offset or 0 :].strip()
        comment = rest if rest.startswith("#") else ""
        want = _expected(comment) if isinstance(node, ast.Expr) and comment else None
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), "<doc>", "eval"), g)
            if want is not None:
                kind, exp = want
                if kind == "literal":
                    assert value == exp, f"{src}: {value!r}, the doc says {exp!r}"
                else:
                    assert re.match(exp, repr(value)), f"{src}: {value!r}, the doc says {comment}"
                checked.append(src)
        else:
            exec(compile(ast.Module([node], []), "<doc>", "exec"), g)
    return g


def test_readme_python_block_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = python_blocks(README)
    checked: list[str] = []
    g = run_block(code, checked)
    # The comments promise these; all were checked.
    assert {"hex(va.va_start)", "hex(p)", "find_vmap_area(k, p + 4096)"} <= set(checked)
    out = capsys.readouterr().out
    # The tracepoint subscriber saw the vmalloc's alloc_vmap_area event: 20000 bytes
    # round up to 5 pages, plus the guard page: size=24576, at 0xffffc90000002000
    # (printed as a decimal va_start, as the 6.18 TP_printk does).
    assert f"alloc_vmap_area: va_start: {0xFFFFC90000002000} size=24576 align=1 " in out
    # /proc/vmallocinfo printed the one busy area: 5 pages on NUMA node 0.
    assert "0xffffc90000002000-0xffffc90000008000   24576 pages=5 vmalloc N0=5" in out
    g["k"].check()


def test_policy_doc_python_blocks_run() -> None:
    blocks = python_blocks(ROOT / "docs" / "policy.md")
    assert len(blocks) == 3
    protocol, keep_all, run_it = blocks
    assert "def find(self, tree, size, align, vstart, vend)" in protocol
    from pyvmalloc.vmap.placement import PlacementPolicy

    assert callable(PlacementPolicy.find) and callable(PlacementPolicy.check)
    g = run_block(
        "from dataclasses import dataclass\nfrom typing import ClassVar\n"
        "from pyvmalloc.vmap.pools import NodePools\n" + keep_all,
        [],
    )
    from pyvmalloc import Kernel

    k = Kernel(profile="6.18", pools=g["KeepAll"]())
    for _ in range(3):
        k.vfree(k.vmalloc(8192))
    k.purge_vmap_area_lazy()
    k.check()
    g = run_block(run_it, [])
    assert g["va"].va_start == g["k"].VMALLOC_START  # best fit on a fresh model: the start


def _command_rows() -> list[str]:
    text = README.read_text()
    table = text[text.index("## Commands") : text.index("Conventions, as in other")]
    return [r for r in table.splitlines() if r.startswith("| `pyvmalloc")]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_readme_command_table_names_real_commands_and_options() -> None:
    subs = _subparsers()
    named: set[str] = set()
    for row in _command_rows():
        first_cell = row[1:].split(" | ")[0]
        for cmd, rest in re.findall(r"`pyvmalloc ([a-z][a-z-]*)([^`]*)`", first_cell):
            assert cmd in subs, f"README names `pyvmalloc {cmd}`, which does not exist"
            named.add(cmd)
            known = {o for a in subs[cmd]._actions for o in a.option_strings}
            for opt in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
                assert opt in known, f"README: `pyvmalloc {cmd}` has no option {opt}"
    assert named == set(subs), f"README's command table lacks {set(subs) - named}"


def _doc_invocations() -> list[tuple[Path, str, str]]:
    """(file, subcommand, rest) for every ``pyvmalloc CMD ...`` in README.md and docs/."""
    found = []
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        spans = re.findall(r"`([^`\n]*pyvmalloc [a-z][^`\n]*)`", text)
        for block in re.findall(r"```(?:sh)?\n(.*?)```", text, re.S):
            block = block.replace("\\\n", " ")
            spans += [ln for ln in block.splitlines() if re.search(r"(^|\s)pyvmalloc [a-z]", ln)]
        for span in spans:
            for cmd, rest in re.findall(r"(?:^|[\s(`$])pyvmalloc ([a-z][a-z-]*)([^`|;&]*)", span):
                if cmd == "import":  # "from pyvmalloc import Kernel" in a timeit line
                    continue
                # after " -- " come the traced command's own arguments
                found.append((path, cmd, rest.split(" -- ")[0]))
    return found


def test_every_doc_invocation_names_real_options() -> None:
    subs = _subparsers()
    invocations = _doc_invocations()
    assert len(invocations) > 60
    for path, cmd, rest in invocations:
        assert cmd in subs, f"{path.name}: `pyvmalloc {cmd}` does not exist"
        known = {o for a in subs[cmd]._actions for o in a.option_strings}
        for opt in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
            assert opt in known, f"{path.name}: `pyvmalloc {cmd}` has no option {opt}"
