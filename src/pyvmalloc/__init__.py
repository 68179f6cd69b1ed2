"""pyvmalloc: an executable model of the Linux kernel's vmalloc subsystem.

>>> from pyvmalloc import Kernel
>>> k = Kernel(profile="6.18", cpus=2)
>>> va = k.alloc_vmap_area(8192, 1, k.machine.vmalloc_start, k.machine.vmalloc_end)
>>> hex(va.va_start)
'0xffffc90000000000'
"""

__version__ = "0.1.0"

from pyvmalloc.config import PROFILES, KernelProfile, Machine, get_profile
from pyvmalloc.errors import InputError
from pyvmalloc.printk import KernelHang, KernelLog, KernelWarning

__all__ = [
    "PROFILES",
    "InputError",
    "Kernel",
    "KernelHang",
    "KernelLog",
    "KernelProfile",
    "KernelWarning",
    "Machine",
    "__version__",
    "accelerator",
    "find_vmap_area",
    "for_each_vm_area",
    "for_each_vmap_area",
    "get_profile",
    "vmalloc_to_page",
    "vmalloc_to_pfn",
]


_HELPERS = (
    "find_vmap_area",
    "for_each_vm_area",
    "for_each_vmap_area",
    "vmalloc_to_page",
    "vmalloc_to_pfn",
)


def accelerator() -> str:
    """Which hot-path code runs: ``C accelerator`` (pyvmalloc._speedups) or ``pure Python``
    (with the reason: ``PYVMALLOC_PURE=1``, or no compiled extension). See ``_accel``."""
    from pyvmalloc import _accel

    return _accel.SUMMARY


def __getattr__(name: str) -> object:
    # Kernel pulls in every layer; import it lazily so light users stay light.
    if name == "Kernel":
        from pyvmalloc.kernel import Kernel

        return Kernel
    if name in _HELPERS:
        from pyvmalloc import helpers

        return getattr(helpers, name)
    raise AttributeError(name)
