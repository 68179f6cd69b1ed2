"""The model's exception types, one per kind of trouble.

* :class:`InvariantError` — the model's own state is inconsistent (a bug in the
  model, or in a policy plugged into it). Every layer's ``check()`` raises it and
  names the broken object.
* :class:`InputError` — an error in a file a user hands to pyvmalloc (a trace, a
  ``/proc/vmallocinfo`` snapshot, a capture's ``meta.json``, a capture directory): a
  :class:`ValueError` whose message starts with ``PATH:LINE:`` (``PATH:`` for a file
  or directory without lines) and says what is wrong and what the kernel (or
  ``pyvmalloc capture``) would have written there. The command line prints it as
  ``pyvmalloc: error: ...`` and exits with status 2.

This module imports nothing from the package, so every layer can use it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["InputError", "InvariantError"]

#: Longest excerpt of an offending line quoted in a message.
_QUOTE_MAX = 160


class InvariantError(AssertionError):
    """A model invariant is broken; the message says which and where.

    ``pfn`` names the page frame when the broken object is a physical page.
    """

    def __init__(self, message: str, pfn: int | None = None) -> None:
        super().__init__(message)
        self.pfn = pfn


class InputError(ValueError):
    """An error in a user's file; ``str()`` is ``PATH:LINE: message[: 'text']``.

    ``line`` is 0 for an error that concerns the whole file (then the message starts
    with ``PATH:``). ``text`` is the offending line, quoted (shortened) in the message.
    """

    #: How a message names input that came without a path.
    unnamed: ClassVar[str] = "<input>"

    def __init__(self, message: str, *, path: str | None, line: int = 0, text: str = "") -> None:
        self.path = path
        self.line = line
        self.text = text
        self.reason = message
        where = path if path is not None else self.unnamed
        if line:
            where = f"{where}:{line}"
        shown = text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."
        super().__init__(f"{where}: {message}" + (f": {shown!r}" if text else ""))
