"""The layering: every import points down (module level, in functions, type-only).

The model is built in layers, each using only the ones below it::

    arch, gfp, printk, names, trace.events   (leaves: constants, records)
    config -> phys -> pgtable -> rbtree -> vmap -> slab -> vmalloc
           -> procfs, explain -> kernel -> trace, workloads, report -> cli

A module may import its own layer or any layer below, never one above: not at the
top, not inside a function ("lazily"), not under ``if TYPE_CHECKING:``. Data and
callbacks flow down as constructor arguments instead. The test reads the source
with :mod:`ast`, so it sees every import statement wherever it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pyvmalloc"

#: Layer of each module (longest matching dotted prefix wins).
RANKS: dict[str, int] = {
    "pyvmalloc.arch": 0,
    "pyvmalloc.gfp": 0,
    "pyvmalloc.printk": 0,
    "pyvmalloc.names": 0,
    "pyvmalloc.trace.events": 0,
    "pyvmalloc.config": 1,
    "pyvmalloc.phys": 2,
    "pyvmalloc.pgtable": 3,
    "pyvmalloc.rbtree": 4,
    "pyvmalloc.vmap": 5,
    "pyvmalloc.slab": 6,
    "pyvmalloc.vmalloc": 7,
    "pyvmalloc.procfs": 8,
    "pyvmalloc.explain": 8,
    "pyvmalloc.kernel": 9,
    "pyvmalloc": 10,  # the package: re-exports Kernel
    "pyvmalloc.trace": 11,
    "pyvmalloc.workloads": 11,
    "pyvmalloc.report": 11,
    "pyvmalloc.cli_vmalloc": 12,
    "pyvmalloc.cli": 12,
}

#: Modules held to the rule by this test (the lead extends it to vmap/).
CHECKED = (
    "pyvmalloc.arch",
    "pyvmalloc.arch.i386",
    "pyvmalloc.arch.x86_64",
    "pyvmalloc.config",
    "pyvmalloc.names",
    "pyvmalloc.printk",
    "pyvmalloc.slab",
    "pyvmalloc.vmalloc",
    "pyvmalloc.vmap.block",
    "pyvmalloc.procfs",
    "pyvmalloc.explain",
    "pyvmalloc.kernel",
    "pyvmalloc.cli_vmalloc",
    "pyvmalloc.workloads.demo",
    "pyvmalloc.workloads.fork",
    "pyvmalloc.workloads.percpu",
    "pyvmalloc.workloads.test_vmalloc",
)


def rank(module: str) -> int:
    """The layer of a ``pyvmalloc`` module (``pyvmalloc.vmap.area`` -> vmap's)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in RANKS:
            return RANKS[key]
    raise KeyError(f"{module} is in no layer: add it to RANKS")


def module_path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    pkg = SRC / rel / "__init__.py"
    return pkg if pkg.exists() else SRC / rel.with_suffix(".py")


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """Every ``pyvmalloc`` module the source of ``module`` imports, with the line,
    wherever the statement is (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(source, module)
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("pyvmalloc")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("pyvmalloc"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if module_path(sub).exists() else target))
    return out


def imports_of(module: str) -> list[tuple[int, str]]:
    path = module_path(module)
    return imports_in(path.read_text(), module, is_package=path.name == "__init__.py")


def upward_imports(module: str, found: list[tuple[int, str]] | None = None) -> list[str]:
    own = rank(module)
    return [
        f"{module}:{line} imports {target} (layer {rank(target)} > {own})"
        for line, target in (imports_of(module) if found is None else found)
        if rank(target) > own
    ]


@pytest.mark.parametrize("module", CHECKED)
def test_no_upward_import(module: str) -> None:
    assert module_path(module).exists(), module
    assert upward_imports(module) == []


def test_checker_sees_lazy_and_type_only_imports() -> None:
    # What a back-reference looks like: caught at module level, in a function and
    # under TYPE_CHECKING, absolute or relative.
    code = (
        "from typing import TYPE_CHECKING\n"
        "from pyvmalloc.config import PAGE_SIZE\n"
        "from .vmap import area\n"
        "if TYPE_CHECKING:\n    from pyvmalloc.kernel import Kernel\n"
        "def f():\n    from pyvmalloc import procfs\n    import pyvmalloc.cli\n"
        "    from . import explain\n"
    )
    found = imports_in(code, "pyvmalloc.vmalloc")
    assert [t for _, t in found] == [
        "pyvmalloc.config",
        "pyvmalloc.vmap.area",
        "pyvmalloc.kernel",
        "pyvmalloc.procfs",
        "pyvmalloc.cli",
        "pyvmalloc.explain",
    ]
    assert [
        u.split(" imports ")[1].split()[0] for u in upward_imports("pyvmalloc.vmalloc", found)
    ] == [
        "pyvmalloc.kernel",
        "pyvmalloc.procfs",
        "pyvmalloc.cli",
        "pyvmalloc.explain",
    ]
    assert rank("pyvmalloc.vmap.area") == rank("pyvmalloc.vmap.block") < rank("pyvmalloc.vmalloc")
