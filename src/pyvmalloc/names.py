"""Kernel names Python cannot spell as attributes: the one rule for ``__x``.

Inside a class body Python mangles ``__vmalloc_node`` into ``_Class__vmalloc_node``, so
a kernel function whose name starts with two underscores is written with one
(``_vmalloc_node``) and :func:`install_kernel_names` adds the exact kernel name as an
alias afterwards, so ``getattr(obj, "__vmalloc_node")`` works. :class:`Vmalloc
<pyvmalloc.vmalloc.Vmalloc>` and :class:`Kernel <pyvmalloc.kernel.Kernel>` both use it.

>>> class Api:
...     def _vmalloc(self) -> str:
...         return "__vmalloc"
>>> install_kernel_names(Api, "__vmalloc")
>>> getattr(Api(), "__vmalloc")()
'__vmalloc'
"""

from __future__ import annotations

__all__ = ["install_kernel_names", "python_name"]


def python_name(kernel_name: str) -> str:
    """The attribute that holds kernel function ``kernel_name`` (``__x`` -> ``_x``)."""
    if not kernel_name.startswith("__"):
        raise ValueError(f"{kernel_name!r} needs no alias (it does not start with '__')")
    return kernel_name[1:]


def install_kernel_names(cls: type, *kernel_names: str) -> None:
    """Alias ``cls._x`` as ``cls.__x`` for each kernel name ``__x``."""
    for kname in kernel_names:
        py = python_name(kname)
        if py not in cls.__dict__:
            raise AttributeError(f"{cls.__name__} has no {py!r} to install as {kname!r}")
        setattr(cls, kname, cls.__dict__[py])
