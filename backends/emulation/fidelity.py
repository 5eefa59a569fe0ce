"""Did the scale model keep its promise while a point was measured? (Mininet-HiFi's monitors.)

A quota promises a group C cores whenever it has work. It breaks that promise when the
machine itself is saturated (the groups' quotas are at most 80% of the cores, but the kernel,
the link shaping and other tenants run outside them), and then a "cluster of M × C cores"
was smaller than it says. :class:`Monitor` reads, over one measurement, each group's CPU time
and the time its threads were runnable (``/proc/PID/task/TID/schedstat``: on the CPU plus
waiting for one, throttled time included), and the machine's busy share (``/proc/stat``).

A group's **entitlement** is its quota times the share of the interval in which it had work:
that of its busiest thread (running or waiting for a CPU), a lower bound, since threads that
take turns would sum to more than the group was busy (two pool workers on a laptop of 0.6
core summed to all of a 30 ms map and read "got 77%"), and never more than its threads could
use, one core each while they had work (serial on a laptop of 1.6 cores read "got 63%", with
its one thread on a core of its own all along). A group that got less than 90% of its
entitlement over a point of at least :data:`MIN_WALL_S` makes the point unfaithful; so does a
machine busier than 95% over any point.

Each link of an emulated cluster is watched too: the bytes its host's end received and sent
over the point (``/proc/PID/net/dev`` of a process in the host's namespace). A link that
carried more one way than its shaped rate allows (by over :data:`LINK_SLACK`, past a burst)
makes the point unfaithful: the shaping did not hold. The verdict lists each link's bytes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: A busy group that got less than this share of its entitlement: the point is unfaithful.
MIN_SHARE = 0.9
#: The machine busier than this over the point: unfaithful.
MAX_MACHINE_BUSY = 0.95
#: A group is judged only over points this long (ten 10 ms quota periods): a shorter one is
#: a few periods, each all or nothing.
MIN_WALL_S = 0.1
#: Between the readings at the start and the end, one a second: what a thread that ends
#: mid-point ran is kept up to its last reading, at the cost of ~1 ms of the laptop's CPU.
SAMPLE_S = 1.0
#: A link that carried more than this times its rate over a point (plus a burst of
#: :data:`LINK_BURST_BYTES`, htb's own allowance and then some) broke its shaping.
LINK_SLACK = 1.15
LINK_BURST_BYTES = 256 * 1024


@dataclass(frozen=True)
class Group:
    """A CPU group to watch: its label, folder and quota (cores)."""

    label: str
    path: Path
    cpus: float


@dataclass(frozen=True)
class GroupReading:
    """What a group did over a point."""

    label: str
    cpus: float
    cores: float  # used, on average
    runnable: float  # share of the wall time its busiest thread had work, at most 1
    wall_s: float = 0.0
    wanted: float | None = None  # cores its threads had work for, one each at most

    @property
    def share(self) -> float:
        """What it got of what it was entitled to (1: all of it)."""
        entitled = self.cpus * self.runnable
        if self.wanted is not None:
            entitled = min(entitled, self.wanted)
        if entitled <= 0 or self.wall_s < MIN_WALL_S:
            return 1.0
        return self.cores / entitled


@dataclass(frozen=True)
class Link:
    """A link to watch: its label, its host's end (device), a process in that host's
    namespace (``None``: this machine's own), and the rate it is shaped to."""

    label: str
    device: str
    pid: int | None
    mbps: float | None


@dataclass(frozen=True)
class LinkReading:
    """What a link carried over a point, each way, and the rate it was shaped to."""

    label: str
    to_host: int  # bytes, towards its host
    from_host: int
    mbps: float | None  # None: unshaped
    wall_s: float

    @property
    def over(self) -> bool:
        """It carried more, one way, than its rate allows over the point."""
        if self.mbps is None or self.wall_s <= 0:
            return False
        allowed = LINK_SLACK * self.mbps * 1e6 / 8 * self.wall_s + LINK_BURST_BYTES
        return max(self.to_host, self.from_host) > allowed

    def __str__(self) -> str:
        return f"{self.label} {(self.to_host + self.from_host) / 1e6:.3g} MB"


@dataclass(frozen=True)
class Verdict:
    """The fidelity of one point: ``str()`` is what the records keep."""

    groups: tuple[GroupReading, ...]
    machine_busy: float
    links: tuple[LinkReading, ...] = ()

    @property
    def faithful(self) -> bool:
        return (
            self.machine_busy <= MAX_MACHINE_BUSY
            and all(g.share >= MIN_SHARE for g in self.groups if g.runnable > 0.2)
            and not any(link.over for link in self.links)
        )

    def __str__(self) -> str:
        if not self.groups and not self.links:
            return ""
        carried = f"; links {', '.join(map(str, self.links))}" if self.links else ""
        if self.faithful:
            return "faithful" + carried
        reasons = []
        if self.machine_busy > MAX_MACHINE_BUSY:
            reasons.append(f"machine {self.machine_busy:.0%} busy")
        reasons += [
            f"{g.label} got {g.share:.0%} of its {g.cpus:g} cores"
            for g in self.groups
            if g.runnable > 0.2 and g.share < MIN_SHARE
        ]
        reasons += [f"{link.label} carried over its {link.mbps:g} Mbit/s"
                    for link in self.links if link.over]  # fmt: skip
        return "unfaithful: " + "; ".join(reasons) + carried


def _threads(path: Path) -> dict[tuple[int, int], tuple[int, int]]:
    """Run and wait nanoseconds of every thread of every process in the group."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        pids = (path / "cgroup.procs").read_text().split()
        for pid in pids:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, ValueError):
                        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                            run_ns, wait_ns, _ = f.read().split()
                        out[(int(pid), int(tid))] = (int(run_ns), int(wait_ns))
    return out


def _machine() -> tuple[int, int]:
    """Busy and total jiffies of every CPU so far."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # guest time is in user already
    return total - idle, total


def _counters(link: Link) -> tuple[int, int] | None:
    """Bytes the host's end of ``link`` received (towards the host) and sent, so far: a read
    of ``/proc/PID/net/dev`` of a process in its namespace (no command: the laptop's quota
    would pay for every one)."""
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open(f"/proc/{link.pid or 'self'}/net/dev") as f,
    ):
        for line in f:
            name, _, fields = line.partition(":")
            if name.strip() == link.device:
                values = fields.split()
                return int(values[0]), int(values[8])
    return None


def watched_links(info: dict | None = None) -> list[Link]:
    """The links of the emulated cluster a backend runs on (``info``: its ``info()``)."""
    import subprocess

    emulated = (info or {}).get("emulated") or {}
    found = emulated.get("links") or {}
    links = []
    for label, device, netns in found.get("ends", []):
        pid = None
        if netns:
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                      text=True, timeout=10).stdout.split()  # fmt: skip
                pid = int(pids[0]) if pids else None
            if pid is None:
                continue  # nothing runs there to read it through
        links.append(Link(label, device, pid, emulated.get("bandwidth_mbps")))
    return links


def watched(info: dict | None = None) -> list[Group]:
    """The groups a point on a backend is held to: the laptop's, if this process has one, and
    each node's of an emulated cluster (``info``: the backend's ``info()``)."""
    from smallbig.backends.emulation.cpugroups import CpuGroupError, current, hierarchy, quota_of

    try:
        root = hierarchy().root
    except CpuGroupError:
        return []
    groups = []
    mine = current()
    if mine is not None:
        groups.append(Group("laptop", root / str(mine["group"]), float(mine["cpus"])))
    emulated = (info or {}).get("emulated") or {}
    for i, name in enumerate(emulated.get("cpu_groups") or []):
        path = root / name
        if path.is_dir():
            first = "head" if emulated.get("engine") == "ray" else "scheduler"
            groups.append(Group(first if i == 0 else f"node {i}", path, quota_of(path)))
    return groups


class Monitor:
    """Watch ``groups`` over a block: ``with Monitor(groups) as m: ...``, then ``m.verdict``.

    With no groups and no links, it reads nothing and its verdict is ``""`` (nothing was
    scaled or emulated).
    """

    def __init__(self, groups: list[Group], links: list[Link] | None = None) -> None:
        self.groups = groups
        self.links = links or []
        self.verdict: Verdict | None = None
        self._first: list[dict] = []
        self._last: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        for first, last, group in zip(self._first, self._last, self.groups, strict=True):
            for key, value in _threads(group.path).items():
                first.setdefault(key, (0, 0))  # a thread that started during the point
                last[key] = value

    def __enter__(self) -> Monitor:
        self._start = time.monotonic()
        self._carried = {link.label: _counters(link) for link in self.links}
        if not self.groups:
            return self
        self._first = [{} for _ in self.groups]
        self._last = [{} for _ in self.groups]
        for first, group in zip(self._first, self.groups, strict=True):
            first.update(_threads(group.path))
        self._machine = _machine()
        self._thread = threading.Thread(target=self._sample, name="smallbig-fidelity", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._read()

    def _link_readings(self, wall: float) -> tuple[LinkReading, ...]:
        readings = []
        for link in self.links:
            now, then = _counters(link), self._carried.get(link.label)
            if now is not None and then is not None:
                readings.append(LinkReading(link.label, now[0] - then[0], now[1] - then[1],
                                            link.mbps, wall))  # fmt: skip
        return tuple(readings)

    def __exit__(self, *exc: object) -> None:
        if not self.groups:
            self.verdict = Verdict((), 0.0, self._link_readings(time.monotonic() - self._start))
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        wall = time.monotonic() - self._start
        busy, total = _machine()
        self._read()
        readings = []
        for first, last, group in zip(self._first, self._last, self.groups, strict=True):
            base = {k: first.get(k, (0, 0)) for k in last}
            run = sum(last[k][0] - base[k][0] for k in last) / 1e9
            had_work = [last[k][0] + last[k][1] - base[k][0] - base[k][1] for k in last]
            busiest = max(had_work, default=0)
            readings.append(
                GroupReading(group.label, group.cpus, run / wall, min(1.0, busiest / 1e9 / wall),
                             wall, sum(had_work) / 1e9 / wall)
            )  # fmt: skip
        machine = (busy - self._machine[0]) / max(1, total - self._machine[1])
        self.verdict = Verdict(tuple(readings), machine, self._link_readings(wall))
