"""The worker side of :func:`smallbig.model.coldstart.fresh_worker`, run as
``python -m smallbig.model.coldstart_worker`` in a fresh interpreter.

Reads the pickled ``(fn, items, kwargs)`` on stdin and prints, as JSON, the seconds of the
first and the last item, and what the last item costs again in a worker whose allocator
returns freed memory to the system at once. It imports what every worker has (smallbig's
worker side) and nothing more, so that the task's own imports are paid here as a worker pays
them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import pickle
import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

# What every worker has imported before its first task: smallbig's worker side.
import smallbig.backends.lifeline  # noqa: F401
from smallbig.workloads.user import call_item

# glibc's mallopt parameters, as the MALLOC_*_ environment variables set them at start-up.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536
# (distributed.nanny.pre-spawn-environ); glibc's mmap threshold then stays at its 128 KiB
# start instead of rising to the largest block freed, as it does in every other process.
DASK_TRIM = 65536
MMAP_START = 128 * 1024
PROBE_BYTES = 4 << 20
# The item is run twice more for its faults: not when that would take long (the parent
# waits at most 120 s for all of it, and a slow item's faults are a small part of it).
FRESH_MEMORY_MAX_S = 5.0


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _fresh_memory(call: Callable[[Any], Any], item: Any) -> dict[str, float]:
    """The page faults ``item`` takes again under Dask's allocator setting, over those it
    takes as this interpreter started, and the CPU seconds one such fault costs here."""
    # Once more as it started: glibc raises its mmap threshold to each block freed, so the
    # second item still mapped some afresh (546 of a numba kernel's faults; 0 by the third).
    before = _faults()
    with contextlib.suppress(Exception):
        call(item)
    kept = _faults() - before
    libc = ctypes.CDLL(None)
    # What the environment variables set at start-up, set now: the same glibc call, and
    # the threshold back at its start (a worker started with them never raised it). A
    # numba kernel read 911 faults an item here and in an interpreter started with
    # MALLOC_TRIM_THRESHOLD_, 89 without.
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_START)
    libc.mallopt(M_TRIM_THRESHOLD, DASK_TRIM)
    libc.malloc_trim(0)
    before = _faults()
    with contextlib.suppress(Exception):
        call(item)
    fresh = max(0, _faults() - before - kept)
    if not fresh:
        return {"fresh_faults": 0, "fault_cpu_s": 0.0}
    # A fault's CPU, kernel's and ours (zeroing, mapping, unmapping), where the task ran:
    # pages of a block too large to keep, touched and freed. (The numba kernel's 822 faults
    # at 1.8 µs each read 1.48 ms; its item's CPU grew by 1.39 ms under the setting.)
    start, before = time.thread_time(), _faults()
    for _ in range(8):
        block = bytearray(PROBE_BYTES)
        block[::4096] = b"\1" * (PROBE_BYTES // 4096)
        del block
    faults = max(1, _faults() - before)
    return {"fresh_faults": fresh, "fault_cpu_s": (time.thread_time() - start) / faults}


def main() -> int:
    """Time the items given on stdin; print ``{"first_s": …, "next_s": …, "fresh_faults":
    …, "fault_cpu_s": …}``."""
    blob = sys.stdin.buffer.read()
    start = time.perf_counter()
    fn, items, kwargs = pickle.loads(blob)  # the task's modules are imported here
    call = call_item(fn, kwargs)
    times = []
    for item in items:
        with contextlib.suppress(Exception):  # an item that raises still paid its imports
            call(item)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    out: dict[str, float] = {"first_s": times[0], "next_s": times[-1] if len(times) > 1 else 0.0}
    if platform.libc_ver()[0] == "glibc" and len(items) > 1 and out["next_s"] < FRESH_MEMORY_MAX_S:
        out.update(_fresh_memory(call, items[-1]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
