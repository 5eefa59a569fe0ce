"""``asyncio``: an event loop on a background thread.

Coroutine functions run on the loop, many at once (how network I/O scales without threads);
plain functions run in a small thread pool so they never block the loop. Either way ``submit``
returns a ``concurrent.futures.Future``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any

from smallbig.backends.base import Backend
from smallbig.backends.chunks import run_chunk, run_chunk_async
from smallbig.backends.futures import PendingSet
from smallbig.backends.inner import InnerThreads


class AsyncioBackend(Backend):
    """Event-loop backend; ``workers`` caps the tasks running at once (default 256)."""

    name = "asyncio"
    in_process = True
    uses_threads = True
    supports_coroutines = True

    @classmethod
    def default_workers(cls) -> int:
        return 256

    def __init__(self, workers: int | None = None, inner_threads: InnerThreads = "auto") -> None:
        super().__init__(workers, inner_threads)
        self._loop = asyncio.new_event_loop()
        self._limit = asyncio.Semaphore(self.workers)
        self._threads = min(self.workers, (os.cpu_count() or 1) + 4)
        # Plain functions run on the pool's threads, that many at once.
        self._cap_inner_threads(self._threads)
        self._pool = cf.ThreadPoolExecutor(self._threads, thread_name_prefix="smallbig-asyncio")
        self._pending = PendingSet()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="smallbig-asyncio-loop", daemon=True
        )
        self._thread.start()

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        # Our own future, not run_coroutine_threadsafe's: it stays PENDING while the task waits
        # for a slot and turns RUNNING when it gets one, so cancel() and
        # shutdown(cancel_futures=True) behave as on the stdlib pools.
        future: cf.Future = cf.Future()
        self._pending.add(future)
        coro = self._run(future, fn, args, kwargs)
        self._loop.call_soon_threadsafe(self._loop.create_task, coro)
        return future

    async def _run(self, future: cf.Future, fn: Callable, args: tuple, kwargs: dict) -> None:
        async with self._limit:
            if not future.set_running_or_notify_cancel():
                return
            try:
                if inspect.iscoroutinefunction(fn):
                    result = await fn(*args, **kwargs)
                else:
                    call = functools.partial(fn, *args, **kwargs)
                    result = await self._loop.run_in_executor(self._pool, call)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _chunk_runner(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return run_chunk_async if inspect.iscoroutinefunction(fn) else run_chunk

    def _parallelism(self, fn: Callable[..., Any]) -> int:
        # Coroutines run up to ``workers`` at once; plain functions only as many as the pool
        # has threads. Sizing "auto" by 256 sent the first 512 items of a plain function one
        # at a time, before any batch had been timed.
        return self.workers if inspect.iscoroutinefunction(fn) else self._threads

    def info(self) -> dict[str, Any]:
        """As :meth:`Backend.info`, plus ``threads``: how many plain functions run at once."""
        return {**super().info(), "threads": self._threads}

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        pending = self._pending.snapshot()
        self._pending.cancel_and_wait(cancel_futures, wait)
        if wait:
            # As asyncio.run does: let suspended async generators (e.g. an HTTP client's
            # session holder) close cleanly before the loop goes.
            asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        else:
            # Let the loop drain what is running, then stop; nobody waits for it.
            self._loop.call_soon_threadsafe(
                lambda: asyncio.ensure_future(self._stop_when_idle(pending))
            )
        self._pool.shutdown(wait=wait)

    async def _stop_when_idle(self, pending: list[cf.Future]) -> None:
        await asyncio.gather(*(asyncio.wrap_future(f) for f in pending), return_exceptions=True)
        self._loop.stop()
