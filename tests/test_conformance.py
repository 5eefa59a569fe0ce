"""The executor protocol, written once and run on every available backend.

Dask, Ray and Spark run twice: on a cluster the backend starts itself, and through
``NAME@ADDRESS`` on a cluster started separately as subprocesses (``dask scheduler``/``dask
worker``, ``ray start --head``, Spark's standalone master and worker).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import operator
import os
import time

import pytest
from helpers import SubmitCounter

from smallbig.backends import available, get_backend
from smallbig.workloads import probes

SPECS = available() + [
    f"{name}@cluster" for name in ("dask", "ray", "spark") if name in available()
]


@pytest.fixture(scope="module", params=SPECS)
def spec(request: pytest.FixtureRequest):
    """The backend spec under test, with whatever long-lived engine it needs."""
    name = request.param
    if name == "ray":
        # Ray starts slowly: one runtime for the module; each test's backend reuses it (and,
        # not having started it, leaves it running).
        with get_backend("ray", workers=2):
            yield "ray"
    elif name == "dask@cluster":  # the session's separately started clusters (conftest.py)
        yield f"dask@{request.getfixturevalue('dask_address')}"
    elif name == "ray@cluster":
        address = request.getfixturevalue("ray_address")
        with get_backend(f"ray@{address}"):
            yield f"ray@{address}"
    elif name == "spark":
        # One SparkContext per process: started once for the module, reused by each test's.
        with get_backend("spark", workers=2):
            yield "spark"
    elif name == "spark@cluster":
        address = request.getfixturevalue("spark_address")
        with get_backend(f"spark@{address}"):
            yield f"spark@{address}"
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
    # The timeout fired before the sleeps ended: run one after another they take 2.4 s, and
    # a map that ignored its timeout would wait at least for the first (serial: all four).
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
    from smallbig.backends.chunks import MAX_BATCH_BYTES

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


# -- CPython's executor semantics (Lib/test/test_concurrent_futures: ExecutorTest, WaitTests,
# AsCompletedTests), written anew for every backend. serial runs each call inside submit(), so
# its futures are done before anyone waits on them: its stated exceptions are skipped by name.


def mul(x, y):
    return x * y


def held(gate: str, most_s: float = 60.0) -> str:
    """Run until the file ``gate`` exists (at most ``most_s``): a task that is still running
    when the test says so, however long a loaded machine takes to run the other one."""
    deadline = time.monotonic() + most_s
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gate


class Holder:
    """An object whose bound method is submitted; it carries ``nbytes`` of memory of its own."""

    def __init__(self, nbytes: int = 0) -> None:
        import numpy as np

        self.block = np.ones(nbytes, dtype=np.uint8) if nbytes else None

    def method(self) -> int:
        return 0 if self.block is None else int(self.block[-1])


def make_holder(_):
    return Holder()


def _collected(ref, within: float) -> bool:
    import gc

    deadline = time.monotonic() + within
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.02)
    return ref() is None


def _runs_in_caller(ex) -> bool:
    return ex.name == "serial"


def test_submit_keyword_argument(ex):
    assert ex.submit(mul, 2, y=8).result(timeout=60) == 16
    assert ex.submit(mul, x=2, y=8).result(timeout=60) == 16


def test_a_submitted_bound_methods_object_is_freed_once_its_task_ends(ex):
    import weakref

    obj = Holder()
    ref = weakref.ref(obj)
    ex.submit(obj.method)  # the future deliberately dropped, as CPython's test does
    del obj
    assert _collected(ref, within=5.0), "the backend kept the submitted method's object"
    # Within a second of the task ending: a task the backend waited for is over, so the object
    # must already be gone, or nearly.
    obj = Holder()
    ref = weakref.ref(obj)
    future = ex.submit(obj.method)
    del obj
    future.result(timeout=60)
    del future
    assert _collected(ref, within=1.0), "the object outlived its task by over a second"


# Dask warns that the object travels inside its task graph: that is the point here.
@pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")
def test_a_large_objects_memory_is_returned_once_its_task_ends(ex):
    import weakref

    from smallbig.backends.memory import ProcessTree

    rss = ProcessTree(set()).rss  # this process alone: where the object lives
    size = 128 * 2**20
    before = rss()
    obj = Holder(size)
    ref = weakref.ref(obj)
    assert ex.submit(obj.method).result(timeout=120) == 1
    held = rss()
    assert held - before > size * 0.9  # the pages are really there to give back
    del obj
    assert _collected(ref, within=1.0)
    # numpy's block is an mmap of its own at this size: freed, it goes back to the system.
    deadline = time.monotonic() + 5
    while rss() > held - size * 0.8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held - rss() > size * 0.8, (before, held, rss())


def test_map_does_not_hold_the_results_it_has_yielded(ex):
    import weakref

    for chunksize in (1, "auto"):
        for obj in ex.map(make_holder, range(10), chunksize=chunksize):
            ref = weakref.ref(obj)
            del obj
            assert _collected(ref, within=5.0), f"map kept a yielded result (chunksize={chunksize})"


def test_map_makes_its_calls_even_if_nobody_iterates(ex, tmp_path):
    ex.map(probes.touch, [str(tmp_path / f"{i}") for i in range(4)])
    ex.shutdown(wait=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2", "3"]


# The slow task runs until the test has its answer: a 1 s sleep lost the race on a loaded
# machine, where Ray took over a second to start the worker process for the quick one.
def test_wait_first_completed(ex, tmp_path):
    if _runs_in_caller(ex):
        pytest.skip("serial: submit() returns a finished future, so the first is both")
    gate = tmp_path / "go"
    slow = ex.submit(held, str(gate))
    fast = ex.submit(mul, 21, 2)
    try:
        done, not_done = cf.wait([slow, fast], timeout=60, return_when=cf.FIRST_COMPLETED)
    finally:
        gate.touch()
    assert done == {fast} and not_done == {slow}
    assert fast.result() == 42 and slow.result(timeout=60) == str(gate)


def test_wait_first_exception(ex, tmp_path):
    if _runs_in_caller(ex):
        pytest.skip("serial: submit() returns a finished future")
    gate = tmp_path / "go"
    slow = ex.submit(held, str(gate))
    failing = ex.submit(probes.fail, "first")
    try:
        done, not_done = cf.wait([slow, failing], timeout=60, return_when=cf.FIRST_EXCEPTION)
    finally:
        gate.touch()
    assert done == {failing} and not_done == {slow}
    with pytest.raises(ValueError, match="first"):
        failing.result()
    assert slow.result(timeout=60) == str(gate)


def test_wait_all_completed_and_first_exception_without_one(ex):
    futures = [ex.submit(mul, i, 2) for i in range(4)]
    done, not_done = cf.wait(futures, timeout=60, return_when=cf.FIRST_EXCEPTION)
    assert done == set(futures) and not not_done  # no exception: FIRST_EXCEPTION waits for all
    assert [f.result() for f in futures] == [0, 2, 4, 6]


def test_wait_times_out(ex):
    if _runs_in_caller(ex):
        pytest.skip("serial: submit() returns a finished future")
    quick = ex.submit(mul, 1, 1)
    quick.result(timeout=60)
    slow = ex.submit(probes.sleep, 1.0)
    start = time.monotonic()
    done, not_done = cf.wait([quick, slow], timeout=0.3)
    assert done == {quick} and not_done == {slow}
    # wait() returned at its timeout, not when the 1 s task ended (a margin of 0.5 s).
    assert time.monotonic() - start < 1.5


def test_as_completed_yields_each_future_once_and_times_out(ex):
    finished = ex.submit(mul, 2, 3)
    finished.result(timeout=60)
    assert list(cf.as_completed([finished, finished], timeout=60)) == [finished]
    if _runs_in_caller(ex):
        return  # serial's futures are all done: nothing is left to time out
    slow = ex.submit(probes.sleep, 1.0)
    got = []
    with pytest.raises(cf.TimeoutError):
        for future in cf.as_completed([finished, slow], timeout=0):
            got.append(future)
    assert got == [finished]


def test_an_argument_is_pickled_no_more_often_than_the_engine_pickles_it(ex):
    arg = probes.Counted(b"x" * 2**20)

    def pickles_per_task(run) -> float:
        run()  # warm: a first call may pickle things once (a function's export)
        probes.Counted.pickled = 0
        run()
        return probes.Counted.pickled / 5

    def ours() -> None:
        for f in [ex.submit(probes.counted_size, arg) for _ in range(5)]:
            assert f.result(timeout=60) == 2**20

    adapter = pickles_per_task(ours)
    engine_map = getattr(ex, "engine_map", None)
    if engine_map is not None:
        engine = pickles_per_task(lambda: engine_map(probes.counted_size, [arg] * 5))
        assert adapter <= engine, (adapter, engine)
    else:
        # In-process backends pass the object itself; a pool pickles each task once.
        assert adapter == (0 if ex.in_process else 1), adapter
