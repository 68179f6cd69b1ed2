"""The Kernel facade: its vmalloc API functions are the vmalloc layer's own."""

from __future__ import annotations

import inspect

from pyvmalloc.kernel import Kernel, _VmallocApi
from pyvmalloc.vmalloc import Vmalloc

KERNEL_DUNDER = ("__vmalloc", "__vmalloc_node", "__vmalloc_node_range", "__get_vm_area_caller")


def _api_names() -> list[str]:
    return [n for n, v in vars(Kernel).items() if isinstance(v, _VmallocApi)]


def test_every_forward_is_a_vmalloc_function_with_its_signature() -> None:
    names = _api_names()
    assert len(names) == len(set(names)) >= 38
    for name in names:
        fn = getattr(Kernel, name)  # on the class: the layer's function itself
        assert inspect.isfunction(fn) and fn.__qualname__.startswith("Vmalloc."), name
        assert fn.__doc__, name
        assert inspect.signature(fn) == inspect.signature(getattr(Vmalloc, fn.__name__))


def test_on_a_model_the_forward_is_the_bound_layer_method() -> None:
    k = Kernel(profile="6.18")
    assert k.vmalloc == k.vm.vmalloc and k.vmalloc.__self__ is k.vm
    a = k.vmalloc(8192, 1, "t+0x0/0x1")  # positional cpu and caller, as before
    assert a == 0xFFFFC90000000000
    k.vfree(a, 1)
    assert getattr(k, "__vmalloc")(4096, 0xCC0) == 0xFFFFC90000000000 + 0x3000


def test_kernel_double_underscore_names_one_rule() -> None:
    for kname in KERNEL_DUNDER:
        assert vars(Kernel)[kname] is vars(Kernel)[kname[1:]]
    for kname in ("__vmalloc_node_range", "__get_vm_area_node", "__vmalloc_node_flags"):
        assert vars(Vmalloc)[kname] is vars(Vmalloc)[kname[1:]]
    sig = inspect.signature(getattr(Kernel, "__vmalloc_node_range"))
    assert list(sig.parameters)[1:] == [
        "size", "align", "start", "end", "gfp", "prot", "vm_flags", "node", "caller", "cpu",
    ]  # fmt: skip
