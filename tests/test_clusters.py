"""Dask, Ray and Spark beyond the protocol: loopback, addresses, teardown, killed workers."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
from helpers import allowed_process

from smallbig.backends import available, get_backend
from smallbig.workloads import probes

needs_dask = pytest.mark.skipif("dask" not in available(), reason="pip install 'smallbig[dask]'")
needs_ray = pytest.mark.skipif("ray" not in available(), reason="pip install 'smallbig[ray]'")
needs_spark = pytest.mark.skipif(
    "spark" not in available(), reason="pip install 'smallbig[spark]'"
)
pytestmark = pytest.mark.slow


def _listening(pids: set[int]) -> list[str]:
    return [
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


@needs_dask
@pytest.mark.parametrize("dashboard", [False, True])
def test_dask_local_cluster_listens_on_loopback_only(dashboard):
    me = psutil.Process()
    with get_backend("dask", workers=2, dashboard=dashboard) as ex:
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        ips = _listening(pids)
        assert ips, "the cluster should listen somewhere"
        assert all(ipaddress.ip_address(ip).is_loopback for ip in ips), ips
        assert ex.address.startswith("tcp://127.0.0.1:")
        if dashboard:
            assert ex.info()["dashboard"].startswith("http://127.0.0.1:")
        else:
            assert ex.info()["dashboard"] is None
            # The scheduler's HTTP server (health, metrics) cannot be turned off: it must not
            # take the well-known dashboard port when the dashboard is off.
            ports = [
                c.laddr.port
                for c in psutil.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.pid in pids
            ]
            assert 8787 not in ports, ports


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("dask@tcp://127.0.0.1:1", marks=needs_dask),
        pytest.param("ray@127.0.0.1:1", marks=needs_ray),
        pytest.param("spark@spark://127.0.0.1:1", marks=needs_spark),
    ],
)
def test_unreachable_address_fails_fast_naming_it(spec):
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1\b"):
        get_backend(spec)
    # The promise (README): a wrong address fails within 15 s. The engines' own clients
    # waited 61 s (Dask) and over 85 s (Ray).
    assert time.monotonic() - start < 15


@contextlib.contextmanager
def _fake_server(kind: str):
    """A server on 127.0.0.1 that is not a cluster: silent, garbage or plain HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    held = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            if kind == "garbage":
                # Random bytes whose fourth is HTTP/2's SETTINGS type: a probe that read that
                # byte alone took them for a Ray head (once in 256 runs), and Ray's client
                # then hung for minutes.
                garbage = bytearray(os.urandom(4096))
                garbage[3] = 4
                conn.sendall(bytes(garbage))
            elif kind == "http":
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.parametrize("kind", ["silent", "garbage", "http"])
@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("dask", marks=needs_dask),
        pytest.param("ray", marks=needs_ray),
        pytest.param("spark", marks=needs_spark),
    ],
)
def test_an_open_port_that_is_not_a_cluster_fails_within_15_s(engine, kind):
    options = {}
    with _fake_server(kind) as address:
        if engine == "spark":
            address = f"spark://{address}"
            # Spark's client speaks first and a port that is not a master is found out only
            # when no answer comes: a whole wait of 10 s on the silent port, a shorter one on
            # the others (the same wait, 24 s of the suite's time less).
            options = {"connect_timeout": 10.0 if kind == "silent" else 3.0}
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=re.escape(address)):
            get_backend(f"{engine}@{address}", **options)
        assert time.monotonic() - start < 15  # the promise, as above


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("dask", marks=needs_dask),
        pytest.param("ray", marks=needs_ray),
        pytest.param("spark", marks=needs_spark),
    ],
)
def test_error_in_with_block_tears_the_cluster_down(name):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(ZeroDivisionError), get_backend(name, workers=2) as ex:
        # Not multiprocessing's resource tracker, which the first spawned worker of this
        # interpreter starts and which lives as long as it does (helpers.ALLOWED_PROCESSES).
        started = [
            p for p in me.children(recursive=True) if p.pid not in before and not allowed_process(p)
        ]
        assert started, "a local cluster runs in processes of its own"
        assert ex.info()["startup_s"] > 0
        ex.submit(probes.sleep, 5.0)
        1 / 0  # noqa: B018 - the error under test
    deadline = time.monotonic() + 15
    alive = [p for p in started if p.is_running() and not allowed_process(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if p.is_running() and not allowed_process(p)]
    assert not alive, [p.pid for p in alive]
    if name == "ray":
        import ray

        assert not ray.is_initialized()
    if name == "spark":
        from pyspark import SparkContext

        assert SparkContext._active_spark_context is None and SparkContext._gateway is None


@needs_dask
def test_external_dask_cluster_survives_backend_shutdown(dask_address):
    from distributed import Client

    with get_backend(f"dask@{dask_address}") as ex:
        assert ex.workers == 2 and not ex.info()["owns_cluster"]
        assert ex.submit(pow, 2, 5).result(timeout=60) == 32
        # Memory of workers on "another machine": what the scheduler reports of them.
        assert not ex.memory_is_local
        assert 50e6 < ex.footprint()["backend"] < 5e9
    with Client(dask_address, timeout=30, set_as_default=False) as client:
        assert client.submit(pow, 3, 3).result(timeout=60) == 27
        assert len(client.scheduler_info()["workers"]) == 2


@needs_ray
def test_external_ray_cluster_survives_backend_shutdown(ray_address):
    with get_backend(f"ray@{ray_address}") as ex:
        assert ex.info()["owns_runtime"]  # it connected the driver, so it disconnects it
        assert ex.submit(pow, 2, 5).result(timeout=60) == 32
        # Ray reports no memory figure without its dashboard: unknown, never a guess.
        assert ex.footprint()["backend"] is None and ex.memory_reader()() is None
    with get_backend(f"ray@{ray_address}") as again:
        assert again.submit(pow, 3, 3).result(timeout=60) == 27


@needs_spark
def test_external_spark_cluster_survives_backend_shutdown(spark_address):
    with get_backend(f"spark@{spark_address}") as ex:
        assert ex.info()["owns_cluster"] and ex.workers == 2  # its application, not the master
        assert ex.submit(pow, 2, 5).result(timeout=60) == 32
        assert ex.footprint()["backend"] is None  # workers "on another machine"
    with get_backend(f"spark@{spark_address}") as again:
        assert again.submit(pow, 3, 3).result(timeout=60) == 27


@needs_spark
def test_spark_without_java_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # a folder with no bin/java
    with pytest.raises(ImportError, match=r"needs a Java runtime.*openjdk"):
        get_backend("spark", workers=1)
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImportError, match="no java on PATH"):
        get_backend("spark", workers=1)
    assert "spark" not in available()  # listed as unavailable, with the line above
    out = subprocess.run([sys.executable, "-m", "smallbig", "backends"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert re.search(r"spark +│ no ", out.stdout) and "needs a Java" in out.stdout, out.stdout


@pytest.mark.alone
@needs_ray
def test_connecting_to_a_ray_cluster_counts_its_workers_coming_up_as_start_up(ray_address):
    """Ray starts a job's workers as its first tasks arrive: connected but not waited for,
    the second driver's first map paid them (1.7 s here) while start-up read 0.02 s. (The
    first driver's connection to a new head waits while it settles: 4.4 s, first map 0.3 s.)
    Every driver of the session's head is a new job, whose workers start anew.)"""
    for _ in range(2):
        with get_backend(f"ray@{ray_address}") as ex:
            start = time.perf_counter()
            assert list(ex.map(probes.noop, range(4 * ex.workers))) == [None] * (4 * ex.workers)
            first = time.perf_counter() - start
        assert first < ex.startup_s / 2, (first, ex.startup_s)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("dask", marks=needs_dask),
        pytest.param("ray", marks=needs_ray),
        pytest.param("spark", marks=needs_spark),
    ],
)
def test_worker_killed_mid_map_is_retried(name, tmp_path):
    """A SIGKILLed worker: Dask (nanny restart, allowed-failures=3), Ray (max_retries=3) and
    Spark (spark.task.maxFailures=4) rerun its task, so the map completes with every result."""
    marker = str(tmp_path / "died")
    with get_backend(name, workers=2) as ex:
        values = list(range(8))
        out = list(ex.map(probes.die_once, [marker] * 8, values, timeout=120))
    assert out == values
    assert (tmp_path / "died").exists()  # a worker really died


def test_processes_worker_killed_mid_map_raises_clearly(tmp_path):
    """The stdlib pool does not retry: the map raises BrokenProcessPool at the lost item."""
    from concurrent.futures.process import BrokenProcessPool

    marker = str(tmp_path / "died")
    with get_backend("processes", workers=2) as ex:
        with pytest.raises(BrokenProcessPool):
            list(ex.map(probes.die_once, [marker] * 4, range(4), timeout=60))
        with contextlib.suppress(BrokenProcessPool), pytest.raises(RuntimeError):
            ex.submit(pow, 2, 2).result()
    assert (tmp_path / "died").exists()
