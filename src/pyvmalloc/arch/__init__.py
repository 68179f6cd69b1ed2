"""Per-architecture address-space layouts (the model's ``arch/*/include/asm``).

Each architecture module exposes ``layout(machine) -> dict[str, int]`` returning at
least ``VMALLOC_START``, ``VMALLOC_END``, ``MODULES_VADDR``, ``MODULES_END``,
``PAGE_OFFSET`` and ``IOREMAP_MAX_ORDER``.
"""

from __future__ import annotations

from pyvmalloc.arch.spec import MachineSpec

__all__ = ["MachineSpec", "arch_layout"]


def arch_layout(machine: MachineSpec) -> dict[str, int]:
    """The constants of ``machine.arch`` for this machine."""
    if machine.arch == "x86_64":
        from pyvmalloc.arch import x86_64

        return x86_64.layout(machine)
    if machine.arch == "arm":
        from pyvmalloc.arch import arm

        return arm.layout(machine)
    if machine.arch == "arm64":
        from pyvmalloc.arch import arm64

        return arm64.layout(machine)
    from pyvmalloc.arch import i386

    return i386.layout(machine)
