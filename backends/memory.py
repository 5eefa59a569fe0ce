"""Resident memory of a backend: the driver plus every process it started, sampled.

A backend's memory is what it costs the machine: this (the driver) process, which every
backend shares, plus the processes the backend started on this machine — pool workers, a
Dask worker per nanny, Ray's raylet, GCS, agents and workers — and their descendants. Resident
set sizes are summed (pages shared by forked workers count once per process, as ``top``
shows them). A cluster reached by address runs elsewhere: its engine's own figure, if any.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

import psutil

# How often the sampler reads the tree, and how often it looks for new processes in it: one
# RSS read is ~10 µs per process, a walk of every process on the machine ~2 ms.
INTERVAL_S = 0.1
REFRESH_S = 1.0


def descendants(pid: int | None = None) -> set[int]:
    """Every process below ``pid`` (default: this one), however deep."""
    return below({os.getpid() if pid is None else pid})


def below(roots: set[int]) -> set[int]:
    """Every process below any of ``roots``: one walk of the machine's processes for all
    (a walk per root cost Ray's ten roots ~2% of a core at one walk a second)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _parents() -> list[tuple[int, int]]:
    """``(pid, parent pid)`` of every process. On Linux straight from ``/proc/PID/stat``
    (~15 µs a process; psutil's per-process objects cost ~60 µs)."""
    if not os.path.isdir("/proc/self"):
        return [(p.pid, p.info["ppid"]) for p in psutil.process_iter(["ppid"])]
    pairs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:  # exited meanwhile
                continue
            # After the command name in parentheses (which may hold spaces): state, ppid.
            pairs.append((int(entry), int(stat[stat.rindex(b")") + 2 :].split()[1])))
    return pairs


class ProcessTree:
    """The driver and the processes rooted at ``roots``, read as one resident-memory figure.

    Parameters
    ----------
    roots : set of int
        Processes a backend started; their children (e.g. Ray's workers, forked by the
        raylet) are found again every :data:`REFRESH_S`, so workers started later count.
    driver : bool
        Include this process.
    """

    def __init__(self, roots: set[int], driver: bool = True) -> None:
        self._roots = set(roots)
        self._driver = driver
        self._procs: dict[int, psutil.Process] = {}
        self._found_at = float("-inf")

    def rss(self) -> int:
        """Summed resident bytes now."""
        if time.monotonic() - self._found_at > REFRESH_S:
            self._find()
        total = 0
        for pid, proc in list(self._procs.items()):
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited since the last walk
                del self._procs[pid]
        return total

    def processes(self) -> int:
        """How many processes the last reading summed."""
        return len(self._procs)

    def _find(self) -> None:
        pids = {os.getpid()} if self._driver else set()
        if self._roots:
            pids |= self._roots | below(self._roots)
        for pid in pids - set(self._procs):
            with contextlib.suppress(psutil.Error):
                self._procs[pid] = psutil.Process(pid)
        for pid in set(self._procs) - pids:
            del self._procs[pid]
        self._found_at = time.monotonic()


class PeakMemory:
    """Peak of a memory reading over a ``with`` block, read on a daemon thread.

    ``read`` returns bytes, or ``None`` when unknown; the peak is then ``None`` too. It is
    read at entry, every ``interval`` seconds, and at exit, so a block shorter than the
    interval still has a figure.

    >>> with PeakMemory(ProcessTree(set()).rss) as peak:
    ...     _ = bytearray(10**6)
    >>> peak.bytes > 0
    True
    """

    def __init__(self, read: Callable[[], int | None], interval: float = INTERVAL_S) -> None:
        self._read, self._interval = read, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bytes: int | None = None
        self.samples = 0
        #: CPU seconds the sampling thread used: its cost, beside the wall time it covered.
        self.cpu_s = 0.0
        self._unknown = False

    def _sample(self) -> None:
        value = self._read()
        self.samples += 1
        if value is None:
            self._unknown = True
        elif self.bytes is None or value > self.bytes:
            self.bytes = value

    def _loop(self) -> None:
        start = time.thread_time()
        while not self._stop.wait(self._interval):
            self._sample()
        self.cpu_s = time.thread_time() - start

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="smallbig-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        if self._unknown:
            self.bytes = None
