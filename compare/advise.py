"""``smallbig advise``: rank backends for a task by predicted time, from the calibration.

For ``n`` items of ``compute`` seconds and ``nbytes`` each on ``w`` workers:

    T = start-up + n·(overhead + nbytes/β) + batches·α + n·compute / (w · efficiency)

``overhead`` is the per-task cost at ``chunksize="auto"``. ``efficiency`` is 1 for processes
and clusters; for threads and asyncio it is 1/w for pure-Python compute (the GIL serialises it)
and 1 when the task releases the GIL (NumPy, numba ``nogil``, I/O). In-process backends ship no
bytes. Extrapolations (``workers``, network) are predictions, never measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.chunks import TARGET_BATCH_SECONDS


@dataclass(frozen=True)
class Prediction:
    backend: str
    seconds: float
    workers: int
    reason: str


def predict(
    profile: dict[str, Any],
    items: int,
    item_s: float,
    item_bytes: int = 0,
    *,
    releases_gil: bool = False,
    workers: int | None = None,
    cold: bool = True,
    latency_s: float | None = None,
    bandwidth_Bps: float | None = None,
) -> list[Prediction]:
    """Backends ranked by predicted seconds (fastest first), each with its reason.

    ``workers`` (and ``latency_s``/``bandwidth_Bps``) replace the cluster backends' measured
    values to extrapolate to a cluster this machine does not have.
    """
    if items < 1 or item_s < 0 or item_bytes < 0:
        raise ValueError("items must be ≥ 1 and item time and size ≥ 0")
    out = []
    for name, cal in profile["backends"].items():
        cluster = cal.get("distributed", False)
        w = workers if (workers and cluster) else cal["workers"]
        if name == "serial":
            w = 1
        startup = cal["startup_s"] if cold else 0.0
        overhead = cal["auto_overhead_s"]
        if cal.get("in_process", False):
            transfer = 0.0
        else:
            beta = bandwidth_Bps if (bandwidth_Bps and cluster) else cal["beta_value_Bps"]
            alpha = latency_s if (latency_s is not None and cluster) else cal["alpha_value_s"]
            # Latency is paid once per batch; "auto" batches hold ~TARGET_BATCH_SECONDS.
            batches = min(items, max(w, items * item_s / TARGET_BATCH_SECONDS))
            transfer = (batches * alpha) / items + item_bytes / beta
        gil_bound = cal.get("in_process", False) and name != "serial" and not releases_gil
        efficiency = 1 / w if gil_bound else 1.0
        compute = items * item_s / (w * efficiency)
        total = startup + items * (overhead + transfer) + compute
        parts = {
            "start-up": startup,
            "overhead": items * overhead,
            "transfer": items * transfer,
            "compute": compute,
        }
        main = max(parts, key=parts.get)
        reason = f"{main} dominates ({parts[main]:.3g} s of {total:.3g} s)" + (
            "; GIL-bound: threads add no speed" if gil_bound else ""
        )
        out.append(Prediction(name, total, w, reason))
    return sorted(out, key=lambda p: p.seconds)
