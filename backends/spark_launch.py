"""How smallbig starts Spark for the ``spark`` backend: the Java runtime, the driver's JVM and
its configuration (every listener on loopback, logs and scratch in a folder of ours), the wait
for a cluster's executors, and stopping it all again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from smallbig.backends.inner import kept_env, thread_env

#: Seconds a local cluster's workers get to register.
WORKERS_UP_S = 120.0


def java_missing() -> str | None:
    """One line naming the Java runtime Spark needs, when there is none; else ``None``."""
    try:
        java_runtime()
    except RuntimeError as exc:
        return str(exc)
    return None


def spark_class() -> list[str]:
    """The command that runs a class of Spark's (its ``spark-class`` script, from the PySpark
    that is installed): how a standalone master or worker is started."""
    import pyspark

    return [os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")]


def daemon_env(folder: str, dilation: float = 1.0) -> dict[str, str]:
    """The environment of a standalone master's or worker's JVM: our Java, its logs and
    workers' folders under ``folder``, in the foreground (a process of ours to stop), on
    the JIT's first tier and the serial collector as the driver's is; on a scale model's node
    held to a fraction of a core, its heartbeat and timeouts stretched as its CPU is."""
    java = java_runtime()
    options = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    if dilation > 1:
        # Workers beat every 15 s and are dropped after 60 s by default: time enough, but the
        # master's and worker's own RPC timeouts (120 s) are stretched with the CPU.
        options += f" -Dspark.network.timeout={120 * dilation:.0f}s"
    return {
        **os.environ,
        "JAVA_HOME": os.path.dirname(os.path.dirname(os.path.realpath(java))),
        "SPARK_LOG_DIR": os.path.join(folder, "logs"),
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_DAEMON_JAVA_OPTS": options,
        "SPARK_DAEMON_MEMORY": "512m",
    }


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


@contextlib.contextmanager
def spark_env(java: str, temp: str, loopback: bool) -> Iterator[None]:
    """The environment Spark's JVMs start with: ours, with every listener on loopback (a
    local cluster) and the local cluster's workers' folders under ``temp``; ours again after."""
    values = {
        "JAVA_HOME": os.path.dirname(os.path.dirname(os.path.realpath(java))),
        "SPARK_WORKER_DIR": os.path.join(temp, "work"),
        "SPARK_LOG_DIR": os.path.join(temp, "logs"),
    }
    if loopback:
        values["SPARK_LOCAL_IP"] = "127.0.0.1"
    with kept_env(values):
        os.environ.update(values)
        yield


@contextlib.contextmanager
def own_sigint() -> Iterator[None]:
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


def spark_conf(conf: Any, master: str, inner_threads: int | None, temp: str) -> Any:
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


def context_within(conf: Any, gateway: Any, timeout: float, address: str) -> Any:
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
        stop_gateway(gateway, graceful=False)
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


def launch_driver(conf: Any, temp: str) -> Any:
    """The driver's JVM, its output to ``temp/driver.log``: Spark 4 prints its log level and
    the JDK's incubator modules on every start, and a local cluster's workers their
    shutdown, where a run's terminal shows only its progress and answer."""
    from pyspark.java_gateway import launch_gateway

    with open(os.path.join(temp, "driver.log"), "ab") as log:  # the JVM keeps its own copy
        return launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})


def _worker_pid(_: Any) -> int:
    time.sleep(0.1)  # long enough that the tasks of one job overlap, one per core
    return os.getpid()


def warm_workers(sc: Any, cores: int) -> None:
    """Have every executor start its Python workers: Spark forks them as the first tasks
    arrive, and a first job paid ~1 s for it while start-up looked done (as Ray's did). Two
    tasks per core, each long enough that no core runs both of its own before the others
    have started theirs."""
    sc.parallelize(range(2 * cores), 2 * cores).map(_worker_pid).collect()


def await_executors(sc: Any, want: int, timeout: float, address: str | None) -> int:
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


def check_master(address: str, timeout: float) -> None:
    """``ValueError`` for an address that is not ``spark://HOST:PORT``, ``ConnectionError``
    naming it when nothing listens there."""
    import socket

    from smallbig.backends.addresses import split_address

    if not address.startswith("spark://"):
        raise ValueError(f"a Spark master's address looks like spark://HOST:PORT, got {address!r}")
    host, port = split_address(address.removeprefix("spark://"))
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except OSError as exc:
        raise ConnectionError(f"cannot reach Spark master at {address}: {exc}") from exc


def stop_gateway(gateway: Any, graceful: bool = True) -> None:
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
