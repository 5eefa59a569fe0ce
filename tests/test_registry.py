"""The registry, the ``smallbig backends`` command and the processes backend's pickling."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers import SubmitCounter

from smallbig import backends
from smallbig.backends import BACKENDS, Entry, available, backend_class, get_backend, parse_spec

LOCAL = ["serial", "threads", "processes", "asyncio"]


def test_local_backends_are_always_available():
    assert available()[:4] == LOCAL


def test_unknown_backend_lists_known_names():
    with pytest.raises(ValueError, match=r"Invalid backend: 'sparkle'.*'asyncio'.*'threads'"):
        get_backend("sparkle")


def test_missing_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(
        BACKENDS, "fancy", Entry("smallbig.backends.serial", "SerialBackend", "no_such_engine_pkg",
        "fancy")
    )
    assert "fancy" not in available()
    with pytest.raises(ImportError, match=r"pip install 'smallbig\[fancy\]'"):
        get_backend("fancy")


def test_address_only_for_cluster_backends():
    assert parse_spec("dask@tcp://127.0.0.1:8786") == ("dask", "tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="takes no address"):
        get_backend("threads@127.0.0.1:1")
    with pytest.raises(ValueError, match="empty address"):
        parse_spec("ray@")


def test_bad_chunksize_is_rejected():
    with get_backend("threads", workers=1) as ex:
        for bad in (0, -3, "big", 1.5):
            with pytest.raises(ValueError, match="chunksize"):
                ex.map(abs, [1], chunksize=bad)


def test_cli_lists_backends_with_versions():
    out = subprocess.run(
        [sys.executable, "-m", "smallbig", "backends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in LOCAL:
        assert name in out
    import platform

    assert platform.python_version() in out
    for name in ("dask", "ray"):
        assert name in out and f"smallbig[{name}]" in out


def test_processes_run_functions_defined_in_main():
    # ``python -c`` has no importable __main__: the workers can only get these by value.
    script = textwrap.dedent(
        """
        from smallbig.backends import get_backend

        def triple(x):
            return 3 * x

        with get_backend("processes", workers=2) as ex:
            print(list(ex.map(triple, range(5), chunksize=2)), ex.submit(lambda: 7).result())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 3, 6, 9, 12] 7"


def test_in_process_put_returns_the_object_itself():
    obj = {"big": list(range(10))}
    for name in ("serial", "threads", "asyncio"):
        with get_backend(name) as ex:
            assert ex.put(obj) is obj


def test_asyncio_runs_coroutines_concurrently():
    import asyncio
    import time

    async def nap(x):
        await asyncio.sleep(0.2)
        return x

    with get_backend("asyncio", workers=100) as ex:
        start = time.perf_counter()
        assert list(ex.map(nap, range(100), chunksize="auto")) == list(range(100))
        assert [f.result() for f in [ex.submit(nap, i) for i in range(50)]] == list(range(50))
        # 150 sleeps of 0.2 s: sequentially 30 s; concurrently a fraction of a second each.
        assert time.perf_counter() - start < 3.0


def test_module_docstring_example():
    import doctest

    assert doctest.testmod(backends).failed == 0


def test_asyncio_auto_sizes_plain_functions_by_its_threads():
    # Plain functions run on the pool's few threads, not 256 at once: "auto" must start with
    # a window of a few single-item batches, not 512 of them.
    import operator

    with get_backend("asyncio") as ex:
        counter = SubmitCounter(ex)
        results = list(ex.map(operator.neg, range(1000), chunksize="auto"))
        assert results == [-i for i in range(1000)]
        assert counter.calls < 60, counter.calls


def test_every_backend_takes_a_worker_count_serial_says_why_it_keeps_one():
    for name in [n for n in available() if not backend_class(n).distributed]:
        with get_backend(name, workers=3) as ex:
            info = ex.info()
            if name == "serial":
                assert ex.workers == 1 and "1 worker" in info["fixed_workers"]
            else:
                assert ex.workers == 3 and info["fixed_workers"] is None
    with pytest.raises(ValueError, match="greater than 0"):
        get_backend("serial", workers=0)
