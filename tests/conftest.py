"""Fixtures that start real engines and fail any test that leaks processes or threads."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import allowed_process, dask_cluster, ray_cluster, spark_cluster

from smallbig.backends.inner import spawn_env

# Threads that libraries keep for the life of the process on purpose (thread pools of Dask's
# offload and future-callback executors, Ray's/gRPC's global workers, asyncio's default
# executor, and smallbig's one helper that sets and restores the process's BLAS caps).
ALLOWED_THREADS = (
    "smallbig-inner-caps",
    "Dask-Offload",
    "Dask-Callback-Thread",
    "Dask-Default-Threads",
    "asyncio_",
    "ray_",
    "grpc",
)
LEAK_GRACE_S = 20.0

# Ray 2.60 turns token authentication on for clusters it starts, but only in the process that
# started one; a separately started head and a driver then disagree depending on what ran
# first. Token auth on everywhere (the secure choice): every head and driver here, our CLI
# subprocesses included, share ~/.ray/auth_token.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def pytest_configure(config: pytest.Config) -> None:
    """Make Ray's token once, before any parallel worker starts: two of them starting a Ray
    cluster at once would each write a token of their own, and one's driver would then read
    the other's."""
    if hasattr(config, "workerinput") or Path.home().joinpath(".ray", "auth_token").exists():
        return
    if importlib.util.find_spec("ray") is not None:
        from smallbig.backends.emulation.emulated import make_ray_token

        make_ray_token()


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:120]}"
    except psutil.Error:
        return str(proc.pid)


@pytest.fixture(autouse=True)
def check_leaks() -> Iterator[None]:
    """Fail the test if it leaves new child processes or threads behind (as distributed does)."""
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    threads_before = set(threading.enumerate())
    env_before = spawn_env()
    yield
    # An engine that sets thread caps in the driver's environment for good (Dask's nanny did,
    # on a restart) changes what every later uncapped pool and serial loop measures.
    assert spawn_env() == env_before, "the test left the thread or allocator variables changed"
    deadline = time.monotonic() + LEAK_GRACE_S
    pause = 0.005  # most pools' threads are gone within milliseconds: look again soon
    while True:
        # New direct children only: processes a pre-existing engine forks later (Ray's worker
        # pool growing) belong to that engine, which its own fixture stops.
        procs = [
            p for p in me.children() if p.pid not in children_before and not allowed_process(p)
        ]
        threads = [
            t
            for t in threading.enumerate()
            if t not in threads_before and t.is_alive() and not t.name.startswith(ALLOWED_THREADS)
        ]
        if not procs and not threads:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"Test leaked subprocesses: {[_describe(p) for p in procs]} "
                f"and threads: {[t.name for t in threads]}"
            )
        time.sleep(pause)
        pause = min(0.2, 2 * pause)


@pytest.fixture(autouse=True, scope="session")
def one_name_per_module() -> Iterator[None]:
    """Every module of smallbig is loaded under its installed name only: a module imported
    again as ``backends.x`` (the checkout's folder is on the path) would hold a second copy
    of its state (registries, caches, locks)."""
    yield
    folders = ("backends", "workloads", "compare")
    twice = sorted(m for m in sys.modules if m.split(".")[0] in folders)
    assert not twice, f"imported by a folder's name as well as smallbig's: {twice}"


# One separately started cluster of each engine for the whole session, shared by the tests
# that only connect to one (a Ray head or a Spark master costs 8-20 s to start): what a
# backend given an address does to the cluster (nothing: it is left running) is what they
# check, so a cluster another test connected to before is the case they are about.
@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """``HOST:PORT`` of a ``dask scheduler`` with two ``dask worker`` processes."""
    with dask_cluster() as address:
        yield address


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """``HOST:PORT`` of a ``ray start --head`` of two CPUs."""
    with ray_cluster() as address:
        yield address


@pytest.fixture(scope="session")
def spark_address() -> Iterator[str]:
    """``spark://HOST:PORT`` of a standalone master with one worker of two cores."""
    with spark_cluster() as address:
        yield address
