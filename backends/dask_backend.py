"""``dask``: Dask distributed — a LocalCluster on loopback by default, or an existing scheduler.

Every LocalCluster port, the dashboard's included, listens on 127.0.0.1 only (LocalCluster's
default dashboard listens on 0.0.0.0:8787). A cluster given by address is never shut down:
``shutdown()`` closes only this backend's client.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable
from typing import Any

from backends.base import Backend
from backends.futures import PendingSet, check_reachable, linked_future, settle


class DaskBackend(Backend):
    """Dask ``distributed`` backend.

    Parameters
    ----------
    workers : int, optional
        Worker processes (one thread each) of the LocalCluster; defaults to the CPU count.
        Ignored with ``address``: there, ``workers`` reports the cluster's total threads.
    address : str, optional
        Scheduler address (``tcp://host:port``) of an existing cluster.
    dashboard : bool
        Serve the LocalCluster dashboard on a free 127.0.0.1 port (off by default).
    connect_timeout : float
        Seconds to wait for an existing scheduler before failing.
    hash_put : bool
        Let ``put`` (``scatter``) hash the data to deduplicate it; off by default because
        hashing costs more than it saves for the one-off arrays a benchmark ships.
    """

    name = "dask"
    engine = "distributed"
    extra = "dask"
    distributed = True
    accepts_address = True

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        dashboard: bool = False,
        connect_timeout: float = 15.0,
        hash_put: bool = False,
    ) -> None:
        from distributed import Client, LocalCluster

        super().__init__(workers)
        self._hash_put = hash_put
        self._pending = PendingSet()
        self._cluster = None
        start = time.perf_counter()
        if address is not None:
            check_reachable(address, connect_timeout)
            try:
                self._client = Client(address, timeout=connect_timeout, set_as_default=False)
            except OSError as exc:
                raise ConnectionError(
                    f"cannot connect to Dask scheduler at {address}: {exc}"
                ) from exc
            threads = self._client.nthreads()
            self.workers = sum(threads.values()) or self.workers
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                scheduler_port=0,
                dashboard_address="127.0.0.1:0" if dashboard else None,
                worker_dashboard_address=None,
                # Task errors are results here (a corrupt image is data), not log noise.
                silence_logs=logging.CRITICAL,
                # One thread per worker process: numba must not spread over every core in each.
                env={"NUMBA_NUM_THREADS": "1"},
            )
            try:
                self._client = Client(self._cluster, set_as_default=False)
            except BaseException:
                self._cluster.close()
                raise
        self.address = self._client.scheduler.address
        self.dashboard_link = self._client.dashboard_link if dashboard else None
        self.startup_s = time.perf_counter() - start

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        # kwargs travel inside the task's arguments so that they can never collide with
        # Client.submit's own keywords (key=, workers=, retries=, ...).
        task = self._client.submit(_call, fn, args, kwargs, pure=False)
        holder = [task]  # dropped once settled so the result can leave cluster memory

        def cancel_task() -> None:
            if holder:
                holder[0].cancel()

        future = linked_future(cancel_task)

        def on_done(done_task: Any) -> None:
            settle(future, done_task.result)
            holder.clear()

        task.add_done_callback(on_done)
        self._pending.add(future)
        return future

    def put(self, obj: Any) -> Any:
        """``scatter`` ``obj`` to one worker; tasks given the handle receive ``obj``."""
        self._check_open()
        return self._client.scatter(obj, hash=self._hash_put)

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["owns_cluster"] = self._cluster is not None
        info["dashboard"] = self.dashboard_link
        return info

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        try:
            self._pending.cancel_and_wait(cancel_futures, wait)
        finally:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)
