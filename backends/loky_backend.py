"""``loky``: joblib's reusable process pool, the engine under ``joblib.Parallel(n_jobs=...)``.

The pool is the one ``joblib.Parallel`` itself runs on (``joblib.executor``'s memory-mapping
loky executor): loky keeps one pool per process and hands it to whoever asks with the same
settings, so a second backend opened while the first is up (a session calling ``Parallel``
again) gets the running workers at once. That is the difference from ``processes`` that the
calibration measures apart: the first start and a reuse. As under ``Parallel``, a NumPy
argument above 1 MB reaches the workers memory-mapped, not pickled.

- Workers are loky's own processes (fork + exec: a clean interpreter, no forkserver).
- Native thread pools are capped through loky's own mechanism, the ``env`` of its workers
  (what joblib's loky backend does), set before a task's first import loads a library.
- ``put`` memory-maps a NumPy array above :data:`MEMMAP_BYTES` as joblib does for large
  arguments (``joblib.dump`` to a file in ``/dev/shm``, ``joblib.load(mmap_mode="r")`` in each
  worker, once); any other object travels by value inside the tasks that use it.
- The pool is stopped when the last backend holding it shuts down: nothing outlives the
  backends (joblib itself would keep idle workers for 300 s).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from smallbig.backends.base import Backend
from smallbig.backends.chunks import call
from smallbig.backends.futures import PendingSet
from smallbig.backends.inner import InnerThreads, thread_env
from smallbig.backends.lifeline import owned_temp_dir, start_pool_worker
from smallbig.backends.memory import descendants

#: NumPy arrays larger than this are memory-mapped by ``put`` (joblib's ``max_nbytes="1M"``).
MEMMAP_BYTES = 2**20
#: Seconds an idle worker lives while a backend holds the pool (joblib's default, which
#: ``Parallel`` asks for: the same settings share the pool).
IDLE_TIMEOUT_S = 300

# Backends holding each loky executor (by id), and the processes it started: the pool is
# process-wide, so its processes and its end belong to all its holders together.
_LOCK = threading.Lock()
_HOLDERS: dict[int, int] = {}
_ROOTS: dict[int, set[int]] = {}


class LokyBackend(Backend):
    """joblib's loky reusable executor; ``workers`` defaults to the CPU count.

    Parameters
    ----------
    workers : int, optional
        Worker processes.
    inner_threads : int, "auto" or None
        Native pool threads per task, set in loky's worker ``env`` (``"auto"``:
        ``cores // workers``, as joblib does).
    """

    name = "loky"
    workers_share_driver_path = True  # spawned here, with this process's sys.path
    reusable = True
    #: joblib.Parallel batches itself (batch_size="auto"): the adapter's map at "auto" is
    #: what :meth:`engine_map` is compared with.
    engine_chunksize = "auto"

    def __init__(self, workers: int | None = None, inner_threads: InnerThreads = "auto") -> None:
        super().__init__(workers, inner_threads)
        self._cap_inner_threads(self.workers)
        if self.inner_threads is not None:
            self.inner_threads_by = (
                f"smallbig: {self.inner_threads} per task in each worker, through loky's env"
            )
        self._pending = PendingSet()
        self._put_dir: str | None = None
        start = time.perf_counter()
        try:
            self._open_pool(holders=1)
        except BaseException:
            self._release()
            raise
        self.startup_s = time.perf_counter() - start

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        # loky's submit(self, fn, ...) would take a task's ``self=``/``fn=`` as its own.
        task, args = (call, (fn, args, kwargs)) if kwargs else (fn, args)
        try:
            future = self._executor.submit(task, *args)
        except RuntimeError:
            # Someone in this process (joblib with other settings) asked loky for a pool
            # unlike ours, and loky shut ours down for it: take ours back.
            self._reacquire()
            future = self._executor.submit(task, *args)
        self._pending.add(future)
        return future

    def _capped(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        # The caps are in the workers' environment from their start (loky's env): nothing to
        # wrap around each task.
        return fn

    def put(self, obj: Any) -> Any:
        """Memory-map a large NumPy array for the workers (joblib's way); else ``obj``."""
        self._check_open()
        import numpy as np

        if not isinstance(obj, np.ndarray) or obj.nbytes <= MEMMAP_BYTES or obj.dtype.hasobject:
            return obj
        import joblib

        if self._put_dir is None:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._put_dir = owned_temp_dir("smallbig-loky-", shm)
        fd, path = tempfile.mkstemp(dir=self._put_dir, suffix=".npy")
        os.close(fd)
        joblib.dump(obj, path)
        return Memmapped(path)

    def engine_map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``fn`` over ``items`` with ``joblib.Parallel`` itself (``batch_size="auto"``), on
        this backend's pool: what ``smallbig bench overhead`` measures the adapter against."""
        from joblib import Parallel, delayed, parallel_config

        with parallel_config(
            backend="loky",
            inner_max_num_threads=self.inner_threads,
            initializer=start_pool_worker,
            initargs=({}, os.getpid()),
        ):
            parallel = Parallel(n_jobs=self.workers, batch_size="auto", return_as="generator")
            return list(parallel(delayed(fn)(item) for item in items))

    def info(self) -> dict[str, Any]:
        """As :meth:`Backend.info`, plus ``reused``: the pool was running when it opened."""
        return {**super().info(), "reused": self.reused}

    def _open_pool(self, holders: int) -> None:
        """Get loky's pool for our settings, count ``holders`` more backends on it, and have
        each worker answer once (loky starts them lazily: start-up is measured here, not
        charged to the first tasks); its processes are every holder's."""
        from joblib.executor import get_memmapping_executor

        with _LOCK:
            before = descendants()
            # One executor per process: the same settings get the running one back.
            self._executor = get_memmapping_executor(**self._executor_kwargs())
            key = id(self._executor)
            #: Whether this backend found the pool running (a reuse), not started it.
            self.reused = _HOLDERS.get(key, 0) > 0
            _HOLDERS[key] = _HOLDERS.get(key, 0) + holders
            for f in [self._executor.submit(os.getpid) for _ in range(self.workers)]:
                f.result()
            roots = _ROOTS.setdefault(key, set())
            roots |= descendants() - before
            self._own_roots = roots

    def _reacquire(self) -> None:
        """Take our pool back after loky replaced it (with its holders and processes)."""
        with _LOCK:
            old = id(self._executor)
            holders = _HOLDERS.pop(old, 1)
            _ROOTS.pop(old, None)
        self._open_pool(holders)

    def _executor_kwargs(self) -> dict[str, Any]:
        import multiprocessing

        env = {} if self.inner_threads is None else thread_env(self.inner_threads)
        if self.inner_threads is not None and "ENABLE_IPC" not in os.environ:
            env["ENABLE_IPC"] = "1"  # joblib's: TBB schedulers coordinate across processes
        # The settings joblib.Parallel asks for (engine_map, below) with the same cap and
        # initializer: loky then hands both the same pool instead of replacing one by the
        # other. The initializer ties each worker to this process (the lifeline) and quiets
        # Ctrl-C, as for ``processes``; the caps travel in loky's own env.
        return {
            "n_jobs": self.workers,
            "timeout": IDLE_TIMEOUT_S,
            "initializer": start_pool_worker,
            "initargs": ({}, os.getpid()),
            "env": env,
            "max_nbytes": MEMMAP_BYTES,
            "mmap_mode": "r",
            "verbose": 0,
            "context": multiprocessing.get_context(),
        }

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
            for future in self._pending.snapshot():
                future.cancel()  # only those not running yet, as the stdlib pools do
        if wait:
            cf.wait(self._pending.snapshot())
        self._release()
        if self._put_dir is not None:
            shutil.rmtree(self._put_dir, ignore_errors=True)

    def _release(self) -> None:
        with _LOCK:
            key = id(self._executor)
            _HOLDERS[key] = _HOLDERS.get(key, 1) - 1
            last = _HOLDERS[key] <= 0
            if last:
                _HOLDERS.pop(key, None)
                _ROOTS.pop(key, None)
        if last:
            # terminate: shutdown, then the memory-mapped arguments' folder goes too. Not
            # killing the workers: loky 3.6 then tries to fail the futures of queued work,
            # and a future cancelled already (map's close, shutdown(cancel_futures=True))
            # raises InvalidStateError in its manager thread.
            self._executor.terminate(kill_workers=False)


class Memmapped:
    """Handle returned by ``LokyBackend.put``: unpickles, in a worker, as a read-only
    ``numpy.memmap`` of the array, loaded once per worker."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (_load_memmap, (self.path,))

    def __repr__(self) -> str:
        return f"Memmapped({self.path!r})"


_MAPPED: dict[str, Any] = {}


def _load_memmap(path: str) -> Any:
    array = _MAPPED.get(path)
    if array is None:
        import joblib

        array = _MAPPED[path] = joblib.load(path, mmap_mode="r")
    return array
