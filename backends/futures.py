"""Helpers for backends that build their own futures: pending sets, links, settling."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import weakref
from collections.abc import Callable
from typing import Any


class PendingSet:
    """The not-yet-finished futures of a backend, for ``shutdown(cancel_futures=True)``."""

    def __init__(self) -> None:
        self._futures: set[cf.Future] = set()
        self._lock = threading.Lock()

    def add(self, future: cf.Future) -> None:
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._discard)

    def _discard(self, future: cf.Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def snapshot(self) -> list[cf.Future]:
        with self._lock:
            return list(self._futures)

    def cancel_and_wait(self, cancel: bool, wait: bool) -> None:
        pending = self.snapshot()
        if cancel:
            for future in pending:
                # Notified here, not when the engine reports back: after Ctrl-C the engine's
                # workers may be gone and never report, and cf.wait counts a cancelled future
                # as done only once notified.
                if future.cancel():
                    notify_cancelled(future)
        if wait:
            cf.wait(pending)


def notify_cancelled(future: cf.Future) -> None:
    """Wake ``wait()``/``as_completed()`` on a cancelled ``future`` (once: no error after)."""
    _start(future)


# Cancelled futures already notified. cf.Future logs CRITICAL and raises if notified twice,
# which happens when shutdown and the engine's answer both get to a cancelled future; the
# public API cannot tell "cancelled" from "cancelled and notified", so we keep count.
_NOTIFIED: weakref.WeakSet[cf.Future] = weakref.WeakSet()
_NOTIFY_LOCK = threading.Lock()


def _start(future: cf.Future) -> bool:
    """``future.set_running_or_notify_cancel()``, at most once per cancelled future."""
    with _NOTIFY_LOCK:
        if future in _NOTIFIED:
            return False
        running = future.set_running_or_notify_cancel()
        if not running:
            _NOTIFIED.add(future)
        return running


def linked_future(cancel_engine: Callable[[], Any]) -> cf.Future:
    """A pending ``cf.Future`` whose cancellation also cancels the engine's task.

    It stays PENDING until the engine finishes, so ``cancel()`` works until the very end, as on
    the stdlib pools; :func:`settle` moves the engine's outcome into it.
    """
    future: cf.Future = cf.Future()

    def on_done(f: cf.Future) -> None:
        if f.cancelled():
            cancel_engine()

    future.add_done_callback(on_done)
    return future


def resolve(future: cf.Future, value: Any) -> None:
    """Finish ``future`` with ``value`` unless it was cancelled meanwhile."""
    if _start(future):
        future.set_result(value)


def reject(future: cf.Future, exc: BaseException) -> None:
    """Finish ``future`` with ``exc`` unless it was cancelled meanwhile."""
    if _start(future):
        future.set_exception(exc)


def settle(future: cf.Future, get_result: Callable[[], Any]) -> None:
    """Finish ``future`` with the value, or the exception, of ``get_result()``."""
    try:
        value = get_result()
    except BaseException as exc:
        reject(future, exc)
    else:
        resolve(future, value)


class SettlerThread:
    """A daemon thread that moves an engine's outcomes into our futures, in batches.

    Subclasses implement ``_run``, looping until :attr:`_closed`, and sleep on :attr:`_wake`
    when there is nothing to settle; :attr:`_incoming` (under :attr:`_lock`) holds what
    ``watch`` handed over and the thread has not taken yet.
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._incoming: list[Any] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def watch(self, task: Any, future: cf.Future) -> None:
        """Called from any thread: finish ``future`` with the engine's ``task``'s outcome."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop settling (before the engine goes): what is left stays unsettled."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError
