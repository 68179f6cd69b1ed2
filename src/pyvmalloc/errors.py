"""The model's exception types, one per kind of trouble.

* :class:`InvariantError` — the model's own state is inconsistent (a bug in the
  model, or in a policy plugged into it). Every layer's ``check()`` raises it and
  names the broken object.

This module imports nothing from the package, so every layer can use it.
"""

from __future__ import annotations

__all__ = ["InvariantError"]


class InvariantError(AssertionError):
    """A model invariant is broken; the message says which and where."""
