"""``map(..., buffersize=N)``: inputs read lazily, at most N tasks in flight (Python 3.14's
``Executor.map`` meaning), so a dataset larger than memory flows through with bounded memory."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from smallbig.backends.chunks import BatchSizer, handed_over


def check_buffersize(buffersize: int | None) -> int | None:
    """``buffersize`` if it is ``None`` or a positive int, else the error CPython raises."""
    if buffersize is None:
        return None
    if isinstance(buffersize, bool) or not isinstance(buffersize, int):
        raise TypeError(f"buffersize must be an integer or None, got {buffersize!r}")
    if buffersize < 1:
        raise ValueError(f"buffersize must be None or > 0, got {buffersize}")
    return buffersize


def stream_map(
    backend: Any,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    chunksize: int | str,
    buffersize: int,
    end: float | None,
) -> Iterator[Any]:
    """Results of ``fn`` over ``zip(*iterables)`` in order, with at most ``buffersize`` tasks
    (chunks) submitted and not yet yielded; the inputs are read only as tasks are submitted.

    ``chunksize="auto"`` sizes each chunk from the time the finished ones took, as the eager
    ``map`` does; the remaining count being unknown, chunks never shrink towards an end.
    """
    args = zip(*iterables, strict=False)
    first = next(args, None)  # a sample for the batch sizer's bytes cap, then put back
    if first is not None:
        args = itertools.chain([first], args)
    fn = backend._prepare(fn)
    single = chunksize == 1
    task = backend._capped(fn if single else backend._chunk_runner(fn))
    sizer = BatchSizer(backend._parallelism(fn), first)
    pending: collections.deque[tuple[cf.Future, int]] = collections.deque()

    def submit_next() -> bool:
        size = sizer.next_size(sys.maxsize) if chunksize == "auto" else chunksize
        chunk = list(itertools.islice(args, size))
        if not chunk:
            return False
        if single:
            future = backend._submit(task, chunk[0], {})
        else:
            future = backend._submit(task, (fn, backend._pack(chunk)), {})
        pending.append((future, len(chunk)))
        return True

    # The first window is submitted now, as CPython's map does: work starts at the call.
    more = True
    while more and len(pending) < buffersize:
        more = submit_next()

    def results() -> Iterator[Any]:
        nonlocal more
        try:
            while pending:
                future, n = pending.popleft()
                remaining = None if end is None else end - time.monotonic()
                outcome = future.result(remaining)
                del future  # it holds the results too: nothing here may keep them once yielded
                if more:  # one out, one in: the window stays full
                    more = submit_next()
                if single:
                    values, error = [outcome], None
                else:
                    values, error, elapsed = outcome
                    sizer.record(n, elapsed)
                del outcome
                yield from handed_over(values)
                if error is not None:
                    raise error
        finally:
            for future, _ in pending:
                future.cancel()

    return results()
