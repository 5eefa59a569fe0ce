"""``processes``: a process pool on the ``forkserver`` start method.

Why forkserver: ``fork`` is the fastest start but copies a parent that may hold threads (our
asyncio loop, HTTP servers, Dask's client) in arbitrary states, which can deadlock the child;
``spawn`` is safe but re-imports everything in every worker. A forkserver is a clean
single-threaded process started once, from which workers fork quickly and safely.

Functions the workers cannot import (defined in ``__main__``, a notebook, a lambda, or a module
found only through the driver's own ``sys.path``) travel by value, as on every backend
(:mod:`smallbig.backends.shipping`).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from smallbig.backends.base import Backend
from smallbig.backends.inner import InnerThreads, caller_thread_env, thread_env
from smallbig.backends.lifeline import owned_temp_dir, start_pool_worker
from smallbig.backends.memory import descendants


class ProcessesBackend(Backend):
    """A ``ProcessPoolExecutor`` (forkserver); ``workers`` defaults to the CPU count.

    Each worker's native pools (BLAS, OpenMP, numba) run ``cores // workers`` threads (at least
    1) by default; see :mod:`smallbig.backends.inner`.
    """

    name = "processes"
    workers_share_driver_path = True  # spawned here, with this process's sys.path

    def __init__(self, workers: int | None = None, inner_threads: InnerThreads = "auto") -> None:
        super().__init__(workers, inner_threads)
        self._cap_inner_threads(self.workers)
        before = descendants()
        start = time.perf_counter()
        env = caller_thread_env() if self.inner_threads is None else thread_env(self.inner_threads)
        self._pool = cf.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=start_pool_worker,
            initargs=(env, os.getpid()),
        )
        self._put_dir: str | None = None
        # The pool forks workers lazily; start them all now so that start-up is measured
        # here and not charged to the first tasks.
        for f in [self._pool.submit(os.getpid) for _ in range(self.workers)]:
            f.result()
        self.startup_s = time.perf_counter() - start
        self._claim_processes(before)

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        return self._pool.submit(fn, *args, **kwargs)

    def put(self, obj: Any) -> Any:
        """Write ``obj`` once to a private temp file; each worker loads it once and caches it."""
        self._check_open()
        if self._put_dir is None:
            self._put_dir = owned_temp_dir("smallbig-put-")
        fd, path = tempfile.mkstemp(dir=self._put_dir, suffix=".pkl")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        return SharedRef(path)

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._put_dir is not None:
            shutil.rmtree(self._put_dir, ignore_errors=True)


_LOADED: dict[str, Any] = {}


class SharedRef:
    """Handle returned by ``ProcessesBackend.put``: unpickles, in a worker, as the object."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (_load_shared, (self.path,))

    def __repr__(self) -> str:
        return f"SharedRef({self.path!r})"


def _load_shared(path: str) -> Any:
    obj = _LOADED.get(path)
    if obj is None:
        with open(path, "rb") as f:
            obj = _LOADED[path] = pickle.load(f)
    return obj
