"""Caps on the native thread pools inside tasks: nested parallelism under control.

NumPy's BLAS, OpenMP and numba's parallel kernels each start as many threads as the machine
has cores, *inside every task*. Six pool threads or two worker processes that each run a
2-thread OpenBLAS oversubscribe 2 cores, and OpenBLAS spins while it waits: a linear-algebra
task measured 5x slower on threads than in a plain loop. So a backend that runs several tasks
at once caps those pools, as loky does, to ``cores // tasks at once`` threads per task.

How, depends on who else shares the process:

- a worker process of its own (processes, Dask, Ray) is capped for good, the first time a task
  runs there and again whenever new modules were imported (a native library loads with one);
  the environment variables are set too, for libraries the worker loads later;
- threads of the caller's process (threads, asyncio) share its libraries with the caller's own
  code, so the caps hold only while at least one capped task runs, and the libraries get their
  own settings back when the last one ends: a plain loop between two maps runs as it would
  without smallbig.

threadpoolctl does the capping (BLAS and OpenMP as it finds them loaded); numba's own thread
count is set with ``numba.set_num_threads`` when numba is imported.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: What the native libraries read when they load: set in worker processes of our own, so that
#: a library loaded after the cap (by the task's first import) starts capped.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
# glibc's allocator settings, read once as a process starts. Dask's nannies set the first for
# their workers (freed blocks go back to the system at once): left set in the caller, every
# process it started afterwards (a process pool's workers) ran that way too.
ALLOCATOR_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

InnerThreads = int | str | None


def check_inner_threads(inner_threads: InnerThreads) -> InnerThreads:
    """Return ``inner_threads`` if it is ``"auto"``, ``None`` or an int ≥ 1; else raise."""
    if inner_threads is None or inner_threads == "auto":
        return inner_threads
    if isinstance(inner_threads, bool) or not isinstance(inner_threads, int) or inner_threads < 1:
        raise ValueError(
            f"inner_threads must be 'auto', None or an integer ≥ 1, got {inner_threads!r}"
        )
    return inner_threads


def resolve(
    inner_threads: InnerThreads, tasks_at_once: int, cores: int | None = None
) -> int | None:
    """The cap per task: ``"auto"`` is ``cores // tasks_at_once`` (at least 1), as loky's."""
    inner_threads = check_inner_threads(inner_threads)
    if inner_threads != "auto":
        return inner_threads
    return max(1, (cores or os.cpu_count() or 1) // max(1, tasks_at_once))


def set_env(values: dict[str, str | None]) -> None:
    """Set each environment variable of ``values`` to its value, or unset it for ``None``."""
    for var, value in values.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


@contextlib.contextmanager
def kept_env(names: Iterable[str]) -> Iterator[None]:
    """Give the environment variables ``names`` back their values (or absence) on exit."""
    before = {var: os.environ.get(var) for var in names}
    try:
        yield
    finally:
        set_env(before)


_held_lock = threading.Lock()
_held_depth = 0
_held_env: dict[str, str | None] = {}


@contextlib.contextmanager
def own_thread_env() -> Iterator[None]:
    """Give this process its thread variables back after an engine starts its workers.

    Starting a Dask LocalCluster sets ``OMP``/``OPENBLAS``/``MKL_NUM_THREADS=1`` in the
    *caller's* environment (its nannies live there and set them before each spawn, restarts
    included): every native library the caller loads afterwards (scipy's OpenBLAS, loaded by
    numba's first parallel kernel) would then start capped at one thread, serial would no
    longer be the plain loop it stands for, and uncapped worker pools started later would
    inherit the caps. Starts may overlap (nannies spawn their workers concurrently): the
    variables as they were before the first are given back when the last one ends, so no
    start spawns its worker with another's restored environment. The allocator's variables
    they set (``MALLOC_TRIM_THRESHOLD_``) are given back too.
    """
    global _held_depth, _held_env
    with _held_lock:
        if _held_depth == 0:
            _held_env = spawn_env()
        _held_depth += 1
    try:
        yield
    finally:
        with _held_lock:
            _held_depth -= 1
            if _held_depth == 0:
                set_env(_held_env)


def spawn_env() -> dict[str, str | None]:
    """This process's thread and allocator variables as they are now (``None``: unset): what
    every process it starts next inherits of them."""
    return {**caller_thread_env(), **{var: os.environ.get(var) for var in ALLOCATOR_ENV}}


def returns_freed_memory(_item: Any = None) -> bool:
    """Whether this process's allocator gives freed blocks back to the system at once, so that
    every item's arrays are new pages: glibc started with one of :data:`ALLOCATOR_ENV` set
    (Dask's nannies set the first for their workers). Read from the environment the process
    started with, which is what glibc read; run on a worker, it says that worker's."""
    names = tuple(f"{var}=".encode() for var in ALLOCATOR_ENV)
    try:
        with open("/proc/self/environ", "rb") as f:
            return any(v.startswith(names) for v in f.read().split(b"\0"))
    except OSError:
        return any(os.environ.get(var) for var in ALLOCATOR_ENV)


def caller_thread_env() -> dict[str, str | None]:
    """This process's thread variables as they are now (``None``: unset): what a worker left
    to its libraries' own setting takes. A forkserver's workers would otherwise get the
    variables the forkserver started with, once, maybe while an engine starting beside it
    had set them to 1 (every later uncapped worker then ran its BLAS on one thread)."""
    return {var: os.environ.get(var) for var in THREAD_ENV}


def thread_env(threads: int) -> dict[str, str]:
    """The environment that caps every native pool of a fresh worker process at ``threads``."""
    return {var: str(threads) for var in THREAD_ENV}


class Capped:
    """``fn`` run with the native pools capped at ``threads`` threads; pickles by reference.

    ``shared`` says the calling process runs other code too (a thread pool in the caller's
    process): the caps are then held only while capped tasks run.
    """

    __slots__ = ("fn", "shared", "threads")

    def __init__(self, fn: Callable[..., Any], threads: int, shared: bool) -> None:
        self.fn, self.threads, self.shared = fn, threads, shared

    def __reduce__(self) -> tuple:
        return (Capped, (self.fn, self.threads, self.shared))

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        # ``self`` is positional-only: a task's own keyword named ``self`` reaches the task.
        if not self.shared:
            _cap_thread(self.threads, for_good=True)
            return self.fn(*args, **kwargs)
        _SHARED.enter(self.threads)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _SHARED.exit()

    def __repr__(self) -> str:
        return f"Capped({self.fn!r}, threads={self.threads})"


def capped(fn: Callable[..., Any], threads: int | None, shared: bool) -> Callable[..., Any]:
    """``fn`` wrapped in :class:`Capped`, or ``fn`` itself when there is nothing to cap.

    Coroutine functions stay as they are: they run on an event loop, not in a pool thread.
    """
    if threads is None or inspect.iscoroutinefunction(fn):
        return fn
    return Capped(fn, threads, shared)


_local = threading.local()


def _cap_thread(threads: int, for_good: bool) -> None:
    """Cap the pools this thread sees, once per (cap, set of imported modules).

    A native library loads with a Python module, so a change in ``len(sys.modules)`` is the
    cheap sign (~0.1 µs) that it is time to look again (threadpoolctl's scan takes ~2 ms).
    """
    seen = (threads, len(sys.modules))
    if getattr(_local, "seen", None) == seen:
        return
    from threadpoolctl import threadpool_limits

    if for_good:
        os.environ.update(thread_env(threads))
        threadpool_limits(threads)
    else:
        # Only the per-thread settings: OpenMP's thread count is per calling thread. The
        # process-wide BLAS ones are held by _SharedCaps.
        threadpool_limits(threads, user_api="openmp")
    if "numba" in sys.modules:
        import numba

        # Per thread too; numba refuses more than the NUMBA_NUM_THREADS it started with.
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    _local.seen = (threads, len(sys.modules))


class _SharedCaps:
    """Process-wide BLAS caps, held while at least one capped task runs in this process.

    Every change is made from one helper thread that never runs BLAS: OpenBLAS 0.3.31 ignored
    a restore to 2 threads made from a pool thread that had run BLAS calls (every thread then
    read 1), while the same restore from a fresh thread took effect for all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._limits: list[Any] = []  # threadpool_limits contexts, oldest first
        self._seen: tuple[int, int] | None = None
        self._helper: Any = None

    def enter(self, threads: int) -> None:
        with self._lock:
            seen = (threads, len(sys.modules))
            if self._seen != seen:
                # A library loaded (or another cap asked) while tasks ran: cap it too; its
                # own setting comes back with the others when the last task ends.
                self._limits.append(self._on_helper(_limit_blas, threads))
                self._seen = seen
            self._running += 1
        try:
            _cap_thread(threads, for_good=False)
        except BaseException:
            self.exit()  # the caller's finally never runs: give the process its pools back
            raise

    def exit(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running:
                return
            limits, self._limits, self._seen = self._limits[::-1], [], None
            self._on_helper(_restore, limits)

    def _on_helper(self, fn: Callable[..., Any], arg: Any) -> Any:
        import concurrent.futures as cf

        if self._helper is None:
            self._helper = cf.ThreadPoolExecutor(1, thread_name_prefix="smallbig-inner-caps")
        return self._helper.submit(fn, arg).result()


def _limit_blas(threads: int) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads, user_api="blas")


def _restore(limits: list[Any]) -> None:
    for limit in limits:
        limit.restore_original_limits()


_SHARED = _SharedCaps()
