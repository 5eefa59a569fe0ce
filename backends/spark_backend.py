"""``spark``: Apache Spark — a local cluster of worker JVMs on loopback, or a standalone cluster.

By default smallbig starts Spark's ``local-cluster[N,1,MB]`` master: a master and N worker
JVMs of one core each, separate processes as a standalone cluster's are, every listener on
127.0.0.1 and the web UI off. ``spark@spark://HOST:PORT`` joins a running standalone master
and leaves it running: ``shutdown()`` stops only this backend's application.

How the executor protocol maps onto Spark's jobs::

    submit(fn, *args)  ──> a job of one partition, run from a thread of the driver's pool
                           (a job blocks the thread that collects it; several run at once)
    map(fn, items, chunksize=c)
                       ──> one job: sc.parallelize(chunks, len(chunks)).map(run_chunk)
                           (each chunk a partition, a task of Spark's; "auto": two per worker)
    put(obj)           ──> sc.broadcast(obj): each executor fetches it once
    cancel / shutdown  ──> every job carries a tag of this backend's; cancelled by tag

How the JVMs are started and stopped is :mod:`smallbig.backends.spark_launch`. A PySpark driver
holds
one SparkContext per process: a second backend opened while one is up
uses the running context and, not having started it, leaves it running (as Ray's does).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import shutil
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from smallbig.backends.base import Backend, MapCall, iter_batches
from smallbig.backends.chunks import call, run_chunk
from smallbig.backends.inner import InnerThreads
from smallbig.backends.lifeline import owned_temp_dir, start_reaper, stop_reaper
from smallbig.backends.memory import descendants
from smallbig.backends.spark_launch import (
    WORKERS_UP_S,
    await_executors,
    check_master,
    context_within,
    java_runtime,
    launch_driver,
    own_sigint,
    spark_conf,
    spark_env,
    stop_gateway,
    warm_workers,
)
from smallbig.backends.streaming import stream_map

# PySpark checks pandas' version where it pickles (a broadcast of a NumPy array here) and
# warns once per process that pandas 3 is not yet supported: smallbig hands it no DataFrame.
warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)

#: Memory of each worker JVM of a local cluster (MB): Spark's own default is 1 GB.
WORKER_MEMORY_MB = 1024


class SparkBackend(Backend):
    """Apache Spark backend (PySpark's RDD API).

    Parameters
    ----------
    workers : int, optional
        Worker JVMs (one core each) of the local cluster; defaults to the CPU count. With
        ``address``, ``workers`` reports the cores the cluster's executors hold.
    address : str, optional
        ``spark://HOST:PORT`` of a running standalone master.
    connect_timeout : float
        Seconds from the start (the driver's JVM included) for a cluster by address to give
        this application an executor; then it fails, naming the address. A master answers
        nothing until asked in Spark's own protocol, so a port where something else listens
        is found out only this way. 30 s, as Dask's own connect timeout: a driver's JVM took
        9 s to start on a busy 2-core machine, where 10 s left one second for an executor.
    worker_memory_mb : int
        Memory of each worker JVM of a local cluster.
    inner_threads : int, "auto" or None
        Native pool threads per task (:mod:`smallbig.backends.inner`): on a local cluster,
        ``"auto"``
        caps them at ``cores // workers`` in every Python worker.
    """

    name = "spark"
    distributed = True
    accepts_address = True
    # A broadcast is fetched once by each executor (BitTorrent-like, from the driver or from
    # another executor that has it).
    put_copies = "node"
    auto_partitions_per_worker = 2  # Spark's guide: 2–3 tasks per core
    #: The engine's own path (``sc.parallelize(items, n).map(fn).collect()``) is held against
    #: the adapter's ``map`` at "auto", the same partitions.
    engine_chunksize: int | str = "auto"

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        connect_timeout: float = 30.0,
        worker_memory_mb: int = WORKER_MEMORY_MB,
        inner_threads: InnerThreads = "auto",
    ) -> None:
        super().__init__(workers, inner_threads)
        java = java_runtime()
        from pyspark import SparkConf, SparkContext

        self._tag = f"smallbig-{uuid.uuid4().hex[:12]}"
        self._counter = itertools.count()
        self._cancelled: set[str] = set()
        self._closed_event = threading.Event()
        self._owns = False
        self._gateway: Any = None
        self._temp_dir: str | None = None
        self._reaper: subprocess.Popen | None = None
        before = descendants()
        start = time.perf_counter()
        if address is not None:
            check_master(address, connect_timeout)
        with SparkContext._lock:
            running = SparkContext._active_spark_context
        if running is None:
            if address is None:
                self._cap_inner_threads(self.workers)
                master = f"local-cluster[{self.workers},1,{worker_memory_mb}]"
            else:
                master = address
            # Spark's scratch space, its workers' folders and logs, under a folder of ours that
            # a reaper removes, with every process holding a file there, if we are killed.
            self._temp_dir = owned_temp_dir("smallbig-spark-")
            self._reaper = start_reaper(self._temp_dir)
            conf = spark_conf(SparkConf(), master, self.inner_threads, self._temp_dir)
            if address is not None:
                conf = _emulated_driver(conf, address)
            try:
                with spark_env(java, self._temp_dir, loopback=address is None), own_sigint():
                    self._gateway = launch_driver(conf, self._temp_dir)
                    if address is None:
                        self._sc = SparkContext(conf=conf, gateway=self._gateway)
                    else:
                        self._sc = context_within(conf, self._gateway, connect_timeout, address)
            except BaseException:
                gateway, self._gateway = self._gateway, None
                if gateway is not None:
                    stop_gateway(gateway, graceful=False)
                self._remove_temp()
                raise
            self._owns = True
            try:
                wait = connect_timeout if address is not None else WORKERS_UP_S
                cores = await_executors(
                    self._sc,
                    self.workers if address is None else _expected_executors(address),
                    wait - (time.perf_counter() - start),
                    address,
                )
                warm_workers(self._sc, cores)
            except BaseException:
                # No cluster to say goodbye to: a graceful stop would wait ~50 s on RPCs to a
                # master that never answered.
                self._stop_context(graceful=False)
                raise
            if address is None:
                self._claim_processes(before)
            else:
                self._own_roots = None
                self.workers = cores
        else:
            self._sc = running
            self._own_roots = None
            self.workers = max(1, self._sc.defaultParallelism)
        if self.inner_threads is None and inner_threads not in ("auto", None):
            self._cap_inner_threads(1)
        self.address = address or self._sc.master
        # Jobs block the thread that runs them: enough threads that every worker can be busy
        # with a job of its own, and one queued behind each.
        self._jobs = cf.ThreadPoolExecutor(
            2 * self.workers, thread_name_prefix="smallbig-spark-job"
        )
        self.startup_s = time.perf_counter() - start

    @property
    def context(self) -> Any:
        """The ``pyspark.SparkContext``: Spark's own API, e.g. to compare with it."""
        return self._sc

    # -- the executor protocol -------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        return self._jobs.submit(self._one, fn, args, kwargs)

    def _one(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        # One task's job: its argument as the partition's data, the function in the closure.
        refs = _broadcasts((args, kwargs))
        [outcome] = self._run_job(_OneCall(fn, refs), [(args, kwargs)], 1)
        value, error = outcome
        if error is not None:
            raise error
        return value

    def _map(self, call: MapCall) -> Iterator[Any]:
        fn, iterables, chunksize, buffersize, end = call
        if buffersize is not None:
            return stream_map(self, fn, iterables, chunksize, buffersize, end)
        items = list(zip(*iterables, strict=False))
        fn = self._capped(self._prepare(fn))
        size = _chunk_length(len(items), chunksize, self.workers)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        tag = f"{self._tag}-{next(self._counter)}"
        job = self._jobs.submit(self._run_job, _ChunkCall(fn, _broadcasts(chunks)), chunks,
                                len(chunks), tag)  # fmt: skip
        return iter_batches(_JobBatches(job, self, tag), end)

    def _run_job(
        self, fn: Callable[[Any], Any], data: list[Any], partitions: int, tag: str | None = None
    ) -> list:
        if self._closed_event.is_set():
            raise cf.CancelledError
        # Tags are the JVM thread's (PySpark pins each Python thread to one): this backend's,
        # which shutdown cancels, and the job's own, which a map's iterator cancels.
        tags = [self._tag] if tag is None else [self._tag, tag]
        for t in tags:
            self._sc.addJobTag(t)
        try:
            return self._sc.parallelize(data, max(1, partitions)).map(fn).collect()
        except Exception as exc:
            if self._closed_event.is_set() or (tag is not None and tag in self._cancelled):
                raise cf.CancelledError from exc
            raise
        finally:
            for t in tags:
                self._sc.removeJobTag(t)
            self._cancelled.discard(tag)  # a cancelled map's tag is not needed past its job

    def engine_map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``sc.parallelize(items, n).map(fn).collect()``, ``n`` as ``map(...,
        chunksize="auto")`` would cut them: Spark's own API at the same partitions."""
        items = list(items)
        size = _chunk_length(len(items), "auto", self.workers)
        partitions = max(1, -(-len(items) // size))
        return self._sc.parallelize(items, partitions).map(fn).collect()

    def put(self, obj: Any) -> Any:
        """``sc.broadcast(obj)``; tasks given the handle, even inside a chunk, receive ``obj``."""
        self._check_open()
        return SparkRef(self._sc.broadcast(obj))

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["owns_cluster"] = self._owns
        info["master"] = self._sc.master if self._sc is not None else None
        if self.address.startswith("spark://"):  # an emulated cluster of ours says so
            from smallbig.backends.emulation.emulated import describe

            info["emulated"] = describe(self.address)
        return info

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
            # Queued jobs first: once running jobs are cancelled, their threads would otherwise
            # take the queued ones and end them as failures instead of cancellations.
            self._jobs.shutdown(wait=False, cancel_futures=True)
            self._closed_event.set()
            self._sc.cancelJobsWithTag(self._tag)
        self._jobs.shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._owns:
            self._stop_context()

    def _stop_context(self, graceful: bool = True) -> None:
        """Stop the application, then the driver's JVM that PySpark keeps for the process (it
        would outlive the context, and the local cluster's workers with it); not graceful:
        the JVM is killed and the context forgotten."""
        from pyspark import SparkContext

        try:
            if graceful:
                self._sc.stop()
            else:
                if self._sc._accumulatorServer is not None:
                    self._sc._accumulatorServer.shutdown()
                with SparkContext._lock:
                    SparkContext._active_spark_context = None
        finally:
            gateway, self._gateway = self._gateway, None
            with SparkContext._lock:
                if SparkContext._gateway is gateway:
                    SparkContext._gateway = None
                    SparkContext._jvm = None
            if gateway is not None:
                stop_gateway(gateway, graceful)
            self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        if self._reaper is not None:
            stop_reaper(self._reaper)
        self._temp_dir = self._reaper = None


# -- what travels to the workers --------------------------------------------------------------
class SparkRef:
    """Handle returned by ``SparkBackend.put``: unpickles, inside a task, as the object itself.

    The broadcast travels with the job's function (where PySpark registers the broadcasts a
    job uses); the handle in the data is its id only.
    """

    __slots__ = ("bid", "broadcast")

    def __init__(self, broadcast: Any) -> None:
        self.broadcast = broadcast
        self.bid: int = broadcast._jbroadcast.id()

    def __reduce__(self) -> tuple:
        return (_broadcast_value, (self.bid,))


def _broadcast_value(bid: int) -> Any:
    try:
        from pyspark.core.broadcast import _from_id  # PySpark 4
    except ImportError:  # pragma: no cover - PySpark 3
        from pyspark.broadcast import _from_id
    return _from_id(bid).value


def _broadcasts(data: Any) -> tuple:
    """The broadcasts behind the :class:`SparkRef` handles among ``data``'s arguments."""
    found: dict[int, Any] = {}

    def visit(value: Any) -> None:
        if isinstance(value, SparkRef):
            found[value.bid] = value.broadcast
        elif isinstance(value, list | tuple):
            for inner in value:
                visit(inner)
        elif isinstance(value, dict):
            for inner in value.values():
                visit(inner)

    visit(data)
    return tuple(found.values())


class _OneCall:
    """A submitted call, run on a partition's one ``(args, kwargs)``; never raises, so that
    the task's own exception comes back with its type (Spark would wrap it)."""

    def __init__(self, fn: Callable[..., Any], refs: tuple) -> None:
        self.fn, self.refs = fn, refs

    def __call__(self, item: tuple[tuple, dict]) -> tuple[Any, BaseException | None]:
        args, kwargs = item
        try:
            return call(self.fn, args, kwargs), None
        except Exception as exc:
            return None, exc


class _ChunkCall:
    """A chunk of a map, run as :func:`smallbig.backends.chunks.run_chunk` runs it."""

    def __init__(self, fn: Callable[..., Any], refs: tuple) -> None:
        self.fn, self.refs = fn, refs

    def __call__(self, chunk: list[tuple]) -> Any:
        return run_chunk(self.fn, chunk)


def _chunk_length(n: int, chunksize: int | str, workers: int) -> int:
    if chunksize != "auto":
        return int(chunksize)
    partitions = SparkBackend.auto_partitions_per_worker * workers
    return max(1, -(-n // partitions))


class _JobBatches:
    """The chunks of one job, handed to ``iter_batches`` one by one once the job is back."""

    def __init__(self, job: cf.Future, backend: SparkBackend, tag: str) -> None:
        self._job, self._backend, self._tag = job, backend, tag
        self._results: Iterator[Any] | None = None

    def next(self, end: float | None) -> cf.Future | None:
        if self._results is None:
            remaining = None if end is None else max(0.0, end - time.monotonic())
            try:
                self._results = iter(self._job.result(remaining))
            except cf.TimeoutError:
                raise TimeoutError from None
        outcome = next(self._results, None)
        if outcome is None:
            return None
        done: cf.Future = cf.Future()
        done.set_result(outcome)
        return done

    def close(self) -> None:
        if not self._job.done() and not self._job.cancel():
            # Running: Spark's job is cancelled by its tag, and its thread freed.
            self._backend._cancelled.add(self._tag)
            self._backend._sc.cancelJobsWithTag(self._tag)


def _emulated_driver(conf: Any, address: str) -> Any:
    """``conf`` with the driver reachable from an emulated cluster of ours at ``address``:
    its executors run in namespaces of their own and reach this process by its link's
    address, not by loopback. Any other address: ``conf`` as it is."""
    from smallbig.backends.emulation.emulated import spark_driver_host

    host = spark_driver_host(address)
    if host is None:
        return conf
    return conf.set("spark.driver.host", host).set("spark.driver.bindAddress", host)


def _expected_executors(address: str) -> int:
    """Executors to wait for on the master at ``address``: every node's of an emulated
    cluster of ours (its note says how many), else the first. A master hands an application
    its workers' executors as they register, and a backend that began with the first of 4
    ran its maps on 2 workers' worth."""
    from smallbig.backends.emulation.emulated import describe

    facts = describe(address) or {}
    return max(1, int(facts.get("nodes", 1)) * int(facts.get("workers_per_node", 1)))
