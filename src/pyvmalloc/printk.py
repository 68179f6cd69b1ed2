"""The model's kernel log (``dmesg``), ``WARN`` reporting and strict mode.

The kernel reports allocation failures and misuse with ``pr_warn``/``WARN`` and goes
on; the model does the same: every message lands in :class:`KernelLog` with the
kernel's text. A caller that prefers exceptions sets ``strict=True``, and then each
``WARN`` (not each plain warning) also raises :class:`KernelWarning`.

>>> log = KernelLog()
>>> log.warn("Trying to vfree() nonexistent vm area (0x1000)")
>>> log.lines[-1].text
'Trying to vfree() nonexistent vm area (0x1000)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["KernelLog", "KernelWarning", "LogLine"]

Level = Literal["info", "warn", "WARN", "BUG"]


class KernelWarning(RuntimeError):
    """Raised in strict mode where the kernel would ``WARN`` (or ``BUG``)."""


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    level: Level
    text: str

    def __str__(self) -> str:
        prefix = (
            "WARNING: " if self.level == "WARN" else ("kernel BUG: " if self.level == "BUG" else "")
        )
        return f"[{self.seq:>6}] {prefix}{self.text}"


@dataclass
class KernelLog:
    """An append-only ring of kernel messages (``dmesg``)."""

    strict: bool = False
    limit: int = 100_000
    lines: list[LogLine] = field(default_factory=list)
    _seq: int = 0

    def _add(self, level: Level, text: str) -> None:
        self._seq += 1
        self.lines.append(LogLine(self._seq, level, text))
        if len(self.lines) > self.limit:
            del self.lines[: len(self.lines) - self.limit]

    def info(self, text: str) -> None:
        """``pr_info``."""
        self._add("info", text)

    def warn(self, text: str) -> None:
        """``pr_warn`` / ``warn_alloc``: a warning that never raises."""
        self._add("warn", text)

    def WARN(self, text: str) -> None:
        """``WARN(1, ...)``: misuse the kernel reports with a backtrace."""
        self._add("WARN", text)
        if self.strict:
            raise KernelWarning(text)

    def BUG(self, text: str) -> None:
        """``BUG()``: the kernel would stop here; the model logs it and refuses the call.

        In strict mode it raises, like :meth:`WARN`.
        """
        self._add("BUG", text)
        if self.strict:
            raise KernelWarning(f"kernel BUG: {text}")

    def dmesg(self) -> str:
        return "\n".join(str(line) for line in self.lines)

    def grep(self, needle: str) -> list[str]:
        return [line.text for line in self.lines if needle in line.text]
