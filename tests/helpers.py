"""What tests share: real engines started as a user would (a Dask scheduler, a Ray head, a
Spark master, each on 127.0.0.1 and stopped afterwards), timing helpers whose margins are
ratios, and whether this machine allows network namespaces. Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import psutil

# README's two commands, as CI runs them. The suite runs three tests at a time, then the tests
# marked ``alone`` (their figures are times, CPU shares or link rates) with the machine to
# themselves.
RUN_COMMAND = 'pip install -e ".[all]" && smallbig run'
TEST_COMMAND = 'pip install -e ".[all,test]" && pytest -n 3 -m "not alone" && pytest -m alone'


# Interpreter-wide helpers that multiprocessing starts once and keeps by design; they are not
# a test's leak. Everything else a test starts must be gone when it ends.
ALLOWED_PROCESSES = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    # loky's twin of multiprocessing's tracker (joblib's memory-mapped files among what it
    # tracks): one per interpreter, ending with it.
    "loky.backend.resource_tracker",
)


def allowed_process(proc: psutil.Process) -> bool:
    """Whether ``proc`` may outlive the test that started it: one of
    :data:`ALLOWED_PROCESSES`, a zombie, or gone."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return True  # gone meanwhile
    return any(marker in cmdline for marker in ALLOWED_PROCESSES)


class SubmitCounter:
    """Counts the tasks a backend submits: installs itself as ``ex._submit``."""

    def __init__(self, ex) -> None:
        self.calls, self._submit = 0, ex._submit
        ex._submit = self

    def __call__(self, *args):
        self.calls += 1
        return self._submit(*args)


def namespaces_refused() -> str | None:
    """Why network namespaces cannot be made here (``None``: they can)."""
    if sys.platform != "linux":
        return "Linux namespaces only"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for network namespaces"
    probe = f"sbprobe{os.getpid()}"
    out = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if out.returncode != 0:
        return f"network namespaces refused here: {out.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop exactly the processes we started, with everything they started, and reap them."""
    family: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(proc.pid)
            family += [parent, *parent.children(recursive=True)]
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    for proc in procs:
        proc.wait(timeout=5)


@contextlib.contextmanager
def dask_cluster(n_workers: int = 2) -> Iterator[str]:
    """A real ``dask scheduler`` on 127.0.0.1 with ``dask worker`` processes; yields its address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = os.path.dirname(sys.executable)
    dask = shutil.which("dask", path=bin_dir) or shutil.which("dask")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            **quiet,
        )
    ]
    try:
        _wait_for_port(port, 60, procs)
        for _ in range(n_workers):
            procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                    ],
                    **quiet,
                )
            )
        from distributed import Client

        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address
    finally:
        _stop(procs)


@contextlib.contextmanager
def ray_cluster(num_cpus: int = 2) -> Iterator[str]:
    """A real ``ray start --head`` on a free port; yields ``HOST:PORT`` and stops only it."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayx-")
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    procs = [
        subprocess.Popen(
            [
                ray,
                "start",
                "--head",
                "--block",
                f"--port={port}",
                f"--num-cpus={num_cpus}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                f"--temp-dir={temp_dir}",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _wait_for_port(port, 90, procs)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(procs)
        shutil.rmtree(temp_dir, ignore_errors=True)


def warm_map_s(ex, fn, items, warm_up, best_of: int | None = None) -> float:
    """Median seconds of three ``map(fn, items, chunksize="auto")`` on the open backend
    ``ex``, after one map of ``warm_up`` (its workers' imports, caches and buffers); with
    ``best_of``, the least of that many maps."""
    list(ex.map(fn, warm_up, chunksize="auto"))
    times = []
    for _ in range(best_of or 3):
        start = time.perf_counter()
        list(ex.map(fn, items, chunksize="auto"))
        times.append(time.perf_counter() - start)
    return min(times) if best_of else sorted(times)[1]



def ratio_on_some_try(what: str, ratio, low: float, high: float, tries: int) -> list[float]:
    """Call ``ratio()`` (a fresh measurement each time) until it lies in ``[low, high]``, at
    most ``tries`` times; raise ``AssertionError`` with ``what`` and every ratio if none did.

    For predicted-against-measured checks on a shared machine: a neighbour's burst in one
    try does not pass for an error, while a model off by more than the bounds misses every
    try."""
    ratios = []
    for _ in range(tries):
        ratios.append(ratio())
        if low <= ratios[-1] <= high:
            return ratios
    raise AssertionError((what, ratios))


@contextlib.contextmanager
def spark_cluster(cores: int = 2) -> Iterator[str]:
    """A real Spark standalone master and one worker of ``cores`` cores on 127.0.0.1 (web UIs
    on free loopback ports); yields ``spark://127.0.0.1:PORT`` and stops only them."""
    import pyspark

    home = os.path.dirname(pyspark.__file__)
    spark_class = os.path.join(home, "bin", "spark-class")
    port = free_port()
    address = f"spark://127.0.0.1:{port}"
    work = tempfile.mkdtemp(prefix="sparkx-")
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": work, "SPARK_LOG_DIR": work}  # fmt: skip
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    master = "org.apache.spark.deploy.master.Master"
    worker = "org.apache.spark.deploy.worker.Worker"
    master_args = ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())]
    procs = [subprocess.Popen([spark_class, master, *master_args], **quiet)]
    try:
        _wait_for_port(port, 90, procs)
        worker_args = [address, "--host", "127.0.0.1", "--cores", str(cores), "--memory", "1g",
                       "--webui-port", str(free_port()), "--work-dir", work]  # fmt: skip
        procs.append(subprocess.Popen([spark_class, worker, *worker_args], **quiet))
        yield address
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)


# An interpreter with NumPy loaded holds ~30 MB; a run's own process (pandas, rich) more.
INTERPRETER_RSS = 30e6


def check_memory_recorded(out_dir, floor: float = INTERPRETER_RSS) -> set[str]:
    """Assert that a run's records and calibration in ``out_dir`` carry memory for every
    backend it measured: bytes shipped, a peak no lower than ``floor`` (what the run's own
    process holds) plus the workers' memory at rest, a worker at least an interpreter.
    Returns the backends checked."""
    import json

    import pandas as pd

    records = pd.read_csv(f"{out_dir}/records.csv")
    with open(f"{out_dir}/calibration.json") as f:
        profile = json.load(f)["backends"]
    for backend, rows in records.groupby("backend"):
        cal = profile[backend]
        assert (rows["bytes_out"] > 0).all(), (backend, rows["bytes_out"])
        low = floor + (0.8 * cal["idle_rss_bytes"] if not cal["in_process"] else 0)
        assert (rows["peak_rss_bytes"] > low).all(), (backend, rows["peak_rss_bytes"], low)
        if cal["in_process"]:
            assert cal["idle_rss_bytes"] == 0 and cal["worker_rss_bytes"] == 0
        elif cal["worker_rss_bytes"] is not None:  # None: an engine that reports nothing
            assert cal["worker_rss_bytes"] > 10e6, (backend, cal)
    return set(records["backend"])


def calibration_row(workers, startup, auto, in_process, distributed=False, alpha=0.0, beta=1e9):
    """One backend's calibration as the cost model reads it, with only the terms a test sets."""
    return {
        "workers": workers,
        "startup_s": startup,
        "auto_overhead_s": auto,
        "task_overhead_s": auto * 100,
        "in_process": in_process,
        "distributed": distributed,
        "alpha_value_s": alpha,
        "beta_value_Bps": beta,
    }
