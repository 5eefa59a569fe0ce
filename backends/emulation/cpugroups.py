"""CPU quotas for a scale model: the laptop and each emulated node held to a share of the cores.

A cluster wins because it has more cores than the laptop. On one machine that is built as a
scale model (DieCast, Mininet-HiFi): the laptop (the driver and every local pool) gets a quota
of C cores, every emulated node the same C, so that M nodes have M times the laptop's compute.

A :class:`CpuGroup` is a group of the kernel's ``cpu`` controller: cgroup v1's
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` where the machine mounts it, v2's ``cpu.max``
otherwise. Rules: only the ``cpu`` controller; only groups named ``smallbig-<owner pid>-...``
at the top of its hierarchy; each removed when it ends, and, if its owner is killed, by a
reaper process within seconds (processes still in it are moved back to the top first). The
quotas of every live group of smallbig's on the machine may add up to at most
:data:`MAX_SHARE` of its cores: the kernel, the link shaping and smallbig itself need the rest.

What a group used is read from ``cpu.stat`` (time throttled) and, where v1's controller does
not count it, from the CPU times of the processes in it, each kept at its last reading once it
ends (what a process ran after the last reading before it ended is not counted: read often,
or keep the processes alive, as a node's workers are).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smallbig.backends.lifeline import POLL_S, alive

PREFIX = "smallbig-"
#: The quota's period: 10 ms, so that a quota of a quarter core runs 2.5 ms in every 10 (the
#: default 100 ms lets a group run 25 ms flat out, then stall 75: coarse for 10 ms tasks).
PERIOD_US = 10_000
#: What every group of smallbig's may add up to, as a share of the machine's cores.
MAX_SHARE = 0.8
_COUNTER = itertools.count()
_LOCK = threading.Lock()


class CpuGroupError(OSError):
    """A CPU group could not be made: no root, no ``cpu`` controller, or quotas over the limit."""


@dataclass(frozen=True)
class Hierarchy:
    """Where the ``cpu`` controller is mounted and how its quota is written."""

    root: Path
    version: int  # 1: cpu.cfs_quota_us and cpu.cfs_period_us; 2: cpu.max


@dataclass(frozen=True)
class Usage:
    """What a group used between two readings (:meth:`CpuGroup.usage`, then ``-``).

    Attributes
    ----------
    wall_s, cpu_s, throttled_s : float
        Seconds elapsed, CPU-seconds its processes ran, seconds it was held back by its quota.
    periods, throttled_periods : int
        Quota periods in which it ran, and in which it hit its quota.
    """

    wall_s: float
    cpu_s: float
    throttled_s: float
    periods: int
    throttled_periods: int

    def __sub__(self, before: Usage) -> Usage:
        return Usage(
            self.wall_s - before.wall_s,
            self.cpu_s - before.cpu_s,
            self.throttled_s - before.throttled_s,
            self.periods - before.periods,
            self.throttled_periods - before.throttled_periods,
        )

    def cores(self) -> float:
        """Cores it used on average over the interval."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def active_cores(self, period_us: int = PERIOD_US) -> float:
        """Cores it used on average over the quota periods in which it ran (a node that ran
        out of work before the others is not counted idle for the rest)."""
        active = self.periods * period_us / 1e6
        return self.cpu_s / active if active > 0 else 0.0


def hierarchy() -> Hierarchy:
    """The machine's ``cpu`` controller; ``CpuGroupError`` in one line where it has none, or
    where this process may not make groups in it."""
    if os.geteuid() != 0:
        raise CpuGroupError("CPU quotas need root: the cpu controller's groups belong to root")
    v2 = None
    try:
        with open("/proc/self/mounts") as f:
            mounts = f.read().splitlines()
    except OSError:
        raise CpuGroupError("CPU quotas need Linux's cgroups (no /proc/self/mounts)") from None
    for line in mounts:
        _, point, fstype, options, *_ = line.split()
        if fstype == "cgroup" and "cpu" in options.split(","):
            return Hierarchy(Path(point), 1)
        if fstype == "cgroup2" and v2 is None:
            v2 = Path(point)
    if v2 is not None and "cpu" in (v2 / "cgroup.controllers").read_text().split():
        return Hierarchy(v2, 2)
    raise CpuGroupError("no cpu controller here (cgroup v1 'cpu' or v2 with 'cpu' enabled)")


def _quota_of(path: Path, version: int) -> float:
    """Cores a group may use (0 where it has no quota)."""
    with contextlib.suppress(OSError, ValueError):
        if version == 1:
            quota = int((path / "cpu.cfs_quota_us").read_text())
            period = int((path / "cpu.cfs_period_us").read_text())
        else:
            text = (path / "cpu.max").read_text().split()
            if text[0] == "max":
                return 0.0
            quota, period = int(text[0]), int(text[1])
        return max(0, quota) / period
    return 0.0


def quota_of(path: Path) -> float:
    """Cores the group at ``path`` may use (0: no quota)."""
    return _quota_of(path, 1 if _v1(path) else 2)


def _owner(name: str) -> int | None:
    m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
    return int(m.group(1)) if m else None


def committed(h: Hierarchy | None = None) -> float:
    """Cores promised to every live group of smallbig's on this machine."""
    h = h or hierarchy()
    total = 0.0
    for entry in h.root.iterdir():
        owner = _owner(entry.name)
        if entry.is_dir() and owner is not None and alive(owner):
            total += _quota_of(entry, h.version)
    return total


def check_quotas(cpus: Sequence[float]) -> None:
    """Refuse, before anything starts, quotas that cannot be given here.

    Raises
    ------
    CpuGroupError
        Without root or a ``cpu`` controller, or when ``cpus`` and the groups smallbig already
        holds add up to more than :data:`MAX_SHARE` of the machine's cores.
    ValueError
        A quota that is not a positive number of cores.
    """
    for c in cpus:
        if not c > 0:
            raise ValueError(f"a CPU quota must be a positive number of cores, got {c}")
    h = hierarchy()
    held, cores = committed(h), os.cpu_count() or 1
    asked = sum(cpus)
    if held + asked > MAX_SHARE * cores + 1e-9:
        already = f" (with {held:g} already held by smallbig)" if held else ""
        raise CpuGroupError(
            f"CPU quotas of {asked:g} cores{already} exceed {MAX_SHARE:.0%} of this machine's "
            f"{cores} cores ({MAX_SHARE * cores:g}): the kernel, the link shaping and smallbig "
            "itself need the rest"
        )


class CpuGroup:
    """A group of the ``cpu`` controller with a quota of ``cpus`` cores.

    Use it as ``with CpuGroup("laptop", 0.5) as group:``; put processes in it with
    :meth:`join` (a running one, and its threads) or :meth:`wrap` (a command to start: it joins
    before it runs, so every child it starts is in the group too).

    Parameters
    ----------
    label : str
        What it holds (``laptop``, ``n1``...): part of its name ``smallbig-<pid>-<n>-<label>``.
    cpus : float
        Cores it may use, e.g. 0.25.
    period_us : int
        The quota's period.
    """

    def __init__(self, label: str, cpus: float, period_us: int = PERIOD_US) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.]+", label):
            raise ValueError(f"a group's label is letters, digits, '_' and '.', got {label!r}")
        self.label, self.cpus, self.period_us = label, cpus, period_us
        self.name = f"{PREFIX}{os.getpid()}-{next(_COUNTER)}-{label}"
        self._h: Hierarchy | None = None
        self.path: Path | None = None
        self._home: Path | None = None  # where this process was, if it joined
        self._seen: dict[tuple[int, float], float] = {}  # v1: each process's last CPU reading

    def __enter__(self) -> CpuGroup:
        with _LOCK:
            check_quotas([self.cpus])
            h = self._h = hierarchy()
            sweep(h)
            path = h.root / self.name
            path.mkdir()
            self.path = path
            try:
                quota = max(1000, round(self.cpus * self.period_us))
                if h.version == 1:
                    (path / "cpu.cfs_period_us").write_text(str(self.period_us))
                    (path / "cpu.cfs_quota_us").write_text(str(quota))
                else:
                    (path / "cpu.max").write_text(f"{quota} {self.period_us}")
                _reaper.hold()
            except BaseException:
                path.rmdir()
                self.path = None
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, object]:
        """What ``run.json`` records of it."""
        return {"group": self.name, "cpus": self.cpus, "period_us": self.period_us}

    def join(self, pid: int | None = None) -> None:
        """Move process ``pid`` (default: this one), every thread of it, into the group; the
        processes it starts from then on are in it too."""
        assert self.path is not None, "join() inside `with CpuGroup(...)`"
        if pid is None:
            self._home = _group_of(os.getpid(), self._root())
        (self.path / "cgroup.procs").write_text(str(pid or os.getpid()))

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started so that it joins the group before it runs."""
        assert self.path is not None, "wrap() inside `with CpuGroup(...)`"
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def pids(self) -> list[int]:
        """The processes in it."""
        if self.path is None:
            return []
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def usage(self) -> Usage:
        """Totals so far (subtract an earlier reading for an interval's)."""
        assert self.path is not None and self._h is not None
        stat = dict(
            (k, int(v))
            for k, v in (line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        )
        if self._h.version == 2:
            cpu_s = stat.get("usage_usec", 0) / 1e6
            throttled_s = stat.get("throttled_usec", 0) / 1e6
        else:
            _read_cpu(self.pids(), self._seen)
            cpu_s = sum(self._seen.values())
            throttled_s = stat.get("throttled_time", 0) / 1e9
        return Usage(
            time.monotonic(),
            cpu_s,
            throttled_s,
            stat.get("nr_periods", 0),
            stat.get("nr_throttled", 0),
        )

    def _root(self) -> Path:
        assert self._h is not None
        return self._h.root

    def close(self) -> None:
        """Move what is still in the group back out (this process where it came from), and
        remove it."""
        with _LOCK:
            if self.path is None:
                return
            if self._home is not None:
                with contextlib.suppress(OSError):
                    (self._home / "cgroup.procs").write_text(str(os.getpid()))
            _remove(self.path, self._root())
            self.path = None
            _reaper.release()


@contextlib.contextmanager
def laptop(cpus: float | None) -> Iterator[CpuGroup | None]:
    """Run the block as a laptop of ``cpus`` cores: this process and every process it starts
    (pools, a local Dask or Ray cluster) under one quota; ``None``: no quota."""
    if cpus is None:
        yield None
        return
    with CpuGroup("laptop", cpus) as group:
        group.join()
        yield group


def current() -> dict[str, object] | None:
    """The quota this process runs under, if smallbig gave it one (for ``run.json``)."""
    with contextlib.suppress(CpuGroupError, OSError):
        h = hierarchy()
        path = _group_of(os.getpid(), h.root)
        if path is not None and _owner(path.name) is not None:
            return {"group": path.name, "cpus": _quota_of(path, h.version)}
    return None


def effective_cores() -> float:
    """The cores this process and its pools may use: its quota under a laptop of smallbig's,
    else every core of the machine."""
    quota = current()
    return float(quota["cpus"]) if quota else float(os.cpu_count() or 1)


def _group_of(pid: int, root: Path) -> Path | None:
    """The folder of the ``cpu`` group process ``pid`` is in."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, rel = line.rstrip("\n").split(":", 2)
            names = controllers.split(",")
            if "cpu" in names or (controllers == "" and not _v1(root)):
                return root / rel.lstrip("/")
    return None


def _v1(root: Path) -> bool:
    return (root / "cpu.cfs_period_us").exists() or (root / "cpu.shares").exists()


def _read_cpu(pids: list[int], seen: dict[tuple[int, float], float]) -> None:
    """Each process's CPU seconds so far into ``seen``, keyed by pid and start time (a pid is
    reused); its children's only through their own entries (counted twice otherwise)."""
    import psutil

    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            t = proc.cpu_times()
            seen[(pid, proc.create_time())] = t.user + t.system


def _remove(path: Path, root: Path, wait_s: float = 0.0) -> None:
    """Remove group ``path``, moving what is still in it to the top of the hierarchy first
    (after ``wait_s`` for it to end by itself)."""
    deadline = time.monotonic() + wait_s
    for _ in range(50):
        with contextlib.suppress(FileNotFoundError):
            pids = (path / "cgroup.procs").read_text().split()
            if pids and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            for pid in pids:
                with contextlib.suppress(OSError):  # it may have ended meanwhile
                    (root / "cgroup.procs").write_text(pid)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY: a process still in it (forked just now)
            time.sleep(0.05)


def sweep(h: Hierarchy | None = None, owner: int | None = None) -> list[str]:
    """Remove smallbig's groups whose owner is gone (or, given ``owner``, that one's); return
    their names."""
    h = h or hierarchy()
    removed = []
    for entry in h.root.iterdir():
        pid = _owner(entry.name)
        if pid is None or not entry.is_dir():
            continue
        if (owner is not None and pid == owner) or (owner is None and not alive(pid)):
            # Its processes are given a few seconds to end by themselves (their owner's
            # lifelines stop them) before what is left is moved out.
            _remove(entry, h.root, wait_s=3.0 if owner is not None else 0.0)
            removed.append(entry.name)
    return removed


class _Reaper:
    """One process per owner that removes the owner's groups once the owner is gone."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._users = 0

    def hold(self) -> None:
        self._users += 1
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "smallbig.backends.emulation.cpugroups", str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the group must not take it along
            )

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None


_reaper = _Reaper()


def _reap(owner: int) -> None:
    h = hierarchy()
    # Out of any group of its owner's (it was started from inside one, perhaps): the group
    # could not be removed while it is in it.
    (h.root / "cgroup.procs").write_text(str(os.getpid()))
    while alive(owner):
        threading.Event().wait(POLL_S)
    sweep(h, owner)


if __name__ == "__main__":
    _reap(int(sys.argv[1]))
