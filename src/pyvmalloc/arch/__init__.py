"""Per-architecture address-space layouts (the model's ``arch/*/include/asm``).

Each architecture module exposes ``layout(machine) -> dict[str, int]`` returning at
least ``VMALLOC_START``, ``VMALLOC_END``, ``MODULES_VADDR``, ``MODULES_END``,
``PAGE_OFFSET`` and ``IOREMAP_MAX_ORDER``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["MachineSpec", "arch_layout"]


class MachineSpec(Protocol):
    """What a layout reads of the machine (``pyvmalloc.config.Machine``, which calls
    :func:`arch_layout`; arch/ sits below config and does not import it)."""

    @property
    def arch(self) -> str: ...
    @property
    def paging_levels(self) -> int: ...
    @property
    def ram(self) -> int: ...
    @property
    def vmalloc_reserve(self) -> int: ...


def arch_layout(machine: MachineSpec) -> dict[str, int]:
    """The constants of ``machine.arch`` for this machine."""
    if machine.arch == "x86_64":
        from pyvmalloc.arch import x86_64

        return x86_64.layout(machine)
    from pyvmalloc.arch import i386

    return i386.layout(machine)
