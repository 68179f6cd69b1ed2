"""Seeded, bounded fuzzing of every file parser and of replay / compare / whatif.

Inputs are the real captures in ``tests/data/captures``, damaged the ways files get
damaged or forged: truncation, byte flips, deleted / duplicated / swapped lines, numbers
replaced by huge, negative, zero, off-by-one or 5000-digit ones, odd line separators
(``\\x0b``, ``\\x85``, U+2028, ...), long runs of one character, other encodings, gzip
damage, meta.json values of the wrong type, deep nesting, symbolic links.

A case fails if anything but :class:`pyvmalloc.InputError` escapes, if an InputError's
message does not start with the path of one of the case's files, or if the case takes
more than a second of CPU time (process time, so other load on the machine does not
count).

Each case is built from its own ``random.Random(f"{seed}:{target}:{index}")``:

* ``PYVMALLOC_FUZZ_EXAMPLES=N`` — cases per target (default: a budget that keeps the
  whole file near 25 s on 2 cores); ``PYVMALLOC_FUZZ_SEED=S`` — the seed (default:
  a random one per run, printed in pytest's header and in every failure);
* ``PYVMALLOC_FUZZ_CASE=target:index`` — run one case (a failure message names it);
  ``PYVMALLOC_FUZZ_KEEP=DIR`` — keep each failing case's files in DIR.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import re
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from pyvmalloc.errors import InputError
from pyvmalloc.report.whatif import whatif
from pyvmalloc.trace.capturedir import read_meta
from pyvmalloc.trace.parse import parse_trace
from pyvmalloc.trace.replay import compare, load_capture, replay
from pyvmalloc.trace.snapshot import parse_vmallocinfo

CAPTURES = sorted(
    p for p in (Path(__file__).resolve().parents[1] / "data" / "captures").iterdir() if p.is_dir()
)
#: random per run (tests/conftest.py), named in every failure
SEED = int(os.environ.get("PYVMALLOC_FUZZ_SEED") or random.randrange(1 << 32))
EXAMPLES = int(os.environ.get("PYVMALLOC_FUZZ_EXAMPLES", "0"))
ONLY = os.environ.get("PYVMALLOC_FUZZ_CASE", "")
KEEP = os.environ.get("PYVMALLOC_FUZZ_KEEP", "")
#: CPU seconds one case may take.
LIMIT = 1.0

# --------------------------------------------------------------------------- sources


def _text(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


_CACHE: dict[Path, bytes] = {}


def source(path: Path) -> bytes:
    if path not in _CACHE:
        _CACHE[path] = _text(path)
    return _CACHE[path]


def trace_of(cap: Path) -> Path:
    return next(cap / n for n in ("trace", "trace.gz") if (cap / n).exists())


# --------------------------------------------------------------------------- mutations

_SEPARATORS = [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8",
               b"\r", b"\t", b"\x00", b" ", b"\r\n", b"\xe2\x80\xa9"]  # fmt: skip
_NUMBER = re.compile(rb"0x[0-9a-f]+|-?[0-9]+")


def _numbers(rng: random.Random, old: bytes) -> bytes:
    hexa = old.startswith(b"0x")
    v = int(old, 16) if hexa else int(old)
    pool = [0, 1, -1, v + 1, v - 1, v + 4096, v - 4096, v * 2, v // 3, 1 << 64, (1 << 64) - 1,
            (1 << 63), (1 << 64) - 4096, (1 << 64) + 4096, -(1 << 64), rng.getrandbits(64),
            rng.randrange(1 << 20), 3, 4095, 999999]  # fmt: skip
    choice = rng.random()
    if choice < 0.08:
        return b"9" * rng.choice([21, 400, 4301, 5000])
    if choice < 0.12:
        return b""
    n = rng.choice(pool)
    if hexa:
        width = len(old) - 2 if rng.random() < 0.7 else 1  # vmallocinfo prints fixed widths
        return b"0x" + (format(n, f"0{width}x") if n >= 0 else "-" + format(-n, "x")).encode()
    return str(n).encode()


_ALLOC = re.compile(rb"va_start: ([0-9]+) size=([0-9]+) align=([0-9]+)(.*failed=)([0-9]+)")
_FREE = re.compile(rb"va_start=0x([0-9a-f]+) nr_lazy=([0-9]+)")
_PURGE = re.compile(rb"start=0x([0-9a-f]+) end=0x([0-9a-f]+) num_purged=([0-9]+)")
_AREA = re.compile(rb"^0x([0-9a-f]{16})-0x([0-9a-f]{16}) +([0-9]+) ")


def mutate_semantic(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Edits that keep every line well formed, so the input reaches the model: areas
    moved by whole pages, other page-multiple sizes and power-of-two alignments,
    failures, purge counts, events and areas duplicated, dropped or reordered."""
    lines = data.split(b"\n")
    idx = [i for i, ln in enumerate(lines) if _ALLOC.search(ln) or _FREE.search(ln)
           or _PURGE.search(ln) or _AREA.match(ln)]  # fmt: skip
    if not idx:
        return mutate_lines(rng, data, POOL)
    i = rng.choice(idx)
    ln = lines[i]
    page = 4096 * rng.choice([1, 1, 2, 4, 16, 512, -1, -2, -16, 1 << 20])
    kind = rng.choice(["move", "move", "resize", "dup", "drop", "swap", "other"])
    if kind == "dup":
        lines.insert(rng.randrange(i, len(lines) + 1), ln)
    elif kind == "drop":
        del lines[i]
    elif kind == "swap":
        j = rng.choice(idx)
        lines[i], lines[j] = lines[j], lines[i]
    elif (m := _ALLOC.search(ln)) is not None:
        addr, size, align = int(m[1]), int(m[2]), int(m[3])
        if kind == "move":
            addr = max(0, addr + page)
        elif kind == "resize":
            size = 4096 * rng.choice([1, 2, 3, 5, 17, 512, 513, 1 << 18])
        else:
            align = rng.choice([1, 4096, 8192, 16384, 1 << 21, 1 << 30])
        failed = m[5]
        if rng.random() < 0.1:
            addr, failed = rng.choice([(1 << 64) - 2, (1 << 64) - 12, (1 << 64) - 34]), b"1"
        new = b"va_start: %d size=%d align=%d%s%s" % (addr, size, align, m[4], failed)
        lines[i] = ln[: m.start()] + new + ln[m.end() :]
    elif (m := _FREE.search(ln)) is not None:
        va, nr = int(m[1], 16), int(m[2])
        va, nr = (max(0, va + page), nr) if kind == "move" else (va, max(1, nr + page // 4096))
        lines[i] = ln[: m.start()] + b"va_start=0x%x nr_lazy=%d" % (va, nr) + ln[m.end() :]
    elif (m := _PURGE.search(ln)) is not None:
        n = rng.choice([0, 1, 2, 7, 100, 5000])
        lines[i] = (
            ln[: m.start()] + b"start=0x%s end=0x%s num_purged=%d" % (m[1], m[2], n) + ln[m.end() :]
        )
    elif (m := _AREA.match(ln)) is not None:
        start, end = int(m[1], 16), int(m[2], 16)
        if kind == "move":
            start, end = start + page, end + page
        else:
            end = start + 4096 * rng.choice([1, 2, 3, 5, 512])
        if 0 <= start < end < 1 << 64:
            new = b"0x%016x-0x%016x %7d " % (start, end, end - start)
            lines[i] = new + ln[m.end() :]
        if rng.random() < 0.2:
            lines[i] = lines[i].split(b" ")[0] + b" %7d unpurged vm_area" % (end - start)
    return b"\n".join(lines), f"semantic-{kind}@{i + 1}"


def mutate_lines(rng: random.Random, data: bytes, pool: list[bytes]) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    if len(lines) < 2:
        lines.append(b"")
    i = rng.randrange(len(lines))
    kind = rng.choice(["number", "number", "number", "delete", "duplicate", "swap", "insert",
                       "separator", "run", "cut", "foreign", "cpu"])  # fmt: skip
    if kind == "number":
        nums = list(_NUMBER.finditer(lines[i]))
        if nums:
            m = rng.choice(nums)
            lines[i] = lines[i][: m.start()] + _numbers(rng, m.group()) + lines[i][m.end() :]
    elif kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    elif kind == "swap":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "insert":
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        lines.insert(
            i, rng.choice([junk, junk.replace(b"\n", b""), b"#", b"", b"CPU:0 [LOST 5 EVENTS]"])
        )
    elif kind == "separator":
        ln = lines[i]
        k = rng.randrange(len(ln) + 1)
        lines[i] = ln[:k] + rng.choice(_SEPARATORS) + ln[k:]
    elif kind == "run":
        ln = lines[i]
        k = rng.randrange(len(ln) + 1)
        piece = rng.choice([b"\t", b" ", b"-1 ", b"a", b"0", b":", b"(", b"[0] ", b"-", b"N0=1 "])
        lines[i] = ln[:k] + piece * (rng.choice([1000, 100_000, 1 << 20]) // len(piece)) + ln[k:]
    elif kind == "cut":
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    elif kind == "foreign":
        lines.insert(i, rng.choice(pool))
    elif kind == "cpu":
        lines[i] = lines[i].replace(
            b"[000]", b"[%03d]" % rng.choice([1, 2, 7, 999, 8191, 8192, 999999]), 1
        )
    return b"\n".join(lines), f"{kind}@{i + 1}"


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "truncate", "insert", "erase", "encoding"])
    b = bytearray(data)
    if kind == "flip" and b:
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        del b[rng.randrange(len(b) + 1) :]
    elif kind == "insert":
        k = rng.randrange(len(b) + 1)
        b[k:k] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif kind == "erase" and b:
        k = rng.randrange(len(b))
        del b[k : k + rng.randrange(1, 200)]
    elif kind == "encoding":
        text = data.decode("utf-8", "replace")
        enc = rng.choice(["utf-16", "utf-32", "utf-8-sig", "latin-1-bytes", "cp1252"])
        if enc == "latin-1-bytes":
            k = rng.randrange(len(b) + 1)
            b[k:k] = rng.choice(
                [b"\xff", b"\xc3\x28", b"\xe9", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]
            )
        else:
            b = bytearray(text.replace("-", "\u2010", 1).encode(enc, "replace"))
    return bytes(b), kind


def mutate_gzip(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    z = bytearray(gzip.compress(text, compresslevel=1))
    kind = rng.choice(["ok", "flip", "truncate", "empty", "garbage", "two-members", "header"])
    if kind == "flip":
        z[rng.randrange(10, len(z))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del z[rng.randrange(len(z)) :]
    elif kind == "empty":
        z = bytearray()
    elif kind == "garbage":
        z += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    elif kind == "two-members":
        z += gzip.compress(text[: len(text) // 3])
    elif kind == "header":
        z[rng.randrange(10)] = rng.randrange(256)
    return bytes(z), f"gzip-{kind}"


_JSON_VALUES: list[object] = [None, True, False, "no", "yes", 0, -1, 0.5, 1e308, [], [0.5], {},
                              [0, 0], [-1], [True], "x" * 1000, 10**30, [0, 1, 8192], {"a": [1]}]  # fmt: skip


def mutate_meta(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.25:
        return mutate_bytes(rng, data)
    if r < 0.32:
        depth = rng.choice([100, 1000, 100_000])
        return b"[" * depth + b"]" * depth, f"nesting-{depth}"
    if r < 0.38:
        return rng.choice([b"[1]", b"null", b'"x"', b"1", b"", b"{", b'{"cpus_possible": 2}',
                           b'{"n": ' + b"9" * 5000 + b"}", b"NaN", b'{"a": Infinity}']), "document"  # fmt: skip
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        return mutate_bytes(rng, data)
    if not isinstance(meta, dict):
        return mutate_bytes(rng, data)
    keys = list(meta) or ["cpus_possible"]
    k = rng.choice([*keys, "cpus_possible", "cpus_online", "drop_caches", "event_counts"])
    if rng.random() < 0.2:
        meta.pop(k, None)
        return json.dumps(meta).encode(), f"del-{k}"
    meta[k] = rng.choice(_JSON_VALUES)
    return json.dumps(meta).encode(), f"set-{k}"


# --------------------------------------------------------------------------- running


class CaseFailure(AssertionError):
    pass


#: Outcomes per target: cases accepted, cases refused with an InputError, and the
#: first words of the refusals (to check that the mutations reach the deep checks).
STATS: dict[str, dict[str, int]] = {}


def run_case(
    target: str,
    index: int,
    tmp: Path,
    build: Callable[[random.Random, Path], tuple[list[Path], str]],
    call: Callable[[random.Random, Path], object],
) -> None:
    """Build case ``index`` of ``target`` in ``tmp``, run it, check the contract."""
    rng = random.Random(f"{SEED}:{target}:{index}")
    case_dir = tmp / f"{target}-{index}"
    case_dir.mkdir()
    paths, what = build(rng, case_dir)
    t0 = time.process_time()
    err: BaseException | None = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            call(rng, case_dir)
    except InputError as e:
        err = e
        msg = str(e)
        st = STATS.setdefault(target, {})
        reason = e.reason.split(":")[0][:40]
        st[reason] = st.get(reason, 0) + 1
        if not any(msg.startswith(f"{p}:") for p in paths):
            _fail(target, index, what, case_dir, f"InputError without the file: {msg[:300]}")
    except Exception as e:
        tb = "".join(traceback.format_exception(e)[-6:])
        _fail(target, index, what, case_dir, f"{type(e).__name__}: {str(e)[:300]}\n{tb}")
    dt = time.process_time() - t0
    if err is None:
        st = STATS.setdefault(target, {})
        st["<accepted>"] = st.get("<accepted>", 0) + 1
    if dt > LIMIT:
        _fail(target, index, what, case_dir, f"took {dt:.2f} s of CPU (limit {LIMIT} s); {err}")
    shutil.rmtree(case_dir, ignore_errors=True)


def _fail(target: str, index: int, what: str, case_dir: Path, msg: str) -> None:
    where = ""
    if KEEP:
        dest = Path(KEEP) / case_dir.name
        shutil.copytree(case_dir, dest, symlinks=True, dirs_exist_ok=True)
        where = f" (files kept in {dest})"
    raise CaseFailure(
        f"fuzz case {target}:{index} (PYVMALLOC_FUZZ_SEED={SEED}, mutations {what}){where}: {msg}"
    )


def cases(target: str, default: int) -> list[int]:
    if ONLY:
        t, _, i = ONLY.partition(":")
        return [int(i)] if t == target else []
    return list(range(EXAMPLES or default))


def _pool() -> list[bytes]:
    """Lines of other files, spliced in as 'foreign' lines."""
    out: list[bytes] = []
    for cap in CAPTURES[:3]:
        for name in ("vmallocinfo", "meta.json"):
            out.extend(source(cap / name).split(b"\n")[:40])
        out.extend(source(trace_of(cap)).split(b"\n")[:60])
    return out


POOL = _pool()


def _mutated(
    rng: random.Random, data: bytes, meta: bool = False, semantic: float = 0.2
) -> tuple[bytes, list[str]]:
    what = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if meta:
            data, w = mutate_meta(rng, data)
        elif rng.random() < semantic:
            data, w = mutate_semantic(rng, data)
        elif rng.random() < 0.7:
            data, w = mutate_lines(rng, data, POOL)
        else:
            data, w = mutate_bytes(rng, data)
        what.append(w)
    return data, what


def _write(
    rng: random.Random, dest: Path, data: bytes, what: list[str], gz: bool, damage: float = 0.5
) -> None:
    if gz:
        data, w = mutate_gzip(rng, data) if rng.random() < damage else (gzip.compress(data), "gzip")
        what.append(w)
    dest.write_bytes(data)


# --------------------------------------------------------------------------- parsers


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_fuzz_trace_parser(tmp: Path) -> None:
    def build(rng: random.Random, d: Path) -> tuple[list[Path], str]:
        cap = rng.choice(CAPTURES)
        gz = rng.random() < 0.4
        dest = d / ("trace.gz" if gz else "trace")
        data, what = _mutated(rng, source(trace_of(cap)))
        _write(rng, dest, data, what, gz)
        return [dest, d], f"{cap.name}: {', '.join(what)}"

    def call(rng: random.Random, d: Path) -> object:
        src = d if rng.random() < 0.3 else next(d.iterdir())
        return parse_trace(src, cpus=rng.choice([None, None, None, None, 2, 1]))

    for i in cases("trace", 250):
        run_case("trace", i, tmp, build, call)


def test_fuzz_vmallocinfo_parser(tmp: Path) -> None:
    def build(rng: random.Random, d: Path) -> tuple[list[Path], str]:
        cap = rng.choice(CAPTURES)
        name = (
            "vmallocinfo.end"
            if (cap / "vmallocinfo.end").exists() and rng.random() < 0.3
            else "vmallocinfo"
        )
        gz = rng.random() < 0.15
        data, what = _mutated(rng, source(cap / name))
        dest = d / ("vmallocinfo.gz" if gz else "vmallocinfo")
        _write(rng, dest, data, what, gz)
        return [dest, d], f"{cap.name}/{name}: {', '.join(what)}"

    def call(rng: random.Random, d: Path) -> object:
        src = next(d.iterdir())
        info = parse_vmallocinfo(src)
        for n in (1, 2, 4):
            with contextlib.suppress(InputError):
                info.busy_order_problems(n)
                from pyvmalloc.trace.snapshot import infer_lazy_nodes

                infer_lazy_nodes(info, n)
        return info

    for i in cases("vmallocinfo", 300):
        run_case("vmallocinfo", i, tmp, build, call)


def test_fuzz_meta_json(tmp: Path) -> None:
    def build(rng: random.Random, d: Path) -> tuple[list[Path], str]:
        cap = rng.choice(CAPTURES)
        data, what = _mutated(rng, source(cap / "meta.json"), meta=True)
        (d / "meta.json").write_bytes(data)
        return [d / "meta.json"], f"{cap.name}: {', '.join(what)}"

    for i in cases("meta", 300):
        run_case("meta", i, tmp, build, lambda rng, d: read_meta(d / "meta.json"))


# --------------------------------------------------------------------------- replay & co


#: Captures whose snapshot is small enough for compare's per-sample measurements
#: (about 1 s of CPU for threads-stacks' 1,500 areas even before the first event:
#: see /work/notes/fuzz-findings.md); replay and whatif use every capture.
SMALL_SNAPSHOTS = [c for c in CAPTURES if (c / "vmallocinfo").stat().st_size < 60_000]


def _small_capture(
    rng: random.Random, d: Path, max_events: int, captures: list[Path] = CAPTURES
) -> tuple[list[Path], str]:
    """A copy of a real capture, its trace cut after ``max_events`` lines past the
    snapshot, with one of its files damaged (or replaced by a link, or removed)."""
    cap = rng.choice(captures)
    out = d / "cap"
    out.mkdir()
    tr = trace_of(cap)
    text = source(tr)
    lines = text.split(b"\n")
    end = next((i for i, ln in enumerate(lines) if b"snapshot-end" in ln), 0)
    lines = lines[: end + 1 + rng.randrange(max_events)]
    files = {
        tr.name: b"\n".join(lines) + b"\n",
        "vmallocinfo": source(cap / "vmallocinfo"),
        "meta.json": source(cap / "meta.json"),
    }
    if (cap / "vmallocinfo.end").exists() and rng.random() < 0.5:
        files["vmallocinfo.end"] = source(cap / "vmallocinfo.end")
    victim = rng.choice(list(files))
    what = [f"{cap.name}/{victim}"]
    r = rng.random()
    for name, data in files.items():
        dest = out / name
        if name == victim and r < 0.04:
            dest.symlink_to(cap / name)
            what.append("symlink")
            continue
        if name == victim and r < 0.06:
            what.append("missing")
            continue
        if name == victim:
            data, w = _mutated(rng, data, meta=name == "meta.json", semantic=0.75)
            what.extend(w)
        if name.endswith(".gz"):
            _write(rng, dest, data, what, True, damage=0.15 if name == victim else 0.0)
        else:
            dest.write_bytes(data)
    return [out / n for n in files] + [out], ", ".join(what)


def _replay_capture(d: Path, profile: str) -> object:
    out = d / "cap"
    trace, snap, meta = load_capture(out)
    end = out / "vmallocinfo.end"
    return replay(trace, snap, profile=profile, meta=meta,
                  end_snapshot=end if end.exists() else None)  # fmt: skip


def test_fuzz_replay(tmp: Path) -> None:
    def call(rng: random.Random, d: Path) -> object:
        return _replay_capture(d, rng.choice(["6.18", "6.18", "5.4", "4.19"]))

    for i in cases("replay", 150):
        run_case("replay", i, tmp, lambda rng, d: _small_capture(rng, d, 1200), call)


def test_fuzz_compare(tmp: Path) -> None:
    def call(rng: random.Random, d: Path) -> object:
        trace, snap, meta = load_capture(d / "cap")
        return compare(trace, snap, ["4.19", "5.4", "6.18"], cpus=None, meta=meta)

    for i in cases("compare", 30):
        run_case(
            "compare", i, tmp, lambda rng, d: _small_capture(rng, d, 150, SMALL_SNAPSHOTS), call
        )


def test_fuzz_whatif(tmp: Path) -> None:
    def call(rng: random.Random, d: Path) -> object:
        trace, snap, _meta = load_capture(d / "cap")
        return whatif(trace, snap, profile=rng.choice(["6.18", "5.4"]), samples=10)

    for i in cases("whatif", 60):
        run_case("whatif", i, tmp, lambda rng, d: _small_capture(rng, d, 1200), call)


def test_fuzz_cli(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``main()``: exit 2 with ``pyvmalloc: error: PATH...`` or success."""
    from pyvmalloc.cli import main

    def call(rng: random.Random, d: Path) -> object:
        cmd = rng.choice(["replay", "whatif"])
        rc = main([cmd, str(d / "cap")])
        err = capsys.readouterr().err
        if rc == 2:
            assert err.startswith(f"pyvmalloc: error: {d / 'cap'}"), err[:300]
            st = STATS.setdefault("cli", {})
            st["exit 2"] = st.get("exit 2", 0) + 1
        else:
            assert rc == 0 and "Traceback" not in err, err[:300]
        return rc

    for i in cases("cli", 20):
        run_case("cli", i, tmp, lambda rng, d: _small_capture(rng, d, 600), call)


def test_fuzz_reached_both_outcomes() -> None:
    """Each target saw accepted and refused cases (runs after the targets above)."""
    if ONLY or (EXAMPLES and EXAMPLES < 20):
        pytest.skip("too few cases to judge")
    if os.environ.get("PYVMALLOC_FUZZ_STATS"):
        for target, outcomes in sorted(STATS.items()):
            top = sorted(outcomes.items(), key=lambda kv: -kv[1])[:8]
            print(target, sum(outcomes.values()), top)
    for target in ("trace", "vmallocinfo", "meta", "replay", "compare", "whatif", "cli"):
        outcomes = STATS.get(target, {})
        assert outcomes.get("<accepted>", 0) > 0, (target, outcomes)
        assert sum(outcomes.values()) > outcomes.get("<accepted>", 0), (target, outcomes)
