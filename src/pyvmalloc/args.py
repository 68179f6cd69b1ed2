"""Argument checks at the API boundary: C types for Python values.

The kernel's entry points take C integers: sizes and addresses are ``unsigned long``
(a negative value is a huge one: ``vmalloc(-1)`` asks for 18446744073709551615
bytes), counts are ``unsigned int``, nodes and CPUs are ``int``. These helpers turn a
Python argument into the value the kernel would see, or raise a clear
:class:`TypeError`/:class:`ValueError` naming the argument, before the model's state
is touched, so a wrong type never ends in a traceback deep inside a layer.

Any integral object is accepted (``int``, ``bool``, ``numpy.int64``: whatever
``operator.index`` takes); floats, strings and ``None`` are refused.

>>> ulong("size", -1, 64)
18446744073709551615
>>> ulong("size", 8192.0, 64)
Traceback (most recent call last):
...
TypeError: size must be an integer (unsigned long), not float: 8192.0
"""

from __future__ import annotations

import operator
import os

__all__ = ["c_int", "host_budget", "host_fits", "integer", "uint", "ulong"]


def integer(name: str, value: object, ctype: str = "int") -> int:
    """``value`` as a Python int, or a TypeError naming ``name`` and the C type."""
    if value.__class__ is int:
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer ({ctype}), not {type(value).__name__}: {value!r}"
        ) from None


def ulong(name: str, value: object, bits: int = 64) -> int:
    """An ``unsigned long`` argument: negative values wrap as in C; values that do
    not fit in ``bits`` bits (and are not a wrapped negative) are refused."""
    v = integer(name, value, "unsigned long")
    if 0 <= v < 1 << bits:
        return v
    if -(1 << bits) <= v < 0:
        return v & ((1 << bits) - 1)
    raise ValueError(f"{name} {v} does not fit in an unsigned long ({bits} bits)")


def uint(name: str, value: object) -> int:
    """An ``unsigned int`` argument (32 bits on every architecture)."""
    v = integer(name, value, "unsigned int")
    if 0 <= v < 1 << 32:
        return v
    if -(1 << 32) <= v < 0:
        return v & 0xFFFFFFFF
    raise ValueError(f"{name} {v} does not fit in an unsigned int (32 bits)")


def c_int(name: str, value: object) -> int:
    """An ``int`` argument (32-bit signed)."""
    v = integer(name, value, "int")
    if -(1 << 31) <= v < 1 << 31:
        return v
    raise ValueError(f"{name} {v} does not fit in an int (32 bits)")


def host_budget() -> int | None:
    """Host bytes the model may take for its per-page arrays: a quarter of this host's
    memory, or None where the platform does not say (then numpy just tries).

    The host's total memory, not what is free at the moment, so that the same call on
    the same host always gets the same answer (what is free changes with the page
    cache and other processes; a model whose results depended on it could not be
    compared with itself, e.g. the accelerated build with the reference)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError):
        return None


def host_fits(what: str, need: int) -> None:
    """Refuse work whose host arrays need more than :func:`host_budget`.

    A model limit, not a kernel rule: a request the kernel would serve (an 8 TiB
    ``ioremap`` maps with PUD entries) can need more host memory than there is
    for the model's per-page arrays. A ``MemoryError`` that says how much, raised
    before the model's state changes (rather than numpy's bare one halfway through,
    or the OOM killer).
    """
    budget = host_budget()
    if budget is not None and need > budget:
        raise MemoryError(
            f"{what} needs about {need >> 20} MiB of host memory for the model's "
            f"per-page arrays; the model takes at most {budget >> 20} MiB (a quarter "
            f"of this host's memory)"
        )
