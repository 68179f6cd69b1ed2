"""The one exception type for bad input files.

Every error found in a file a user hands to pyvmalloc (a trace, a ``/proc/vmallocinfo``
snapshot, a capture's ``meta.json``, a capture directory) is an :class:`InputError`:
a :class:`ValueError` whose message starts with ``PATH:LINE:`` (``PATH:`` for a file
or directory without lines) and says what is wrong and what the kernel (or
``pyvmalloc capture``) would have written there. The command line prints it as
``pyvmalloc: error: ...`` and exits with status 2.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["InputError"]

#: Longest excerpt of an offending line quoted in a message.
_QUOTE_MAX = 160


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
