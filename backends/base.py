"""The executor protocol every smallbig backend implements.

A backend *is* a :class:`concurrent.futures.Executor`: ``submit`` returns a real
``concurrent.futures.Future`` on every engine, so ``wait`` and ``as_completed`` mix futures from
any backends. ``map`` is written once here, on top of ``submit``, and honours ``chunksize``
(including ``"auto"``) on every backend.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, NamedTuple

from smallbig.backends.chunks import BatchSizer, check_chunksize, handed_over, run_chunk
from smallbig.backends.inner import InnerThreads, capped, check_inner_threads, resolve
from smallbig.backends.memory import ProcessTree, descendants
from smallbig.backends.registry import engine_of
from smallbig.backends.shipping import portable
from smallbig.backends.streaming import check_buffersize, stream_map

_LIVE: weakref.WeakSet[Backend] = weakref.WeakSet()
_BY_REFERENCE = object()  # Backend._portable's value for a callable that travels as itself


class MapCall(NamedTuple):
    """One checked ``map`` call, as :meth:`Backend.map` hands it to ``_map``."""

    fn: Callable[..., Any]
    iterables: tuple[Iterable[Any], ...]
    chunksize: int | str
    buffersize: int | None
    end: float | None  # the deadline on time.monotonic(), or None


@atexit.register
def _shutdown_live_backends() -> None:
    # A script that never called shutdown() (or died on Ctrl-C outside a ``with``) must not
    # leave clusters or pools behind when the interpreter exits.
    for backend in list(_LIVE):
        with contextlib.suppress(Exception):
            backend.shutdown(wait=False, cancel_futures=True)


class Backend(cf.Executor):
    """Base class of all backends.

    Subclasses implement ``_submit`` (return a ``cf.Future``) and ``_shutdown``, and may override
    ``put``, ``_prepare`` and ``_chunk_runner``.

    Parameters
    ----------
    workers : int, optional
        Number of parallel workers; must be > 0. ``None`` picks the backend's default.
    inner_threads : int, "auto" or None
        Threads each task may use in the native pools it calls (BLAS, OpenMP, numba; see
        :mod:`smallbig.backends.inner`). ``"auto"``: the cores divided by the tasks that run at
        once,
        so that they never oversubscribe the cores; ``None``: leave the libraries alone.
    """

    name: ClassVar[str] = ""
    #: Why ``workers`` is fixed whatever is asked (``None``: the backend honours it).
    fixed_workers: ClassVar[str | None] = None
    in_process: ClassVar[bool] = False
    distributed: ClassVar[bool] = False
    uses_threads: ClassVar[bool] = False
    supports_coroutines: ClassVar[bool] = False
    accepts_address: ClassVar[bool] = False
    listens_on_all_interfaces: ClassVar[bool] = False
    #: A second backend opened while one is up gets the running workers (loky's reuse).
    reusable: ClassVar[bool] = False
    #: Links a task's own argument crosses from the driver to a worker (Dask's go with the
    #: task through the scheduler: two); a result comes back over one.
    argument_links: ClassVar[int] = 1
    #: Where an object given to :meth:`put` is kept, so what a map of tasks sharing it pays
    #: (smallbig.model.costmodel): ``"machine"``, once (a file every worker reads, or this process's
    #: own memory); ``"worker"``, a copy in each worker that runs one of the tasks, copied
    #: from worker to worker (Dask); ``"node"``, a copy in each node's object store, each
    #: pulled from the driver's (Ray).
    put_copies: ClassVar[str] = "machine"
    #: Rounds of a ``chunksize="auto"`` map that one central scheduler hands out a task at a
    #: time, the last worker's task starting a task's dispatch cost after the one before
    #: (Dask: the single items that time the task, then the first round of batches; Ray's
    #: driver submits to its workers' raylets directly: none).
    serial_dispatch_rounds: ClassVar[int] = 0
    #: Partitions per worker of a ``chunksize="auto"`` map that is one job of fixed
    #: partitions (Spark); ``None``: batches sized from measured durations
    #: (:class:`smallbig.backends.chunks.BatchSizer`), each its own task. A map that is one job pays
    #: the job's fixed cost whatever its items, and no round trip per batch.
    auto_partitions_per_worker: ClassVar[int | None] = None
    #: Whether the workers start with this process's ``sys.path`` (pools spawned from it), so
    #: that what the driver imports from its own path travels by reference (shipping).
    workers_share_driver_path: bool = False

    def __init__(self, workers: int | None = None, inner_threads: InnerThreads = "auto") -> None:
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ValueError(f"workers must be an integer greater than 0, got {workers!r}")
        self.workers: int = workers if workers is not None else self.default_workers()
        self._inner_option = check_inner_threads(inner_threads)
        #: The cap per task on native thread pools (``None``: the libraries' own settings).
        self.inner_threads: int | None = None
        #: Who sets the native pools' threads in this backend's workers, and to what.
        self.inner_threads_by = "the libraries' defaults (not capped)"
        self.address: str | None = None
        self.startup_s: float = 0.0
        self._closed = False
        self._close_lock = threading.Lock()
        # The processes this backend starts here (see _claim_processes); None: its workers run
        # on another machine, whose memory only the engine can report.
        self._own_roots: set[int] | None = set()
        # fn -> what travels for it (shipping.portable is a pickle of fn: once per function),
        # or _BY_REFERENCE: a value that were fn itself would keep its own key alive, and with
        # it every bound method's object and every partial's arguments, for the backend's life.
        self._portable: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        _LIVE.add(self)

    @classmethod
    def default_workers(cls) -> int:
        """Workers used when none are given."""
        import os

        return os.cpu_count() or 1

    # -- the Executor protocol -----------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Schedule ``fn(*args, **kwargs)``; return a ``concurrent.futures.Future``."""
        self._check_open()
        return self._submit(self._capped(self._prepare(fn)), args, kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | str = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like the builtin ``map``, run in parallel; results come back in input order.

        Parameters
        ----------
        fn : callable
            Top-level function (processes, Dask and Ray pickle it).
        *iterables
            Collected at once, as ``concurrent.futures.Executor.map`` does, unless
            ``buffersize`` is given.
        timeout : float, optional
            Seconds from this call; reaching an item later raises ``TimeoutError``.
        chunksize : int or "auto"
            Items per task. ``"auto"`` sizes batches from measured task durations so that
            per-task overhead is hidden (see :class:`smallbig.backends.chunks.BatchSizer`).
        buffersize : int, optional
            As in Python 3.14: read the inputs lazily and keep at most this many tasks
            (chunks) submitted and not yet yielded, so that an endless or larger-than-memory
            input flows through in bounded memory (:mod:`smallbig.backends.streaming`).

        Returns
        -------
        iterator
            Yields results in order; an item's exception is raised when the iterator reaches it.
        """
        chunksize = check_chunksize(chunksize)
        buffersize = check_buffersize(buffersize)
        end = None if timeout is None else time.monotonic() + timeout
        self._check_open()
        return self._map(MapCall(fn, iterables, chunksize, buffersize, end))

    def _map(self, call: MapCall) -> Iterator[Any]:
        # Serial overrides this: it runs the batches lazily in the caller instead.
        fn, iterables, chunksize, buffersize, end = call
        if buffersize is not None:
            return stream_map(self, fn, iterables, chunksize, buffersize, end)
        items = list(zip(*iterables, strict=False))
        fn = self._prepare(fn)
        if chunksize == 1:
            task = self._capped(fn)
            return _iter_single([self._submit(task, args, {}) for args in items], end)
        # The cap goes around a whole chunk, not each item: one check per batch.
        runner = self._capped(self._chunk_runner(fn))
        if chunksize == "auto":
            return iter_batches(_AutoDispatch(self, runner, fn, items), end)
        batches = [
            self._submit(runner, (fn, self._pack(items[i : i + chunksize])), {})
            for i in range(0, len(items), chunksize)
        ]
        return iter_batches(_FixedBatches(batches), end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release the engine's resources; idempotent. Clusters it did not start stay up.

        With ``cancel_futures``, local backends cancel the tasks not yet running; cluster
        backends cancel every unfinished task, since their futures cannot tell queued from
        running without a round trip to the scheduler.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _LIVE.discard(self)
        self._shutdown(wait, cancel_futures)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        # On an error (Ctrl-C included) nobody wants the remaining work: cancel it so that the
        # pool or cluster comes down promptly instead of finishing the queue first.
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False

    # -- smallbig extras ----------------------------------------------------------------------
    def put(self, obj: Any) -> Any:
        """Ship ``obj`` once; pass the handle to tasks, which receive ``obj`` itself.

        In-process backends return ``obj`` itself: sharing memory is the cheapest correct thing.
        """
        self._check_open()
        return obj

    @property
    def memory_is_local(self) -> bool:
        """Whether :meth:`memory_reader` reads this machine's processes (cheap: sample often)
        rather than asking a remote engine (a round trip: sample seldom)."""
        return self._own_roots is not None

    def memory_reader(self) -> Callable[[], int | None]:
        """A cheap callable returning the resident bytes of this process plus every process
        this backend started on this machine, now (:mod:`smallbig.backends.memory`); for a cluster
        reached by address, what its engine reports, or ``None`` when it reports nothing."""
        if self._own_roots is None:
            return self._engine_memory
        return ProcessTree(self._own_roots).rss

    def footprint(self) -> dict[str, int | None]:
        """Resident bytes now: ``driver`` (this process, shared by every backend in it) and
        ``backend`` (the processes it started: workers, schedulers, agents; 0 for in-process
        backends; the engine's figure or ``None`` for a cluster reached by address)."""
        driver = ProcessTree(set()).rss()
        if self._own_roots is None:
            return {"driver": driver, "backend": self._engine_memory()}
        return {"driver": driver, "backend": ProcessTree(self._own_roots, driver=False).rss()}

    def info(self) -> dict[str, Any]:
        """Engine, version, workers, address, start-up seconds and capabilities."""
        return {
            "name": self.name,
            "engine": engine_of(self),
            "version": engine_version(engine_of(self)),
            "workers": self.workers,
            "address": self.address,
            "startup_s": self.startup_s,
            "in_process": self.in_process,
            "distributed": self.distributed,
            "uses_threads": self.uses_threads,
            "supports_coroutines": self.supports_coroutines,
            "listens_on_all_interfaces": self.listens_on_all_interfaces,
            "reusable": self.reusable,
            "inner_threads": self.inner_threads,
            "inner_threads_by": self.inner_threads_by,
            "fixed_workers": self.fixed_workers,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        where = f" at {self.address}" if self.address else ""
        return f"<{type(self).__name__} {self.name!r} workers={self.workers}{where} {state}>"

    # -- hooks for subclasses -------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        raise NotImplementedError

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        raise NotImplementedError

    def _claim_processes(self, before: set[int]) -> None:
        """Count as this backend's every process below this one that was not there
        ``before`` it started (:func:`smallbig.backends.memory.descendants`)."""
        self._own_roots = descendants() - before

    def _engine_memory(self) -> int | None:
        """Resident bytes of a remote cluster's workers, as its engine reports them."""
        return None

    def _prepare(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Make ``fn`` reach this backend's workers: by reference where they can import it,
        else by value (:mod:`smallbig.backends.shipping`); in-process backends run ``fn`` itself."""
        if self.in_process:
            return fn
        try:
            shipped = self._portable[fn]
        except (KeyError, TypeError):  # TypeError: not hashable or not weak-referenceable
            shipped = portable(fn, self.workers_share_driver_path)
            with contextlib.suppress(TypeError):
                self._portable[fn] = _BY_REFERENCE if shipped is fn else shipped
        return fn if shipped is _BY_REFERENCE else shipped

    def _chunk_runner(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return run_chunk

    def _cap_inner_threads(self, tasks_at_once: int, cores: int | None = None) -> None:
        """Resolve the ``inner_threads`` option for ``tasks_at_once`` tasks sharing ``cores``
        (default: this machine's); subclasses call it once they know their workers."""
        self.inner_threads = resolve(self._inner_option, tasks_at_once, cores)
        if self.inner_threads is not None:
            per = "the process, while its tasks run" if self.in_process else "each worker"
            self.inner_threads_by = f"smallbig: {self.inner_threads} per task in {per}"

    def _capped(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as submitted: run under the inner-thread cap, if there is one."""
        return capped(fn, self.inner_threads, shared=self.in_process)

    def _parallelism(self, fn: Callable[..., Any]) -> int:
        """How many calls of ``fn`` really run at once: what "auto" sizes its window by."""
        return self.workers

    def _pack(self, chunk: list[tuple]) -> Any:
        """What a chunk of items travels as (the chunk runners iterate over it)."""
        return chunk

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")


def engine_version(module: str) -> str:
    """Version string of an importable engine module (Python's own for ``"python"``)."""
    if module == "python":
        import platform

        return platform.python_version()
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def _iter_single(futures: list[cf.Future], end: float | None) -> Iterator[Any]:
    # A generator nested in map() so that every task is submitted before the first result is
    # asked for (the same reason CPython's Executor.map closes over its futures).
    def results() -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                remaining = None if end is None else end - time.monotonic()
                yield futures.pop().result(remaining)
        finally:
            for future in futures:
                future.cancel()

    return results()


class _FixedBatches:
    """Batch futures submitted up front, in order."""

    def __init__(self, futures: list[cf.Future]) -> None:
        self._futures = futures

    def next(self, end: float | None) -> cf.Future | None:
        return self._futures.pop(0) if self._futures else None

    def close(self) -> None:
        for future in self._futures:
            future.cancel()


class _AutoDispatch:
    """Submit batches of growing size from a helper thread as earlier batches finish.

    A thread (not the engines' completion callbacks) submits, because some engines deliver
    callbacks on their own I/O thread where submitting again could deadlock.
    """

    def __init__(self, backend: Backend, runner: Callable, fn: Callable, items: list) -> None:
        self._backend, self._runner, self._fn, self._items = backend, runner, fn, items
        self._parallel = backend._parallelism(fn)
        self._sizer = BatchSizer(self._parallel, items[0] if items else None)
        self._done: queue.SimpleQueue[cf.Future] = queue.SimpleQueue()
        self._ordered: queue.Queue[cf.Future | BaseException | None] = queue.Queue()
        self._stop = threading.Event()
        self._sizes: dict[int, tuple[int, float]] = {}  # items and when sent, per batch
        threading.Thread(target=self._dispatch, name="smallbig-autobatch", daemon=True).start()

    def _dispatch(self) -> None:
        items, pos, in_flight = self._items, 0, 0
        # Two batches per worker in flight: one running, one queued behind it, so no worker
        # waits for the round trip of its next batch.
        window = 2 * self._parallel
        try:
            while pos < len(items) and not self._stop.is_set():
                # Until a batch has been timed, one single item per worker: more of them only
                # queue behind the first, each a round trip, before sizing can start.
                limit = window if self._sizer.per_item_s is not None else self._parallel
                while in_flight < limit and pos < len(items):
                    size = self._sizer.next_size(len(items) - pos)
                    chunk = items[pos : pos + size]
                    pos += size
                    packed = self._backend._pack(chunk)
                    sent = time.monotonic()
                    future = self._backend._submit(self._runner, (self._fn, packed), {})
                    self._sizes[id(future)] = len(chunk), sent
                    self._ordered.put(future)
                    future.add_done_callback(self._done.put)
                    in_flight += 1
                if pos >= len(items):
                    break
                finished = self._done.get()
                in_flight -= 1
                if not finished.cancelled() and finished.exception() is None:
                    _, _, elapsed = finished.result()
                    size, sent = self._sizes.pop(id(finished))
                    self._sizer.record(size, elapsed, time.monotonic() - sent)
        except BaseException as exc:  # e.g. RuntimeError: the backend was shut down meanwhile
            self._ordered.put(exc)
        finally:
            self._ordered.put(None)

    def next(self, end: float | None) -> cf.Future | None:
        remaining = None if end is None else max(0.0, end - time.monotonic())
        try:
            item = self._ordered.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError from None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while True:
            try:
                item = self._ordered.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, cf.Future):
                item.cancel()


def iter_batches(batches: Any, end: float | None) -> Iterator[Any]:
    """Yield the results of ``batches`` (its ``next(end)`` gives each batch's future, of a
    chunk runner's ``(values, error, seconds)``, or ``None`` at the end), in order; an item's
    error is raised at its position, and ``batches.close()`` runs however it ends."""
    def results() -> Iterator[Any]:
        try:
            while (future := batches.next(end)) is not None:
                remaining = None if end is None else end - time.monotonic()
                values, error, _ = future.result(remaining)
                yield from handed_over(values)
                if error is not None:
                    raise error
        finally:
            batches.close()

    return results()
