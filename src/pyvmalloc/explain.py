"""A learner's view: record the call tree of one vmalloc API call and draw it.

The recorder is off by default and then costs nothing: it works by shadowing the
kernel-named methods of one :class:`~pyvmalloc.vmalloc.Vmalloc` instance (and
``kzalloc_node`` of its slab) with recording wrappers while a recording runs, and
removing them afterwards. Each recorded call keeps its arguments, return value, the
pages it took from the buddy allocator, the PTEs it wrote and, for
``alloc_vmap_area``, the allocator's decision (pool hit, or which free block and fit).

>>> from pyvmalloc.kernel import Kernel
>>> k = Kernel()
>>> rec = record(k, lambda: k.vmalloc(8192))
>>> print(rec.render().splitlines()[1])
 +-> __vmalloc_node(size=8192, align=1, gfp=GFP_KERNEL, node=-1, caller=None) = 0xffffc90000000000
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyvmalloc.config import KernelProfile
from pyvmalloc.gfp import format_gfp
from pyvmalloc.phys import PhysicalMemory
from pyvmalloc.slab import SlabAllocator
from pyvmalloc.vmalloc import Vmalloc
from pyvmalloc.vmap.area import VmapArea


class Model(Protocol):
    """What the recorder needs of a model, a :class:`pyvmalloc.kernel.Kernel` (this
    module sits below ``kernel.py`` and does not import it): its profile, layers,
    page count since boot, and the API calls by name."""

    @property
    def profile(self) -> KernelProfile: ...
    @property
    def vm(self) -> Vmalloc: ...
    @property
    def phys(self) -> PhysicalMemory: ...
    @property
    def slab(self) -> SlabAllocator: ...
    def phys_pages_used(self) -> int: ...


__all__ = ["API_CALLS", "CallNode", "Recording", "parse_calls", "record", "run_call"]

#: Vmalloc method -> (kernel name, parameter names for display)
TRACED: dict[str, tuple[str, tuple[str, ...]]] = {
    "_vmalloc_node_flags": ("__vmalloc_node_flags", ("size", "node", "gfp", "caller")),
    "_vmalloc_node": ("__vmalloc_node", ("size", "align", "gfp", "node", "caller")),
    "_vmalloc_node_range": (
        "__vmalloc_node_range",
        ("size", "align", "start", "end", "gfp", "prot", "vm_flags", "node", "caller"),
    ),
    "_get_vm_area_node": (
        "__get_vm_area_node",
        ("size", "align", "shift", "flags", "start", "end", "node", "gfp", "caller"),
    ),
    "alloc_vmap_area": ("alloc_vmap_area", ("size", "align", "vstart", "vend", "node", "gfp")),
    "setup_vmalloc_vm": ("setup_vmalloc_vm", ("vm", "va", "flags", "caller")),
    "_vmalloc_area_node": ("__vmalloc_area_node", ("area", "gfp", "prot", "shift", "node")),
    "kmalloc_node": ("kmalloc_node", ("size", "gfp", "node")),
    "vm_area_alloc_pages": ("vm_area_alloc_pages", ("gfp", "nid", "order", "nr_pages")),
    "alloc_pages_one_by_one": ("alloc_page (x nr_pages)", ("gfp", "node", "nr_pages")),
    "map_vm_area": ("map_vm_area", ("area", "prot", "pages")),
    "vmap_pages_range": ("vmap_pages_range", ("addr", "end", "prot", "pages", "page_shift")),
    "clear_vm_uninitialized_flag": ("clear_vm_uninitialized_flag", ("vm",)),
    "get_vm_area_caller": ("get_vm_area_caller", ("size", "flags", "caller")),
    "vfree_now": ("vfree", ("addr",)),
    "vfree_atomic_now": ("vfree_atomic", ("addr",)),
    "vunmap_now": ("vunmap", ("addr",)),
    "remove_vm_area": ("remove_vm_area", ("addr",)),
    "free_unmap_vmap_area": ("free_unmap_vmap_area", ("va",)),
    "free_vm_area": ("free_vm_area", ("area",)),
    "kvfree_now": ("kvfree", ("addr",)),
    "vm_unmap_aliases_locked": ("vm_unmap_aliases", ()),
}

#: Kernel names of the kernels with ``map_vm_area`` (``has_map_vm_area``, until v5.8).
OLD_NAMES = {"vmap_pages_range": "vmap_page_range"}

#: Calls the ``explain`` command accepts: name -> Kernel attribute.
API_CALLS = (
    "vmalloc",
    "vzalloc",
    "vmalloc_node",
    "vzalloc_node",
    "vmalloc_user",
    "vmalloc_32",
    "vmalloc_32_user",
    "__vmalloc",
    "__vmalloc_node",
    "__vmalloc_node_range",
    "vmalloc_huge",
    "vrealloc",
    "kvmalloc",
    "kvzalloc",
    "kvfree",
    "vfree",
    "vfree_atomic",
    "vunmap",
    "ioremap",
    "iounmap",
    "vm_unmap_aliases",
    "get_vm_area",
)


def _fmt(name: str, value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        if name in ("gfp",):
            return format_gfp(value) or "0"
        if name in ("start", "end", "vstart", "vend", "addr", "prot") or value > 0xFFFFFFFF:
            return f"{value:#x}"
        if name in ("flags", "vm_flags"):
            return f"{value:#x}"
        return str(value)
    if isinstance(value, VmapArea):
        return f"va[{value.va_start:#x}-{value.va_end:#x}]"
    if hasattr(value, "addr") and hasattr(value, "size") and hasattr(value, "flags"):
        return f"vm[{value.addr:#x} +{value.size}]"
    if hasattr(value, "__len__") and not isinstance(value, str):
        return f"<{len(value)} pages>"
    return repr(value)


@dataclass
class CallNode:
    """One recorded call."""

    name: str
    args: list[tuple[str, object]]
    ret: object = None
    children: list[CallNode] = field(default_factory=list)
    pages: int = 0  # pages taken (net) from the buddy allocator inside the call
    ptes: int = 0
    note: str = ""
    raw: bool = False  # the root: ``name`` is the whole call expression

    def label(self) -> str:
        a = ", ".join(f"{n}={_fmt(n, v)}" for n, v in self.args)
        text = self.name if self.raw else f"{self.name}({a})"
        if self.ret is not None:
            text += f" = {_fmt('addr', self.ret)}"
        extras = []
        if self.pages and not self.children:
            extras.append(f"{self.pages:+d} pages")
        if self.ptes and not self.children:
            extras.append(f"{self.ptes} PTEs")
        if self.note:
            extras.append(self.note)
        if extras:
            text += "   [" + "; ".join(extras) + "]"
        return text


@dataclass
class Recording:
    """A recorded call tree plus the state before and after."""

    root: CallNode
    before: dict[str, int]
    after: dict[str, int]

    def render(self) -> str:
        """The call tree in the seeds' "Code Flow" style, then the state changes."""
        lines = [self.root.label()]
        lines.extend(_render_children(self.root, " "))
        lines.append("")
        lines.append("state changes:")
        for key, b in self.before.items():
            a = self.after[key]
            mark = f" ({a - b:+d})" if a != b else ""
            lines.append(f"  {key:<28} {b:>8} -> {a:<8}{mark}")
        return "\n".join(lines)


def _render_children(node: CallNode, prefix: str) -> Iterator[str]:
    n = len(node.children)
    for i, child in enumerate(node.children):
        last = i == n - 1
        yield f"{prefix}+-> {child.label()}"
        yield from _render_children(child, prefix + ("    " if last else "|   "))


def _state(k: Model) -> dict[str, int]:
    vm = k.vm
    return {
        "free vmap blocks": vm.space.nr_free,
        "busy vmap areas": vm.space.nr_busy,
        "lazily freed areas": len(vm.space.lazy),
        "nr_vmalloc_pages": vm.nr_vmalloc_pages,
        "page-table pages": k.phys.nr_pgtable_pages,
        "pages in use (since boot)": k.phys_pages_used(),
        "slab bytes": k.slab.slab_bytes,
    }


class _Recorder:
    def __init__(self, k: Model) -> None:
        self.k = k
        self.vm: Vmalloc = k.vm
        self.stack: list[CallNode] = []

    def _wrap(self, obj: Any, attr: str, kname: str, params: tuple[str, ...]) -> None:
        orig = getattr(obj, attr)
        rec = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            named = list(zip(params, args, strict=False)) + list(kwargs.items())
            # (cpu= travels with every step; the tree shows it once, on the API call)
            shown = [(n, v) for n, v in named if n not in ("pages", "", "cpu")]
            node = CallNode(kname, shown)
            rec.stack[-1].children.append(node)
            rec.stack.append(node)
            used0 = rec.k.phys_pages_used()
            ptes0 = rec.vm.ptes_written
            try:
                ret = orig(*args, **kwargs)
            finally:
                rec.stack.pop()
            node.pages = rec.k.phys_pages_used() - used0
            node.ptes = rec.vm.ptes_written - ptes0
            if isinstance(ret, VmapArea):
                node.ret = ret.va_start
                d = rec.vm.space.last_decision
                if d is not None:
                    node.note = str(d)
            elif hasattr(ret, "addr") and hasattr(ret, "flags"):
                node.ret = ret.addr
            elif isinstance(ret, int) and not isinstance(ret, bool):
                node.ret = ret
            elif hasattr(ret, "__len__") and not isinstance(ret, str):
                node.note = f"{len(ret)} pages"
            return ret

        setattr(obj, attr, wrapper)

    def attach(self) -> None:
        profile = self.k.profile
        for attr, (kname, params) in TRACED.items():
            if profile.has_map_vm_area:
                # vmap_page_range() before 5.8's vmap_pages_range().
                kname = OLD_NAMES.get(kname, kname)
            if not profile.huge_vmalloc:
                # No page-shift argument: it came with huge vmalloc (5.13).
                params = tuple("" if p in ("shift", "page_shift") else p for p in params)
            self._wrap(self.vm, attr, kname, params)
        self._wrap(self.vm.slab, "kzalloc", "kzalloc_node", ("size", "gfp", "node"))
        self.vm.space.explain = True

    def detach(self) -> None:
        for attr in TRACED:
            self.vm.__dict__.pop(attr, None)
        self.vm.slab.__dict__.pop("kzalloc", None)
        self.vm.space.explain = False


def record(k: Model, fn: Callable[[], object], label: str = "call") -> Recording:
    """Run ``fn`` with the recorder attached; return the call tree and state delta."""
    rec = _Recorder(k)
    root = CallNode(label, [], raw=True)
    rec.stack.append(root)
    before = _state(k)
    rec.attach()
    try:
        ret = fn()
    finally:
        rec.detach()
    if isinstance(ret, int) and not isinstance(ret, bool):
        root.ret = ret
    elif hasattr(ret, "addr"):
        root.ret = ret.addr
    return Recording(root, before, _state(k))


# ----------------------------------------------------------------------------------
# A restricted call language for the CLI: "vmalloc(20000, cpu=1); vfree(_)"
# ----------------------------------------------------------------------------------
@dataclass
class ParsedCall:
    name: str
    args: list[int | str | None]
    kwargs: dict[str, int | str | None]
    text: str


def _literal(node: ast.expr, results: list[int]) -> int | str | None:
    """The value of an argument; integers far past 64 bits are refused (a chain of
    shifts or products could otherwise build numbers no message can print)."""
    v = _literal_value(node, results)
    if isinstance(v, int) and v.bit_length() > 128:
        raise ValueError(f"an argument of {v.bit_length()} bits: far past 64 bits")
    return v


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else f"{text[:n]}..."


def _literal_value(node: ast.expr, results: list[int]) -> int | str | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, str))
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _literal(node.operand, results)
        if isinstance(v, int):
            return -v
    if isinstance(node, ast.BinOp) and isinstance(
        node.op, (ast.Add, ast.Sub, ast.Mult, ast.LShift, ast.BitOr)
    ):
        a = _literal(node.left, results)
        b = _literal(node.right, results)
        if isinstance(a, int) and isinstance(b, int):
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.LShift):
                if not 0 <= b <= 64:
                    raise ValueError(f"a shift by {b if -64 <= b <= 1 << 20 else 'more'} (0..64)")
                return a << b
            return a | b
    if isinstance(node, ast.Name):
        gfp = gfp_names().get(node.id)
        if gfp is not None:
            return gfp
        if node.id == "_":
            if not results:
                raise ValueError("_ is the last call's result, but no call came before")
            return results[-1]
        if node.id.startswith("_") and node.id[1:].isdigit():
            i = int(node.id[1:])
            if 1 <= i <= len(results):
                return results[i - 1]
            raise ValueError(f"{node.id}: there is no result number {i}")
    raise ValueError(
        f"only int/str literals, GFP flag names, simple integer arithmetic and _ / _N "
        f"(earlier results) are allowed, not {ast.unparse(node)!r}"
    )


def gfp_names() -> dict[str, int]:
    """The GFP flag names :mod:`pyvmalloc.gfp` defines (``GFP_KERNEL``, ``__GFP_ZERO``...)."""
    import pyvmalloc.gfp as gfp

    return {
        name: value
        for name, value in vars(gfp).items()
        if (name.startswith("GFP_") or name.startswith("__GFP_"))
        and isinstance(value, int)
        and not isinstance(value, bool)
    }


def parse_calls(text: str) -> list[ast.Call]:
    """Parse ``"vmalloc(8192); vfree(_)"`` into call nodes (no evaluation)."""
    calls = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            tree = ast.parse(part, mode="eval")
        except SyntaxError as e:
            raise ValueError(f"cannot parse {_short(part)!r}: {e.msg}") from None
        except (MemoryError, RecursionError):  # a 100,000-deep "-----1"
            raise ValueError(f"cannot parse {_short(part)!r}: nested too deeply") from None
        except ValueError as e:  # a literal of more digits than int() converts
            raise ValueError(f"cannot parse {_short(part)!r}: {e}") from None
        node = tree.body
        if sum(1 for _ in ast.walk(node)) > 400:  # (unparse and evaluation recurse)
            raise ValueError(f"{_short(part)!r}: too long an expression for one call")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError(f"{part!r} is not a call like vmalloc(8192)")
        if node.func.id not in API_CALLS:
            raise ValueError(f"{node.func.id} is not allowed; allowed: {', '.join(API_CALLS)}")
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            for sub in ast.walk(arg):
                big = isinstance(sub, ast.Constant) and isinstance(sub.value, int)
                if big and sub.value.bit_length() > 128:  # type: ignore[attr-defined]
                    raise ValueError(  # (no message could print it in decimal)
                        f"an integer of {sub.value.bit_length()} bits: far past 64 bits"  # type: ignore[attr-defined]
                    )
                if not isinstance(
                    sub,
                    (
                        ast.Constant,
                        ast.UnaryOp,
                        ast.BinOp,
                        ast.Name,
                        ast.Load,
                        ast.operator,
                        ast.unaryop,
                    ),
                ) or (
                    isinstance(sub, ast.Name)
                    and not sub.id.startswith("_")
                    and sub.id not in gfp_names()
                ):
                    raise ValueError(
                        f"argument {ast.unparse(arg)!r} is not a literal or a GFP flag name"
                    )
        seen: set[str] = set()
        for kw in node.keywords:
            if kw.arg not in ("cpu", "caller", "node", "gfp", "align"):
                raise ValueError(f"keyword {kw.arg!r} is not allowed (cpu=, caller=, ...)")
            if kw.arg in seen:
                raise ValueError(f"{part!r}: keyword {kw.arg!r} given multiple values")
            seen.add(kw.arg)
        calls.append(node)
    return calls


def _check_arguments(
    name: str, fn: Callable[..., object], args: list[Any], kwargs: dict[str, Any], text: str
) -> None:
    """Refuse a call whose arguments do not fit ``fn``'s signature (a missing, extra or
    repeated argument), or whose values have the wrong type: ``caller`` is a string,
    every other argument an integer (``None`` only where the API's default is None).
    A ``ValueError`` naming the call and the signature, before the model is touched."""
    import inspect

    sig = inspect.signature(fn)
    shown = str(sig).split(" -> ")[0].replace("'", "")
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"{text}: {e}; {name} takes {shown}") from None
    for pname, value in bound.arguments.items():
        default = sig.parameters[pname].default
        if pname == "caller":
            ok = value is None or isinstance(value, str)
            want = "a string"
        else:
            ok = isinstance(value, int) or (value is None and default is None)
            want = "an integer"
        if not ok:
            raise ValueError(f"{text}: {pname} must be {want}, not {value!r}; {name} takes {shown}")


def run_call(k: Model, call: ast.Call, results: list[int]) -> int | None:
    """Run one parsed call on ``k``; return its integer result (None for a void call).

    The result is also appended to ``results`` (0 for a void call) so later calls can
    name it as ``_`` or ``_N``.
    """
    assert isinstance(call.func, ast.Name)
    name = call.func.id
    args = [_literal(a, results) for a in call.args]
    kwargs = {kw.arg: _literal(kw.value, results) for kw in call.keywords if kw.arg}
    fn = getattr(k, name)
    _check_arguments(name, fn, args, kwargs, ast.unparse(call))
    ret = fn(*args, **kwargs)
    value: int | None = None
    if isinstance(ret, int) and not isinstance(ret, bool):
        value = ret
    elif ret is not None and hasattr(ret, "addr"):
        value = int(ret.addr)
    results.append(0 if value is None else value)
    return value
