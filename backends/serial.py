"""``serial``: every task runs in the caller, in order — the baseline every speedup is against."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from smallbig.backends.base import Backend, MapCall
from smallbig.backends.chunks import BatchSizer, handed_over, run_chunk
from smallbig.backends.inner import InnerThreads


class SerialBackend(Backend):
    """Run each task in the calling thread.

    What serial promises, where it differs from a pool because it runs in the caller:

    - ``submit`` runs the call before it returns, so its future is always done: ``wait``
      with ``FIRST_COMPLETED`` and ``as_completed(timeout=0)`` see every future finished, and
      ``cancel()`` never succeeds.
    - ``map`` makes every call before it returns (as a pool's ``map`` has every call
      submitted), so the calls happen whether or not the iterator is consumed, and
      ``shutdown`` has nothing left to wait for. With ``timeout``, it stops making calls once
      the deadline has passed: the iterator raises ``TimeoutError`` where it reaches a call
      that finished late or was never made.
    - ``map(..., buffersize=N)`` is the exception: it reads its input lazily, one chunk at a
      time as the iterator reaches it (an endless input must flow through), so its calls
      happen only as far as the iterator is consumed.
    - Results are dropped as they are yielded, as CPython's ``map`` drops them.

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
        fn, iterables, chunksize, buffersize, end = call
        if buffersize is not None:
            return self._stream(call)
        # Every call is made here, before map returns, as a pool has every call submitted
        # when its map returns: the calls happen whether or not the iterator is consumed.
        items = list(zip(*iterables, strict=False))
        runner = self._capped(run_chunk)
        sizer = BatchSizer(1, items[0] if items else None)
        outcomes: list[tuple[list[Any], BaseException | None, bool]] = []
        pos = 0
        while pos < len(items):
            if end is not None and time.monotonic() > end:
                break  # the calls past the deadline could only end in a TimeoutError
            size = sizer.next_size(len(items) - pos) if chunksize == "auto" else chunksize
            chunk = items[pos : pos + size]
            values, error, elapsed = runner(fn, chunk)
            sizer.record(len(chunk), elapsed)
            pos += len(chunk)
            # Finished after the deadline: as on every pool, a TimeoutError, not a late result.
            outcomes.append((values, error, end is not None and time.monotonic() > end))
        unfinished = pos < len(items)
        outcomes.reverse()

        def results() -> Iterator[Any]:
            while outcomes:
                values, error, late = outcomes.pop()
                if late:
                    raise TimeoutError
                yield from handed_over(values)
                if error is not None:
                    raise error
            if unfinished:
                raise TimeoutError

        return results()

    def _stream(self, call: MapCall) -> Iterator[Any]:
        # With ``buffersize`` the inputs are read lazily, a chunk at a time, each run when the
        # iterator reaches it: nothing is ever in flight here, so the bound holds for any
        # ``buffersize``, and an endless input flows through.
        fn, iterables, chunksize, _, end = call
        stream = zip(*iterables, strict=False)
        runner = self._capped(run_chunk)

        def results() -> Iterator[Any]:
            sizer = BatchSizer(1, None)
            while True:
                if end is not None and time.monotonic() > end:
                    raise TimeoutError
                size = sizer.next_size(sys.maxsize) if chunksize == "auto" else chunksize
                chunk = list(itertools.islice(stream, size))
                if not chunk:
                    return
                values, error, elapsed = runner(fn, chunk)
                sizer.record(len(chunk), elapsed)
                if end is not None and time.monotonic() > end:
                    raise TimeoutError
                yield from handed_over(values)
                if error is not None:
                    raise error

        return results()

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        # Nothing is ever pending: every task finished inside submit().
        pass
