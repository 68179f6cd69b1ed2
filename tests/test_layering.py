"""The layering: no import cycles, and every import points down the layers.

Every import counts — module level, inside functions (lazy) and under
``TYPE_CHECKING`` — because each is a dependency a reader must hold in mind. Data and
callbacks flow down as constructor arguments instead. The test reads the source with
:mod:`ast`, so it sees every import statement wherever it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pyvmalloc

PKG = Path(pyvmalloc.__file__).parent

#: Layers, lowest first. A module may import only modules of its own layer or below
#: (and, within a layer, never in a cycle).
LAYERS: list[list[str]] = [
    [
        "_accel",
        "errors",
        "jsondoc",
        "args",
        "names",
        "arch.spec",
        "arch",
        "gfp",
        "bugsites",
        "printk",
        "rbtree",
    ],
    ["config"],
    ["cli_output"],
    ["phys", "pgtable", "slab"],
    ["vmap.tracepoints", "vmap.area", "vmap.freetree"],
    ["vmap.placement", "vmap.pools"],
    ["vmap.purge"],
    ["vmap.space"],
    ["vmap.pcpu", "vmap.list419", "vmap.block", "vmap"],
    ["policies"],
    ["vmalloc"],
    ["procfs", "explain"],
    ["helpers"],
    ["kernel", "trace.kstate"],  # trace.kstate: below trace.capturedir, which reads it
    ["trace.events", "trace.capturedir", "trace.parse", "trace.snapshot", "trace.bpfload"],
    ["trace.btf", "trace.bpfpeek", "trace.kread"],
    ["trace.harness"],
    ["trace"],
    ["workloads", "report"],
    ["cli_vmalloc"],
    ["cli", "cli_kmem", "__main__", "__init__"],
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _imports(path: Path, name: str) -> set[str]:
    """Every ``pyvmalloc`` module this file imports, wherever the import statement is."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, node.module] if node.module else base)
                mods = ["pyvmalloc." + mod if mod else "pyvmalloc"]
            else:
                mods = [node.module or ""]
            # "from pyvmalloc.vmap import space" imports the submodule too
            mods += [f"{mods[0]}.{a.name}" for a in node.names]
        else:
            continue
        for m in mods:
            if m == "pyvmalloc" or m.startswith("pyvmalloc."):
                out.add(m.removeprefix("pyvmalloc").removeprefix(".") or "__init__")
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path, name):
            # an imported name may be an attribute, not a module: keep the module part
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def _layer(name: str) -> int:
    best = -1
    best_len = -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def test_every_module_has_a_layer():
    assert [m for m in _graph() if _layer(m) < 0] == []


def test_no_upward_import():
    bad = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in sorted(_graph().items())
        for d in sorted(deps)
        if _layer(d) > _layer(m) and m != "__init__"
    ]
    assert bad == []


def test_no_import_cycle():
    graph = _graph()
    graph.pop("__init__", None)  # the package's public face re-exports from above
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w == "__init__" or w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []
