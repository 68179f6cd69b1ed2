"""``pyvmalloc capture``: record a real kernel's vmalloc activity for replay.

A capture is a directory::

    OUTDIR/
      meta.json        what was recorded, how, and the marker protocol (below)
      vmallocinfo      /proc/vmallocinfo with real addresses, read while tracing
      trace            ftrace text of the three vmalloc: events (+ our markers),
                       from a private tracefs instance; ``trace.gz`` with --gzip
      vmallocinfo.end  optional second snapshot after the workload (--end-snapshot)
      kstate.json      the kernel's free tree, vmap nodes, lazy lists and pools, read
                       with BPF right after the snapshot (pyvmalloc.trace.kread; not
                       with --no-kstate or where the machine cannot); kstate.end.json
                       after the end snapshot; ``.gz`` with --gzip

Ordering. Tracing is enabled first, *then* the snapshot is read, so no event can fall
into a gap between the two. Around the read, markers are written into the instance's
``trace_marker``::

    pyvmalloc: drop-caches-begin / drop-caches-end    (if --drop-caches)
    pyvmalloc: snapshot-begin                          just before opening vmallocinfo
    pyvmalloc: snapshot-end                            just after reading it to EOF
    pyvmalloc: kstate-begin / kstate-end               around the BPF readout (kstate.json)
    pyvmalloc: workload-begin / workload-end
    pyvmalloc: end-snapshot-begin / end-snapshot-end   (if --end-snapshot)
    pyvmalloc: end-kstate-begin / end-kstate-end       (if --end-snapshot, kstate.end.json)

Every vmalloc event before ``snapshot-begin`` is already reflected in the snapshot;
every event after ``snapshot-end`` is not. Events between the two (the read takes a
few ms) are ambiguous: the kernel prints vmallocinfo node by node under per-node
locks, so such an event may or may not be in it. ``meta.json`` counts them
(``events_in_snapshot_window``); a replay should check those against the snapshot.

The machine is always left as found: the instance is removed (its events disabled
first), ``kernel.kptr_restrict`` is restored, CPU affinity is restored, and tracefs is
unmounted if this command mounted it — also on errors, Ctrl-C, SIGTERM and SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gzip
import json
import math
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pyvmalloc.trace import bpfload, kread

__all__ = [
    "MARKER_PREFIX",
    "CaptureError",
    "CaptureOptions",
    "capture",
    "main",
    "register_cli",
]

MARKER_PREFIX = "pyvmalloc: "
EVENTS = ("alloc_vmap_area", "free_vmap_area_noflush", "purge_vmap_area_lazy")
KPTR = Path("/proc/sys/kernel/kptr_restrict")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
TRACEFS_DEFAULT = Path("/sys/kernel/tracing")
CAPTURE_FORMAT_VERSION = 1


class CaptureError(RuntimeError):
    """A capture cannot be made (missing root, tracefs, tracepoints, ...)."""


class _Terminated(BaseException):
    """Raised from SIGTERM/SIGHUP handlers so ``finally`` blocks run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(slots=True)
class CaptureOptions:
    outdir: Path
    duration: float | None = None
    command: list[str] | None = None
    workload: str | None = None  # "bpf" or None
    workload_config: bpfload.WorkloadConfig | None = None
    drop_caches: bool = True
    buffer_mb: int = 64
    end_snapshot: bool = False
    gzip: bool = False
    kstate: bool = True
    settle: float = 0.3
    force: bool = False
    tracefs: Path | None = None
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr))


# --------------------------------------------------------------------------- helpers


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    # One write() per value: tracefs/procfs control files want it so.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


#: Files of a capture directory; those holding real kernel addresses are private.
OUTPUT_FILES = (
    "meta.json",
    "vmallocinfo",
    "vmallocinfo.end",
    "trace",
    "trace.gz",
    "kstate.json",
    "kstate.json.gz",
    "kstate.end.json",
    "kstate.end.json.gz",
)
PRIVATE_MODE = 0o600  # vmallocinfo(.end), trace(.gz), kstate(.end).json: real addresses
PUBLIC_MODE = 0o644  # meta.json: counts and settings only


def _open_outdir(out: Path, force: bool) -> int:
    """Create (mode 0700) or check OUTDIR and return a descriptor of it.

    The directory itself and every file written into it are opened without following
    symbolic links (``O_NOFOLLOW``) and files are created with ``O_EXCL``, relative to
    this descriptor: a link planted in OUTDIR, or OUTDIR swapped for a link, cannot make
    a capture running as root write elsewhere. With ``force``, earlier capture files
    are unlinked first (unlinking a link removes the link, not its target).
    """
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(out, 0o700)
    else:
        if stat.S_ISLNK(st.st_mode):
            raise CaptureError(f"{out} is a symbolic link; give the real directory")
        if not stat.S_ISDIR(st.st_mode):
            raise CaptureError(f"{out} exists and is not a directory")
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise CaptureError(f"cannot open {out}: {e.strerror}") from None
    try:
        if os.listdir(fd) and not force:
            raise CaptureError(f"{out} exists and is not empty (use --force to overwrite)")
        for name in OUTPUT_FILES:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise CaptureError(f"cannot remove {out / name}: {e.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create(dirfd: int, name: str, mode: int) -> int:
    """A new file ``name`` in the directory ``dirfd``: never follows or reuses one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, mode, dir_fd=dirfd)
    os.fchmod(fd, mode)  # exactly this mode, whatever the umask
    return fd


def _write_output(dirfd: int, name: str, text: str | bytes, mode: int = PRIVATE_MODE) -> None:
    """Write a capture file (gzip-compressed if ``name`` ends in ``.gz``)."""
    data = text.encode() if isinstance(text, str) else text
    with os.fdopen(_create(dirfd, name, mode), "wb") as f:
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb") as g:
                g.write(data)
        else:
            f.write(data)


def _find_tracefs() -> Path | None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tracefs":
            return Path(parts[1].replace("\\040", " "))
    return None


def _cpu_list(path: str) -> list[int]:
    """Parse a kernel CPU list such as ``0-3,5``."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return []
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


_STAT_RE = re.compile(r"^([a-z ]+):\s+(\S+)", re.M)


def _cpu_stats(inst: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for d in sorted((inst / "per_cpu").glob("cpu*"), key=lambda p: int(p.name[3:])):
        try:
            text = (d / "stats").read_text()
        except OSError:
            continue
        out[d.name] = {k.strip().replace(" ", "_"): v for k, v in _STAT_RE.findall(text)}
    return out


def check_environment(tracefs: Path | None = None) -> list[str]:
    """Reasons why a capture cannot run here (empty when it can)."""
    problems: list[str] = []
    if sys.platform != "linux":
        return ["pyvmalloc capture needs Linux (tracefs and /proc/vmallocinfo)"]
    if os.geteuid() != 0:
        problems.append(
            "must run as root: it reads /proc/vmallocinfo with real addresses and "
            "creates a tracefs instance (try: sudo pyvmalloc capture ...)"
        )
        return problems
    base = tracefs or _find_tracefs() or TRACEFS_DEFAULT
    if not (base / "instances").is_dir() and not TRACEFS_DEFAULT.is_dir():
        problems.append(f"tracefs is not available (no {base}); is CONFIG_FTRACE enabled?")
    elif (base / "instances").is_dir() and not (base / "events" / "vmalloc").is_dir():
        problems.append(
            f"{base}/events/vmalloc is missing: the vmalloc tracepoints exist from Linux "
            f"6.2 on (this kernel: {platform.release()})"
        )
    if not Path("/proc/vmallocinfo").exists():
        problems.append("/proc/vmallocinfo is missing (CONFIG_PROC_FS?)")
    return problems


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception so cleanup runs; restore handlers after."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Terminated(signum)

    old: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# ------------------------------------------------------------------------ the capture


@dataclass(slots=True)
class _State:
    """What was changed on the machine, to be undone."""

    mounted: Path | None = None
    instance: Path | None = None
    kptr_old: str | None = None
    affinity: set[int] | None = None


#: Where a running capture records what it changed, so that the next capture can
#: undo it if this one was killed with SIGKILL (which no handler can catch).
STATE_DIR = Path("/run/pyvmalloc")


def _state_file(pid: int) -> Path:
    return STATE_DIR / f"capture-{pid}.json"


def _pid_namespace() -> int | None:
    """The inode of this process's pid namespace (``/proc/self/ns/pid``), or None.

    A pid means something only inside its namespace: recovery acts on a killed
    capture's leftovers only when it was recorded from the same one.
    """
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _save_state(st: _State) -> None:
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    if STATE_DIR.is_symlink():
        raise CaptureError(f"{STATE_DIR} is a symbolic link; refusing to write through it")
    data = {
        "instance": str(st.instance) if st.instance else None,
        "kptr_old": st.kptr_old,
        "mounted": str(st.mounted) if st.mounted else None,
        "pidns": _pid_namespace(),
    }
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(_state_file(os.getpid()), flags, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data))


def _read_state(f: Path, base: Path) -> dict[str, Any]:
    """A killed capture's state file, or {} if it is not one this code wrote.

    The file is not followed if it is a link, and its values are used only if they
    have the shapes written above (an instance under ``base/instances``, a
    kptr_restrict value 0-2): recovery runs as root and writes to these paths.
    """
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(4096))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    inst = data.get("instance")
    if (
        isinstance(inst, str)
        and Path(inst).parent == base / "instances"
        and Path(inst).name.startswith("pyvmalloc-")
    ):
        out["instance"] = inst
    if data.get("kptr_old") in ("0", "1", "2"):
        out["kptr_old"] = data["kptr_old"]
    if isinstance(data.get("mounted"), str):
        out["mounted"] = data["mounted"]
    pidns = data.get("pidns")
    if isinstance(pidns, int) and not isinstance(pidns, bool):
        out["pidns"] = pidns
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_captures(
    base: Path, log: Callable[[str], None], *, adopt_mounts: list[Path] | None = None
) -> int:
    """Undo what earlier captures left behind when they were killed (SIGKILL).

    Restores ``kernel.kptr_restrict`` from their state file and removes their tracefs
    instance. Only captures whose state file says they ran in this pid namespace are
    touched (a pid of another namespace may be alive though ``kill(pid, 0)`` cannot
    see it); an instance named ``pyvmalloc-<pid>`` with no such record is left alone
    and named in the log. A tracefs a killed capture mounted is unmounted, or, with
    ``adopt_mounts``, handed over (a running capture unmounts it when it finishes).
    Returns the number of captures recovered.
    """
    recovered = 0
    stale: dict[int, dict[str, Any]] = {}
    ours = _pid_namespace()
    if STATE_DIR.is_dir():
        for f in sorted(STATE_DIR.glob("capture-*.json")):
            try:
                pid = int(f.stem.split("-", 1)[1])
            except ValueError:
                continue
            data = _read_state(f, base)
            if data.get("pidns", ours) != ours:
                continue  # another namespace's capture: its pid is not ours to test
            if not _pid_alive(pid):
                stale[pid] = data
                f.unlink(missing_ok=True)
    inst_dir = base / "instances"
    if inst_dir.is_dir():
        for inst in sorted(inst_dir.glob("pyvmalloc-*")):
            try:
                pid = int(inst.name.split("-", 1)[1])
            except ValueError:
                continue
            if pid in stale:
                stale[pid].setdefault("instance", str(inst))
            elif not _pid_alive(pid):
                log(
                    f"capture: left {inst} alone: no record that a capture of this pid "
                    "namespace made it (remove it with rmdir once nothing uses it)"
                )
    mounts = {Path(d["mounted"]) for d in stale.values() if d.get("mounted")}
    for pid, data in sorted(stale.items()):
        st = _State(
            instance=Path(data["instance"]) if data.get("instance") else None,
            kptr_old=data.get("kptr_old"),
        )
        if st.instance is None and st.kptr_old is None:
            continue  # only a tracefs mount handed over by a finished capture (below)
        _cleanup(st, log)
        log(
            f"capture: recovered what capture {pid} (killed) left behind: "
            f"instance {st.instance or '-'}, kptr_restrict restored to {st.kptr_old or '-'}"
        )
        recovered += 1
    for m in sorted(mounts):
        if _find_tracefs() != m:
            continue
        if adopt_mounts is not None:
            adopt_mounts.append(m)
        else:
            _cleanup(_State(mounted=m), log)
            log(f"capture: unmounted {m}, mounted by an earlier capture")
    return recovered


def _live_captures(base: Path) -> dict[int, dict[str, Any]]:
    """The state records of the *other* captures running now in this pid namespace."""
    out: dict[int, dict[str, Any]] = {}
    if not STATE_DIR.is_dir():
        return out
    ours = _pid_namespace()
    for f in sorted(STATE_DIR.glob("capture-*.json")):
        try:
            pid = int(f.stem.split("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        data = _read_state(f, base)
        if data.get("pidns", ours) == ours and _pid_alive(pid):
            out[pid] = data
    return out


def _share_machine_state(st: _State, base: Path, log: Callable[[str], None]) -> _State | None:
    """Before cleaning up: leave what other running captures still need.

    ``kernel.kptr_restrict`` and a tracefs mount are machine-wide. While another
    capture runs, this one neither restores the first nor unmounts the second; the
    mount is handed over in a state record that the last capture to finish (or the
    next one to start) takes up, and the last one restores ``kptr_restrict`` to the
    value before the first of them (see :func:`capture`). With no other capture
    running, mounts handed over earlier are taken up here. Returns the record to
    leave behind, or None.
    """
    if _live_captures(base):
        handed = _State(mounted=st.mounted) if st.mounted is not None else None
        if st.kptr_old is not None or st.mounted is not None:
            log("capture: another capture is running; it restores the machine when it ends")
        st.kptr_old = None
        st.mounted = None
        return handed
    adopted: list[Path] = []
    recover_stale_captures(base, log, adopt_mounts=adopted)
    if adopted and st.mounted is None:
        st.mounted = adopted[0]
    return None


def _cleanup(st: _State, log: Callable[[str], None]) -> list[str]:
    errors: list[str] = []
    inst = st.instance
    if inst is not None and inst.exists():
        for ctl in (inst / "tracing_on", inst / "events" / "enable"):
            try:
                _write(ctl, "0")
            except OSError as exc:
                errors.append(f"disabling {ctl}: {exc}")
        last: OSError | None = None
        for _ in range(50):
            try:
                inst.rmdir()
                break
            except OSError as exc:  # EBUSY while a reader still holds a file
                last = exc
                time.sleep(0.05)
        else:
            errors.append(f"removing {inst}: {last}")
    if st.kptr_old is not None:
        try:
            _write(KPTR, st.kptr_old)
        except OSError as exc:
            errors.append(f"restoring kernel.kptr_restrict={st.kptr_old}: {exc}")
    if st.affinity is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, st.affinity)
    if st.mounted is not None:
        r = subprocess.run(["umount", str(st.mounted)], capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"unmounting {st.mounted}: {r.stderr.strip()}")
    for msg in errors:
        log(f"capture: cleanup problem: {msg}")
    return errors


def _mark(inst: Path, what: str) -> None:
    _write(inst / "trace_marker", MARKER_PREFIX + what)


def _read_snapshot(path: str = "/proc/vmallocinfo") -> str:
    # One open and large reads: keeps the begin/end marker window small.
    with open(path, "rb", buffering=0) as f:
        chunks = []
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode()


_SNAP_AREA_RE = re.compile(r"^0x([0-9a-f]+)-0x([0-9a-f]+) ", re.M)
_ALLOC_SIZE_RE = re.compile(r" alloc_vmap_area: va_start: \d+ size=(\d+) ")
_FREE_RE = re.compile(r" free_vmap_area_noflush: va_start=\S+ nr_lazy=(\d+) nr_lazy_max=(\d+)")
_PURGE_RE = re.compile(r" purge_vmap_area_lazy: start=\S+ end=\S+ num_purged=(\d+)")
_MARK_RE = re.compile(r"tracing_mark_write: " + re.escape(MARKER_PREFIX) + r"(\S+)")
_LOST_RE = re.compile(r"^CPU:\d+ \[LOST (\d+) EVENTS\]")
_ENTRIES_RE = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)")


def _summarize(trace_text: str) -> dict[str, Any]:
    """Counts for meta.json, with a light scan (the full parser lives in parse.py)."""
    counts = dict.fromkeys(EVENTS, 0)
    purged = 0
    nr_lazy_max: set[int] = set()
    markers: dict[str, int] = {}
    lost = 0
    in_window = 0
    purges_after_drop = 0
    phase = "before"
    for lineno, line in enumerate(trace_text.split("\n"), 1):  # lines end at \n only
        if line.startswith("#"):
            m = _ENTRIES_RE.match(line)
            if m and int(m.group(2)) > int(m.group(1)):
                lost += int(m.group(2)) - int(m.group(1))
            continue
        m = _LOST_RE.match(line)
        if m:
            lost += int(m.group(1))
            continue
        m = _MARK_RE.search(line)
        if m:
            markers.setdefault(m.group(1), lineno)
            if m.group(1) == "drop-caches-end":
                phase = "dropped"
            elif m.group(1) == "snapshot-begin":
                phase = "window"
            elif m.group(1) == "snapshot-end":
                phase = "after"
            continue
        ev = None
        if " alloc_vmap_area: " in line:
            ev = "alloc_vmap_area"
        elif " free_vmap_area_noflush: " in line:
            ev = "free_vmap_area_noflush"
            mf = _FREE_RE.search(line)
            if mf:
                nr_lazy_max.add(int(mf.group(2)))
        elif " purge_vmap_area_lazy: " in line:
            ev = "purge_vmap_area_lazy"
            mp = _PURGE_RE.search(line)
            if mp:
                purged += int(mp.group(1))
                if phase in ("dropped", "window") and int(mp.group(1)) > 0:
                    purges_after_drop += 1
        if ev:
            counts[ev] += 1
            if phase == "window":
                in_window += 1
    return {
        "event_counts": counts,
        "areas_purged": purged,
        "nr_lazy_max_observed": sorted(nr_lazy_max),
        "marker_lines": markers,
        "lost_events": lost,
        "events_in_snapshot_window": in_window,
        "purges_between_drop_and_snapshot": purges_after_drop,
    }


def capture(opts: CaptureOptions) -> dict[str, Any]:
    """Make one capture; returns the meta dictionary written to ``meta.json``.

    Raises :class:`CaptureError` if the machine cannot be traced.
    """
    problems = check_environment(opts.tracefs)
    if problems:
        raise CaptureError("; ".join(problems))
    if opts.workload == "bpf":
        why = bpfload.bpf_available()
        if why:
            raise CaptureError(f"the bpf workload cannot run: {why}")
    out = opts.outdir
    outfd = _open_outdir(out, opts.force)
    log = opts.log
    st = _State(affinity=set(os.sched_getaffinity(0)))
    reader: kread.Reader | None = None
    meta: dict[str, Any] = {
        "format": "pyvmalloc-capture",
        "format_version": CAPTURE_FORMAT_VERSION,
        "kernel_release": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        "cpus_online": _cpu_list("/sys/devices/system/cpu/online"),
        "cpus_possible": _cpu_list("/sys/devices/system/cpu/possible"),
        "pyvmalloc_version": _version(),
        "argv": sys.argv,
        "drop_caches": opts.drop_caches,
        "marker_prefix": MARKER_PREFIX,
    }
    base: Path | None = None
    with _signals_raise():
        try:
            base = opts.tracefs or _find_tracefs()
            if base is None:
                base = TRACEFS_DEFAULT
                r = subprocess.run(
                    ["mount", "-t", "tracefs", "nodev", str(base)],
                    capture_output=True,
                    text=True,
                )
                if r.returncode != 0:
                    raise CaptureError(f"cannot mount tracefs on {base}: {r.stderr.strip()}")
                st.mounted = base
                log(f"capture: mounted tracefs on {base} (will unmount)")
            if not (base / "events" / "vmalloc").is_dir():
                raise CaptureError(f"{base}/events/vmalloc is missing (Linux >= 6.2 needed)")
            adopted: list[Path] = []
            recover_stale_captures(base, log, adopt_mounts=adopted)
            if adopted and st.mounted is None:
                st.mounted = adopted[0]  # it was not mounted before the killed capture
            inst = base / "instances" / f"pyvmalloc-{os.getpid()}"
            st.instance = inst
            _save_state(st)  # first: a capture killed right after mkdir is undone later
            inst.mkdir()
            ncpu = max(1, len(meta["cpus_possible"]) or os.cpu_count() or 1)
            per_cpu_kb = max(1024, (opts.buffer_mb << 10) // ncpu)
            _write(inst / "buffer_size_kb", str(per_cpu_kb))
            meta["buffer_size_kb_per_cpu"] = per_cpu_kb
            meta["trace_clock"] = _current_clock(inst)
            _write(inst / "tracing_on", "0")
            for ev in EVENTS:
                _write(inst / "events" / "vmalloc" / ev / "enable", "1")
            st.kptr_old = _read(KPTR).strip()
            earlier = [d["kptr_old"] for d in _live_captures(base).values() if "kptr_old" in d]
            if earlier:  # another capture set it: restore what was there before either
                st.kptr_old = earlier[0]
            _save_state(st)  # before changing it: a SIGKILLed capture is undone later
            if st.kptr_old != "1":
                _write(KPTR, "1")
            meta["kptr_restrict_was"] = int(st.kptr_old)

            if opts.kstate:
                # Before tracing starts: loading the peek program vmallocs its struct
                # bpf_prog, which the snapshot then shows as any other busy area.
                reader = kread.Reader()
                try:
                    reader.prepare()
                except kread.KreadError as e:
                    reader.close()
                    reader = None
                    meta["kstate"] = {"read": False, "reason": str(e)}
                    log(f"capture: not reading the kernel's vmap state: {e}")
                else:
                    meta["kstate"] = {
                        "read": True,
                        "found": reader.anchors.how if reader.anchors else [],
                    }
            else:
                meta["kstate"] = {"read": False, "reason": "--no-kstate"}

            _write(inst / "tracing_on", "1")
            meta["start_time"] = _now()
            _mark(inst, "capture-begin")
            if opts.drop_caches:
                _mark(inst, "drop-caches-begin")
                _write(DROP_CACHES, "2")
                _mark(inst, "drop-caches-end")
            _mark(inst, "snapshot-begin")
            t0 = time.monotonic()
            snap = _read_snapshot()
            t1 = time.monotonic()
            _mark(inst, "snapshot-end")
            meta["snapshot_read_seconds"] = round(t1 - t0, 6)
            if re.match(r"0x00000000[0-9a-f]{8}-", snap) or snap.startswith("0x0000000000000000-"):
                raise CaptureError(
                    "/proc/vmallocinfo still shows hashed or zeroed addresses even with "
                    "kptr_restrict=1 (are we really root with CAP_SYSLOG?)"
                )
            _write_output(outfd, "vmallocinfo", snap)
            if reader is not None:
                meta["kstate"]["after-snapshot"] = _read_kstate(
                    reader, inst, outfd, "kstate", "after-snapshot", opts.gzip, log, snap
                )

            _mark(inst, "workload-begin")
            meta["mode"], meta["command"] = _run_activity(opts, st, meta, log)
            if opts.settle > 0:
                time.sleep(opts.settle)  # let deferred frees (kworker, RCU) land
            _mark(inst, "workload-end")
            if opts.end_snapshot:
                _mark(inst, "end-snapshot-begin")
                end_snap = _read_snapshot()
                _mark(inst, "end-snapshot-end")
                _write_output(outfd, "vmallocinfo.end", end_snap)
                if reader is not None:
                    meta["kstate"]["after-end-snapshot"] = _read_kstate(
                        reader,
                        inst,
                        outfd,
                        "end-kstate",
                        "after-end-snapshot",
                        opts.gzip,
                        log,
                        end_snap,
                    )
            _mark(inst, "capture-end")
            _write(inst / "tracing_on", "0")
            meta["end_time"] = _now()
            for ev in EVENTS:
                _write(inst / "events" / "vmalloc" / ev / "enable", "0")
            meta["per_cpu_stats"] = _cpu_stats(inst)
            # The kernel's bytes as they are: a task's name may hold any bytes, and
            # text mode would turn a \r into a line end.
            raw = (inst / "trace").read_bytes()
            _write_output(outfd, "trace.gz" if opts.gzip else "trace", raw)
            summary = _summarize(raw.decode("utf-8", "surrogateescape"))
            meta.update(summary)
            overrun = sum(int(s.get("overrun", "0")) for s in meta["per_cpu_stats"].values())
            dropped = sum(int(s.get("dropped_events", "0")) for s in meta["per_cpu_stats"].values())
            meta["overrun"] = overrun
            meta["dropped_events"] = dropped
            meta["complete"] = overrun == 0 and dropped == 0 and summary["lost_events"] == 0
            maxes = summary["nr_lazy_max_observed"]
            meta["lazy_max_pages"] = maxes[0] if len(maxes) == 1 else None
            meta_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
            _write_output(outfd, "meta.json", meta_text, PUBLIC_MODE)
            if not meta["complete"]:
                log(
                    f"capture: WARNING: events were lost (overrun={overrun}, "
                    f"dropped={dropped}); increase --buffer-mb"
                )
            return meta
        finally:
            os.close(outfd)
            if reader is not None:
                reader.close()
            bpfload.release_kept()
            handed = _share_machine_state(st, base, log) if base is not None else None
            if not _cleanup(st, log):
                if handed is not None:
                    _save_state(handed)  # the mount, for the last capture to unmount
                else:
                    _state_file(os.getpid()).unlink(missing_ok=True)


def _read_kstate(
    reader: kread.Reader,
    inst: Path,
    outfd: int,
    marker: str,
    taken: str,
    gz: bool,
    log: Callable[[str], None],
    snapshot: str = "",
) -> dict[str, Any]:
    """One readout between ``<marker>-begin`` and ``<marker>-end``, written to
    ``kstate.json`` (or ``kstate.end.json``); returns its summary for meta.json, with
    how many areas of ``snapshot`` (the vmallocinfo read just before) the readout does
    not hold as busy or lazy (events in between, or a kernel/reader disagreement)."""
    _mark(inst, marker + "-begin")
    try:
        doc = reader.read(taken)
    except kread.KreadError as e:
        _mark(inst, marker + "-end")
        log(f"capture: the kernel's vmap state could not be read {taken}: {e}")
        return {"error": str(e)}
    _mark(inst, marker + "-end")
    name = ("kstate.end.json" if taken == "after-end-snapshot" else "kstate.json") + (
        ".gz" if gz else ""
    )
    _write_output(outfd, name, kread.write_kstate(doc))
    if not doc["consistent"]:
        log(f"capture: WARNING: {name}: every readout raced ({doc['errors'][-1]})")
    held = {
        int(a[0], 16): int(a[1], 16) for vn in doc["vmap_nodes"] for a in [*vn["busy"], *vn["lazy"]]
    }
    snap = [(int(m.group(1), 16), int(m.group(2), 16)) for m in _SNAP_AREA_RE.finditer(snapshot)]
    return {
        "file": name,
        "consistent": doc["consistent"],
        "snapshot_areas": len(snap),
        "snapshot_areas_not_held": sum(1 for a, b in snap if held.get(a) != b)
        if doc["consistent"]
        else None,
        "attempts": doc["attempts"],
        "read_seconds": doc["read_seconds"],
        "free_blocks": len(doc["free_tree"]["nodes"]),
        "pooled": sum(p["len"] for vn in doc["vmap_nodes"] for p in vn["pools"]),
        "nr_vmap_nodes": doc["nr_vmap_nodes"],
    }


def _run_activity(
    opts: CaptureOptions, st: _State, meta: dict[str, Any], log: Callable[[str], None]
) -> tuple[str, list[str] | None]:
    if opts.workload == "bpf":
        cfg = opts.workload_config or bpfload.WorkloadConfig()
        meta["workload"] = {
            "name": "bpf",
            "seed": cfg.seed,
            "profile": cfg.profile,
            "cpus": cfg.cpus,
            "churn_bytes": cfg.churn_bytes,
            "max_ops": cfg.max_ops,
            "long_lived": cfg.long_lived,
            "pause": cfg.pause,
        }
        stats = bpfload.run_workload(cfg, log=log)
        meta["workload"]["stats"] = stats.as_dict()
        return "workload", None
    if opts.command:
        log(f"capture: running {' '.join(opts.command)}")
        try:
            proc = subprocess.Popen(opts.command)
        except OSError as e:
            raise CaptureError(f"cannot run {opts.command[0]}: {e.strerror or e}") from None
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        meta["command_exit_code"] = rc
        return "command", list(opts.command)
    duration = opts.duration if opts.duration is not None else 10.0
    log(f"capture: tracing for {duration:g} s")
    time.sleep(duration)
    meta["duration"] = duration
    return "duration", None


def _current_clock(inst: Path) -> str:
    try:
        text = (inst / "trace_clock").read_text()
    except OSError:
        return "unknown"
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else text.strip()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pyvmalloc")
    except Exception:
        return "unknown"


# ----------------------------------------------------------------------------- CLI

_HELP = """\
Record a real Linux kernel's vmalloc activity (root, Linux >= 6.2 with tracefs):
a /proc/vmallocinfo snapshot with real addresses plus the vmalloc: trace events from
a private tracefs instance, written to OUTDIR for `pyvmalloc replay`.

Activity: trace for --duration SECONDS, or around a command
(`pyvmalloc capture OUTDIR -- CMD ARGS...`), or run the built-in BPF-map workload
(--workload bpf --seed N ...).

Exit status: 0, or the command's own status when it failed (as time(1) and strace do;
128+N when a signal N killed it), 1 when the capture failed, 2 for a usage error, 3 when
events were lost. Several captures may run at once: the last to finish restores
kernel.kptr_restrict and unmounts a tracefs any of them mounted.
"""


def _seconds(text: str) -> float:
    """``--duration``: a finite, non-negative number of seconds."""
    try:
        value = float(text) if text.isascii() and "_" not in text else math.nan
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def _buffer_mb(text: str) -> int:
    """``--buffer-mb``: a whole number of MiB >= 1 (a negative one became 1 MiB)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of MiB >= 1: {text!r}")
    return int(text)


def add_arguments(p: argparse.ArgumentParser, *, positionals: bool = True) -> None:
    if positionals:
        p.add_argument("outdir", type=Path, help="capture directory to create")
        p.add_argument(
            "cmd",
            nargs=argparse.REMAINDER,
            metavar="[-- CMD ...]",
            help="command to trace, after -- (options may also follow OUTDIR)",
        )
    p.add_argument("--duration", type=_seconds, help="trace for this many seconds")
    p.add_argument("--workload", choices=("bpf",), help="run the built-in seeded BPF-map workload")
    p.add_argument(
        "--drop-caches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before the snapshot, write 2 to /proc/sys/vm/drop_caches. This runs the kernel's "
        "shrinkers, one of which returns every vmap-node pool to the free tree, so the "
        "snapshot describes the allocator completely (pool contents are invisible in "
        "vmallocinfo). It also drops the dentry and inode caches (slab objects), which "
        "costs some file-system performance until they are rebuilt. Default: on",
    )
    p.add_argument(
        "--buffer-mb",
        type=_buffer_mb,
        default=64,
        help="total ring-buffer size over all CPUs in MiB (default 64)",
    )
    p.add_argument(
        "--end-snapshot",
        action="store_true",
        help="also save vmallocinfo.end after the activity",
    )
    p.add_argument(
        "--gzip", action="store_true", help="write trace.gz (and kstate.json.gz) instead"
    )
    p.add_argument(
        "--kstate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the kernel's free tree, vmap nodes, lazy lists and pools with BPF right "
        "after each snapshot into kstate.json (needs BTF, BPF, root, x86_64; skipped with a "
        "one-line reason where the machine cannot). Default: on",
    )
    p.add_argument(
        "--settle",
        type=_seconds,
        default=0.3,
        help="seconds to keep tracing after the activity, for deferred frees (default 0.3)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a non-empty OUTDIR")
    bpfload.add_workload_arguments(p)


def _split_rest(args: argparse.Namespace) -> list[str]:
    """Options after OUTDIR land in the REMAINDER list: parse them, return the command."""
    rest = list(args.cmd or [])
    if "--" in rest:
        i = rest.index("--")
        opts, cmd = rest[:i], rest[i + 1 :]
    else:
        opts, cmd = rest, []
    if opts:
        p = argparse.ArgumentParser(prog="pyvmalloc capture OUTDIR", add_help=False)
        add_arguments(p, positionals=False)
        _ns, extra = p.parse_known_args(opts, namespace=args)
        if extra:
            # Not our options: a command given without '--' (e.g. `capture OUT sleep 1`).
            if extra != opts[len(opts) - len(extra) :]:
                p.error(f"unrecognized arguments: {' '.join(extra)}")
            cmd = extra + cmd
    return cmd


def _handler(args: argparse.Namespace) -> int:
    cmd = _split_rest(args)
    modes = sum(bool(x) for x in (cmd, args.workload, args.duration is not None))
    if modes > 1:
        print("capture: give only one of --duration, --workload, or -- CMD", file=sys.stderr)
        return 2
    if cmd and not _runnable(cmd[0]):
        print(f"capture: {cmd[0]}: command not found", file=sys.stderr)
        return 2
    opts = CaptureOptions(
        outdir=args.outdir,
        duration=args.duration,
        command=cmd or None,
        workload=args.workload,
        workload_config=bpfload.config_from_args(args) if args.workload else None,
        drop_caches=args.drop_caches,
        buffer_mb=args.buffer_mb,
        end_snapshot=args.end_snapshot,
        gzip=args.gzip,
        kstate=args.kstate,
        settle=args.settle,
        force=args.force,
    )
    try:
        meta = capture(opts)
    except CaptureError as e:
        print(f"capture: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("capture: interrupted; machine state restored", file=sys.stderr)
        return 130
    except _Terminated as e:
        print(f"capture: terminated by signal {e.signum}; machine state restored", file=sys.stderr)
        return 128 + e.signum
    c = meta["event_counts"]
    print(
        f"capture: {args.outdir}: {c['alloc_vmap_area']} allocs, "
        f"{c['free_vmap_area_noflush']} frees, {c['purge_vmap_area_lazy']} purges, "
        f"lost={meta['lost_events']} overrun={meta['overrun']} kstate={_kstate_word(meta)}"
    )
    rc = meta.get("command_exit_code")
    if isinstance(rc, int) and rc != 0:
        status = rc if rc > 0 else 128 - rc  # Popen: -N for a signal N
        print(f"capture: the command exited with status {status}", file=sys.stderr)
        return status
    return 0 if meta["complete"] else 3


def _runnable(exe: str) -> bool:
    """Whether ``exe`` names a program to run (a path, or a name on ``$PATH``)."""
    if os.sep in exe:
        return os.path.isfile(exe) and os.access(exe, os.X_OK)
    return shutil.which(exe) is not None


def _kstate_word(meta: dict[str, Any]) -> str:
    """``consistent``, ``raced`` (some readout never consistent), ``failed`` or ``off``."""
    k = meta.get("kstate", {})
    if not k.get("read"):
        return "off"
    outs = [k[t] for t in ("after-snapshot", "after-end-snapshot") if t in k]
    if any("error" in o for o in outs):
        return "failed"
    return "consistent" if all(o.get("consistent") for o in outs) else "raced"


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``capture`` subcommand (``args.func(args)`` returns the exit code)."""
    p = subparsers.add_parser(
        "capture",
        help="record a real kernel's vmalloc events and snapshot (root)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=_handler)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pyvmalloc")
    sub = p.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = p.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(["capture", *sys.argv[1:]]))
