"""Reading a capture directory (``pyvmalloc capture`` output) safely and strictly.

A capture directory holds ``meta.json``, ``vmallocinfo``, ``trace`` or ``trace.gz``
and optionally ``vmallocinfo.end`` (see :mod:`pyvmalloc.trace.capture`) and the kernel's
hidden state read at snapshot time, ``kstate.json`` and ``kstate.end.json`` (either
may be gzipped, :mod:`pyvmalloc.trace.kstate`). Its files
must be regular files: a symbolic link is refused without being followed, so a
directory handed over by someone else cannot make pyvmalloc (perhaps run as root)
read, and quote in an error message, a file its owner may not read.

``meta.json`` is checked against what ``pyvmalloc capture`` writes: a JSON object
whose known fields have their types (``cpus_possible`` a non-empty list of distinct
CPU numbers, ``drop_caches`` a boolean, ...). Unknown fields are kept: later versions
may add some. Every problem is an :class:`~pyvmalloc.errors.InputError` naming the file
(and line, for JSON syntax errors).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvmalloc.errors import InputError
from pyvmalloc.jsondoc import load_json
from pyvmalloc.trace.kstate import KState, load_kstate

__all__ = [
    "MAX_META_BYTES",
    "Capture",
    "check_meta",
    "load_capture_dir",
    "member",
    "nr_cpus",
    "read_meta",
    "trace_file",
]

#: The largest meta.json read (``pyvmalloc capture`` writes a few KiB).
MAX_META_BYTES = 1 << 20
#: The largest CPU number on x86-64 (``CONFIG_NR_CPUS`` at most 8192).
_NR_CPUS_MAX = 8192

TRACE_NAMES = ("trace", "trace.gz")


def member(directory: str | os.PathLike[str], name: str) -> Path | None:
    """``directory/name`` if it exists as a regular file, None if it does not exist.

    A symbolic link (even a dangling one) or anything but a regular file is an
    :class:`InputError`; the link is not followed and its target is not named.
    """
    p = Path(directory) / name
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=str(p)) from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(
            "is a symbolic link; the files of a capture directory must be regular files "
            "(pyvmalloc capture writes them so), and links there are not followed",
            path=str(p),
        )
    if not stat.S_ISREG(st.st_mode):
        raise InputError("is not a regular file", path=str(p))
    return p


def _directory(path: str | os.PathLike[str]) -> Path:
    d = Path(path)
    try:
        st = os.stat(d)  # the directory the user named may be reached through a link
    except FileNotFoundError:
        raise InputError("no such capture directory", path=str(d)) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=str(d)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(
            "not a capture directory (pyvmalloc capture writes a directory holding "
            "meta.json, vmallocinfo and trace or trace.gz)",
            path=str(d),
        )
    return d


def trace_file(directory: str | os.PathLike[str]) -> Path:
    """The capture's ``trace`` or ``trace.gz`` (checked as in :func:`member`)."""
    d = _directory(directory)
    found = [p for p in (member(d, name) for name in TRACE_NAMES) if p is not None]
    if len(found) > 1:  # pyvmalloc capture writes one of them; which one is meant?
        raise InputError(
            "holds both trace and trace.gz; a capture writes one of them (remove the other)",
            path=str(d),
        )
    if found:
        return found[0]
    raise InputError("no trace or trace.gz in this capture directory", path=str(d))


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a capture's ``meta.json`` (see :func:`check_meta`)."""
    name = os.fspath(path)
    p = Path(path)
    try:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            raise InputError(
                "is a symbolic link; a capture's meta.json must be a regular file "
                "(links are not followed)",
                path=name,
            )
        if not stat.S_ISREG(st.st_mode):
            raise InputError("is not a regular file", path=name)
        if st.st_size > MAX_META_BYTES:
            raise InputError(
                f"is {st.st_size} bytes; pyvmalloc capture writes a few KiB "
                f"(at most {MAX_META_BYTES} bytes are read)",
                path=name,
            )
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
    except InputError:
        raise
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=name) from None
    data = load_json(
        raw,
        name,
        utf8_hint="; pyvmalloc capture writes UTF-8 JSON",
        nesting_hint="; pyvmalloc capture writes a flat object",
    )
    return check_meta(data, path=name)


def _cpu_list(value: Any, key: str, path: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise InputError(
            f"{key} must be a non-empty list of CPU numbers like [0, 1] "
            f"(/sys/devices/system/cpu/{key.removeprefix('cpus_')}), not {_short(value)}",
            path=path,
        )
    for c in value:
        if type(c) is not int or not 0 <= c < _NR_CPUS_MAX:
            raise InputError(
                f"{key} holds {_short(c)}; CPU numbers are integers 0..{_NR_CPUS_MAX - 1}",
                path=path,
            )
    if len(set(value)) != len(value):
        raise InputError(f"{key} lists a CPU twice: {_short(value)}", path=path)
    return value


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: Known fields and the JSON types ``pyvmalloc capture`` writes for them.
_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "format_version": (int,),
    "kernel_release": (str,),
    "kernel_version": (str,),
    "machine": (str,),
    "drop_caches": (bool,),
    "complete": (bool,),
    "marker_prefix": (str,),
    "lazy_max_pages": (int, type(None)),
    "lost_events": (int,),
    "overrun": (int,),
    "dropped_events": (int,),
    "event_counts": (dict,),
    "marker_lines": (dict,),
    "nr_lazy_max_observed": (list,),
    "buffer_size_kb_per_cpu": (int,),
    "kptr_restrict_was": (int,),
    "events_in_snapshot_window": (int,),
}


def check_meta(data: Any, *, path: str) -> dict[str, Any]:
    """Check a parsed ``meta.json``: an object whose known fields have their types.

    Booleans are JSON ``true``/``false`` only (``"no"`` is not read as true), counts
    are non-negative integers, CPU lists as in ``/sys/devices/system/cpu/possible``.
    """
    if not isinstance(data, dict):
        raise InputError(
            f"meta.json must hold a JSON object (pyvmalloc capture writes "
            f'{{"format": "pyvmalloc-capture", ...}}), not {_short(data)}',
            path=path,
        )
    for key, types in _TYPES.items():
        if key not in data:
            continue
        v = data[key]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            want = want.replace("bool", "true/false").replace("int", "integer")
            raise InputError(f"{key} must be {want}, not {_short(v)}", path=path)
        if type(v) is int and v < 0:
            raise InputError(f"{key} must not be negative, not {v}", path=path)
    possible = None
    if "cpus_possible" in data:
        possible = _cpu_list(data["cpus_possible"], "cpus_possible", path)
    if "cpus_online" in data:
        online = _cpu_list(data["cpus_online"], "cpus_online", path)
        if possible is not None and not set(online) <= set(possible):
            raise InputError(
                f"cpus_online {_short(online)} is not a subset of cpus_possible {_short(possible)}",
                path=path,
            )
    counts = data.get("event_counts")
    if counts is not None:
        for k, v in counts.items():
            if type(v) is not int or v < 0:
                raise InputError(
                    f"event_counts[{k!r}] must be a non-negative integer, not {_short(v)}",
                    path=path,
                )
    return data


def nr_cpus(meta: dict[str, Any]) -> int | None:
    """CPU ids of the captured machine are below this (``nr_cpu_ids``), if known."""
    possible = meta.get("cpus_possible")
    return max(possible) + 1 if possible else None


@dataclass(frozen=True, slots=True)
class Capture:
    """The files of one capture directory (all checked regular files)."""

    directory: Path
    trace: Path
    snapshot: Path
    meta: dict[str, Any]
    end_snapshot: Path | None
    #: ``kstate.json[.gz]`` and ``kstate.end.json[.gz]``, when the capture read them.
    kstate: Path | None = None
    kstate_end: Path | None = None

    def kstates(self) -> tuple[KState | None, KState | None]:
        """Load and check the kstate files (:func:`~pyvmalloc.trace.kstate.load_kstate`)."""
        return (
            load_kstate(self.kstate) if self.kstate is not None else None,
            load_kstate(self.kstate_end) if self.kstate_end is not None else None,
        )


def _one_of(d: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``d`` (both at once is ambiguous)."""
    plain, packed = member(d, name), member(d, name + ".gz")
    if plain is not None and packed is not None:
        raise InputError(f"holds both {name} and {name}.gz; keep one", path=str(d))
    return plain or packed


def load_capture_dir(path: str | os.PathLike[str]) -> Capture:
    """Resolve and check a capture directory: its trace, snapshot and ``meta.json``."""
    d = _directory(path)
    meta_path = member(d, "meta.json")
    meta = read_meta(meta_path) if meta_path is not None else {}
    trace = trace_file(d)
    snap = member(d, "vmallocinfo")
    if snap is None:
        raise InputError("no vmallocinfo snapshot in this capture directory", path=str(d))
    return Capture(
        d,
        trace,
        snap,
        meta,
        member(d, "vmallocinfo.end"),
        _one_of(d, "kstate.json"),
        _one_of(d, "kstate.end.json"),
    )
