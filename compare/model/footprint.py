"""The memory boundary: each backend's predicted peak memory for a dataset, and how it runs it.

A plain ``map`` (``concurrent.futures``'s, before Python 3.14) holds every input and every
result at once; ``map(..., buffersize=B)`` (:mod:`smallbig.backends.streaming`) holds ``B`` chunks
in
flight. So a backend, given ``items`` items of ``d`` bytes with results of ``r`` bytes, each
task needing ``w`` bytes of working memory while it runs, peaks at

    at once:   base + items·(d + r) + slots·w
    streaming: base + B·chunk·(d + r) + slots·w,    B = 2·slots chunks in flight

where ``base`` is what it holds at rest (this process plus its own processes, from the
calibration). It runs the data *at once* if that fits in its memory, *streaming* if only the
bounded form fits, and not at all otherwise. A backend on this machine has this machine's
memory; a cluster extrapolated to ``workers`` machines has ``workers × worker memory``, the
data spread over them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smallbig.model.calibration import BackendCalibration

import math
from dataclasses import dataclass
from typing import Any

from smallbig.backends.chunks import MAX_BATCH_BYTES, TARGET_BATCH_SECONDS

AT_ONCE, STREAMING, NO_FIT = "at once", "streaming", "does not fit"


@dataclass(frozen=True)
class Data:
    """A dataset as the memory model sees it: per-item bytes held, returned and worked in."""

    items: int
    item_bytes: float  # one input as the driver holds it
    result_bytes: float = 0.0
    work_bytes: float = 0.0  # what a running task allocates for one item

    @property
    def total_bytes(self) -> float:
        """Inputs and results of every item."""
        return self.items * (self.item_bytes + self.result_bytes)


@dataclass(frozen=True)
class MemoryFit:
    """How one backend runs the data within its memory."""

    mode: str  # AT_ONCE, STREAMING or NO_FIT
    peak_bytes: float  # predicted for that mode (for NO_FIT: the smaller one, still too big)
    limit_bytes: float  # the memory it has
    buffersize: int | None = None  # chunks in flight, when streaming

    @property
    def fits(self) -> bool:
        return self.mode != NO_FIT

    def describe(self) -> str:
        """``"at once"``, ``"stream: buffersize=8"`` or ``"does not fit"``."""
        return f"stream: buffersize={self.buffersize}" if self.mode == STREAMING else self.mode


def chunk_items(item_s: float, item_bytes: float, items: int, slots: int) -> int:
    """Items per task at ``chunksize="auto"``: ~TARGET_BATCH_SECONDS of work, at most
    MAX_BATCH_BYTES, and enough tasks for every slot."""
    by_time = TARGET_BATCH_SECONDS / item_s if item_s > 0 else items
    by_bytes = MAX_BATCH_BYTES / item_bytes if item_bytes > 0 else items
    return max(1, min(int(by_time), int(by_bytes), math.ceil(items / max(1, slots))))


def fit(
    cal: BackendCalibration,
    data: Data,
    slots: int,
    chunk: int,
    machine_bytes: float,
    workers: int | None = None,
    worker_memory_bytes: float | None = None,
) -> MemoryFit:
    """How the calibrated backend ``cal`` runs ``data``, ``slots`` tasks at once.

    Parameters
    ----------
    cal : BackendCalibration
        One backend's calibration (its ``driver_rss_bytes``, ``idle_rss_bytes`` and
        ``worker_rss_bytes``).
    machine_bytes : float
        This machine's memory.
    workers, worker_memory_bytes : optional
        Extrapolate a cluster backend to ``workers`` machines of this much memory each.
    """
    driver = cal.driver_rss_bytes
    idle = cal.idle_rss_bytes
    limit = machine_bytes
    if cal.distributed and workers:
        # Elsewhere: its workers' own footprint and memory; this process keeps only results.
        idle = cal.worker_rss_bytes * workers
        driver = 0
        limit = workers * (worker_memory_bytes or machine_bytes)
    base = driver + idle + slots * data.work_bytes
    per_item = data.item_bytes + data.result_bytes
    at_once = base + data.items * per_item
    if at_once <= limit:
        return MemoryFit(AT_ONCE, at_once, limit)
    buffersize = 2 * slots
    streaming = base + min(data.items, buffersize * chunk) * per_item
    if streaming <= limit:
        return MemoryFit(STREAMING, streaming, limit, buffersize)
    return MemoryFit(NO_FIT, streaming, limit)


def machine_memory(profile: dict[str, Any]) -> float:
    """The memory of the machine a calibration was measured on (this one's if not saved)."""
    if profile.get("memory_bytes"):
        return float(profile["memory_bytes"])
    import psutil

    return float(psutil.virtual_memory().total)
