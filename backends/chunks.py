"""Batching of map items into chunks: the task functions that run a chunk, and the auto sizer.

Both runners are top-level functions so that process pools, Dask and Ray can pickle them by
reference. They never raise for an item's exception: they return the results computed before it
and the exception itself, so that ``map`` can yield the earlier items before raising at the
failing item's position.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ChunkResult = tuple[list[Any], BaseException | None, float]

# Auto-batching aims each batch at no more than this much compute (joblib aims at 0.2-2 s).
# A local cluster of 8 Dask workers on 2 cores took ~30 ms per batch beyond its work: at 0.2 s
# per batch, three rounds of them cost 17% over one well-split round; at 0.5 s, 4-6%.
TARGET_BATCH_SECONDS = 0.5
# Shrinking batches towards the end balances the load only while a batch holds real work:
# below this much compute a smaller batch just pays another round trip.
MIN_BATCH_SECONDS = 0.02
# A batch at the tail holds at least this many times the round trip a batch costs beyond its
# compute (measured: the least of submit-to-result less compute), so that on a cluster whose
# round trip is tens of ms the tail is not a string of one-item batches each paying it.
OVERHEAD_FACTOR = 5
# Never pack more than this many pickled bytes into one batch: a batch of large payloads would
# otherwise be sized by compute time alone and could exhaust memory.
MAX_BATCH_BYTES = 64 * 2**20


class Batch:
    """Items of one chunk in an opaque box.

    Dask walks every list and tuple argument looking for futures to resolve; for a chunk of
    thousands of items that walk cost more than the task itself (50 ms per 12,500 items here).
    Backends that need no resolving inside a chunk ship it in this box instead.
    """

    __slots__ = ("items",)

    def __init__(self, items: Sequence[tuple]) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def call(fn: Callable[..., Any], args: tuple, kwargs: dict, /) -> Any:
    """``fn(*args, **kwargs)``: the task engines whose own ``submit`` takes keywords of its
    own (Dask's ``key=``, loky's ``self``) run instead, the keywords inside its arguments."""
    return fn(*args, **kwargs)


def run_chunk(fn: Callable[..., Any], chunk: Sequence[tuple]) -> ChunkResult:
    """Call ``fn(*args)`` for each ``args`` in ``chunk``, in order; stop at the first exception."""
    results: list[Any] = []
    start = time.perf_counter()
    for args in chunk:
        try:
            results.append(fn(*args))
        except Exception as exc:
            return results, exc, time.perf_counter() - start
    return results, None, time.perf_counter() - start


async def run_chunk_async(fn: Callable[..., Any], chunk: Sequence[tuple]) -> ChunkResult:
    """Await ``fn(*args)`` for every item of ``chunk`` concurrently; results in input order."""
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(fn(*args) for args in chunk), return_exceptions=True)
    results: list[Any] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            return results, outcome, time.perf_counter() - start
        results.append(outcome)
    return results, None, time.perf_counter() - start


def handed_over(values: list[Any]) -> Iterator[Any]:
    """Yield ``values`` in order, each dropped from the list before it is yielded.

    A chunk's results are freed one by one as the consumer lets go of them, as CPython's
    ``map`` frees each result it has yielded: a loop that writes large results away keeps
    memory flat instead of holding the whole chunk until its last item.
    """
    values.reverse()
    while values:
        yield values.pop()


def check_chunksize(chunksize: int | str) -> int | str:
    """Return ``chunksize`` if it is a positive int or ``"auto"``, else raise ``ValueError``."""
    if chunksize == "auto":
        return chunksize
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int or 'auto', got {chunksize!r}")
    return chunksize


class BatchSizer:
    """Choose the next batch size from the per-item time measured inside the workers.

    The first batches hold one item each (nothing is known yet). After that the remaining
    work is split into whole rounds of one batch per worker, each batch at most
    ``TARGET_BATCH_SECONDS`` of compute; the last round into two batches per worker ("guided"
    scheduling, so every worker stays busy until the end) when the items' times vary. A batch
    never holds less than ``MIN_BATCH_SECONDS`` of compute, or less than ``OVERHEAD_FACTOR``
    round trips' worth, and never more than ``MAX_BATCH_BYTES`` of pickled items.
    """

    def __init__(self, workers: int, sample_item: tuple | None = None) -> None:
        self.workers = max(1, workers)
        self.per_item_s: float | None = None
        #: The least seen of a batch's submit-to-result time less its compute: what a round
        #: trip to a worker costs (``None``: not measured, as in the caller's own thread).
        self.round_trip_s: float | None = None
        self.max_items = _items_within_bytes(sample_item)
        self._seen: list[float] = []  # per-item time of each batch, as recorded
        self._round_size, self._round_left = 1, 0

    def record(self, n_items: int, elapsed_s: float, latency_s: float | None = None) -> None:
        """Fold a finished batch's measured compute time into the per-item estimate, and its
        submit-to-result ``latency_s`` (if known) into the round trip's."""
        if n_items <= 0:
            return
        per_item = elapsed_s / n_items
        self._seen.append(per_item)
        # Equal weights for history and the new batch: quick to adapt, not jumpy.
        self.per_item_s = per_item if self.per_item_s is None else (self.per_item_s + per_item) / 2
        if latency_s is not None:
            trip = max(0.0, latency_s - elapsed_s)
            self.round_trip_s = trip if self.round_trip_s is None else min(self.round_trip_s, trip)

    def next_size(self, remaining: int) -> int:
        """Number of items for the next batch, out of ``remaining`` undispatched items."""
        if self.per_item_s is None or remaining <= 1:
            return 1
        per_item = max(self.per_item_s, 1e-9)
        # Whole rounds: the remaining work in as few rounds of one batch per worker as keep
        # each batch within TARGET_BATCH_SECONDS (batches of a fixed length quantise: 384
        # waits of 10 ms in 0.2 s batches on 8 workers took three rounds for 2.4 rounds'
        # work). The last round is halved (two batches per worker), as guided scheduling
        # does, so that a slow batch does not hold the end up.
        if self._round_left > 0:  # the rest of a round: the size it started with
            self._round_left -= 1
            return max(1, min(self._round_size, remaining))
        rounds = math.ceil(remaining * per_item / (self.workers * TARGET_BATCH_SECONDS))
        # Two batches per worker in the last round only if items vary: for alike ones the
        # extra batches are round trips and nothing else.
        parts = self.workers * (2 if rounds == 1 and self._varied() else 1)
        size = math.ceil(remaining / (max(rounds, 1) * parts))
        least = max(MIN_BATCH_SECONDS, OVERHEAD_FACTOR * (self.round_trip_s or 0.0))
        floor = min(least, TARGET_BATCH_SECONDS) / per_item
        # ...but never so that workers starve, once the round trip is known to be worth one
        # batch each: 120 items of 0.5 ms on 6 threads went out as two batches of 62 and 52
        # (20 ms each by the floor), ran on two threads, and took 3× the 6-thread time.
        even = math.ceil(remaining / self.workers)
        if self.round_trip_s is not None and even * per_item >= OVERHEAD_FACTOR * self.round_trip_s:
            floor = min(floor, even)
        size = max(1, int(min(max(size, floor), remaining, self.max_items)))
        # Every batch of a round the same size: sized one by one from what is left, the first
        # of a round took the most and the workers' shares came out unequal.
        self._round_size, self._round_left = size, parts - 1
        return size

    def _varied(self) -> bool:
        """Whether the batches timed so far took noticeably different times per item (their
        spread above a fifth of the mean), or too few were timed to tell."""
        seen = self._seen[-64:]
        if len(seen) < 4:
            return True
        mean = sum(seen) / len(seen)
        spread = (sum((x - mean) ** 2 for x in seen) / len(seen)) ** 0.5
        return spread > 0.2 * mean


def _items_within_bytes(sample_item: tuple | None) -> int:
    if sample_item is None:
        return 1 << 62
    try:
        size = len(pickle.dumps(sample_item, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        # Unpicklable locally (e.g. a lambda in the item): the engine will say so; size by time.
        return 1 << 62
    return max(1, MAX_BATCH_BYTES // max(size, 1))
