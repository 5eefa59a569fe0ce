"""The shape every workload has: items from a seed, a task per item, per-item outcomes.

Workloads know nothing about backends. A task is a top-level function of one small, picklable
item; :func:`guarded` turns its exception into a recorded error so that one bad item never
aborts a run, and :func:`checksum` proves every backend computed the same.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_ERROR_CHARS = 300
MAX_ID_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    """What one item produced: a small JSON-able ``value``, or the ``error`` it raised."""

    item: str
    value: Any = None
    error: str | None = None


def guarded(task: Callable[[Any], Any], item: Any) -> Outcome:
    """Run ``task(item)``; record an exception as the item's error instead of raising it."""
    try:
        return Outcome(item_id(item), task(item))
    except Exception as exc:
        return Outcome(item_id(item), error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])


async def guarded_async(task: Callable[[Any], Any], item: Any) -> Outcome:
    """Coroutine twin of :func:`guarded`, for the asyncio backend."""
    try:
        return Outcome(item_id(item), await task(item))
    except Exception as exc:
        return Outcome(item_id(item), error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])


def item_id(item: Any) -> str:
    """A short, stable name for an item (its ``id`` attribute if it has one)."""
    if isinstance(item, bytes | bytearray):  # a megabyte argument is not a name
        return f"<{len(item)} bytes>"
    return str(getattr(item, "id", item))[:MAX_ID_CHARS]


def checksum(outcomes: Sequence[Outcome], fingerprint: Callable[[Any], Any] | None = None) -> str:
    """SHA-256 (16 hex digits) over every item's id, value and error, in order.

    ``fingerprint`` turns each value into what is compared (for results that are not JSON).
    """
    digest = hashlib.sha256()
    for o in outcomes:
        value = o.value if fingerprint is None or o.error else fingerprint(o.value)
        digest.update(json.dumps([o.item, value, o.error], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def item_bytes(item: Any) -> int:
    """Bytes one item costs to ship (its pickle)."""
    return len(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class Workload:
    """A named workload.

    Parameters
    ----------
    name : str
        Its name in the CLI and the records.
    prepare : callable
        ``prepare(n, seed) -> list`` of ``n`` items, deterministic by ``seed``.
    task : callable
        Top-level ``item -> value`` function; may raise for a bad item.
    async_task : callable, optional
        Coroutine version of ``task``, used on backends that run coroutines.
    releases_gil : bool
        The task spends its time outside the GIL (C code such as Pillow and numba ``nogil``,
        or waiting on I/O), so threads of one process run it in parallel. The cost model reads
        it; nothing else does.
    fingerprint : callable, optional
        What of each result the checksum compares (default: the result itself, JSON).
    data_size : callable, optional
        ``item -> bytes`` of the data an item stands for, when the item only names it (a
        file's path): what "data too big for memory" counts. Default: the item's pickle.
    """

    name: str
    prepare: Callable[[int, int], list]
    task: Callable[[Any], Any]
    async_task: Callable[[Any], Any] | None = None
    releases_gil: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: Callable[[Any], Any] | None = None
    data_size: Callable[[Any], int] | None = None

    def runner(self, backend: Any) -> Callable[[Any], Any]:
        """The picklable per-item callable to ``map`` on ``backend``."""
        if self.async_task is not None and getattr(backend, "supports_coroutines", False):
            return functools.partial(guarded_async, self.async_task)
        return functools.partial(guarded, self.task)

    def run(self, backend: Any, items: Sequence[Any], chunksize: int | str = "auto") -> list:
        """Map the task over ``items`` on ``backend``; per-item outcomes, in order."""
        return list(backend.map(self.runner(backend), items, chunksize=chunksize))

    def checksum(self, outcomes: Sequence[Outcome]) -> str:
        """:func:`checksum` of ``outcomes`` with this workload's fingerprint."""
        return checksum(outcomes, self.fingerprint)

    def traits(self) -> dict[str, Any]:
        """What the cost model needs to know of the task, JSON-able (for ``run.json``)."""
        return {
            "releases_gil": self.releases_gil,
            "coroutine": self.async_task is not None,
            "params": self.params,
        }

    def item_bytes(self, items: Sequence[Any]) -> int:
        """Median bytes shipped per item."""
        sizes = sorted(item_bytes(i) for i in items[:50]) or [0]
        return sizes[len(sizes) // 2]

    def data_bytes(self, items: Sequence[Any]) -> float:
        """Mean bytes of data per item (:attr:`data_size`, else what is shipped)."""
        if self.data_size is None or not items:
            return float(self.item_bytes(items))
        return sum(map(self.data_size, items[:200])) / len(items[:200])


def cache_dir() -> Path:
    """Where smallbig keeps what it reuses between runs (the generated images, the
    calibration, the last run's folder): ``$SMALLBIG_CACHE`` if set, else the platform's user
    cache folder (``~/.cache/smallbig`` on Linux, by platformdirs)."""
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("SMALLBIG_CACHE") or user_cache_dir("smallbig"))
