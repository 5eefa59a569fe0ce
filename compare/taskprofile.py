"""``profile_task``: what one item of the user's own function costs, measured, as advice needs.

A task is described by what the cost model (:func:`compare.advise.predict`) needs to know and
cannot guess from the function's name: how long an item takes and how much of that is CPU;
how many cores one item keeps busy by itself (BLAS, OpenMP, numba ``parallel``); how long it
takes when its native pools are capped at one thread, as they are inside a pool's workers; how
much of it holds the GIL; and how many bytes travel to and from a worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cloudpickle

from backends.inner import Capped

# Each timed pass over the sample is cut to about this long (at least two items), so that a
# task of seconds per item is profiled in seconds, not minutes.
PASS_SECONDS = 2.0
COROUTINES_IN_FLIGHT = 32


@dataclass(frozen=True)
class TaskProfile:
    """One item of a task, measured on a sample of the user's items.

    Attributes
    ----------
    name : str
        The function's qualified name.
    items : int
        Items in the timed sample (after one warm-up item).
    item_s, cpu_s : float
        Wall and CPU seconds per item in the calling thread, the native pools as they are
        (what a plain loop, and the serial backend, get).
    cores_used : float
        ``cpu_s / item_s``: cores one item keeps busy by itself (> 1 for BLAS, OpenMP and
        parallel kernels; < 1 when it waits on I/O).
    item_s_1, cpu_s_1 : float
        The same with every native pool capped at one thread, as in a pool's workers.
    gil_s : float
        Seconds per item that hold the GIL (measured: the capped sample on one thread against
        two): threads of one process cannot overlap these.
    arg_bytes, result_bytes : int
        Median pickled size of an item's arguments and of its result.
    memory_bytes : int
        Peak Python-traced memory one item allocates (tracemalloc; NumPy reports to it).
    coroutine : bool
        The function is a coroutine function (the asyncio backend awaits it on its loop).
    coroutine_cpu_s : float or None
        For a coroutine function: CPU seconds per item with 32 items in flight on one loop.
    errors : int
        Items of the sample that raised (the profile still holds for the others).
    """

    name: str
    items: int
    item_s: float
    cpu_s: float
    cores_used: float
    item_s_1: float
    cpu_s_1: float
    gil_s: float
    arg_bytes: int
    result_bytes: int
    memory_bytes: int
    coroutine: bool = False
    coroutine_cpu_s: float | None = None
    errors: int = 0

    @property
    def releases_gil(self) -> bool:
        """Less than half of an item holds the GIL: threads run it in parallel."""
        return self.gil_s < 0.5 * max(self.item_s_1, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields (for ``run.json``)."""
        return {**asdict(self), "releases_gil": self.releases_gil}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskProfile:
        """Inverse of :meth:`as_dict`."""
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


def profile_task(
    fn: Callable[..., Any],
    sample_items: Sequence[Any],
    *,
    kwargs: bool = False,
    pass_seconds: float = PASS_SECONDS,
) -> TaskProfile:
    """Measure ``fn`` on ``sample_items``: the costs and traits :class:`TaskProfile` lists.

    Parameters
    ----------
    fn : callable
        The user's function of one item (or of keyword arguments, with ``kwargs``); a
        coroutine function is recognised and awaited.
    sample_items : sequence
        Typical items, at least two; 8–32 is plenty. The first one warms caches and JITs up
        and is not timed.
    kwargs : bool
        Each item is a dict of keyword arguments.
    pass_seconds : float
        About how long each timed pass may take; the sample is cut to fit (≥ 2 items).

    Returns
    -------
    TaskProfile
    """
    from workloads.user import call_item

    items = list(sample_items)
    if len(items) < 2:
        raise ValueError(f"profile_task needs at least 2 sample items, got {len(items)}")
    coroutine = inspect.iscoroutinefunction(fn)
    call = call_item(fn, kwargs)
    errors = 0

    def run(batch: Sequence[Any]) -> list[Any]:
        nonlocal errors
        out = []
        for item in batch:
            try:
                out.append(call(item))
            except Exception:
                errors += 1
                out.append(None)
        return out

    start = time.perf_counter()
    first = run(items[:1])  # warm-up: imports, caches, JIT
    warm_s = time.perf_counter() - start
    per_pass = max(2, int(pass_seconds / max(warm_s, 1e-6)))
    sample = items[1 : 1 + per_pass] if len(items) > 2 else items[:2]
    errors = 0

    cpu0, t0 = time.process_time(), time.perf_counter()
    results = run(sample)
    item_s = (time.perf_counter() - t0) / len(sample)
    cpu_s = (time.process_time() - cpu0) / len(sample)
    failed = errors  # of the sample, once (the passes below run it again)

    with cf.ThreadPoolExecutor(2, thread_name_prefix="smallbig-profile") as pool:
        capped = Capped(run, 1, shared=True)
        one, two = [], []
        # Alternate one thread and two, twice, and keep the best of each: a neighbour's burst
        # then cannot pass for the GIL.
        for _ in range(2):
            cpu0, t0 = time.process_time(), time.perf_counter()
            pool.submit(capped, sample).result()
            one.append((time.perf_counter() - t0, time.process_time() - cpu0))
            halves = [sample[0::2], sample[1::2]]
            t0 = time.perf_counter()
            for f in [pool.submit(capped, half) for half in halves]:
                f.result()
            two.append(time.perf_counter() - t0)
    wall_1, cpu_1 = min(one)
    item_s_1, cpu_s_1 = wall_1 / len(sample), cpu_1 / len(sample)
    gil_s = item_s_1 * (1 - _parallel_fraction(wall_1, min(two)))

    profile = TaskProfile(
        name=getattr(fn, "__qualname__", repr(fn)),
        items=len(sample),
        item_s=item_s,
        cpu_s=cpu_s,
        cores_used=cpu_s / item_s if item_s > 0 else 0.0,
        item_s_1=item_s_1,
        cpu_s_1=cpu_s_1,
        gil_s=gil_s,
        arg_bytes=_median_bytes(sample),
        result_bytes=_median_bytes([r for r in [*first, *results] if r is not None]),
        memory_bytes=_peak_memory(call, sample[:2]),
        coroutine=coroutine,
        coroutine_cpu_s=_coroutine_cpu_s(fn, sample, kwargs) if coroutine else None,
        errors=failed,
    )
    return profile


def _parallel_fraction(one_thread_s: float, two_threads_s: float) -> float:
    """Amdahl's parallel fraction from the speedup of two threads over one, in [0, 1].

    ``s = 1 / ((1 - p) + p / 2)``, so ``p = 2 (1 - 1/s)``. On one core two threads cannot
    show it: the answer is then 0 (hold the GIL, the cautious reading).
    """
    import os

    if (os.cpu_count() or 1) < 2 or two_threads_s <= 0:
        return 0.0
    speedup = one_thread_s / two_threads_s
    return min(1.0, max(0.0, 2 * (1 - 1 / speedup)))


def _median_bytes(values: Sequence[Any]) -> int:
    sizes = []
    for value in list(values)[:32]:
        try:
            sizes.append(len(cloudpickle.dumps(value)))
        except Exception:  # an unpicklable value: only in-process backends could take it
            continue
    return int(statistics.median(sizes)) if sizes else 0


def _peak_memory(call: Callable[[Any], Any], items: Sequence[Any]) -> int:
    peaks = []
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        for item in items:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            try:
                call(item)
            except Exception:
                continue
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return int(max(peaks, default=0))


def _coroutine_cpu_s(fn: Callable[..., Any], items: Sequence[Any], kwargs: bool) -> float:
    """CPU seconds per item with :data:`COROUTINES_IN_FLIGHT` items awaited at once.

    One loop wake-up then serves many of them, so an item costs less than awaited alone
    (the weather API: ~0.4 against ~1 ms at 32 in flight).
    """
    batch = (list(items) * COROUTINES_IN_FLIGHT)[:COROUTINES_IN_FLIGHT]

    def start(item: Any) -> Any:
        return fn(**item) if kwargs else fn(item)

    async def together() -> float:
        cpu = time.process_time()
        await asyncio.gather(*(start(item) for item in batch), return_exceptions=True)
        return (time.process_time() - cpu) / len(batch)

    # On a thread of its own: the caller may be inside a running loop (Jupyter), where
    # asyncio.run refuses to start another.
    with cf.ThreadPoolExecutor(1, thread_name_prefix="smallbig-profile") as pool:
        return pool.submit(asyncio.run, together()).result()
