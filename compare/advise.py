"""``smallbig advise``: rank backends for a task by predicted time, from the calibration.

An item takes ``item_s`` seconds alone, ``cpu_s`` of them on a CPU (the rest waiting on I/O).
A backend runs ``slots`` items at once on ``cpus`` cores, so ``n`` items take

    T = start-up + n·(overhead + nbytes/β) + batches·α + n·max(item_s / slots, cpu_s / cpus)

the larger of two bounds: the slots each busy for a whole item, or the cores each busy with
its CPU part (a roofline); with fewer items than slots, ``n`` replaces both. ``overhead`` is
the per-task cost at ``chunksize="auto"``.

- serial: one slot, one core.
- threads, and asyncio for plain functions: a slot per thread; the cores if the task releases
  the GIL (C code, numba ``nogil``, I/O), else one (the GIL serialises its CPU part).
- asyncio for a task with a coroutine twin: one slot per coroutine (256), one core (the loop).
- processes and clusters: a slot per worker, ``min(workers, cores)`` cores.

In-process backends ship no bytes. Extrapolations (``workers``, network) are predictions,
never measurements.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
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
    cpu_s: float | None = None,
    releases_gil: bool = False,
    coroutine: bool = False,
    coroutine_cpu_s: float | None = None,
    workers: int | None = None,
    cold: bool = True,
    latency_s: float | None = None,
    bandwidth_Bps: float | None = None,
) -> list[Prediction]:
    """Backends ranked by predicted seconds (fastest first), each with its reason.

    Parameters
    ----------
    profile : dict
        A calibration (:func:`compare.overhead`).
    items, item_s, item_bytes : int, float, int
        How many items, the seconds one takes alone, and the bytes shipped per item.
    cpu_s : float, optional
        The CPU part of ``item_s`` (default: all of it); the rest is waiting, which any
        number of slots overlap.
    releases_gil, coroutine : bool
        The task runs outside the GIL; it has a coroutine twin the asyncio backend runs.
    coroutine_cpu_s : float, optional
        The twin's CPU per item, if it differs (an async HTTP client is not the sync one).
    workers, latency_s, bandwidth_Bps : optional
        Replace the cluster backends' measured values to extrapolate to a cluster this
        machine does not have.
    cold : bool
        Include each backend's start-up.
    """
    if items < 1 or item_s < 0 or item_bytes < 0 or (cpu_s is not None and cpu_s < 0):
        raise ValueError("items must be ≥ 1 and item time, CPU time and size ≥ 0")
    cpu = item_s if cpu_s is None else min(cpu_s, item_s)
    out = []
    for name, cal in profile["backends"].items():
        slots, cpus, note = _capacity(name, cal, profile, workers, releases_gil, coroutine)
        startup = cal["startup_s"] if cold else 0.0
        overhead = cal["auto_overhead_s"]
        cluster = cal.get("distributed", False)
        if cal.get("in_process", False):
            transfer = 0.0
        else:
            beta = bandwidth_Bps if (bandwidth_Bps and cluster) else cal["beta_value_Bps"]
            alpha = latency_s if (latency_s is not None and cluster) else cal["alpha_value_s"]
            # Latency is paid once per batch; "auto" batches hold ~TARGET_BATCH_SECONDS.
            batches = min(items, max(slots, items * item_s / TARGET_BATCH_SECONDS))
            transfer = (batches * alpha) / items + item_bytes / beta
        on_loop = coroutine and cal.get("coroutines", False) and coroutine_cpu_s is not None
        busy = min(coroutine_cpu_s, item_s) if on_loop else cpu
        # Per-item time under each bound; fewer items than slots leave slots idle.
        bounds = {"slots": item_s / min(slots, items), "cores": busy / min(cpus, items)}
        binding = max(bounds, key=bounds.get)
        compute = items * bounds[binding]
        total = startup + items * (overhead + transfer) + compute
        parts = {
            "start-up": startup,
            "overhead": items * overhead,
            "transfer": items * transfer,
            "compute": compute,
        }
        main = max(parts, key=parts.get)
        reason = f"{main} dominates ({parts[main]:.3g} s of {total:.3g} s)"
        if main == "compute" and binding == "cores" and note:
            reason += f"; {note}"
        out.append(Prediction(name, total, slots, reason))
    return sorted(out, key=lambda p: p.seconds)


def _capacity(
    name: str,
    cal: dict[str, Any],
    profile: dict[str, Any],
    workers: int | None,
    releases_gil: bool,
    coroutine: bool,
) -> tuple[int, int, str]:
    """``(slots, cpus, why cpus < slots)`` of one calibrated backend for this task."""
    extrapolated = bool(workers and cal.get("distributed", False))
    w = workers if extrapolated else cal["workers"]
    cores = w if extrapolated else cal.get("cores") or profile.get("cpu_count") or w
    if name == "serial":
        return 1, 1, ""
    if coroutine and cal.get("coroutines", False):
        return w, 1, "one event loop runs every coroutine's CPU part"
    if cal.get("in_process", False):
        slots = cal.get("threads", w)
        if not releases_gil:
            return slots, 1, "GIL-bound: threads add no speed"
        return slots, min(slots, cores), f"{min(slots, cores)} cores for {slots} threads"
    return w, min(w, cores), f"{min(w, cores)} cores for {w} workers"


def task_cost(workload: Any, items: int = 8) -> dict[str, Any]:
    """What one item of ``workload`` costs, measured on serial, as :func:`predict` takes it.

    Wall and CPU seconds per item over ``items`` items (the difference is waiting), after one
    warm-up item for caches and JIT; bytes shipped per item; the workload's traits; and for a
    workload with a coroutine twin, the twin's CPU per item with 32 items in flight.
    """
    from backends import get_backend

    sample = workload.prepare(items, 0)
    with get_backend("serial") as ex:
        workload.run(ex, sample[:1])
        cpu, start = time.process_time(), time.perf_counter()
        workload.run(ex, sample)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    cost = {
        "item_s": wall / len(sample),
        "cpu_s": min(cpu, wall) / len(sample),
        "item_bytes": workload.item_bytes(sample),
        "releases_gil": workload.releases_gil,
        "coroutine": workload.async_task is not None,
    }
    if workload.async_task is not None:
        cost["coroutine_cpu_s"] = coroutine_cpu_s(workload)
    return cost


def coroutine_cpu_s(workload: Any, in_flight: int = 32) -> float:
    """CPU seconds per item of ``workload``'s coroutine twin, ``in_flight`` items at once.

    Concurrent, as the asyncio backend runs them: one loop wake-up then serves many
    responses, so an item costs less than awaited alone (API: ~0.4 against ~1 ms at 32).
    """
    async_task, items = workload.async_task, workload.prepare(in_flight, 1)

    async def together() -> float:
        await async_task(items[0])  # warm-up: the session and its connections
        cpu = time.process_time()
        await asyncio.gather(*(async_task(item) for item in items))
        return (time.process_time() - cpu) / len(items)

    # On a thread of its own: the caller may be inside a running loop (Jupyter), where
    # asyncio.run refuses to start another.
    with cf.ThreadPoolExecutor(1, thread_name_prefix="smallbig-probe") as pool:
        return pool.submit(asyncio.run, together()).result()
