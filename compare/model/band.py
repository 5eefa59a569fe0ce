"""The "small big data" band: sizes too big for this machine's memory at once, for which one
machine streaming them is still faster than a cluster.

Below the *memory boundary* the data fits in memory; above the *crossover* a cluster is
predicted fastest. Between the two, when the boundary comes first, is small big data: it
does not fit, yet ``map(..., buffersize=N)`` on one machine beats renting a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from smallbig.model.calibration import read_calibration
from smallbig.model.cluster import Cluster
from smallbig.model.costmodel import predict
from smallbig.model.footprint import machine_memory

# Sizes searched for the crossover: 1 item to 10 trillion, 10 per decade.
_SIZES = np.unique(np.logspace(0, 13, 131).astype(np.int64))


@dataclass(frozen=True)
class Band:
    """Where the data outgrows memory and where a cluster starts to win, in items."""

    boundary: float | None  # items whose data fills this machine's memory (None: no data)
    crossover: int | None  # first size a cluster backend is predicted fastest (None: never)
    memory_bytes: float
    data_bytes_per_item: float

    @property
    def small_big(self) -> tuple[float, int | None] | None:
        """``(from, to)`` items of the band (``to`` ``None``: no cluster ever wins), or
        ``None`` when a cluster wins before the data outgrows memory."""
        if self.boundary is None:
            return None
        if self.crossover is not None and self.crossover <= self.boundary:
            return None
        return self.boundary, self.crossover

    def describe(self) -> str:
        """One sentence for the report."""
        if self.boundary is None:
            return "the items' data size is unknown: no memory boundary"
        gb = self.memory_bytes / 1e9
        edge = (
            f"the data outgrows this machine's memory ({gb:.3g} GB) from {self.boundary:,.0f} items"
        )
        band = self.small_big
        if band is None:
            return f"{edge}; a cluster is predicted fastest already from {self.crossover:,} items"
        if band[1] is None:
            return (
                f"{edge}; small big data from there on: stream it on one machine (no cluster wins)"
            )
        return (
            f"{edge}; small big data: {band[0]:,.0f}–{band[1] - 1:,} items, where streaming on "
            f"one machine still beats the cluster (fastest from {band[1]:,})"
        )


def first_win(wins: Callable[[int], bool], sizes: Iterable[int]) -> int | None:
    """The smallest item count for which ``wins(n)`` holds, or ``None`` if it holds at none of
    ``sizes`` (ascending).

    The grid brackets the first win; bisection then finds the exact size, since predicted
    times are straight lines in ``n`` and cross once.
    """
    below, above = 0, None
    for n in sizes:
        if wins(int(n)):
            above = int(n)
            break
        below = int(n)
    while above is not None and above - below > 1:
        mid = (below + above) // 2
        below, above = (below, mid) if wins(mid) else (mid, above)
    return above


def small_big_band(
    profile: dict[str, Any],
    item_s: float,
    data_bytes_per_item: float,
    *,
    releases_gil: bool = False,
    cluster: Cluster | None = None,
) -> Band:
    """The band for a task of ``item_s`` seconds and ``data_bytes_per_item`` per item.

    ``cluster`` is the cluster to extrapolate to (:class:`smallbig.model.cluster.Cluster`);
    without it, the clusters as calibrated.
    """
    memory = machine_memory(profile)
    boundary = memory / data_bytes_per_item if data_bytes_per_item > 0 else None
    clusters = {b for b, row in profile["backends"].items() if row.get("distributed")}
    calibration = read_calibration(profile)  # once for every size tried

    def cluster_wins(n: int) -> bool:
        ranked = predict(
            calibration,
            n,
            item_s,
            releases_gil=releases_gil,
            data_bytes=float(n) * data_bytes_per_item,
            cluster=cluster,
        )
        return ranked[0].backend in clusters

    crossover = first_win(cluster_wins, _SIZES) if clusters else None
    return Band(boundary, crossover, memory, data_bytes_per_item)
