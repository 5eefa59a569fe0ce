"""What a fresh worker pays the first time it runs a task (imports, JIT, caches), and what
every item costs it again where its allocator returns freed memory to the system at once.

A worker process (of a process pool, joblib's, Dask or Ray) starts as a clean interpreter; the
first item it runs imports the task's modules and compiles what it JITs, which the driver
that profiled the task had already done. :func:`fresh_worker` measures that in a fresh
interpreter of this environment, started as workers are (outside any project folder), with
the function shipped as workers get it (:func:`smallbig.backends.shipping.portable`).

Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_`` set: glibc then maps every block
over 128 KiB afresh and unmaps it when freed, so an item's arrays are new pages each time. A
numba kernel's item faulted 911 pages in a Dask worker, 89 elsewhere, and ran 1.6× slower there
at a quarter core. The same interpreter counts those faults and what one costs.

The interpreter runs :mod:`smallbig.model.coldstart_worker`, which imports no more than a
worker has: run as ``python -m smallbig.model.coldstart``, it had this package's imports
(pandas, rich, 729 modules) loaded first, and a task in a module that needs them was measured
at 0.01 s where workers paid 0.43 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FreshWorker:
    """What a task costs a fresh worker process.

    Attributes
    ----------
    first_call_s : float
        Seconds the first of two items costs over the second (≥ 0).
    fresh_memory_cpu_s : float
        CPU seconds an item spends faulting its memory in afresh in a worker whose
        allocator returns freed memory at once (Dask's), over one that keeps it.
    """

    first_call_s: float = 0.0
    fresh_memory_cpu_s: float = 0.0


def fresh_worker(fn: Callable[..., Any], items: Sequence[Any], kwargs: bool = False) -> (
    FreshWorker
):
    """What the first two of ``items`` cost a fresh interpreter (:class:`FreshWorker`); zeros
    if the items cannot be shipped or the interpreter fails (nothing to learn then)."""
    import cloudpickle

    from smallbig.backends.inner import ALLOCATOR_ENV
    from smallbig.backends.shipping import portable

    try:
        blob = cloudpickle.dumps((portable(fn), list(items[:2]), kwargs))
    except Exception:  # an item that does not pickle fails in every worker anyway
        return FreshWorker()
    # Without the allocator's start-up settings, as the workers of every backend but Dask's
    # start; the interpreter sets Dask's itself when it measures that.
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    with tempfile.TemporaryDirectory(prefix="smallbig-first-") as empty:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "smallbig.model.coldstart_worker"],
                input=blob, capture_output=True, cwd=empty, timeout=TIMEOUT_S, env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return FreshWorker(TIMEOUT_S)
    if out.returncode != 0:
        return FreshWorker()
    got = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return FreshWorker(
        max(0.0, got["first_s"] - got["next_s"]),
        got.get("fresh_faults", 0) * got.get("fault_cpu_s", 0.0),
    )
