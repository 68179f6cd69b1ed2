"""The model's kernel log (``dmesg``), ``WARN`` reporting and strict mode.

The kernel reports allocation failures and misuse with ``pr_warn``/``WARN`` and goes
on; the model does the same: every message lands in :class:`KernelLog` with the
kernel's text. A caller that prefers exceptions sets ``strict=True``, and then each
``WARN`` (not each plain warning) also raises :class:`KernelWarning`.

Strict mode raises at the API boundary, not at the ``WARN`` site: the kernel goes on
after a ``WARN`` (it unwinds: frees the vm_struct, the pages, the range), so the
model must too. Each API entry brackets its body with :meth:`KernelLog.enter` /
:meth:`KernelLog.leave` (or ``with log.api():``); a ``WARN`` inside is logged and
remembered, and the outermost ``leave`` raises the first one once the model is in
the state the kernel is in after the warning. A ``WARN`` outside any API call
raises at once.

A ``WARN`` at a site :mod:`pyvmalloc.bugsites` has a line for (``WARN_SITES``) prints
the kernel's report as that release's ``__warn()`` does, with what the model knows:
``------------[ cut here ]------------`` (not before a ``WARN_ON`` in 4.19), the
message (``WARN(cond, fmt)``; a ``WARN_ON`` has none, and the model's description
follows as its own ``pyvmalloc:`` line), ``WARNING: CPU: C PID: P at FILE:LINE
FUNCTION`` and ``---[ end trace ID ]---``. Not modelled, so not printed: the
``Modules linked in:`` line, ``show_regs()`` (the CPU/Comm/Tainted and Hardware name
lines, registers, Code, Call Trace) and the ``+0xOFF/0xSIZE`` that ``%pS`` adds to the
function (see :class:`pyvmalloc.bugsites.WarnSite`). ``C`` is the CPU of the API call
(``?`` where the site is reached without one); ``P`` is :attr:`KernelLog.pid` (the model
has no tasks; 0, the ``swapper/0`` its default ``comm`` names). A ``WARN`` at a site the
model has no line for is one ``pyvmalloc: WARN: TEXT`` line: the model's, not the
kernel's report.

A ``BUG_ON`` prints the kernel's own lines, ``------------[ cut here ]------------``
and ``kernel BUG at FILE:LINE!`` with the line of that release's source
(:mod:`pyvmalloc.bugsites`); the model's explanation follows them in ``dmesg`` (and in
the strict-mode exception). The oops ``die()`` prints after them is not modelled.

>>> log = KernelLog()
>>> log.WARN("Trying to vfree() nonexistent vm area (0x1000)", "vfree:nonexistent", cpu=1)
>>> log.lines[-1].text
'Trying to vfree() nonexistent vm area (0x1000)'
>>> print(log.lines[-1])
[     1] ------------[ cut here ]------------
[     1] Trying to vfree() nonexistent vm area (0x1000)
[     1] WARNING: CPU: 1 PID: 0 at mm/vmalloc.c:3430 vfree
[     1] ---[ end trace 0000000000000000 ]---
>>> log = KernelLog(release="5.4")
>>> log.BUG("vunmap:in_interrupt()", "vunmap() called in interrupt context")
True
>>> print(log.lines[-1])
[     1] ------------[ cut here ]------------
[     1] kernel BUG at mm/vmalloc.c:2350!
[     1] pyvmalloc: vunmap() called in interrupt context
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pyvmalloc.bugsites import BugSite, WarnReport, WarnSite, bug_sites, warn_report, warn_sites

__all__ = ["TAINT_WARN", "KernelHang", "KernelLog", "KernelWarning", "LogLine"]

#: ``BUG``: the kernel stops (BUG_ON, panic); ``model``: the model refuses a call the
#: kernel has no check for (its text is the model's, never presented as the kernel's).
Level = Literal["info", "warn", "WARN", "BUG", "model"]


#: ``CUT_HERE`` (include/asm-generic/bug.h), without its newline
_CUT_HERE = "------------[ cut here ]------------"
#: ``TAINT_WARN`` (include/linux/panic.h; bit 9, the ``W`` of ``Tainted:``)
TAINT_WARN = 1 << 9


class KernelWarning(RuntimeError):
    """Raised in strict mode where the kernel would ``WARN`` (or ``BUG``)."""


class KernelHang(RuntimeError):
    """The call would never return in the kernel (a ``__GFP_NOFAIL`` retry loop
    that nothing in the model can ever satisfy). Raised after the model is unwound."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One ``dmesg`` message: ``text`` is what the kernel prints; ``why`` (BUG lines)
    is the model's explanation, printed after it."""

    seq: int
    level: Level
    text: str
    why: str = ""
    #: the lines printed for a ``WARN`` report (cut here ... end trace); ``text``
    #: stays the message or the model's description
    report: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"[{self.seq:>6}] "
        if self.report:
            return "\n".join(head + line for line in self.report)
        if self.level == "WARN":
            return f"{head}pyvmalloc: WARN: {self.text}"
        if self.level == "model":
            return f"{head}pyvmalloc: {self.text}"
        if self.why:
            return f"{head}{self.text}\n{head}pyvmalloc: {self.why}"
        return head + self.text


@dataclass(repr=False)
class KernelLog:
    """An append-only ring of kernel messages (``dmesg``)."""

    strict: bool = False
    limit: int = 100_000
    lines: list[LogLine] = field(default_factory=list)
    _seq: int = 0
    #: API calls in progress (nesting depth); strict raises wait until it is 0.
    depth: int = 0
    #: strict-mode warnings raised inside the current API call, raised on leave
    pending: list[str] = field(default_factory=list)
    #: ``WARN_ON_ONCE`` / ``pr_*_once`` sites that have fired (per model)
    once: set[str] = field(default_factory=set)
    #: a call that would never return in the kernel (see :meth:`hang`)
    hung: str | None = None
    #: an exception a trace subscriber raised inside the current API call: the
    #: tracepoint cannot abort the operation, so it is raised when the call returns
    probe_error: BaseException | None = None
    #: the release whose BUG_ON lines are printed (``KernelProfile.bug_lines``)
    release: str = "6.18"
    #: debug options built in (``CONFIG_DEBUG_VM`` turns ``VM_BUG_ON`` into
    #: ``BUG_ON``); empty like the live 6.18 machine's config
    configs: frozenset[str] = frozenset()
    #: the PID ``WARNING:`` lines print (the model has no tasks: 0, ``swapper/0``)
    pid: int = 0
    #: ``oops_id`` of the releases that print it (``WarnReport.random_oops_id``): the
    #: kernel's starts random at boot, the model's at 0; each report adds 1 first
    oops_id: int = 0
    #: ``/proc/sys/kernel/tainted``'s bits the model sets: ``TAINT_WARN`` after a WARN
    tainted: int = 0
    _sites: Mapping[str, BugSite] = field(init=False, repr=False)
    _warn_sites: Mapping[str, WarnSite] = field(init=False, repr=False)
    _report: WarnReport = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sites = bug_sites(self.release)
        self._warn_sites = warn_sites(self.release)
        self._report = warn_report(self.release)

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

    def _strict(self, text: str) -> None:
        if self.depth:
            self.pending.append(text)
        else:
            raise KernelWarning(text)

    def WARN(self, text: str, site: str = "", *, cpu: int | None = None) -> None:
        """``WARN(1, ...)`` / ``WARN_ON(1)``: misuse the kernel reports with a
        backtrace. ``site`` (a name in ``bugsites.WARN_SITES``) gives the report its
        ``FILE:LINE FUNCTION``; ``text`` is the kernel's message for a ``WARN`` with a
        format, the model's description for a ``WARN_ON``. ``cpu``: the API call's."""
        self.tainted |= TAINT_WARN
        where = self._warn_sites.get(site) if site else None
        self._seq += 1
        report = self._report_lines(where, text, cpu) if where is not None else ()
        self.lines.append(LogLine(self._seq, "WARN", text, "", report))
        if len(self.lines) > self.limit:
            del self.lines[: len(self.lines) - self.limit]
        if self.strict:
            self._strict(text)

    def _report_lines(self, where: WarnSite, text: str, cpu: int | None) -> tuple[str, ...]:
        """What ``__warn_printk`` + ``report_bug`` + ``__warn`` print, less the parts
        the model does not have (modules, registers, call trace, ``%pS`` offsets)."""
        out: list[str] = []
        if where.has_message:
            out += [_CUT_HERE, text]  # __warn_printk: cut here, then the format
        elif self._report.warn_on_cut_here:
            out.append(_CUT_HERE)  # report_bug, for a trap without NO_CUT_HERE
        on = "?" if cpu is None else str(cpu)
        out.append(
            f"WARNING: CPU: {on} PID: {self.pid} at {where.file}:{where.line} {where.function}"
        )
        if not where.has_message:
            out.append(f"pyvmalloc: {text}")
        trace = 0
        if self._report.random_oops_id:
            self.oops_id += 1  # init_oops_id(): oops_id++ before each end marker
            trace = self.oops_id
        out.append(f"---[ end trace {trace:016x} ]---")
        return tuple(out)

    def WARN_ONCE(self, site: str, text: str, *, cpu: int | None = None) -> bool:
        """``WARN_ON_ONCE`` / ``WARN_ONCE``: print (and, strict, raise) only the first
        time ``site`` fires in this model; the condition holds every time, so the
        caller takes the failure path regardless. True if it printed."""
        if site in self.once:
            return False
        self.once.add(site)
        self.WARN(text, site, cpu=cpu)
        return True

    def BUG(self, site: str, why: str, *args: str) -> bool:
        """``BUG_ON()`` / ``BUG()`` / ``panic()`` at ``site`` (a name in
        :mod:`pyvmalloc.bugsites`): the kernel stops here, printing ``kernel BUG at
        FILE:LINE!`` (``report_bug()``, lib/bug.c) or its panic text (``args`` fill
        the panic's ``%s``); the model logs that line with ``why`` after it and
        refuses the call. In strict mode it raises, like :meth:`WARN`.

        A ``VM_BUG_ON`` without ``CONFIG_DEBUG_VM`` is compiled out: nothing is
        printed and False is returned (the kernel goes on). A site this release does
        not have is the model's own refusal (:meth:`refuse`). True if it stopped.
        """
        where = self._sites.get(site)
        if where is None:
            self.refuse(f"{why} [no {site} check in the {self.release} source]")
            return True
        if where.config and where.config not in self.configs:
            return False
        text = where.kernel_line(*args)
        self._seq += 1
        # report_bug() prints CUT_HERE before "kernel BUG at" (4.19.1, 5.4.0, 6.18.2);
        # panic() prints its line alone. The oops that follows is not modelled.
        report = () if where.panic else (_CUT_HERE, text, f"pyvmalloc: {why}")
        self.lines.append(LogLine(self._seq, "BUG", text, why, report))
        if len(self.lines) > self.limit:
            del self.lines[: len(self.lines) - self.limit]
        if self.strict:
            self._strict(f"{text} ({why})")
        return True

    def might_sleep(self, site: str, why: str) -> bool:
        """``might_sleep()`` at ``site`` in atomic context: with
        ``CONFIG_DEBUG_ATOMIC_SLEEP`` the kernel prints ``BUG: sleeping function
        called from invalid context at FILE:LINE`` (``__might_resched``, rate-limited
        to once a second there, not here) and goes on; without it, nothing. Never
        raises. True if it printed."""
        where = self._sites.get(site)
        if where is None or where.config not in self.configs:
            return False
        text = f"BUG: sleeping function called from invalid context at {where.file}:{where.line}"
        self._seq += 1
        self.lines.append(LogLine(self._seq, "warn", text, why))
        if len(self.lines) > self.limit:
            del self.lines[: len(self.lines) - self.limit]
        return True

    def refuse(self, why: str) -> None:
        """The model refuses a call the kernel has no check for (it would go on
        with a corrupted state, or fault somewhere the model cannot reproduce).
        Logged as the model's own line, never as kernel text; strict mode raises."""
        self._add("model", why)
        if self.strict:
            self._strict(f"pyvmalloc: {why}")

    def hang(self, text: str) -> None:
        """The kernel would loop here forever (a ``__GFP_NOFAIL`` retry nothing can
        satisfy). Logged as a WARN; the model unwinds the call as a failure and the
        API boundary raises :class:`KernelHang` (strict or not): a model never
        returns what the kernel cannot."""
        self._add("WARN", text)
        if self.depth:
            if self.hung is None:
                self.hung = text
        else:
            raise KernelHang(text)

    # --- API boundary ---------------------------------------------------------------
    def enter(self) -> None:
        """An API call starts: strict warnings are held until it returns.

        (Hot paths inline this as ``log.depth += 1``.)"""
        self.depth += 1

    def leave(self) -> None:
        """An API call returns: the outermost one raises the first held warning.

        (Hot paths inline this as ``log.depth -= 1`` and call :meth:`raise_held`
        when ``pending`` or ``hung`` is set.)"""
        self.depth -= 1
        self.raise_held()

    def unwind(self) -> None:
        """An exception other than a held warning leaves the API call: the depth
        drops and, at the outermost call, the held warnings are dropped (the model
        raised something more important)."""
        self.depth -= 1
        if not self.depth:
            self.pending.clear()
            self.hung = None
            self.probe_error = None

    def raise_held(self) -> None:
        """Outside every API call, raise the held :class:`KernelHang` or the first
        held :class:`KernelWarning` (and forget the rest)."""
        if self.depth:
            return
        if self.probe_error is not None:
            error, self.probe_error = self.probe_error, None
            self.pending.clear()
            self.hung = None
            raise error
        if self.hung is not None:
            text, self.hung = self.hung, None
            self.pending.clear()
            raise KernelHang(text)
        if self.pending:
            first = self.pending[0]
            self.pending.clear()
            raise KernelWarning(first)

    @contextlib.contextmanager
    def api(self) -> Iterator[None]:
        """``with log.api():`` brackets one API call (see :meth:`enter`/:meth:`leave`).

        An exception other than a held warning propagates as is (held warnings are
        dropped: the model raised something more important)."""
        self.depth += 1
        try:
            yield
        except BaseException:
            self.unwind()
            raise
        self.leave()

    def __repr__(self) -> str:
        mode = "strict" if self.strict else "lenient"
        return f"<KernelLog {len(self.lines)} lines ({mode})>"

    def dmesg(self) -> str:
        return "\n".join(str(line) for line in self.lines)

    def grep(self, needle: str) -> list[str]:
        return [line.text for line in self.lines if needle in line.text]
