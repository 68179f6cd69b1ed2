"""Strict reading of the JSON documents users hand to pyvmalloc.

A capture's ``meta.json`` and a ``kstate.json`` readout are read the same way: UTF-8
only, no duplicate keys, no ``NaN``/``Infinity``, bounded nesting; anything else is an
:class:`~pyvmalloc.errors.InputError` naming ``PATH:LINE``. What each document must
contain is checked by its own reader (``trace.capturedir.check_meta``,
``trace.kstate.parse_kstate``).
"""

from __future__ import annotations

import json
from typing import Any

from pyvmalloc.errors import InputError

__all__ = ["load_json"]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes, path: str, *, utf8_hint: str = "", nesting_hint: str = "") -> Any:
    """``raw`` parsed as strict JSON; errors name ``path`` (and the line).

    The hints are appended to the messages for non-UTF-8 text and deep nesting, to say
    what the document's writer produces.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"not UTF-8 text (byte {raw[e.start]:#04x}){utf8_hint}", path=path, line=line
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_bad_constant)
    except json.JSONDecodeError as e:
        raise InputError(
            f"not valid JSON ({e.msg}, column {e.colno})", path=path, line=e.lineno
        ) from None
    except RecursionError:
        raise InputError(f"JSON nested too deeply{nesting_hint}", path=path) from None
    except ValueError as e:  # duplicate keys, NaN, numbers beyond int()'s digit limit
        raise InputError(f"not valid JSON ({e})", path=path) from None
