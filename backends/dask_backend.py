"""``dask``: Dask distributed — a LocalCluster on loopback by default, or an existing scheduler.

Every LocalCluster port, the dashboard's included, listens on 127.0.0.1 only (LocalCluster's
default dashboard listens on 0.0.0.0:8787). A cluster given by address is never shut down:
``shutdown()`` closes only this backend's client.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from smallbig.backends.addresses import check_dask_scheduler
from smallbig.backends.chunks import Batch, call
from smallbig.backends.cluster import ClusterBackend
from smallbig.backends.futures import (
    SettlerThread,
    linked_future,
    notify_cancelled,
    reject,
    resolve,
    settle,
)
from smallbig.backends.inner import InnerThreads, own_thread_env, thread_env
from smallbig.backends.memory import descendants


class DaskBackend(ClusterBackend):
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
    inner_threads : int, "auto" or None
        Native pool threads per task (:mod:`smallbig.backends.inner`). Dask's nanny already sets
        ``OMP``/``MKL``/``OPENBLAS_NUM_THREADS`` to 1 in its workers
        (``distributed.nanny.pre-spawn-environ``). On a LocalCluster, ``"auto"`` caps every
        pool at ``cores // workers`` (the nanny's 1 when workers = cores); on a cluster given
        by address, ``"auto"`` leaves the cluster's own settings, and a number caps them.
    """

    name = "dask"
    # A task's arguments travel inside the task: driver → scheduler → worker. Measured on an
    # emulated cluster at 100 Mbit/s: 10 MiB as an argument 1.77 s, scattered direct 0.90 s.
    argument_links = 2
    # Measured there: a 1 MB scatter 0.18 s (two links); the tasks given it, on 2 and 4
    # workers, added 0.06 and 0.12 s, a copy between workers as one holder serves the next.
    put_copies = "worker"
    # On 16 workers a map of 16 no-ops took 96 ms; 4,000 waits of 2 ms took 0.77 s at "auto"
    # against 0.62 s in one batch per worker.
    serial_dispatch_rounds = 2

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        dashboard: bool = False,
        connect_timeout: float = 15.0,
        hash_put: bool = False,
        inner_threads: InnerThreads = "auto",
    ) -> None:
        from distributed import Client, LocalCluster

        super().__init__(workers, inner_threads)
        self._hash_put = hash_put
        self._cluster = None
        before = descendants()
        start = time.perf_counter()
        if address is not None:
            self._own_roots = None
            check_dask_scheduler(address, connect_timeout)
            try:
                self._client = Client(address, timeout=connect_timeout, set_as_default=False)
            except OSError as exc:
                raise ConnectionError(
                    f"cannot connect to Dask scheduler at {address}: {exc}"
                ) from exc
            threads = self._client.nthreads()
            self.workers = sum(threads.values()) or self.workers
            self.inner_threads_by = f"the cluster's own ({_nanny_environ()})"
            if inner_threads != "auto":
                # A number: one task per worker thread, so the cap is per task as asked.
                self._cap_inner_threads(1)
        else:
            # The nanny spawns each worker with this process's sys.path (shipping).
            self.workers_share_driver_path = True
            self._cap_inner_threads(self.workers)
            if self.inner_threads is None:
                self.inner_threads_by = f"Dask's nanny ({_nanny_environ()})"
            with own_thread_env():
                self._cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    scheduler_port=0,
                    dashboard_address="127.0.0.1:0" if dashboard else None,
                    # The scheduler serves HTTP (health, metrics) even with no dashboard, on
                    # port 8787 unless told: a free loopback port instead.
                    scheduler_kwargs={} if dashboard else {"dashboard_address": "127.0.0.1:0"},
                    worker_dashboard_address=None,
                    # Each worker runs this module's dask_setup: quiet on Ctrl-C.
                    preload=["smallbig.backends.dask_backend"],
                    # Task errors are results here (a corrupt image is data), not log noise.
                    silence_logs=logging.CRITICAL,
                    # Set before each worker starts, for the libraries it loads; the ones loaded
                    # already are capped around the tasks (smallbig.backends.inner).
                    env={} if self.inner_threads is None else thread_env(self.inner_threads),
                    worker_class=_nanny_class(),
                )
            try:
                self._client = Client(self._cluster, set_as_default=False)
            except BaseException:
                self._cluster.close()
                raise
            self._claim_processes(before)
        self._settler = _Settler(self._client, self.workers)
        self.address = self._client.scheduler.address
        self.dashboard_link = self._client.dashboard_link if dashboard else None
        self.startup_s = time.perf_counter() - start

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` this backend submits through: Dask's own API, e.g. to
        compare with it (``smallbig bench overhead``)."""
        return self._client

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        if kwargs:
            # kwargs travel inside the task's arguments so that they can never collide with
            # Client.submit's own keywords (key=, workers=, retries=, ...).
            task = self._client.submit(call, fn, args, kwargs, pure=False)
        else:
            task = self._client.submit(fn, *args, pure=False)
        return self._track(task, linked_future(task.cancel))

    def engine_map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        client = self._client
        return client.gather([client.submit(fn, item, pure=False) for item in items])

    def _pack(self, chunk: list[tuple]) -> Any:
        from distributed import Future

        # Only a chunk holding put() handles needs Dask to look inside it.
        if any(isinstance(arg, Future) for args in chunk for arg in args):
            return chunk
        return Batch(chunk)

    def put(self, obj: Any) -> Any:
        """``scatter`` ``obj`` to one worker; tasks given the handle receive ``obj``."""
        self._check_open()
        return self._client.scatter(obj, hash=self._hash_put)

    def _engine_memory(self) -> int | None:
        # Each worker's RSS as of its last heartbeat (~1 s old at most).
        workers = self._client.scheduler_info()["workers"].values()
        found = [w["metrics"]["memory"] for w in workers if "memory" in w.get("metrics", {})]
        return sum(found) if found else None

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["owns_cluster"] = self._cluster is not None
        info["dashboard"] = self.dashboard_link
        if self._cluster is None:
            from smallbig.backends.emulation.emulated import describe

            # An emulated cluster of ours (nodes behind shaped links on this machine): say so.
            info["emulated"] = describe(self.address)
        return info

    def _release(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


# Finished tasks are fetched together, one Client.gather per FLUSH_S at most: each gather costs
# the client's event loop (which the in-process scheduler shares) a few ms; at 20 ms apart they
# cost 22% over the native gather of 2,000 no-op tasks, at 100 ms 7%. No result waits for it
# when few tasks are in flight (the end of a map, "auto"'s pipeline of two batches per worker,
# a lone task after a quiet spell).
FLUSH_S = 0.1
# The watched tasks are polled oldest first, this many at a time: Dask runs independent tasks
# in submission order, so the ones that can have finished are among the oldest.
WINDOW = 256
POLL_S = (0.0002, 0.002)  # first and longest sleep between polls while tasks are in flight
RESULT_TIMEOUT_S = 300.0
_DONE = frozenset({"finished", "error", "cancelled"})  # "lost" is recomputed: still pending


class _Settler(SettlerThread):
    """Moves Dask outcomes into our futures, with Dask's public API only.

    One thread reads ``Future.status`` of the watched tasks and fetches the finished ones'
    results with one ``Client.gather`` per batch. Waiting on the event loop instead
    (``distributed.as_completed``, a coroutine per task) cost ~8% over the native gather of
    2,000 no-op tasks: the loop is the in-process scheduler's too.
    """

    def __init__(self, client: Any, workers: int) -> None:
        self._client = client
        self._window_size = max(WINDOW, 4 * workers)
        self._shallow = 2 * workers
        super().__init__("smallbig-dask-settler")

    def watch(self, task: Any, future: cf.Future) -> None:
        """Called from any thread: settle ``future`` with ``task``'s outcome."""
        with self._lock:
            self._incoming.append((task, future))
            if len(self._incoming) > 1:
                return  # the thread is awake already
        self._wake.set()

    def _run(self) -> None:
        backlog: collections.deque[tuple[Any, cf.Future]] = collections.deque()
        window: list[tuple[Any, cf.Future]] = []  # the oldest watched, polled each round
        done: list[tuple[Any, cf.Future]] = []
        sleep, last_flush = POLL_S[0], float("-inf")
        while not self._closed:
            self._wake.clear()
            with self._lock:
                backlog.extend(self._incoming)
                self._incoming = []
            while len(window) < self._window_size and backlog:
                window.append(backlog.popleft())
            if not window and not done:
                self._wake.wait()
                continue
            # In a function, so that no local of this loop holds a settled future (and with it
            # its result) while the thread sleeps: a map's consumer frees each result it has.
            window = _split_done(window, done)
            now = time.monotonic()
            # Few tasks in flight (two per worker: what "auto" keeps, a map's last tasks): a
            # result held back is a worker waiting for its next batch, so no waiting then.
            shallow = len(window) + len(backlog) <= self._shallow
            if done and (shallow or now >= last_flush + FLUSH_S):
                last_flush = now
                try:
                    self._settle(done)
                except Exception:
                    if self._closed:  # the client went away under us
                        return
                    raise
                done, sleep = [], POLL_S[0]
                continue
            self._wake.wait(sleep)  # a new task wakes it early
            sleep = min(2 * sleep, POLL_S[1])

    def _settle(self, batch: list[tuple[Any, cf.Future]]) -> None:
        finished = [(t, f) for t, f in batch if t.status == "finished"]
        if finished:
            try:
                values = self._client.gather([t for t, _ in finished], direct=True)
            except Exception as exc:  # e.g. the worker holding the results died meanwhile
                for _, future in finished:
                    reject(future, exc)
            else:
                for (_, future), value in zip(finished, values, strict=True):
                    resolve(future, value)
        for task, future in batch:
            if task.status == "cancelled":
                if future.cancel():  # wakes wait()/as_completed() on it, once
                    notify_cancelled(future)
            elif task.status != "finished":
                # Raises the task's exception with its traceback; lost data is recomputed first.
                settle(future, lambda task=task: task.result(timeout=RESULT_TIMEOUT_S))


def _split_done(window: list[tuple[Any, cf.Future]], done: list) -> list[tuple[Any, cf.Future]]:
    """Move the pairs of ``window`` whose task has ended to ``done``; return the others."""
    running = []
    for pair in window:
        (done if pair[0].status in _DONE else running).append(pair)
    return running


def dask_setup(worker: Any) -> None:
    """Run by Dask in each worker of a LocalCluster this backend starts (``preload``).

    Ctrl-C in a terminal reaches every process of the group: the client stops the cluster
    and says so in one line; a worker ignores it, instead of printing two tracebacks and
    dying under tasks its nanny would then restart and the client wait for.
    """
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@functools.cache
def _nanny_class() -> type:
    """Dask's Nanny, giving the caller's thread variables back after each worker it spawns.

    A LocalCluster's nannies run in this process and set Dask's pre-spawn caps
    (``OMP_NUM_THREADS=1``...) in its environment before every spawn, a restart after a
    worker died included: the restart left them set for good, and every uncapped pool
    started afterwards ran its BLAS on one thread (a CI's suite read 1 where the driver's
    libraries read 2).
    """
    from distributed import Nanny

    class OwnEnvNanny(Nanny):
        async def instantiate(self) -> Any:
            with own_thread_env():
                return await super().instantiate()

    return OwnEnvNanny


def _nanny_environ() -> str:
    import dask

    env = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    caps = {k: v for k, v in env.items() if k.endswith("_NUM_THREADS")}
    return ", ".join(f"{k}={v}" for k, v in sorted(caps.items())) or "no thread caps"
