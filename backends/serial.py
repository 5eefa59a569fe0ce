"""``serial``: every task runs in the caller, in order — the baseline every speedup is against."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from backends.base import Backend, MapCall
from backends.chunks import BatchSizer, run_chunk
from backends.inner import InnerThreads


class SerialBackend(Backend):
    """Run each task in the calling thread.

    ``submit`` runs the task before returning its (already finished) future. ``map`` is lazy:
    each batch runs when the iterator reaches it, so ``timeout`` can be honoured between batches.

    The native thread pools (BLAS, OpenMP, numba) are left as they are unless ``inner_threads``
    is a number: a plain loop in the user's script gets them that way, so serial is the
    baseline a parallel backend must beat, inner parallelism included.
    """

    name = "serial"
    in_process = True
    fixed_workers = "serial runs one task at a time in the caller: 1 worker, whatever is asked"

    @classmethod
    def default_workers(cls) -> int:
        return 1

    def __init__(self, workers: int | None = None, inner_threads: InnerThreads = "auto") -> None:
        super().__init__(workers, inner_threads)  # checks that workers is valid
        # One worker by definition: `for name in available(): get_backend(name, workers=4)`
        # works for every name, and info() says why serial reports 1.
        self.workers = 1
        if inner_threads != "auto":
            self._cap_inner_threads(1)

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def _map(self, call: MapCall) -> Iterator[Any]:
        # Lazy map in the caller. With ``buffersize`` the inputs are read lazily too, a chunk
        # at a time: nothing is ever in flight here, so the bound holds for any ``buffersize``.
        fn, iterables, chunksize, buffersize, end = call
        stream = zip(*iterables, strict=False)
        items = None if buffersize is not None else list(stream)
        runner = self._capped(run_chunk)

        def results() -> Iterator[Any]:
            sizer = BatchSizer(1, items[0] if items else None)
            pos = 0
            while items is None or pos < len(items):
                if end is not None and time.monotonic() > end:
                    raise TimeoutError
                left = sys.maxsize if items is None else len(items) - pos
                size = sizer.next_size(left) if chunksize == "auto" else chunksize
                if items is None:
                    chunk = list(itertools.islice(stream, size))
                    if not chunk:
                        return
                else:
                    chunk = items[pos : pos + size]
                values, error, elapsed = runner(fn, chunk)
                sizer.record(len(chunk), elapsed)
                pos += len(chunk)
                if end is not None and time.monotonic() > end:
                    # Finished after the deadline: as on every pool, that is a TimeoutError,
                    # not a late result.
                    raise TimeoutError
                yield from values
                if error is not None:
                    raise error

        return results()

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        # Nothing is ever pending: every task finished inside submit().
        pass
