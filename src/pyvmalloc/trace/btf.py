"""A small reader of the kernel's BTF type information (``/sys/kernel/btf/vmlinux``).

BTF (BPF Type Format, ``include/uapi/linux/btf.h`` of Linux 6.18) describes every C type of
the running kernel. The file is a header, a type section and a string section; the type
section is a sequence of ``struct btf_type`` records (name offset, info word, size or type
id), each followed by kind-specific data (members of a struct, the element type of an
array, ...). Type id 0 is ``void``; the first record in the file is type id 1.

pyvmalloc needs only member offsets and sizes of a handful of structs (``struct
vmap_area``, ``struct vmap_node``, ``struct rb_node``, ...), so this reader indexes the
records once and resolves what is asked for. Every read is bounds-checked: a truncated or
garbled file gives a :class:`BtfError` naming what is wrong, never an exception from deep
inside ``struct``.

>>> btf = Btf.load()                                         # doctest: +SKIP
>>> btf.offsetof("vmap_area", "subtree_max_size")            # doctest: +SKIP
40
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BTF_VMLINUX", "Btf", "BtfError", "Member"]

BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F

# Kinds (BTF_KIND_* of include/uapi/linux/btf.h).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

#: Kinds that only qualify or rename another type (their third word is a type id).
_MODIFIERS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})
#: Bytes of kind-specific data after the 12-byte record: (fixed, per vlen entry).
_EXTRA: dict[int, tuple[int, int]] = {
    KIND_INT: (4, 0),
    KIND_PTR: (0, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FWD: (0, 0),
    KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0),
    KIND_CONST: (0, 0),
    KIND_RESTRICT: (0, 0),
    KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0),
    KIND_TYPE_TAG: (0, 0),
    KIND_ENUM64: (0, 12),
}
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_MEMBER = struct.Struct("<III")
_ARRAY = struct.Struct("<III")


class BtfError(ValueError):
    """The BTF data is missing, truncated, garbled, or lacks a type that was asked for."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a struct or union: ``offset`` in bytes from the start of the outer
    struct, ``size`` in bytes, ``type_id`` of its (unqualified) type."""

    name: str
    offset: int
    size: int
    type_id: int
    bitfield: int = 0  # bit width when a bitfield, else 0


class Btf:
    """The types of one BTF blob, indexed by id.

    :param data: the whole file (``bytes``), little-endian (the byte order of x86_64 and
        arm64; a big-endian blob is refused with a clear message).
    :param pointer_size: ``sizeof(void *)`` of the kernel that produced the blob.
    """

    def __init__(self, data: bytes, *, pointer_size: int = 8) -> None:
        if len(data) < _HEADER.size:
            raise BtfError(f"BTF data is truncated: {len(data)} bytes, header needs 24")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(
            data, 0
        )
        if magic != BTF_MAGIC:
            if magic == 0x9FEB:
                raise BtfError("BTF data is big-endian; only little-endian kernels are supported")
            raise BtfError(f"not BTF data: magic 0x{magic:04x}, expected 0x{BTF_MAGIC:04x}")
        if version != 1:
            raise BtfError(f"unsupported BTF version {version} (this reader knows version 1)")
        if hdr_len < _HEADER.size or hdr_len > len(data):
            raise BtfError(f"BTF header length {hdr_len} is invalid")
        body = len(data) - hdr_len
        for what, off, ln in (("type", type_off, type_len), ("string", str_off, str_len)):
            if off + ln > body:
                raise BtfError(
                    f"BTF {what} section [{off}, {off + ln}) runs past the end of the data "
                    f"({body} bytes after the header): truncated file?"
                )
        if type_off % 4:
            raise BtfError(f"BTF type section offset {type_off} is not 4-byte aligned")
        self._data = data
        self._pointer_size = pointer_size
        self._types = hdr_len + type_off
        self._types_end = self._types + type_len
        self._strs = hdr_len + str_off
        self._strs_end = self._strs + str_len
        if str_len and data[self._strs] != 0:
            raise BtfError("BTF string section does not start with an empty string")
        self._offsets: list[int] = [0]  # record offset of each type id (0 = void)
        self._index()
        self._by_name: dict[tuple[int, str], list[int]] | None = None

    @classmethod
    def load(cls, path: Path = BTF_VMLINUX) -> Btf:
        """Read and index ``path`` (default: the running kernel's ``/sys/kernel/btf/vmlinux``)."""
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BtfError(f"cannot read {path}: {e.strerror or e}") from None
        return cls(data)

    # ------------------------------------------------------------------ indexing

    def _index(self) -> None:
        data, pos, end = self._data, self._types, self._types_end
        offsets = self._offsets
        unpack = _TYPE.unpack_from
        extra = _EXTRA
        while pos < end:
            if pos + 12 > end:
                raise BtfError(f"BTF type {len(offsets)} is truncated at byte {pos}")
            _name, info, _size = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            try:
                fixed, per = extra[kind]
            except KeyError:
                raise BtfError(f"BTF type {len(offsets)} has unknown kind {kind}") from None
            offsets.append(pos)
            pos += 12 + fixed + per * (info & 0xFFFF)
        if pos != end:
            raise BtfError(f"BTF type section ends mid-record (byte {pos}, section ends {end})")

    def __len__(self) -> int:
        """Number of types, ``void`` (id 0) included."""
        return len(self._offsets)

    def _record(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(offset, kind, vlen, kind_flag, size_or_type) of ``type_id``."""
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id {type_id} is out of range (1..{len(self._offsets) - 1})")
        off = self._offsets[type_id]
        _name, info, st = _TYPE.unpack_from(self._data, off)
        return off, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, st

    def name(self, type_id: int) -> str:
        """The name of ``type_id`` (``""`` for anonymous types and ``void``)."""
        if type_id == 0:
            return ""
        off = self._record(type_id)[0]
        return self._string(_TYPE.unpack_from(self._data, off)[0])

    def kind(self, type_id: int) -> int:
        """The BTF kind (``KIND_*``) of ``type_id``; 0 for ``void``."""
        return 0 if type_id == 0 else self._record(type_id)[1]

    def _string(self, off: int) -> str:
        start = self._strs + off
        if not self._strs <= start < self._strs_end:
            raise BtfError(f"BTF string offset {off} is outside the string section")
        stop = self._data.find(b"\0", start, self._strs_end)
        if stop < 0:
            raise BtfError(f"BTF string at offset {off} is not NUL-terminated")
        try:
            return self._data[start:stop].decode()
        except UnicodeDecodeError:
            raise BtfError(f"BTF string at offset {off} is not valid UTF-8") from None

    def find(self, name: str, kind: int = KIND_STRUCT) -> int:
        """The id of the type of this ``kind`` named ``name`` (the first one, if several).

        Raises :class:`BtfError` if there is none (e.g. a kernel without that struct).
        """
        if self._by_name is None:
            self._by_name = {}
            want = (KIND_STRUCT, KIND_UNION, KIND_TYPEDEF, KIND_INT, KIND_ENUM)
            for tid in range(1, len(self._offsets)):
                off = self._offsets[tid]
                name_off, info, _ = _TYPE.unpack_from(self._data, off)
                k = (info >> 24) & 0x1F
                if name_off and k in want:
                    self._by_name.setdefault((k, self._string(name_off)), []).append(tid)
        ids = self._by_name.get((kind, name))
        if not ids:
            raise BtfError(f"BTF has no {_KIND_NAMES.get(kind, kind)} {name!r}")
        return ids[0]

    # ------------------------------------------------------------------ layouts

    def resolve(self, type_id: int) -> int:
        """Strip typedefs and qualifiers (``const``, ``volatile``, ...) off ``type_id``."""
        for _ in range(64):
            if type_id == 0:
                return 0
            _off, kind, _vlen, _kf, st = self._record(type_id)
            if kind not in _MODIFIERS:
                return type_id
            type_id = st
        raise BtfError(f"BTF type {type_id}: typedef/qualifier chain too long (a loop?)")

    def sizeof(self, type_id: int) -> int:
        """``sizeof`` of ``type_id`` in bytes."""
        for _ in range(64):
            tid = self.resolve(type_id)
            if tid == 0:
                raise BtfError("sizeof(void) asked")
            off, kind, _vlen, _kf, st = self._record(tid)
            if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
                return int(st)
            if kind == KIND_PTR:
                return self._pointer_size
            if kind == KIND_ARRAY:
                elem, _index, nelems = _ARRAY.unpack_from(self._data, off + 12)
                return int(nelems) * self.sizeof(elem)
            raise BtfError(f"BTF type {tid} ({_KIND_NAMES.get(kind, kind)}) has no size")
        raise BtfError(f"BTF type {type_id}: nesting too deep")

    def members(self, type_id: int) -> list[Member]:
        """The direct members of a struct or union, offsets in bytes from its start."""
        tid = self.resolve(type_id)
        off, kind, vlen, kflag, _size = self._record(tid) if tid else (0, 0, 0, 0, 0)
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"BTF type {type_id} is not a struct or union")
        out: list[Member] = []
        for i in range(vlen):
            name_off, mtype, moff = _MEMBER.unpack_from(self._data, off + 12 + 12 * i)
            bits, bitoff = (moff >> 24, moff & 0xFFFFFF) if kflag else (0, moff)
            size = self.sizeof(mtype) if not bits else (bits + 7) // 8
            out.append(Member(self._string(name_off), bitoff // 8, size, mtype, bits))
        return out

    def member(self, type_id: int, path: str) -> Member:
        """The member at ``path`` (``"busy.root"``, ``"pool"``) of a struct, with its
        offset from the start of the outer struct. Members of anonymous structs and
        unions are found as if they were direct members, as in C."""
        offset = 0
        cur = type_id
        found: Member | None = None
        for part in path.split("."):
            m = self._lookup(cur, part)
            if m is None:
                raise BtfError(f"{self._describe(type_id)} has no member {path!r}")
            offset += m.offset
            found = m
            cur = m.type_id
        assert found is not None
        return Member(found.name, offset, found.size, self.resolve(found.type_id), found.bitfield)

    def _lookup(self, type_id: int, name: str) -> Member | None:
        for m in self.members(type_id):
            if m.name == name:
                return m
            if m.name == "" and self.kind(self.resolve(m.type_id)) in (KIND_STRUCT, KIND_UNION):
                inner = self._lookup(m.type_id, name)
                if inner is not None:
                    return Member(
                        inner.name,
                        m.offset + inner.offset,
                        inner.size,
                        inner.type_id,
                        inner.bitfield,
                    )
        return None

    def _describe(self, type_id: int) -> str:
        tid = self.resolve(type_id)
        return f"{_KIND_NAMES.get(self.kind(tid), '?')} {self.name(tid) or '(anonymous)'}"

    def array_info(self, type_id: int) -> tuple[int, int]:
        """(element type id, number of elements) of an array type."""
        tid = self.resolve(type_id)
        off, kind, _vlen, _kf, _st = self._record(tid)
        if kind != KIND_ARRAY:
            raise BtfError(f"BTF type {type_id} is not an array")
        elem, _index, nelems = _ARRAY.unpack_from(self._data, off + 12)
        return elem, nelems

    # Convenience by struct name.

    def struct_size(self, name: str) -> int:
        """``sizeof(struct name)``."""
        return self.sizeof(self.find(name))

    def offsetof(self, struct_name: str, path: str) -> int:
        """``offsetof(struct struct_name, path)`` in bytes."""
        return self.member(self.find(struct_name), path).offset


_KIND_NAMES = {
    KIND_INT: "int",
    KIND_PTR: "pointer",
    KIND_ARRAY: "array",
    KIND_STRUCT: "struct",
    KIND_UNION: "union",
    KIND_ENUM: "enum",
    KIND_FWD: "forward declaration",
    KIND_TYPEDEF: "typedef",
    KIND_VOLATILE: "volatile",
    KIND_CONST: "const",
    KIND_RESTRICT: "restrict",
    KIND_FUNC: "function",
    KIND_FUNC_PROTO: "function prototype",
    KIND_VAR: "variable",
    KIND_DATASEC: "data section",
    KIND_FLOAT: "float",
    KIND_DECL_TAG: "decl tag",
    KIND_TYPE_TAG: "type tag",
    KIND_ENUM64: "enum64",
}
