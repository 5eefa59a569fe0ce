"""Overhead probes: tasks that isolate one cost of a backend each.

``noop`` measures per-task overhead, ``payload`` transfer cost, ``sleep`` latency hiding, and
``spin`` pure-Python CPU work under the GIL. ``echo``, ``fail`` and ``die_once`` probe argument
passing, error transport and fault tolerance. All are top-level functions of small arguments, so
every backend, external clusters included, can ship them by reference.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import zlib
from typing import Any

import numpy as np


def noop(_item: Any = None) -> None:
    """Do nothing: the task's cost is all backend overhead."""
    return None


def payload(array: np.ndarray) -> tuple[int, int]:
    """Receive an array; return ``(nbytes, byte sum)``: transfer, not compute, dominates.

    The sum is over the raw bytes as integers, exact whatever the buffer's alignment (a float
    sum's rounding depends on it, so it could differ between backends for the same data).
    """
    raw = np.ascontiguousarray(array).view(np.uint8)
    return int(raw.nbytes), int(raw.sum(dtype=np.uint64))


def make_payload(nbytes: int, seed: int = 0) -> np.ndarray:
    """A float64 array of about ``nbytes`` bytes, deterministic by ``seed``."""
    return np.random.default_rng(seed).random(max(1, nbytes // 8))


def sleep(seconds: float) -> float:
    """Sleep (releasing the GIL, like waiting on I/O); return ``seconds``."""
    time.sleep(seconds)
    return seconds


def sleep_each(delays: list[float]) -> list[float]:
    """:func:`sleep` for each of ``delays`` in turn: a batch of waits as one task, as an
    engine's own API runs a batch (what ``bench overhead`` compares ``chunksize`` with)."""
    return [sleep(d) for d in delays]


async def sleep_async(seconds: float) -> float:
    """Coroutine twin of :func:`sleep`: the wait an event loop overlaps without a thread."""
    await asyncio.sleep(seconds)
    return seconds


def spin(seconds: float) -> int:
    """Busy-loop in pure Python (holding the GIL) for ``seconds``; return the loop count."""
    end = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < end:
        count += 1
    return count


def block(index: int, nbytes: int) -> bytes:
    """``nbytes`` of data made on the fly, different for each ``index`` (a 1 MB item costs a
    copy, ~0.1 ms: a generator of them stands for a dataset larger than memory)."""
    return index.to_bytes(8, "little") * (nbytes // 8)


def digest(data: bytes) -> int:
    """A small result from a large item: CRC-32 of ``data``."""
    return zlib.crc32(data)


def hold(megabytes: float, seconds: float = 0.5) -> int:
    """Make ``megabytes`` resident (every page touched) for ``seconds``; return the bytes."""
    block = bytearray(int(megabytes * 2**20))
    block[::4096] = bytes(len(block[::4096]))  # bytearray() alone may only reserve the pages
    time.sleep(seconds)
    return len(block)


def native_threads(_item: Any = None) -> dict[str, int]:
    """Threads of each native pool loaded in this process, NumPy's BLAS among them, as
    threadpoolctl reports them (``"openblas:libscipy_openblas64_-….so": 2``): what a task
    running here would get."""
    import numpy  # noqa: F401  (its BLAS is what is asked about)
    from threadpoolctl import threadpool_info

    return {
        f"{p['internal_api']}:{os.path.basename(p['filepath'])}": p["num_threads"]
        for p in threadpool_info()
    }


def echo(*args: Any, **kwargs: Any) -> tuple[tuple, dict]:
    """Return the arguments as received."""
    return args, kwargs


class Counted:
    """Bytes that count, in the process that pickles them, how often they were pickled: a
    test's witness that an argument is pickled once per task, not twice."""

    pickled = 0

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple:
        type(self).pickled += 1
        return (Counted, (self.data,))


def counted_size(value: Counted) -> int:
    """``len`` of a :class:`Counted`'s bytes."""
    return len(value.data)


def touch(path: str) -> str:
    """Create the empty file ``path``: a call's side effect, seen from outside the worker."""
    with open(path, "a"):
        pass
    return path


def fail(message: str = "probe failure") -> None:
    """Raise ``ValueError(message)``: checks that an exception crosses the backend intact."""
    raise ValueError(message)


def die_once(marker: str, value: Any = None) -> Any:
    """Kill this worker process with SIGKILL the first time ``marker`` is seen; then return.

    The marker file is created before dying, so the engine's retry of the same task (on a
    restarted or another worker) returns ``value``: this measures fault tolerance for real.
    """
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return value
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    return value  # not reached


def probe_workloads(payload_bytes: int = 1 << 20, sleep_s: float = 0.01, spin_s: float = 0.001):
    """The probes as workloads: ``noop``, ``payload``, ``sleep`` and ``spin``."""
    from smallbig.workloads.base import Workload

    def same(value):
        return lambda n, seed=0: [value] * n

    def arrays(n: int, seed: int = 0) -> list:
        return [make_payload(payload_bytes, seed + i) for i in range(n)]

    return {
        "noop": Workload("noop", same(None), noop),
        "payload": Workload("payload", arrays, payload, params={"bytes": payload_bytes}),
        # Sleep stands for waiting on I/O: like the api workload, it has a coroutine twin, so
        # the asyncio backend overlaps the waits on its loop instead of its small thread pool.
        "sleep": Workload(
            "sleep",
            same(sleep_s),
            sleep,
            sleep_async,
            releases_gil=True,
            params={"seconds": sleep_s},
        ),
        "spin": Workload("spin", same(spin_s), _spin_fixed, params={"seconds": spin_s}),
    }


def _spin_fixed(seconds: float) -> float:
    # The loop count of spin() varies run to run; the checksum needs a stable value.
    spin(seconds)
    return seconds


def read_then_sleep(pair: tuple[Any, float]) -> float:
    """Read an array (one that every task shares, ``put`` once), then sleep: a task whose
    time does not depend on the cores, so that spreading it over workers pays."""
    array, seconds = pair
    time.sleep(seconds)
    return float(np.asarray(array)[::4096].sum())
