"""The executor protocol, written once and run on every available backend.

Dask and Ray run twice: on a cluster the backend starts itself, and through ``NAME@ADDRESS`` on
a cluster started separately as subprocesses (``dask scheduler``/``dask worker``,
``ray start --head``).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import operator
import time

import pytest
from conftest import SubmitCounter, dask_cluster, ray_cluster

from backends import available, get_backend
from workloads import probes

SPECS = available() + [f"{name}@cluster" for name in ("dask", "ray") if name in available()]


@pytest.fixture(scope="module", params=SPECS)
def spec(request: pytest.FixtureRequest):
    """The backend spec under test, with whatever long-lived engine it needs."""
    name = request.param
    if name == "ray":
        # Ray starts slowly: one runtime for the module; each test's backend reuses it (and,
        # not having started it, leaves it running).
        with get_backend("ray", workers=2):
            yield "ray"
    elif name == "dask@cluster":
        with dask_cluster() as address:
            yield f"dask@{address}"
    elif name == "ray@cluster":
        with ray_cluster() as address, get_backend(f"ray@{address}"):
            yield f"ray@{address}"
    else:
        yield name


@pytest.fixture
def ex(spec: str):
    workers = None if spec == "serial" else 2
    with get_backend(spec, workers=workers) as backend:
        yield backend


def test_submit_args_and_kwargs(ex):
    # ``key`` would collide with Dask's Client.submit(key=...) if passed through naively.
    future = ex.submit(probes.echo, 1, "two", key="k", workers=3)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=60) == ((1, "two"), {"key": "k", "workers": 3})


# Keywords named like the parameters of the callables smallbig puts between the user's function
# and its arguments (Capped.__call__(self, ...), Executor.submit(fn, ...), map's own options).
OWN_NAMES = {"self": 1, "fn": 2, "args": 3, "kwargs": 4, "chunksize": 5, "timeout": 6}


def test_submit_passes_every_keyword_through(ex):
    future = ex.submit(probes.echo, 0, **OWN_NAMES)
    assert future.result(timeout=60) == ((0,), OWN_NAMES)
    bound = functools.partial(probes.echo, **OWN_NAMES)
    assert ex.submit(bound, 7).result(timeout=60) == ((7,), OWN_NAMES)


@pytest.mark.parametrize("chunksize", [1, 3, "auto"])
def test_map_over_a_function_with_such_keywords(ex, chunksize):
    bound = functools.partial(probes.echo, **OWN_NAMES)
    got = list(ex.map(bound, range(7), chunksize=chunksize, timeout=120))
    assert got == [((i,), OWN_NAMES) for i in range(7)]


def test_exception_keeps_its_type(ex):
    with pytest.raises(ZeroDivisionError):
        ex.submit(operator.truediv, 1, 0).result(timeout=60)
    with pytest.raises(ValueError, match="boom") as info:
        ex.submit(probes.fail, "boom").result(timeout=60)
    assert type(info.value) is ValueError


def test_map_keeps_input_order(ex):
    delays = [0.3, 0.0, 0.2, 0.0, 0.1]
    assert list(ex.map(probes.sleep, delays)) == delays


@pytest.mark.parametrize("chunksize", [1, 3, "auto"])
def test_map_equals_builtin_map(ex, chunksize):
    xs, ys = range(-20, 30), [2, 3] * 25
    assert list(ex.map(pow, xs, ys, chunksize=chunksize)) == list(map(pow, xs, ys))


def test_map_auto_batches_many_items(ex):
    counter = SubmitCounter(ex)
    n = 20_000
    results = list(ex.map(operator.neg, range(n), chunksize="auto"))
    assert results == [-i for i in range(n)]
    # Serial runs batches inline (no _submit); everyone else must pack many items per task.
    assert ex.name == "serial" or counter.calls < n / 50


@pytest.mark.parametrize("chunksize", [1, 3, "auto"])
def test_failing_item_raises_at_its_position(ex, chunksize):
    it = ex.map(operator.truediv, [1, 2, 3, 4, 5], [1, 1, 0, 1, 1], chunksize=chunksize)
    assert next(it) == 1.0
    assert next(it) == 2.0
    with pytest.raises(ZeroDivisionError):
        next(it)


@pytest.mark.parametrize("chunksize", [1, "auto"])
def test_map_timeout(ex, chunksize):
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        list(ex.map(probes.sleep, [0.6] * 4, timeout=0.3, chunksize=chunksize))
    assert time.monotonic() - start < 0.6 * 4


def test_map_item_finished_after_the_deadline_is_a_timeout(ex):
    # One item that ends 0.4 s past the deadline: not a late result, a TimeoutError.
    with pytest.raises(TimeoutError):
        next(ex.map(probes.sleep, [0.6], timeout=0.2))


def test_wait_and_as_completed_across_backends(ex):
    with get_backend("threads", workers=2) as other:
        mine = ex.submit(pow, 2, 10)
        theirs = other.submit(pow, 3, 2)
        assert {f.result() for f in cf.as_completed([mine, theirs], timeout=60)} == {1024, 9}
        done, not_done = cf.wait([mine, theirs], timeout=60)
        assert done == {mine, theirs} and not not_done


def test_shutdown_cancels_pending_futures(ex):
    if ex.name == "serial":
        pytest.skip("serial runs each task inside submit(): nothing is ever pending")
    busy = [ex.submit(probes.sleep, 1.0) for _ in range(ex.workers)]
    queued = [ex.submit(probes.sleep, 0.5) for _ in range(10)]
    time.sleep(0.5)  # let the busy tasks reach the workers: only queued ones are pending
    ex.shutdown(wait=True, cancel_futures=True)
    if not ex.distributed:
        # Local pools know which tasks run: those finish. A cluster future cannot tell queued
        # from running cheaply, so Dask and Ray cancel every unfinished task (as Dask's
        # ClientExecutor does).
        assert all(f.result() == 1.0 for f in busy)
    cancelled = [f.cancelled() for f in queued]
    assert cancelled[-1] and sum(cancelled) >= 5, cancelled


def test_shutdown_twice_and_submit_after(ex):
    assert ex.submit(pow, 2, 2).result(timeout=60) == 4
    ex.shutdown()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(pow, [1], [1])


def test_put_round_trip_10mb_array(ex):
    array = probes.make_payload(10 * 2**20, seed=1)
    handle = ex.put(array)
    expected = probes.payload(array)
    assert ex.submit(probes.payload, handle).result(timeout=120) == expected
    # Inside a chunk, too: the task gets the array, not the handle.
    assert list(ex.map(probes.payload, [handle] * 3, chunksize=3)) == [expected] * 3
    assert expected[0] == array.nbytes > 10 * 10**6


def test_invalid_workers_and_unknown_options(spec):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            get_backend(spec, workers=bad)
    with pytest.raises(TypeError, match="bogus"):
        get_backend(spec, bogus=1)


def test_info_reports_engine_and_startup(ex):
    info = ex.info()
    assert info["name"] == ex.name and info["workers"] == ex.workers >= 1
    assert info["version"] not in ("", "not installed")
    assert info["startup_s"] >= 0
    assert isinstance(info["distributed"], bool)


class _Counted:
    """An endless input that counts what has been read from it."""

    def __init__(self) -> None:
        self.read = 0

    def __iter__(self):
        while True:
            self.read += 1
            yield self.read - 1


@pytest.mark.parametrize("chunksize", [1, 3, "auto"])
def test_map_buffersize_reads_an_endless_input_lazily(ex, chunksize):
    from backends.chunks import MAX_BATCH_BYTES

    source = _Counted()
    it = ex.map(operator.neg, source, chunksize=chunksize, buffersize=4)
    got = [next(it) for _ in range(10)]
    assert got == [-i for i in range(10)]
    # At most 4 tasks submitted and not yet yielded: 10 read for the results, plus 4 chunks.
    bound = {1: 4, 3: 4 * 3 + 2, "auto": 4 * MAX_BATCH_BYTES // 10}[chunksize]
    assert source.read <= 10 + bound
    it.close()  # cancels what is in flight; the fixture's leak check sees nothing left


def test_map_buffersize_keeps_order_errors_and_timeouts(ex):
    items = [1.0, 2.0, 0.0, 4.0]
    it = ex.map(operator.truediv, [1.0] * 4, items, buffersize=2)
    assert next(it) == 1.0 and next(it) == 0.5
    with pytest.raises(ZeroDivisionError):
        next(it)
    with pytest.raises(TimeoutError):
        list(ex.map(probes.sleep, [0.6] * 3, timeout=0.2, buffersize=2))
    with pytest.raises(ValueError, match="buffersize"):
        ex.map(abs, [1], buffersize=0)
