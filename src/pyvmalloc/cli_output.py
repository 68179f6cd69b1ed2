"""Output conventions shared by every ``pyvmalloc`` command.

* :func:`console` — a rich ``Console`` that never hard-wraps or truncates when its
  stream is not a terminal (piped output is for ``grep``, ``diff`` and ``jq``), prints
  ANSI only to a terminal (or with ``FORCE_COLOR``), and no emoji codes.
* :func:`esc` — user text (paths, command lines) is never interpreted as rich markup:
  ``[/]`` in a path must not crash, ``[link=...]`` must not become a hyperlink.
* :func:`jsonable` / :func:`write_json` — JSON output with every address as a
  ``"0x..."`` string: kernel addresses exceed 2^53, where ``jq`` and JavaScript lose
  digits. ``--json -`` writes to stdout (and the human report is left out).
* :func:`Ticker` — progress on any stream: a rich bar on a terminal, a plain line every
  few seconds otherwise.

>>> jsonable({"va_start": 0xffffc90000000000, "size": 8192, "rows": [{"addr": 0}]})
{'va_start': '0xffffc90000000000', 'size': 8192, 'rows': [{'addr': '0x0'}]}
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

__all__ = [
    "ADDRESS_KEYS",
    "Ticker",
    "add_json_argument",
    "add_profile_argument",
    "check_writable",
    "console",
    "esc",
    "hexaddr",
    "json_to_stdout",
    "jsonable",
    "rule",
    "save_figure",
    "table_json",
    "write_json",
    "write_output",
]

#: JSON keys whose integer values are addresses (written as "0x..." strings).
ADDRESS_KEYS = frozenset(
    {
        "addr",
        "address",
        "kernel",
        "model",
        "vstart",
        "vend",
        "va_start",
        "va_end",
        "start",
        "end",
        "vmalloc_start",
        "vmalloc_end",
        "caller_addr",
        "phys_addr",
        "phys",
        "entry",
        "block_start",
        "block_end",
        "vm_struct",
        "vmap_area",
    }
)

#: Integers this large are not exact in double-precision JSON readers (jq, JavaScript).
_EXACT = 1 << 53

#: Width used for tables when the stream is not a terminal: wide enough that no
#: column is truncated or folded (rich tables only take the room their cells need).
_PIPE_WIDTH = 4096


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A Console for command output: wraps only on a terminal, never emits emoji codes."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    tty = _isatty(stream)
    return Console(
        file=file,
        stderr=stderr,
        soft_wrap=not tty,
        width=None if tty else _PIPE_WIDTH,
        emoji=False,
        highlight=False,
    )


def rule(c: Console, title: str) -> None:
    """A section heading: rich's rule on a terminal, a plain 80-column line otherwise."""
    if c.is_terminal:
        c.rule(esc(title))
    else:
        c.print(f"── {title} " + "─" * max(3, 76 - len(title)), markup=False)


def esc(text: object) -> str:
    """``text`` made safe to embed in a rich markup string."""
    return escape(str(text))


def hexaddr(value: int | None) -> str | None:
    """An address as JSON shows it: ``"0x..."`` (None stays None)."""
    return None if value is None else f"{value:#x}"


def jsonable(obj: Any, key: str | None = None) -> Any:
    """``obj`` with addresses as hex strings (by key, and any integer beyond 2^53)."""
    t = type(obj)
    if t is str or t is bool or obj is None:  # the common exact types first: a big
        return obj  # answer (a board log's 10,000 requests) is mostly these
    if t is int:
        if (key is not None and key in ADDRESS_KEYS) or abs(obj) >= _EXACT:
            return f"{obj:#x}" if obj >= 0 else f"-{-obj:#x}"
        return obj
    if t is dict:
        return {k: jsonable(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        return float(obj)
    if isinstance(obj, numbers.Integral):  # int, and numpy's integers
        obj = int(obj)
        if (key is not None and key in ADDRESS_KEYS) or abs(obj) >= _EXACT:
            return f"{obj:#x}" if obj >= 0 else f"-{-obj:#x}"
        return obj
    if isinstance(obj, dict):
        return {k: jsonable(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, key) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v, key) for v in sorted(obj, key=repr)]
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _cell(text: str) -> str | int | float:
    t = text.strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})*|-?\d+", t):
        return int(t.replace(",", ""))
    if re.fullmatch(r"-?\d+\.\d+", t):
        return float(t)
    return t


def table_json(table: Any) -> list[dict[str, str | int | float]]:
    """A rich ``Table``'s rows as dicts keyed by column header (for ``--json``); cells
    that are plain numbers become numbers."""
    cols = [(str(c.header), [_cell(str(x)) for x in c.cells]) for c in table.columns]
    n = max((len(cells) for _, cells in cols), default=0)
    return [{h: cells[i] for h, cells in cols if i < len(cells)} for i in range(n)]


def json_to_stdout(dest: str | None) -> bool:
    """True when ``--json`` asks for stdout (``-``): the human report is left out."""
    return dest == "-"


def write_json(data: Any, dest: str | os.PathLike[str]) -> None:
    """Write ``data`` (see :func:`jsonable`) to ``dest``, or to stdout for ``-``."""
    text = json.dumps(jsonable(data), indent=1) + "\n"
    if str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_output(dest, text)


def write_output(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to the file ``dest``; a write error (ENOSPC on a full disk, EIO)
    names the file, as an open error does."""
    try:
        Path(dest).write_text(text, encoding="utf-8")
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, f"cannot write: {e.strerror or e}", os.fspath(dest)) from None


def save_figure(fig: Any, dest: str | os.PathLike[str], **kwargs: Any) -> None:
    """``fig.savefig`` to exactly ``dest``: matplotlib appends ``.png`` to a name with
    no image suffix (``--plot /dev/full`` wrote ``/dev/full.png``); such a name gets a
    PNG under its own name instead."""
    suffix = Path(dest).suffix[1:].lower()
    if suffix not in fig.canvas.get_supported_filetypes():
        kwargs.setdefault("format", "png")
    try:
        fig.savefig(os.fspath(dest), **kwargs)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, f"cannot write: {e.strerror or e}", os.fspath(dest)) from None


def check_writable(dest: str | os.PathLike[str] | None, what: str) -> None:
    """Fail before any work if ``dest`` (an output file) cannot be created."""
    if dest is None or str(dest) == "-":
        return
    if not str(dest):
        raise ValueError(f"{what}: an empty file name")
    p = Path(dest)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ValueError(f"{what} {dest}: is a directory")
    if not parent.is_dir():
        raise ValueError(f"{what} {dest}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{what} {dest}: not writable")


class Ticker:
    """Progress of a long run, on any stream.

    On a terminal, a transient rich bar; otherwise a plain line (``label: 12,000 /
    50,000 (24 %), 3 s``) at most every ``every`` seconds, so logs of piped runs show
    that work goes on. Call it with the work done so far; :meth:`close` at the end.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "",
        every: float = 5.0,
        file: IO[str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = max(1, total)
        self.unit = unit
        self.every = every
        self.file = file or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last = self.t0
        self._bar: Any = None
        self._task: Any = None
        if enabled and _isatty(self.file):
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} " + unit),
                TimeRemainingColumn(),
                console=Console(file=self.file, emoji=False),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(escape(label), total=self.total)

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=min(done, self.total))
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            pct = 100 * min(done, self.total) / self.total
            spent = now - self.t0
            left = ""
            if 0 < done < self.total:
                left = f", about {spent * (self.total - done) / done:.0f} s left"
            print(
                f"{self.label}: {done:,}/{self.total:,} {self.unit} ({pct:.0f} %), "
                f"{spent:.0f} s{left}",
                file=self.file,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Ticker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_profile_argument(
    p: Any, *, default: str = "6.18", what: str = "kernel profile", dest: str = "profile"
) -> None:
    """``--profile``, with the choices taken from :data:`pyvmalloc.config.PROFILES`."""
    from pyvmalloc.config import PROFILES

    p.add_argument(
        "--profile",
        dest=dest,
        default=default,
        choices=list(PROFILES),
        help=f"{what}: {', '.join(PROFILES)} (default {default})",
    )


def add_json_argument(p: Any, what: str = "the result") -> None:
    """``--json OUT``: write ``what`` as JSON to OUT, or to stdout with ``-``."""
    p.add_argument(
        "--json",
        metavar="OUT",
        help=f"write {what} as JSON to OUT ('-': stdout, instead of the report); "
        'addresses are "0x..." strings',
    )
