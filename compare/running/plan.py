"""A run's plan: every point to measure, in measuring order, before anything starts.

A point is one workload × backend × size × repeat (repeat 0 is the cold run). Resuming is the
plan minus the points already in ``records.csv``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from smallbig.backends import is_cluster
from smallbig.model.fits import BASELINE


@dataclass(frozen=True)
class Point:
    """One measurement to make."""

    workload: str
    size: int
    repeat: int
    backend: str

    @property
    def phase(self) -> str:
        return "cold" if self.repeat == 0 else "warm"

    @property
    def key(self) -> tuple:
        """What identifies it in the records (:attr:`smallbig.results.records.Record.key`)."""
        return (self.workload, self.backend, self.size, self.repeat, self.phase)


@dataclass(frozen=True)
class Plan:
    """Workloads with their sizes, backends (the baseline first) and warm repeats.

    Backends are measured in groups (:meth:`groups`); within one, every point round by round
    (:meth:`schedule`).
    """

    sizes: dict[str, list[int]]
    backends: list[str]
    repeats: int
    clusters: frozenset[str] = field(default=frozenset())

    @classmethod
    def make(cls, sizes: dict[str, list[int]], backends: Sequence[str], repeats: int) -> Plan:
        """The plan, with :data:`~smallbig.model.fits.BASELINE` added and put first: every
        speedup is against it and every checksum compared with its answer."""
        ordered = [BASELINE] + [b for b in backends if b != BASELINE]
        return cls(sizes, ordered, repeats, frozenset(b for b in ordered if is_cluster(b)))

    @property
    def total(self) -> int:
        """Points in the whole plan."""
        return len(self.backends) * sum(map(len, self.sizes.values())) * (self.repeats + 1)

    def groups(self) -> list[list[str]]:
        """Backends measured side by side, their repeats interleaved, in order.

        Every local backend is one group: an idle pool costs no CPU, so they can all be up
        while one measures, and a noisy minute on a shared machine then slows them alike
        instead of whichever one it falls on (threads and asyncio, the same 6 threads for a
        plain function, measured 9% apart when timed a minute apart). A cluster is a group of
        its own: an idle scheduler or raylet does use CPU.
        """
        local = [b for b in self.backends if b not in self.clusters]
        return [local] + [[b] for b in self.backends if b in self.clusters]

    def schedule(self, group: Sequence[str], done: set[tuple] = frozenset()) -> list[Point]:
        """The points of ``group`` not in ``done`` (record keys), in measuring order: per
        workload and size, round by round, every backend with work left once a round; the
        baseline first in the cold round (its checksum is the reference), then each round
        starts with the next backend, so none is always first."""
        todo = {p for p in self._points(group) if p.key not in done}
        active = [b for b in group if any(p.backend == b for p in todo)]
        return [p for p in self._rounds(active) if p in todo] if active else []

    def _points(self, group: Sequence[str]) -> Iterator[Point]:
        for workload, sizes in self.sizes.items():
            for n in sizes:
                for r in range(self.repeats + 1):
                    for backend in group:
                        yield Point(workload, n, r, backend)

    def _rounds(self, active: list[str]) -> Iterator[Point]:
        for workload, sizes in self.sizes.items():
            for n in sizes:
                for r in range(self.repeats + 1):
                    k = r % len(active)
                    for backend in active[k:] + active[:k]:
                        yield Point(workload, n, r, backend)
