"""``profile_task``: what one item of the user's own function costs, measured, as advice needs.

A task is described by what the cost model (:func:`smallbig.model.costmodel.predict`) needs to know
and
cannot guess from the function's name: how long an item takes and how much of that is CPU;
how many cores one item keeps busy by itself (BLAS, OpenMP, numba ``parallel``); how long it
takes when its native pools are capped at one thread, as they are inside a pool's workers; how
much of it holds the GIL; and how many bytes travel to and from a worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
import io
import math
import os
import pickle
import statistics
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cloudpickle

from smallbig.backends.emulation.cpugroups import effective_cores
from smallbig.backends.inner import Capped
from smallbig.model.coldstart import fresh_worker

# Each timed pass over the sample is cut to about this long (at least two items), so that a
# task of seconds per item is profiled in seconds, not minutes.
PASS_SECONDS = 2.0
#: A task holds the GIL when the threads backend's threads run it less than 10% faster than
#: one thread does. (At 75%, a BLAS task whose 6 threads ran 17% faster than one on 2 cores,
#: and 1.8× faster than a plain loop of the uncapped library, counted as holding it and was
#: never advised to threads: 94% regret.)
GIL_HOLDING = 0.9
#: Threads whose CPU seconds summed to less than this many times their wall time never ran
#: in parallel (6 threads of a pure-Python loop: ~1.0; of a NumPy kernel on 2 cores: ~1.9).
SERIAL_CORES = 1.25
#: ...unless the pool ran the items in under this fraction of one thread's time: such a pool
#: overlapped its items whatever its CPU says (its threads were waiting, not computing).
OVERLAPPED_WALL = 0.5
#: An uncapped pass whose CPU seconds exceed its wall by more than this ran on more threads
#: than its caller's (native pools): no evidence of what one thread does.
ONE_THREAD = 1.1
# ...and lasts at least this long, the sample repeated, so that tasks of microseconds are timed
# over enough of them.
MIN_PASS_SECONDS = 0.2
# Threads of the profile's pool: as many as the threads backend runs by default.
THREADS = min(32, (os.cpu_count() or 1) + 4)
COROUTINES_IN_FLIGHT = 32
#: The timed passes (serial, one pool thread, the pool: twice each), whose results are kept
#: together up to KEEP_BYTES: beyond it a profile would hold more memory than it measures.
PASSES = 6
KEEP_BYTES = 2**30


@dataclass(frozen=True, repr=False)
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
        The same on a pool thread, every native pool capped at one thread, as in a pool's
        workers (the thread's own CPU: an idle OpenMP team spinning beside it is not its work).
    gil_s : float
        Seconds per item that threads of one process cannot overlap: the capped sample's time
        per item on as many threads as the threads backend runs; for a task that waits, no
        more than an item's CPU (waiting overlaps on any number of threads). The GIL, its
        hand-offs (contention that makes threads slower than one thread) and the allocator's
        locks all show here.
    arg_bytes, result_bytes : int
        Median pickled size of an item's arguments (less the object put once, if any) and
        of its result.
    memory_bytes : int
        Peak Python-traced memory one item allocates (tracemalloc; NumPy reports to it).
    coroutine : bool
        The function is a coroutine function (the asyncio backend awaits it on its loop).
    coroutine_cpu_s : float or None
        For a coroutine function: CPU seconds per item with 32 items in flight on one loop.
    errors : int
        Items of the sample that raised (the profile still holds for the others).
    first_call_s : float
        What the first item costs a fresh worker interpreter over the next one: the task's
        imports, JIT and caches (:mod:`smallbig.model.coldstart`), paid once by every worker
        process a cold run starts.
    fresh_memory_cpu_s : float
        CPU seconds each item spends faulting its memory in afresh in a worker whose
        allocator returns freed memory to the system at once (Dask's nannies set
        ``MALLOC_TRIM_THRESHOLD_``), over a process that keeps it, as this one does
        (:mod:`smallbig.model.coldstart`). Paid on every item, not only the first.
    pool_s : float or None
        Wall seconds per item of ``pool_threads`` pool threads sharing the sample, native
        pools capped at one thread: what the threads backend itself does with the task on
        this machine (``gil_s`` before it is bounded by the CPU).
    pool_threads : int or None
        The threads of that pass.
    put_bytes : int
        Pickled size of one object that every task shares, ``put`` once per map (the
        ``put`` argument of :func:`profile_task`): shipped once to each worker or node, not
        with every task.
    thread_cores : float
        The cores one thread could get where it was profiled: 1, or a scale model's quota
        below one core. The times above are at that speed; a node of another speed scales
        them (the first calls of a cold cluster's workers, :mod:`smallbig.model.costmodel`).
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
    first_call_s: float = 0.0
    pool_s: float | None = None
    pool_threads: int | None = None
    put_bytes: int = 0
    thread_cores: float = 1.0
    fresh_memory_cpu_s: float = 0.0

    @property
    def releases_gil(self) -> bool:
        """Threads of one process run it faster than one thread does (it spends enough of
        an item outside the GIL): see :data:`GIL_HOLDING`."""
        return self.gil_s < GIL_HOLDING * max(self.item_s_1, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields (for ``run.json``)."""
        return {**asdict(self), "releases_gil": self.releases_gil}

    def traits(self) -> list[tuple[str, str]]:
        """``(trait, value)`` in words, as the CLI and notebooks show them."""
        from smallbig.results.fmt import seconds

        return [
            ("wall per item, native pools as they are", seconds(self.item_s)),
            ("CPU per item", seconds(self.cpu_s)),
            ("cores one item keeps busy", f"{self.cores_used:.2f}"),
            ("wall per item, pools capped at 1 thread", seconds(self.item_s_1)),
            ("per item that threads cannot overlap (GIL)", seconds(self.gil_s)),
            ("releases the GIL (mostly)", "yes" if self.releases_gil else "no"),
            ("pickled argument / result", f"{self.arg_bytes:,} / {self.result_bytes:,} bytes"),
            ("put once per map, shared by every task", f"{self.put_bytes:,} bytes"),
            ("peak memory per item", f"{self.memory_bytes / 1e6:.3g} MB"),
            ("coroutine function", "yes" if self.coroutine else "no"),
            ("first item in a fresh worker, over the next", seconds(self.first_call_s)),
            ("CPU per item where freed memory is returned at once (Dask's workers)",
             f"+{seconds(self.fresh_memory_cpu_s)}"),
            ("items that raised", str(self.errors)),
        ]

    def to_frame(self) -> Any:
        """The profile as a one-row DataFrame (its fields and ``releases_gil``)."""
        import pandas as pd

        return pd.DataFrame([self.as_dict()]).set_index("name")

    def __repr__(self) -> str:
        from smallbig.results.fmt import seconds

        gil = "releases the GIL" if self.releases_gil else "holds the GIL"
        return f"<TaskProfile {self.name}: {seconds(self.item_s)} per item, {gil}>"

    def _repr_html_(self) -> str:
        from smallbig.results.fmt import html_table

        title = f"{self.name}: measured on {self.items} items (after a warm-up)"
        return html_table(title, ["trait", "value"], [list(t) for t in self.traits()])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskProfile:
        """Inverse of :meth:`as_dict`."""
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})

    @classmethod
    def described(
        cls,
        item_s: float,
        item_bytes: float = 0,
        cpu_s: float | None = None,
        releases_gil: bool = False,
        coroutine: bool = False,
        coroutine_cpu_s: float | None = None,
    ) -> TaskProfile:
        """A task described by hand (``smallbig advise --item-ms``): ``item_s`` per item of
        which ``cpu_s`` is CPU (default: all of it), ``item_bytes`` shipped per item, no
        native pool to cap (capped and uncapped alike), and the GIL held for its CPU part
        unless ``releases_gil``."""
        cpu = item_s if cpu_s is None else min(cpu_s, item_s)
        return cls(
            name="described",
            items=0,
            item_s=item_s,
            cpu_s=cpu,
            cores_used=cpu / item_s if item_s > 0 else 0.0,
            item_s_1=item_s,
            cpu_s_1=cpu,
            gil_s=0.0 if releases_gil else cpu,
            arg_bytes=item_bytes,  # type: ignore[arg-type]  # a mean may be fractional
            result_bytes=0,
            memory_bytes=0,
            coroutine=coroutine,
            coroutine_cpu_s=coroutine_cpu_s if coroutine else None,
        )


def profile_task(
    fn: Callable[..., Any],
    sample_items: Sequence[Any],
    *,
    kwargs: bool = False,
    pass_seconds: float = PASS_SECONDS,
    put: Any = None,
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
    put : object, optional
        An object the items hold (the same object in each), that a run puts once per
        map and hands every task (``backend.put(obj)``): counted once in ``put_bytes``, not
        in each item's ``arg_bytes``.

    Returns
    -------
    TaskProfile
    """
    from smallbig.workloads.user import call_item

    items = list(sample_items)
    if len(items) < 2:
        raise ValueError(f"profile_task needs at least 2 sample items, got {len(items)}")
    runner = _Runner(call_item(fn, kwargs))
    first, sample, results, once = _sample(runner, items, pass_seconds)
    failed = runner.errors  # of the sample, once (the passes below run it again)
    result_size = _median_bytes([r for r in [*first, *results] if r is not None])
    batch = list(sample) * _repetitions(len(sample), once, result_size, pass_seconds)
    free, one, many, even = _passes(runner, batch, result_size)
    wall, cpu = min(free)
    item_s, cpu_s = wall / len(batch), cpu / len(batch)
    wall_1, cpu_1 = min(one)
    item_s_1 = wall_1 / len(batch)
    cpu_s_1 = min(cpu_1 / len(batch), item_s_1)
    many_s = min(wall for wall, _ in many) / len(even)
    coroutine = inspect.iscoroutinefunction(fn)
    fresh = fresh_worker(fn, items, kwargs)
    return TaskProfile(
        name=getattr(fn, "__qualname__", repr(fn)),
        items=len(sample),
        item_s=item_s,
        cpu_s=cpu_s,
        # The least disturbed of the passes: a neighbour's turns lengthen a pass's wall, not
        # its CPU (a Python loop read 0.62 cores in one pass of a busy CI run).
        cores_used=max((c / w for w, c in free if w > 0), default=0.0),
        item_s_1=item_s_1,
        cpu_s_1=cpu_s_1,
        gil_s=_gil_s(free, one, many, many_s, item_s_1, cpu_s_1),
        arg_bytes=_median_bytes(sample, shared=put),
        result_bytes=result_size,
        memory_bytes=_peak_memory(runner.call, sample[:2]),
        coroutine=coroutine,
        coroutine_cpu_s=concurrent_cpu_s(
            runner.call.call_async, (sample * COROUTINES_IN_FLIGHT)[:COROUTINES_IN_FLIGHT]
        )
        if coroutine
        else None,
        errors=failed,
        first_call_s=fresh.first_call_s,
        pool_s=many_s,
        pool_threads=THREADS,
        put_bytes=0 if put is None else _median_bytes([put]),
        thread_cores=min(1.0, effective_cores()),
        fresh_memory_cpu_s=fresh.fresh_memory_cpu_s,
    )


class _Runner:
    """Runs items of the task, counting those that raise (the profile holds for the rest),
    and keeps the results of a pass when asked to, as a map does."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.errors = 0
        self.keep = False
        self.kept: list[list[Any]] = []

    def __call__(self, batch: Sequence[Any]) -> list[Any]:
        out = []
        for item in batch:
            try:
                out.append(self.call(item))
            except Exception:
                self.errors += 1
                out.append(None)
        if self.keep:
            self.kept.append(out)
        return out


def _sample(
    runner: _Runner, items: list[Any], pass_seconds: float
) -> tuple[list[Any], list[Any], list[Any], float]:
    """The warm-up item's result, the sample cut to about ``pass_seconds``, its results and
    the seconds of running it once."""
    start = time.perf_counter()
    first = runner(items[:1])  # warm-up: imports, caches, JIT
    warm_s = time.perf_counter() - start
    per_pass = max(2, int(pass_seconds / max(warm_s, 1e-6)))
    sample = items[1 : 1 + per_pass] if len(items) > 2 else items[:2]
    runner.errors = 0
    t0 = time.perf_counter()
    results = runner(sample)
    return first, sample, results, time.perf_counter() - t0


def _repetitions(sample: int, once: float, result_size: int, pass_seconds: float) -> int:
    """How many times a pass repeats the sample."""
    # Tiny tasks: repeat the sample until a pass is long enough to time (MIN_PASS_SECONDS),
    # and so that every one of the pool's threads gets several items.
    reps = max(1, min(math.ceil(MIN_PASS_SECONDS / max(once, 1e-9)), 10_000))
    # Every thread several items: with two or three each, the GIL pass of a pure-Python loop
    # measured under the GIL line. The price: an item again in the same pass is warm (16
    # images twice over ran 5.6 ms per item on the pool, 6.7 once, 7.0 over the map's 96).
    spread = math.ceil(4 * THREADS / sample)
    reps = max(reps, min(spread, max(1, int(pass_seconds / max(once, 1e-9)))))
    # A map keeps its results until it returns, so each lands in memory never touched
    # before; a pass whose results were freed reused the last pass's pages instead (2 MiB
    # results: 0.70 ms per item freed, 1.86 ms kept, and threads mapped them at 0.90 ms where
    # the profile's pool said 0.53). Every pass keeps its results, as a map does: large
    # results repeat the sample less, so that all of them fit KEEP_BYTES.
    if result_size:
        reps = max(1, min(reps, KEEP_BYTES // (result_size * PASSES * sample)))
    return reps


Pass = tuple[float, float]  # wall and CPU seconds


def _passes(
    runner: _Runner, batch: list[Any], result_size: int
) -> tuple[list[Pass], list[Pass], list[Pass], list[Any]]:
    """The three passes, alternated twice: uncapped in the calling thread (how serial runs
    it), on one pool thread capped at one native thread, and on the pool's THREADS threads
    in equal shares (which items they ran: ``even``)."""
    runner.keep = result_size * len(batch) * PASSES <= KEEP_BYTES

    def uncapped() -> Pass:
        # In the calling thread, the native pools as they are: how serial runs it.
        cpu0, t0 = time.process_time(), time.perf_counter()
        runner(batch)
        return time.perf_counter() - t0, time.process_time() - cpu0

    # Equal shares for the pool's threads: the pass lasts as long as its longest share, so a
    # batch that does not divide among them was timed as if it had more items (32 waits of
    # 10 ms on 6 threads, shares of 6 and 5: 1.91 ms per item, where maps ran 1.70).
    even = batch[: len(batch) - len(batch) % THREADS] or batch
    shares = [even[i::THREADS] for i in range(THREADS)]
    with cf.ThreadPoolExecutor(THREADS, thread_name_prefix="smallbig-profile") as pool:
        # Alternate the passes, twice, and keep the best of each: a neighbour's burst then
        # passes for neither the cost of an item nor the GIL.
        free, one, many = [], [], []
        for _ in range(2):
            free.append(uncapped())
            one.append(_timed_threads(pool, runner, [batch]))
            many.append(_timed_threads(pool, runner, shares))
    runner.kept.clear()
    runner.keep = False
    return free, one, many, even


def _gil_s(
    free: list[Pass], one: list[Pass], many: list[Pass], many_s: float, item_s_1: float,
    cpu_s_1: float,
) -> float:
    """Seconds per item that threads of one process cannot overlap (:attr:`TaskProfile.gil_s`)."""
    # What threads of one process cannot overlap, per item: the pool's time per item. A task
    # that waits overlaps its waits on any number of threads, so for it no more than its CPU
    # counts; one that computes all along keeps the whole figure, contention included (six
    # threads handing the GIL to each other ran a Python loop 15% slower than one thread).
    # Computing all along in some pass of one thread (CPU ~ wall): a neighbour's turns only
    # lengthen the wall, so the pass least disturbed says it.
    # An uncapped pass counts only if it ran on one thread: a task that waits 3 ms and then
    # multiplies matrices on two BLAS threads read 1.3 CPU seconds per second there, and was
    # taken for one that computes all along (then for one holding the GIL: 3× regret).
    # Under a scale model's quota of C < 1 core, one thread computing all along reads C CPU
    # seconds a second, not 1: every threshold is in cores a thread can get here (at 0.25
    # core a pure-Python loop read 0.25, was taken for a task that waits, and "released the
    # GIL": processes were predicted twice as fast as serial on a laptop of a quarter core).
    core = min(1.0, effective_cores())
    single = [(w, c) for w, c in free if w > 0 and c / w <= ONE_THREAD * core]
    computes = max(cpu / wall for wall, cpu in [*single, *one] if wall > 0) >= 0.9 * core
    gil_s = many_s if computes else min(many_s, cpu_s_1)
    # Threads that never ran on more than one core at once held the GIL, whatever the clocks
    # say: a neighbour's burst during a one-thread pass (a Python loop at 3.2 ms per item
    # where it takes 2.6) made the pool look 10% faster than one thread. A pool run one thread
    # at a time cannot beat one thread; CPU time, unlike wall time, does not count the
    # neighbour's turns.
    # Unless the pool's wall says they overlapped: a task that waits 4 ms and then multiplies
    # matrices read 0.9–1.1 CPU s/s uncapped on a busy machine (an idle BLAS thread spinning
    # through the wait), passed for one that computes all along, and its six threads, mostly
    # waiting, used under one core while they ran the items 6× faster than one thread.
    overlapped = max(cpu / wall for wall, cpu in many if wall > 0)
    if computes and overlapped < SERIAL_CORES * core and many_s > OVERLAPPED_WALL * item_s_1:
        gil_s = max(gil_s, item_s_1)
    return gil_s


def _timed_threads(
    pool: cf.ThreadPoolExecutor, run: Callable[[Sequence[Any]], Any], shares: list[list]
) -> tuple[float, float]:
    """Wall seconds for ``len(shares)`` pool threads to run a share each, native pools capped
    at one thread, and the CPU seconds the threads themselves spent.

    A pool thread, not the caller's: a worker process's fresh heap is more like a thread's
    own malloc arena than like this long-lived process's main one. The caps are set before a
    barrier and the clocks start after it, so that neither the cap nor the threads' start is
    timed; the CPU is the thread's own (an idle OpenMP team spinning beside a capped task is
    not its work).
    """
    barrier = threading.Barrier(len(shares))

    def timed(share: list) -> tuple[float, float, float]:
        barrier.wait()
        start, cpu = time.perf_counter(), time.thread_time()
        run(share)
        return start, time.perf_counter(), time.thread_time() - cpu

    capped = Capped(timed, 1, shared=True)
    spans = [f.result() for f in [pool.submit(capped, share) for share in shares]]
    wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    return wall, sum(cpu for _, _, cpu in spans)


def _median_bytes(values: Sequence[Any], shared: Any = None) -> int:
    """Median pickled size; ``shared`` (put once) counts as a reference, as its handle
    travels."""
    sizes = []
    for value in list(values)[:32]:
        buffer = io.BytesIO()
        try:
            _Sizer(buffer, shared).dump(value)
        except Exception:  # an unpicklable value: only in-process backends could take it
            continue
        sizes.append(buffer.tell())
    return int(statistics.median(sizes)) if sizes else 0


class _Sizer(cloudpickle.Pickler):
    """Pickles as cloudpickle does, with one object left out as a reference."""

    def __init__(self, file: io.BytesIO, shared: Any) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._shared = shared

    def persistent_id(self, obj: Any) -> str | None:
        return "put" if self._shared is not None and obj is self._shared else None


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


def concurrent_cpu_s(start: Callable[[Any], Awaitable[Any]], items: Sequence[Any]) -> float:
    """CPU seconds per item of ``start(item)`` coroutines, all of ``items`` awaited at once
    after one warm-up (a client session and its connections).

    Concurrent, as the asyncio backend runs them: one loop wake-up then serves many of them,
    so an item costs less than awaited alone (the weather API: ~0.4 against ~1 ms at 32).
    """

    async def together() -> float:
        await asyncio.gather(start(items[0]), return_exceptions=True)
        cpu = time.process_time()
        await asyncio.gather(*(start(item) for item in items), return_exceptions=True)
        return (time.process_time() - cpu) / len(items)

    # On a thread of its own: the caller may be inside a running loop (Jupyter), where
    # asyncio.run refuses to start another.
    with cf.ThreadPoolExecutor(1, thread_name_prefix="smallbig-probe") as pool:
        return pool.submit(asyncio.run, together()).result()
