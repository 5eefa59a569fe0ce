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

A PySpark driver holds one SparkContext per process: a second backend opened while one is up
uses the running context and, not having started it, leaves it running (as Ray's does).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from backends.base import Backend, MapCall, iter_batches
from backends.chunks import call, run_chunk
from backends.inner import InnerThreads, thread_env
from backends.lifeline import owned_temp_dir, start_reaper, stop_reaper
from backends.memory import descendants
from backends.streaming import stream_map

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
        is found out only this way.
    worker_memory_mb : int
        Memory of each worker JVM of a local cluster.
    inner_threads : int, "auto" or None
        Native pool threads per task (:mod:`backends.inner`): on a local cluster, ``"auto"``
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
        connect_timeout: float = 10.0,
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
            _check_master(address, connect_timeout)
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
            conf = _conf(SparkConf(), master, self.inner_threads, self._temp_dir)
            try:
                with _spark_env(java, self._temp_dir, loopback=address is None), _own_sigint():
                    self._gateway = _gateway(conf, self._temp_dir)
                    if address is None:
                        self._sc = SparkContext(conf=conf, gateway=self._gateway)
                    else:
                        self._sc = _context_within(conf, self._gateway, connect_timeout, address)
            except BaseException:
                gateway, self._gateway = self._gateway, None
                if gateway is not None:
                    _stop_gateway(gateway, graceful=False)
                self._remove_temp()
                raise
            self._owns = True
            try:
                wait = connect_timeout if address is not None else WORKERS_UP_S
                cores = _await_executors(
                    self._sc,
                    self.workers if address is None else 1,
                    wait - (time.perf_counter() - start),
                    address,
                )
                _warm_workers(self._sc, cores)
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
        return info

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
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
                _stop_gateway(gateway, graceful)
            self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        if self._reaper is not None:
            stop_reaper(self._reaper)
        self._temp_dir = self._reaper = None


#: Seconds a local cluster's workers get to register.
WORKERS_UP_S = 120.0


def java_missing() -> str | None:
    """One line naming the Java runtime Spark needs, when there is none; else ``None``."""
    try:
        java_runtime()
    except RuntimeError as exc:
        return str(exc)
    return None


def java_runtime() -> str:
    """The ``java`` Spark will run: ``$JAVA_HOME/bin/java``, else the one on ``PATH``.

    Raises
    ------
    RuntimeError
        When there is none, naming what to install.
    """
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no java on PATH"
        raise RuntimeError(
            f"backend 'spark' needs a Java runtime (17 or 21) and found none ({where}): "
            "install one (apt-get install openjdk-17-jre-headless; conda install openjdk=17) "
            "or set JAVA_HOME"
        )
    return java


class _spark_env:
    """The environment Spark's JVMs start with: ours, with every listener on loopback (a
    local cluster) and the local cluster's workers' folders under ``temp``."""

    def __init__(self, java: str, temp: str, loopback: bool) -> None:
        self._set = {
            "JAVA_HOME": os.path.dirname(os.path.dirname(os.path.realpath(java))),
            "SPARK_WORKER_DIR": os.path.join(temp, "work"),
            "SPARK_LOG_DIR": os.path.join(temp, "logs"),
        }
        if loopback:
            self._set["SPARK_LOCAL_IP"] = "127.0.0.1"
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self._set.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: Any) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _own_sigint() -> Iterator[None]:
    """Give back the application's SIGINT handler, which ``SparkContext`` replaces with one
    of its own (it cancels the jobs, then raises ``KeyboardInterrupt``, as ours does)."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


#: Spark's JVMs log errors only: its default profile prints INFO lines and warnings of its
#: own (native Hadoop library, local hostname) at every start.
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


def _conf(conf: Any, master: str, inner_threads: int | None, temp: str) -> Any:
    log4j = os.path.join(temp, "log4j2.properties")
    with open(log4j, "w") as f:
        f.write(_LOG4J2)
    # The JIT's first tier and the serial collector: the JVMs move Python's bytes, not data
    # of their own, and on 2 cores the full JIT's compile threads took the CPU that start-up
    # and the first jobs needed (start-up 8.2 s → 5.4 s, a job of 10 items 0.23 s → 0.17 s).
    java_options = (
        f"-Dlog4j.configurationFile=file:{log4j} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    )
    conf = (
        conf.setMaster(master)
        .setAppName("smallbig")
        .set("spark.ui.enabled", "false")
        .set("spark.ui.showConsoleProgress", "false")
        .set("spark.driver.host", "127.0.0.1")
        .set("spark.driver.bindAddress", "127.0.0.1")
        .set("spark.local.dir", os.path.join(temp, "local"))
        .set("spark.driver.extraJavaOptions", java_options)
        .set("spark.executor.extraJavaOptions", java_options)
        # Python workers are kept between tasks: caps and imports are paid once per worker.
        .set("spark.python.worker.reuse", "true")
        # The workers run this interpreter, not whatever ``python3`` PATH finds first.
        .set("spark.pyspark.python", sys.executable)
        .set("spark.pyspark.driver.python", sys.executable)
    )
    if inner_threads is not None:
        for key, value in thread_env(inner_threads).items():
            conf = conf.set(f"spark.executorEnv.{key}", value)
    return conf


def _context_within(conf: Any, gateway: Any, timeout: float, address: str) -> Any:
    """A ``SparkContext`` on the master at ``address``, or ``ConnectionError`` naming it
    after ``timeout`` seconds: Spark's own client waits 3 × 20 s for a master that does not
    answer, inside the constructor. It is built on a thread of its own, and the driver's JVM
    killed if it is not done in time."""
    from pyspark import SparkContext

    made: dict[str, Any] = {}

    def make() -> None:
        try:
            made["context"] = SparkContext(conf=conf, gateway=gateway)
        except BaseException as exc:
            made["error"] = exc

    thread = threading.Thread(target=make, name="smallbig-spark-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _stop_gateway(gateway, graceful=False)
        thread.join(10)
        with SparkContext._lock:
            SparkContext._active_spark_context = None
            SparkContext._gateway = SparkContext._jvm = None
        raise ConnectionError(
            f"no Spark master answered at {address} within {timeout:g} s "
            "(something listens there, but not a master that registered this application)"
        )
    if "error" in made:
        raise made["error"]
    return made["context"]


def _gateway(conf: Any, temp: str) -> Any:
    """The driver's JVM, its output to ``temp/driver.log``: Spark 4 prints its log level and
    the JDK's incubator modules on every start, and a local cluster's workers their
    shutdown, where a run's terminal shows only its progress and answer."""
    from pyspark.java_gateway import launch_gateway

    with open(os.path.join(temp, "driver.log"), "ab") as log:  # the JVM keeps its own copy
        return launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})


def _worker_pid(_: Any) -> int:
    time.sleep(0.1)  # long enough that the tasks of one job overlap, one per core
    return os.getpid()


def _warm_workers(sc: Any, cores: int) -> None:
    """Have every executor start its Python workers: Spark forks them as the first tasks
    arrive, and a first job paid ~1 s for it while start-up looked done (as Ray's did). Two
    tasks per core, each long enough that no core runs both of its own before the others
    have started theirs."""
    sc.parallelize(range(2 * cores), 2 * cores).map(_worker_pid).collect()


def _await_executors(sc: Any, want: int, timeout: float, address: str | None) -> int:
    """The cores of the cluster's executors once ``want`` of them have registered (Spark
    reports them as its default parallelism, at least 2); none within ``timeout`` is an
    error naming the master."""
    deadline = time.monotonic() + timeout
    tracker = sc._jsc.sc().statusTracker()
    while True:
        # The driver is listed among the executors: the others are the workers'.
        count = max(0, len(tracker.getExecutorInfos()) - 1)
        if count >= want:
            return want if address is None else max(count, sc.defaultParallelism)
        if time.monotonic() > deadline:
            raise ConnectionError(
                f"no Spark executor registered with the master at {address or sc.master} "
                f"in time ({count} of {want}): is a Spark master with free cores there?"
            )
        time.sleep(0.1)


def _check_master(address: str, timeout: float) -> None:
    """``ValueError`` for an address that is not ``spark://HOST:PORT``, ``ConnectionError``
    naming it when nothing listens there."""
    import socket

    from backends.addresses import split_address

    if not address.startswith("spark://"):
        raise ValueError(f"a Spark master's address looks like spark://HOST:PORT, got {address!r}")
    host, port = split_address(address.removeprefix("spark://"))
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except OSError as exc:
        raise ConnectionError(f"cannot reach Spark master at {address}: {exc}") from exc


def _stop_gateway(gateway: Any, graceful: bool = True) -> None:
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):
        gateway.shutdown()
    if proc is None:
        return
    if not graceful:
        proc.kill()
    # The JVM exits when its stdin closes (PySpark's own lifeline); then make sure.
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


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
    """A chunk of a map, run as :func:`backends.chunks.run_chunk` runs it."""

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


