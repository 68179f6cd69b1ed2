"""The BTF reader on small hand-built blobs (no kernel needed).

Each blob is assembled here from the format of include/uapi/linux/btf.h: a 24-byte
header, 12-byte type records with their kind-specific data, a string section.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pyvmalloc.trace import btf
from pyvmalloc.trace.btf import Btf, BtfError


class Blob:
    """A BTF blob under construction."""

    def __init__(self) -> None:
        self.types = bytearray()
        self.strings = bytearray(b"\0")
        self.n = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(
        self, kind: int, name: str, vlen: int, size_or_type: int, extra: bytes = b"", kflag: int = 0
    ) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.n += 1
        return self.n

    def members(self, items: list[tuple[str, int, int]]) -> bytes:
        return b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in items)

    def bytes(self) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII",
            0xEB9F,
            1,
            0,
            24,
            0,
            len(self.types),
            len(self.types),
            len(self.strings),
        )
        return hdr + bytes(self.types) + bytes(self.strings)


def _sample() -> tuple[Blob, dict[str, int]]:
    b = Blob()
    ids: dict[str, int] = {}
    ids["ulong"] = b.add(btf.KIND_INT, "long unsigned int", 0, 8, struct.pack("<I", 64))
    # list_head refers to a pointer type defined after it (ids may point forward).
    ids["list_head"] = b.add(
        btf.KIND_STRUCT, "list_head", 2, 16, b.members([("next", 3, 0), ("prev", 3, 64)])
    )
    ids["ptr_list"] = b.add(btf.KIND_PTR, "", 0, ids["list_head"])
    ids["typedef"] = b.add(btf.KIND_TYPEDEF, "ulong_t", 0, ids["ulong"])
    ids["void_ptr"] = b.add(btf.KIND_PTR, "", 0, 0)
    ids["union"] = b.add(
        btf.KIND_UNION,
        "",
        2,
        8,
        b.members([("subtree_max_size", ids["ulong"], 0), ("vm", ids["void_ptr"], 0)]),
    )
    ids["vmap_area"] = b.add(
        btf.KIND_STRUCT,
        "vmap_area",
        4,
        40,
        b.members(
            [
                ("va_start", ids["typedef"], 0),
                ("va_end", ids["ulong"], 64),
                ("list", ids["list_head"], 128),
                ("", ids["union"], 256),
            ]
        ),
    )
    ids["enum"] = b.add(
        btf.KIND_ENUM, "colour", 2, 4, struct.pack("<IiIi", b.s("RED"), 0, b.s("BLACK"), 1)
    )
    ids["proto"] = b.add(
        btf.KIND_FUNC_PROTO,
        "",
        2,
        ids["ulong"],
        struct.pack("<IIII", 0, ids["ulong"], 0, ids["void_ptr"]),
    )
    ids["array"] = b.add(
        btf.KIND_ARRAY, "", 0, 0, struct.pack("<III", ids["list_head"], ids["ulong"], 3)
    )
    ids["const"] = b.add(btf.KIND_CONST, "", 0, ids["vmap_area"])
    ids["volatile"] = b.add(btf.KIND_VOLATILE, "", 0, ids["const"])
    ids["node"] = b.add(
        btf.KIND_STRUCT,
        "vmap_node",
        3,
        96,
        b.members(
            [
                ("pool", ids["array"], 0),
                ("busy", ids["volatile"], 384),
                ("nr", ids["ulong"], 384 + 320),
            ]
        ),
    )
    ids["bits"] = b.add(
        btf.KIND_STRUCT,
        "bits",
        2,
        4,
        b.members([("a", ids["ulong"], (3 << 24) | 0), ("b", ids["ulong"], (5 << 24) | 3)]),
        kflag=1,
    )
    ids["fwd"] = b.add(btf.KIND_FWD, "opaque", 0, 0)
    return b, ids


def test_offsets_sizes_and_names() -> None:
    blob, ids = _sample()
    t = Btf(blob.bytes())
    assert len(t) == blob.n + 1
    assert t.find("vmap_area") == ids["vmap_area"]
    assert t.struct_size("vmap_area") == 40
    assert t.offsetof("vmap_area", "va_end") == 8
    assert t.offsetof("vmap_area", "list") == 16
    assert t.offsetof("vmap_area", "list.prev") == 24
    # a member of an anonymous union is found as if it were direct, as in C
    assert t.offsetof("vmap_area", "subtree_max_size") == 32
    assert t.offsetof("vmap_area", "vm") == 32
    # through const/volatile qualifiers and an array
    node = t.find("vmap_node")
    assert t.member(node, "busy.list.next").offset == 48 + 16
    assert t.member(node, "busy").size == 40
    assert t.array_info(t.member(node, "pool").type_id) == (ids["list_head"], 3)
    assert t.sizeof(ids["array"]) == 48
    assert t.sizeof(ids["ptr_list"]) == 8
    assert t.sizeof(ids["typedef"]) == 8
    assert t.name(ids["typedef"]) == "ulong_t"
    assert t.kind(ids["fwd"]) == btf.KIND_FWD
    bits = t.members(ids["bits"])
    assert [(m.name, m.offset, m.bitfield) for m in bits] == [("a", 0, 3), ("b", 0, 5)]


def test_missing_things_are_clear_errors() -> None:
    blob, ids = _sample()
    t = Btf(blob.bytes())
    with pytest.raises(BtfError, match="no struct 'vmap_pool'"):
        t.find("vmap_pool")
    with pytest.raises(BtfError, match=r"has no member 'busy\.nope'"):
        t.member(t.find("vmap_node"), "busy.nope")
    with pytest.raises(BtfError, match="has no size"):
        t.sizeof(ids["fwd"])
    with pytest.raises(BtfError, match="out of range"):
        t.sizeof(10_000)
    with pytest.raises(BtfError, match="not a struct"):
        t.members(1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:10], "truncated"),
        (lambda d: b"\xeb\x9f" + d[2:], "big-endian"),
        (lambda d: b"\x00\x00" + d[2:], "not BTF data"),
        (lambda d: d[:2] + b"\x02" + d[3:], "unsupported BTF version"),
        (lambda d: d[:-5], "runs past the end"),
        (lambda d: d[:8] + struct.pack("<I", 2) + d[12:], "not 4-byte aligned"),
    ],
)
def test_garbled_headers(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BtfError, match=message):
        Btf(mutate(_sample()[0].bytes()))


def test_garbled_types() -> None:
    blob = Blob()
    blob.add(31, "x", 0, 0)  # kind 31 does not exist
    with pytest.raises(BtfError, match="unknown kind 31"):
        Btf(blob.bytes())
    blob = Blob()
    blob.add(btf.KIND_STRUCT, "s", 5, 8, b"")  # claims 5 members, has none
    with pytest.raises(BtfError, match=r"mid-record|truncated"):
        Btf(blob.bytes())
    blob = Blob()
    blob.add(btf.KIND_INT, "", 0, 8, struct.pack("<I", 64))
    blob.types[0:4] = struct.pack("<I", 999)  # name offset past the strings
    t = Btf(blob.bytes())
    with pytest.raises(BtfError, match="outside the string section"):
        t.name(1)
    blob = Blob()
    blob.add(btf.KIND_TYPEDEF, "loop", 0, 1)  # a typedef of itself
    with pytest.raises(BtfError, match="too long"):
        Btf(blob.bytes()).sizeof(1)


def test_load_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(BtfError, match="cannot read"):
        Btf.load(tmp_path / "missing")
    (tmp_path / "short").write_bytes(b"\x9f")
    with pytest.raises(BtfError, match="truncated"):
        Btf.load(tmp_path / "short")
