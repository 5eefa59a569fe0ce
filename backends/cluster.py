"""What the cluster backends (Dask, Ray) share: futures that a settler thread finishes."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import Any

from smallbig.backends.base import Backend
from smallbig.backends.futures import PendingSet, SettlerThread
from smallbig.backends.inner import InnerThreads


class ClusterBackend(Backend):
    """A backend whose tasks run in an engine's workers, local or reached by address.

    ``submit`` returns a ``cf.Future`` of ours; the subclass's :class:`SettlerThread` moves
    the engine's outcome into it (:meth:`_track`). Subclasses set :attr:`_settler` once the
    engine is up and implement :meth:`_release`.
    """

    distributed = True
    accepts_address = True
    #: Items per task of :meth:`engine_map`: the adapter is compared at the same batching.
    engine_chunksize: int | str = 1

    def __init__(self, workers: int | None, inner_threads: InnerThreads) -> None:
        super().__init__(workers, inner_threads)
        self._pending = PendingSet()
        self._settler: SettlerThread | None = None

    def _track(self, task: Any, future: cf.Future) -> cf.Future:
        """Have the settler finish ``future`` with the engine's ``task``; return ``future``."""
        self._settler.watch(task, future)
        self._pending.add(future)
        return future

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        try:
            self._pending.cancel_and_wait(cancel_futures, wait)
        finally:
            if self._settler is not None:
                self._settler.close()
            self._release()

    def engine_map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``fn`` over ``items`` through the engine's own API alone (submit each, gather all),
        bypassing this adapter: what ``smallbig bench overhead`` measures the adapter against.
        """
        raise NotImplementedError

    def _release(self) -> None:
        """Stop the engine this backend started, or disconnect from the one it was given."""
        raise NotImplementedError
