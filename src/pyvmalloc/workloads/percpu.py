"""A minimal percpu allocator (``__alloc_percpu``/``free_percpu``) on top of the model.

Only what ``pcpu_alloc_test`` of ``lib/test_vmalloc.c`` needs, and only the part that
touches vmalloc: dynamic percpu *chunks* take their address space from
``pcpu_get_vm_areas`` (top-down, congruent, no guard pages) and give it back with
``pcpu_free_vm_areas``.

Model (simplified on purpose, documented here):

* One group (one NUMA node) per chunk, so one area per chunk: ``nr_units`` units of
  ``unit_size`` bytes, one unit per possible CPU, the area rounded up to the atom
  size (2 MiB, as x86_64 with PSE uses for ``pcpu_atom_size``) and aligned to it.
  Default ``unit_size`` 1 MiB: on the live 2-CPU 6.18 machine the percpu area at the
  top of the vmalloc range is 2 MiB.
* No first (embedded) chunk and no reserved area: every chunk is a dynamic one.
* Objects live at the same offset in every unit, so one allocation map per chunk
  suffices: sorted free extents ``[start, end)`` in unit-offset space with 4-byte
  granularity (``PCPU_MIN_ALLOC_SIZE``); first fit over the chunks in creation order,
  then first fit inside the chunk with the requested alignment (the kernel's bitmap
  with block hints and size-sorted chunk slots is replaced by this plain scan).
* Profiles without ``pcpu_get_vm_areas`` in the model (4.19) get a stub chunk: one
  ``alloc_vmap_area`` of the same size and alignment, lowest fit inside the top
  64 GiB of the vmalloc range.
* Backing pages are not populated (the kernel maps pages into the units on demand):
  only address space is modelled.
* A chunk that becomes empty is released at once unless it is the only empty chunk
  (the kernel's balance work keeps one spare); :meth:`PercpuAllocator.release_empty`
  releases the spare too.

The returned "pointer" is the object's address in unit 0 (what ``per_cpu_ptr(p, 0)``
would be); it is never 0.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pyvmalloc.vmap.area import VmapArea

if TYPE_CHECKING:
    from pyvmalloc.kernel import Kernel

__all__ = ["PCPU_MIN_ALLOC_SIZE", "PcpuChunk", "PercpuAllocator"]

PCPU_MIN_ALLOC_SIZE = 4
PCPU_ATOM_SIZE = 2 << 20
PCPU_MIN_UNIT_SIZE = 32 << 10


@dataclass(eq=False)
class PcpuChunk:
    """One dynamic chunk: its vmap areas, its place in the allocation order, its objects."""

    seq: int
    base: int
    unit_size: int
    vas: list[VmapArea]
    nr_objs: int = 0
    stub: bool = False

    @property
    def empty(self) -> bool:
        return self.nr_objs == 0


class PercpuAllocator:
    """``__alloc_percpu``/``free_percpu`` for one model kernel (see the module doc).

    All chunks' free extents live in one pair of sorted numpy arrays over a "virtual"
    offset space where chunk number ``seq`` (creation order) occupies
    ``[seq * unit_size, (seq + 1) * unit_size)``; first fit in that order is first fit
    over the chunks in creation order and inside each chunk, and one vectorised scan
    finds it. Alignments are at most 4 KiB, so aligning a virtual offset aligns the
    offset inside the chunk.
    """

    def __init__(self, k: Kernel, unit_size: int = 1 << 20) -> None:
        if unit_size < PCPU_MIN_UNIT_SIZE or unit_size % 4096:
            raise ValueError("percpu unit_size must be page aligned and >= 32 KiB")
        self.k = k
        self.unit_size = unit_size
        self.nr_units = k.machine.cpus_possible
        group = self.nr_units * unit_size
        self.group_size = (group + PCPU_ATOM_SIZE - 1) // PCPU_ATOM_SIZE * PCPU_ATOM_SIZE
        self.chunks: dict[int, PcpuChunk] = {}  # seq -> chunk, creation order
        self._starts = np.zeros(0, dtype=np.int64)
        self._ends = np.zeros(0, dtype=np.int64)
        #: live objects: pointer -> (virtual offset, size)
        self._objs: dict[int, tuple[int, int]] = {}
        self._bases: list[int] = []  # sorted chunk bases, for free_percpu lookups
        self._by_base: dict[int, PcpuChunk] = {}
        self._seq = 0
        self.nr_chunks_created = 0

    # --- chunks -------------------------------------------------------------------
    def _get_vm_areas(self, cpu: int) -> tuple[list[VmapArea] | None, bool]:
        k = self.k
        try:
            vas = k.pcpu_get_vm_areas([0], [self.group_size], PCPU_ATOM_SIZE, cpu=cpu)
        except (NotImplementedError, AttributeError):
            # Profile without pcpu_get_vm_areas (4.19 model): a stub chunk, lowest fit
            # inside the top 64 GiB of the vmalloc range, freed like any lazy area.
            top = (k.VMALLOC_END + 1 - (64 << 30)) & ~(PCPU_ATOM_SIZE - 1)
            va = k.alloc_vmap_area(self.group_size, PCPU_ATOM_SIZE, top, k.VMALLOC_END, cpu)
            return (None if isinstance(va, int) else [va]), True
        return vas, False

    def _create_chunk(self, cpu: int) -> PcpuChunk | None:
        vas, stub = self._get_vm_areas(cpu)
        if not vas:
            return None
        seq = self._seq
        self._seq += 1
        chunk = PcpuChunk(seq, vas[0].va_start, self.unit_size, vas, stub=stub)
        self.chunks[seq] = chunk
        bisect.insort(self._bases, chunk.base)
        self._by_base[chunk.base] = chunk
        lo = seq * self.unit_size
        self._starts = np.append(self._starts, lo)
        self._ends = np.append(self._ends, lo + self.unit_size)
        self.nr_chunks_created += 1
        return chunk

    def _destroy_chunk(self, chunk: PcpuChunk, cpu: int) -> None:
        lo = chunk.seq * self.unit_size
        i = int(np.searchsorted(self._starts, lo))
        if not (self._starts[i] == lo and self._ends[i] == lo + self.unit_size):
            raise AssertionError(f"percpu chunk {chunk.base:#x} is not empty")
        self._starts = np.delete(self._starts, i)
        self._ends = np.delete(self._ends, i)
        del self.chunks[chunk.seq]
        self._bases.remove(chunk.base)
        del self._by_base[chunk.base]
        if chunk.stub:
            for va in chunk.vas:
                self.k.free_vmap_area_noflush(va.va_start, cpu=cpu)
        else:
            self.k.pcpu_free_vm_areas(chunk.vas, cpu=cpu)

    # --- API ----------------------------------------------------------------------
    def alloc_percpu(self, size: int, align: int, cpu: int = 0) -> int:
        """``__alloc_percpu(size, align)``: the object's unit-0 address, or 0."""
        if size <= 0 or size > self.unit_size or align & (align - 1) or align > 4096:
            self.k.log.warn(f"illegal size ({size}) or align ({align}) for percpu allocation")
            return 0
        size = (size + PCPU_MIN_ALLOC_SIZE - 1) & ~(PCPU_MIN_ALLOC_SIZE - 1)
        align = max(align, PCPU_MIN_ALLOC_SIZE)
        mask = align - 1
        starts, ends = self._starts, self._ends
        aligned = (starts + mask) & ~mask
        fit = aligned + size <= ends
        i = int(fit.argmax()) if len(fit) else 0
        if not len(fit) or not fit[i]:
            if self._create_chunk(cpu) is None:
                self.k.log.warn(f"percpu: allocation failed, size={size} align={align}")
                return 0
            starts, ends = self._starts, self._ends
            i = len(starts) - 1
            pos = int(starts[i])
        else:
            pos = int(aligned[i])
        s, e = int(starts[i]), int(ends[i])
        if pos > s and pos + size < e:  # split in two
            self._starts = np.insert(starts, i + 1, pos + size)
            self._ends = np.insert(ends, i, pos)
        elif pos > s:
            ends[i] = pos
        elif pos + size < e:
            starts[i] = pos + size
        else:
            self._starts = np.delete(starts, i)
            self._ends = np.delete(ends, i)
        chunk = self.chunks[pos // self.unit_size]
        chunk.nr_objs += 1
        ptr = chunk.base + pos - chunk.seq * self.unit_size
        self._objs[ptr] = (pos, size)
        return ptr

    def free_percpu(self, ptr: int, cpu: int = 0) -> None:
        """``free_percpu(ptr)``; NULL is ignored."""
        if not ptr:
            return
        got = self._objs.pop(ptr, None)
        if got is None:
            self.k.log.WARN(f"free_percpu: {ptr:#x} is not a percpu object")
            return
        pos, size = got
        end = pos + size
        chunk = self.chunks[pos // self.unit_size]
        starts, ends = self._starts, self._ends
        i = int(np.searchsorted(starts, pos))
        # Holes never span chunks, so neighbours merge only inside this chunk.
        u = self.unit_size
        merge_prev = pos % u != 0 and i > 0 and int(ends[i - 1]) == pos
        merge_next = end % u != 0 and i < len(starts) and int(starts[i]) == end
        if merge_prev and merge_next:
            ends[i - 1] = ends[i]
            self._starts = np.delete(starts, i)
            self._ends = np.delete(ends, i)
        elif merge_prev:
            ends[i - 1] = end
        elif merge_next:
            starts[i] = pos
        else:
            self._starts = np.insert(starts, i, pos)
            self._ends = np.insert(ends, i, end)
        chunk.nr_objs -= 1
        if chunk.empty and sum(1 for c in self.chunks.values() if c.empty) > 1:
            self._destroy_chunk(chunk, cpu)

    def release_empty(self, cpu: int = 0) -> int:
        """Release every empty chunk (the balance work's spare included)."""
        empty = [c for c in self.chunks.values() if c.empty]
        for c in empty:
            self._destroy_chunk(c, cpu)
        return len(empty)

    @property
    def nr_objects(self) -> int:
        return len(self._objs)

    def check(self) -> None:
        """Holes sorted, disjoint, inside live chunks; objects and holes tile each chunk."""
        st, en = self._starts, self._ends
        u = self.unit_size
        if len(st) != len(en) or (len(st) and (np.any(st >= en) or np.any(st[1:] < en[:-1]))):
            raise AssertionError("percpu: hole arrays not sorted/disjoint")
        free = dict.fromkeys(self.chunks, 0)
        for s, e in zip(st.tolist(), en.tolist(), strict=True):
            seq = s // u
            if seq not in free or (e - 1) // u != seq:
                raise AssertionError(f"percpu: hole {s:#x}-{e:#x} outside a chunk")
            free[seq] += e - s
        used = dict.fromkeys(self.chunks, 0)
        for pos, size in self._objs.values():
            used[pos // u] += size
        for seq, c in self.chunks.items():
            if free[seq] + used[seq] != u:
                raise AssertionError(f"percpu chunk {c.base:#x}: free space accounting broken")
            if not all(self.k.vmap_space.find_vmap_area(va.va_start) is va for va in c.vas):
                raise AssertionError(f"percpu chunk {c.base:#x}: its vmap area is not busy")
