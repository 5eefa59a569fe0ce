"""``threads``: a thread pool. Wins for I/O and for code that releases the GIL (NumPy, numba)."""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable
from typing import Any

from smallbig.backends.base import Backend
from smallbig.backends.inner import InnerThreads


class ThreadsBackend(Backend):
    """A ``concurrent.futures.ThreadPoolExecutor``; ``workers`` defaults to min(32, CPUs + 4).

    By default the native pools (BLAS, OpenMP, numba) run ``cores // workers`` threads (at
    least 1) per task while the pool's tasks run; see :mod:`smallbig.backends.inner`.
    """

    name = "threads"
    in_process = True
    uses_threads = True

    @classmethod
    def default_workers(cls) -> int:
        # The stdlib's own default: enough threads to overlap I/O without drowning the GIL.
        return min(32, (os.cpu_count() or 1) + 4)

    def __init__(self, workers: int | None = None, inner_threads: InnerThreads = "auto") -> None:
        super().__init__(workers, inner_threads)
        self._cap_inner_threads(self.workers)
        self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="smallbig-threads")

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        return self._pool.submit(fn, *args, **kwargs)

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
