"""What a fresh worker pays the first time it runs a task: imports, JIT, caches.

A worker process (of a process pool, joblib's, Dask or Ray) starts as a clean interpreter; the
first item it runs imports the task's modules and compiles what it JITs, which the driver
that profiled the task had already done. :func:`first_call_s` measures that in a fresh
interpreter of this environment, started as workers are (outside any project folder), with
the function shipped as workers get it (:func:`smallbig.backends.shipping.portable`).

The interpreter runs :mod:`smallbig.model.coldstart_worker`, which imports no more than a worker
has: run
as ``python -m smallbig.model.coldstart``, it had this package's imports (pandas, rich, 729 modules)
loaded first, and a task in a module that needs them was measured at 0.01 s where workers
paid 0.43 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

TIMEOUT_S = 120.0


def first_call_s(fn: Callable[..., Any], items: Sequence[Any], kwargs: bool = False) -> float:
    """Seconds the first of two items costs over the second in a fresh interpreter (≥ 0);
    0.0 if the items cannot be shipped or the interpreter fails (nothing to learn then)."""
    import cloudpickle

    from smallbig.backends.shipping import portable

    try:
        blob = cloudpickle.dumps((portable(fn), list(items[:2]), kwargs))
    except Exception:  # an item that does not pickle fails in every worker anyway
        return 0.0
    with tempfile.TemporaryDirectory(prefix="smallbig-first-") as empty:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "smallbig.model.coldstart_worker"],
                input=blob, capture_output=True, cwd=empty, timeout=TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return TIMEOUT_S
    if out.returncode != 0:
        return 0.0
    times = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return max(0.0, times["first_s"] - times["next_s"])
