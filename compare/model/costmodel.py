"""The calibrated cost model: each backend's predicted time for a task, from the calibration
(what ``smallbig advise`` and :func:`smallbig.advise` rank by).

An item takes ``item_s`` seconds alone, ``cpu_s`` of them on a CPU (the rest waiting on I/O;
above ``item_s`` when its native pools — BLAS, OpenMP, numba — use several cores). A backend
runs ``slots`` items at once on ``cpus`` cores, so ``n`` items take

    T = start-up + n·(overhead + nbytes/β) + rounds·α
        + n·max(item_s / slots, cpu_s / cpus, gil_s)

the largest of three bounds (a roofline): the slots each busy for a whole item, the cores each
busy with its CPU part, and — for threads of one process — the part of an item they cannot
overlap (the GIL). With fewer items than slots, ``n`` replaces the slots and cores.
``overhead`` is the per-task cost at ``chunksize="auto"``; ``rounds`` is batches ÷ the batches
in flight together: the slots for a network's latency, at most the cores for a calibrated α
(mostly the CPU of handling a task). A cluster's map costs at least what one was measured to
cost whatever its items (``map_fixed_s``, grown with the workers like its start-up): its
dispatch ramp and first round trip are part of that figure, not added to it.

Which ``item_s`` and ``cpu_s``: a backend whose cap on the native pools (its
``inner_threads``) is below what an item uses alone runs it at the item's capped cost (measured
by :func:`smallbig.profile_task` with one thread); one without a cap, at its uncapped cost.

- serial: one slot; the cores the item uses by itself.
- threads, and asyncio for plain functions: a slot per thread; ``min(cores, slots × cap)``
  cores; the GIL bound.
- asyncio for a task with a coroutine twin: one slot per coroutine (256), one core (the loop).
- processes and clusters: a slot per worker, ``min(cores, workers × cap)`` cores.

A cold map's fresh workers pay the task's first call (imports, JIT) each at their share of
the cores.

In-process backends ship no bytes. ``nbytes/β`` counts the links each byte crosses: a result
one, an argument ``argument_links`` (two on Dask, whose tasks carry their arguments through
the scheduler). An object put once per map and shared by every task (``put_bytes``) is
paid once per copy: one per machine (processes), per node (Ray) or per worker that runs its
tasks (Dask, which may keep the tasks where the object is instead). Extrapolations
(``workers``, network) are predictions, never measurements.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smallbig.backends.chunks import TARGET_BATCH_SECONDS
from smallbig.model.calibration import BackendCalibration, Calibration, read_calibration
from smallbig.model.cluster import Cluster
from smallbig.model.footprint import Data, MemoryFit, chunk_items, fit, machine_memory
from smallbig.model.taskprofile import GIL_HOLDING, TaskProfile
from smallbig.results import checks
from smallbig.results.fmt import seconds, size


@dataclass(frozen=True)
class Prediction:
    """One backend's predicted time for a task, with the term that dominates it."""

    backend: str
    seconds: float
    workers: int
    reason: str
    #: How it runs the data within its memory, and its predicted peak (smallbig.model.footprint).
    memory: MemoryFit | None = None
    #: Cold: the fewest and most seconds its recent start-ups took on this machine, and how
    #: many there were (``calibration.json``'s ``startup_spread_s``); ``None`` if not known.
    startup_spread: tuple[float, float, int] | None = None
    #: The start-up (or reuse) it includes.
    startup_s: float = 0.0

    def __repr__(self) -> str:
        return f"Prediction({self.backend}, {seconds(self.seconds)}, {self.workers} workers)"

    def row(self) -> dict[str, Any]:
        """A flat dict: the memory fit spread over plain columns."""
        fit_ = self.memory
        return {
            "backend": self.backend,
            "seconds": self.seconds,
            "workers": self.workers,
            "memory": fit_.describe() if fit_ else None,
            "peak_bytes": fit_.peak_bytes if fit_ else None,
            "reason": self.reason,
        }


class Predictions(list):
    """What :func:`predict` returns: the predictions, fastest first, as a list; in Jupyter a
    table (``_repr_html_``), and a DataFrame with :meth:`to_frame`."""

    def to_frame(self) -> Any:
        """One row per backend: seconds, workers, how it holds the data, its peak, why."""
        import pandas as pd

        return pd.DataFrame([p.row() for p in self])

    def startup_note(self) -> str | None:
        """When the pick depends on how long start-up takes this time (:func:`startup_note`)."""
        return startup_note(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{p.backend} {seconds(p.seconds)}" for p in self[:3])
        more = f", … ({len(self)} backends)" if len(self) > 3 else ""
        return f"<Predictions: {shown}{more}>"

    def _repr_html_(self) -> str:
        from smallbig.results.fmt import html_table

        rows = [
            [p.backend, seconds(p.seconds), f"{p.workers:,}", p.row()["memory"] or "-",
             size(p.memory.peak_bytes) if p.memory else "-", p.reason]
            for p in self
        ]  # fmt: skip
        header = ["backend", "predicted", "workers", "memory", "peak", "why"]
        return html_table("PREDICTED time per backend, fastest first", header, rows)


@dataclass(frozen=True)
class _Cost:
    """One item as the model takes it (see :class:`smallbig.model.taskprofile.TaskProfile`)."""

    item_s: float  # wall, native pools as they are
    cpu_s: float
    item_s_1: float  # wall, native pools capped at one thread
    cpu_s_1: float
    gil_s: float  # of it holding the GIL
    nbytes: int  # shipped to and from a worker
    coroutine: bool
    coroutine_cpu_s: float | None
    result_bytes: int = 0  # of nbytes, the result's
    work_bytes: int = 0  # allocated while one item runs
    first_call_s: float = 0.0  # a fresh worker's first item over the next (imports, JIT)
    pool_s: float | None = None  # per item on pool_threads threads capped at one, measured
    pool_threads: int | None = None
    put_bytes: int = 0  # one object every task shares, put once per map
    thread_cores: float = 1.0  # of a core, one thread where it was profiled (a quota's)
    fresh_memory_cpu_s: float = 0.0  # per item, where freed memory goes back at once (Dask)

    @property
    def holds_gil(self) -> bool:
        """Threads of one process overlap little of an item (as ``TaskProfile.releases_gil``
        says, the other way round)."""
        return self.gil_s >= GIL_HOLDING * max(self.item_s_1, 1e-12)

    def gil_bound(self) -> float:
        """Seconds per item for threads of one process: what they cannot overlap, and for a
        task that holds the GIL never less than a plain loop's item (``item_s``). A pool
        thread ran such an item ~8% faster than the main thread (its own malloc arena), yet
        the threads backend ran the loop slower than serial: the GIL's hand-offs take that
        back and more, so no GIL-holding task is predicted faster on threads than serial."""
        return max(self.gil_s, self.item_s) if self.holds_gil else self.gil_s

    @property
    def inner(self) -> float:
        """Cores one item keeps busy by itself, uncapped (≥ 1)."""
        return max(1.0, self.cpu_s / self.item_s) if self.item_s > 0 else 1.0

    def at_cap(self, cap: int | None, cores: int) -> tuple[float, float]:
        """Wall and CPU seconds per item with the native pools capped at ``cap`` threads.

        ``None``, or a cap of all the ``cores`` (the libraries' own default), is the uncapped
        figure; 1 the capped one; in between, linearly.
        """
        if cap is None or cap >= cores:
            return self.item_s, self.cpu_s
        if cap <= 1:
            return self.item_s_1, self.cpu_s_1
        f = (cap - 1) / (cores - 1)
        return (
            self.item_s_1 + f * (self.item_s - self.item_s_1),
            self.cpu_s_1 + f * (self.cpu_s - self.cpu_s_1),
        )


def predict(
    profile: Mapping[str, Any] | Calibration,
    items: int,
    item_s: float | None = None,
    item_bytes: int = 0,
    *,
    task: Any = None,
    cpu_s: float | None = None,
    releases_gil: bool = False,
    coroutine: bool = False,
    coroutine_cpu_s: float | None = None,
    workers: int | None = None,
    cold: bool = True,
    latency_s: float | None = None,
    bandwidth_Bps: float | None = None,
    data_bytes: float | None = None,
    worker_memory_bytes: float | None = None,
    cluster: Cluster | None = None,
) -> Predictions:
    """Backends ranked by predicted seconds (fastest first), each with its reason.

    Those whose memory cannot hold the data even streaming come last, whatever their time
    (:mod:`smallbig.model.footprint`); each prediction says how it runs the data and its peak
    memory.

    Parameters
    ----------
    profile : dict or Calibration
        A calibration (:func:`smallbig.overhead`), read by
        :func:`smallbig.model.calibration.read_calibration`.
    items : int
        How many items.
    task : TaskProfile or dict, optional
        The task measured by :func:`smallbig.profile_task`: its costs with the native pools
        as they are and capped at one thread, its GIL share and its bytes. Replaces the
        hand-described ``item_s`` … ``coroutine_cpu_s``.
    item_s, item_bytes : float, int
        Without ``task``: the seconds one item takes alone and the bytes shipped per item.
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
        Include each backend's start-up ("a script run once"); ``False``: the pool is
        running already ("a session that reuses the pool": a reusable pool's ``reuse_s``).
    data_bytes : float, optional
        The items' bytes in all (default: ``items`` × the bytes per item): replaces the bytes
        per item, shipped and held.
    worker_memory_bytes : float, optional
        Memory of each extrapolated cluster worker (default: this machine's).
    cluster : Cluster, optional
        The cluster to extrapolate to as one object (:class:`smallbig.model.cluster.Cluster`):
        its ``workers``, ``latency_s``, ``bandwidth_Bps`` and ``worker_memory_bytes``, in
        place of those four keywords.
    """
    if cluster is not None:
        if any(v is not None for v in (workers, latency_s, bandwidth_Bps, worker_memory_bytes)):
            raise ValueError("give cluster= or its terms (workers=, latency_s=, …), not both")
        workers, latency_s = cluster.workers, cluster.latency_s
        bandwidth_Bps, worker_memory_bytes = cluster.bandwidth_Bps, cluster.worker_memory_bytes
    items = checks.count("items", items)
    for name, value in (("item_s", item_s), ("cpu_s", cpu_s), ("coroutine_cpu_s", coroutine_cpu_s)):
        if value is not None:
            checks.number(name, value)
    checks.number("item_bytes", item_bytes)
    target = _Target(
        workers=None if workers is None else checks.count("workers", workers),
        latency_s=None if latency_s is None else checks.number("latency_s", latency_s),
        bandwidth_Bps=None if bandwidth_Bps is None
        else checks.number("bandwidth_Bps", bandwidth_Bps, above=True),
        worker_memory_bytes=None if worker_memory_bytes is None
        else checks.number("worker_memory_bytes", worker_memory_bytes, above=True),
    )  # fmt: skip
    if data_bytes is not None:
        data_bytes = checks.number("data_bytes", data_bytes)
    calibration = read_calibration(profile, "profile")
    cost = _cost(_task(task, item_s, item_bytes, cpu_s, releases_gil, coroutine, coroutine_cpu_s))
    if data_bytes is not None:  # the items are the data: ship and hold what the user says
        cost = dataclasses.replace(cost, nbytes=int(data_bytes / items + cost.result_bytes))
    machine = calibration.memory_bytes or machine_memory({})
    out = [
        _predict_one(name, cal, cost, items, calibration.cpu_count, machine, target, cold)
        for name, cal in calibration.backends.items()
    ]
    if not cost.coroutine:
        out = _asyncio_after_threads(out, calibration.backends)
    ranked = sorted(out, key=lambda p: (not p.memory.fits, p.seconds))
    return Predictions(_lightest_first(ranked))


@dataclass(frozen=True)
class _Target:
    """What an extrapolation replaces of a cluster backend's calibration (``None``: as
    measured): :class:`~smallbig.model.cluster.Cluster`, checked."""

    workers: int | None
    latency_s: float | None
    bandwidth_Bps: float | None
    worker_memory_bytes: float | None


@dataclass
class _Run:
    """One backend running one map, as the steps of :func:`_predict_one` work it out."""

    cal: BackendCalibration
    cost: _Cost
    items: int
    target: _Target
    cap: int | None
    wall: float  # per item, at the backend's cap
    cpu: float
    slots: int
    cpus: float
    note: str  # what limits the cpus
    grown: dict[str, float]  # the overheads at the slots run (at_workers)

    @property
    def cluster(self) -> bool:
        return self.cal.distributed

    @property
    def networked(self) -> bool:
        """Extrapolated to a network of known latency."""
        return self.target.latency_s is not None and self.cluster

    @property
    def on_loop(self) -> bool:
        """Its coroutine twin runs on the backend's event loop."""
        return self.cost.coroutine and self.cal.coroutines

    @property
    def busy(self) -> float:
        """CPU seconds an item keeps a core busy (the twin's, on an event loop)."""
        cost = self.cost
        return min(cost.coroutine_cpu_s, self.wall) if self.on_loop and cost.coroutine_cpu_s \
            else self.cpu  # fmt: skip


def _predict_one(
    name: str,
    cal: BackendCalibration,
    cost: _Cost,
    items: int,
    cores: float | None,
    machine: float,
    target: _Target,
    cold: bool,
) -> Prediction:
    """One backend's predicted time for the map, term by term: start-up, per-item overhead,
    transfer, the compute of the binding bound, and the ramp of a cluster's first round."""
    cap = cal.inner_threads
    wall, cpu = cost.at_cap(cap, cores or cal.cores or cal.workers)
    if cal.returns_freed_memory:
        # Its workers map an item's large blocks afresh every time (Dask's): the faults'
        # CPU, at the speed of the thread the profile ran on.
        cpu += cost.fresh_memory_cpu_s
        wall += cost.fresh_memory_cpu_s / cost.thread_cores
    slots, cpus, note = _capacity(cal, cores, target.workers, cost, cap)
    grown = at_workers(cal, slots if target.workers and cal.distributed else None)
    run = _Run(cal, cost, items, target, cap, wall, cpu, slots, cpus, note, grown)
    startup = _startup(run, cold)
    overhead = grown["auto_overhead_s"]
    batches = _batches(run)
    transfer, first_round = _transfer(run, batches)
    bounds = _bounds(run, batches)
    binding = max(bounds, key=bounds.get)
    compute = items * bounds[binding]
    put_s, compute, binding = _put_or_stay(run, compute, binding)
    ramp = _ramp(run, batches, binding, first_round)
    total = startup + items * (overhead + transfer) + put_s + compute + ramp
    # Slot-bound time of a task that mostly waits is waiting, not compute.
    work = "waiting" if binding == "slots" and run.busy < 0.5 * wall else "compute"
    parts = {
        "start-up": startup,
        "overhead": items * overhead + ramp,
        "transfer": items * transfer + put_s,
        work: compute,
    }
    main = max(parts, key=parts.get)
    reason = f"{main} dominates ({seconds(parts[main])} of {seconds(total)})"
    if main == work:
        reason += f"; {_why(binding, note, cost, cap, work)}"
    data = Data(items, cost.nbytes - cost.result_bytes, cost.result_bytes, cost.work_bytes)
    chunk = chunk_items(wall, data.item_bytes, items, slots)
    room = fit(cal, data, slots, chunk, machine, target.workers, target.worker_memory_bytes)
    if not room.fits:
        reason = f"{seconds(total)} if it had the memory; " + reason
    spread = cal.startup_spread_s
    known = cold and spread and not (target.workers and cal.distributed)  # not at another count
    spread_of = (spread[0], spread[1], cal.startup_starts) if known else None
    return Prediction(name, total, slots, reason, room, spread_of, startup)


def _startup(run: _Run, cold: bool) -> float:
    """Start-up of a cold map; a warm one's pool is running, and a reusable one (joblib's) is
    got back for ``reuse_s``."""
    if not cold:
        return run.cal.reuse_s or 0.0
    startup = run.grown["startup_s"]
    if not run.cal.in_process:
        startup += _first_calls(run)
    return startup


def _first_calls(run: _Run) -> float:
    """Seconds of a cold map's first calls: every fresh worker pays the task's imports and
    JIT once, all at the same time, each on its share of the cores."""
    cost = run.cost
    # The CPU seconds of one first call, from its wall where it was profiled.
    work = cost.first_call_s * cost.thread_cores
    # Each worker's share of a core: the backend's cores over its workers, at most one.
    # Extrapolated nodes are the laptop's like, so their cores count in its threads. Once
    # every worker had at least one core here: two Dask nodes of 0.25 core, each starting
    # its one worker on its own quota, were charged two first calls one after the other
    # (a numba import: 2 × 3.3 s, where the first map paid ~4 s over a warm one).
    share = min(1.0, run.cpus / run.slots)
    if run.target.workers and run.cluster:
        share *= cost.thread_cores
    return work / share


def _batches(run: _Run) -> float:
    """Tasks a map at chunksize="auto" sends."""
    one_job = run.cal.auto_partitions_per_worker
    if one_job:
        # One job of fixed partitions (Spark): as many as it cuts, whatever the work.
        return min(run.items, one_job * run.slots)
    # "auto" batches hold ~TARGET_BATCH_SECONDS of work, and every slot gets some.
    return min(run.items, max(run.slots, run.items * run.wall / TARGET_BATCH_SECONDS))


def _transfer(run: _Run, batches: float) -> tuple[float, float]:
    """Seconds per item of getting batches to workers and results back, and the α of the
    first round of batches (one a slot), which a cluster's fixed map cost includes."""
    cal, cost = run.cal, run.cost
    if cal.in_process:
        return 0.0, 0.0
    if cal.auto_partitions_per_worker and not run.networked:
        # A map's batches are one job's tasks: no batch pays a submit's round trip (α,
        # itself a job of one task); the job's own cost is map_fixed_s (_ramp).
        return _bytes_s(cal, cost, run.target.bandwidth_Bps, run.cluster), 0.0
    alpha = run.target.latency_s if run.networked else cal.alpha_value_s
    # Latency is paid once per round of batches in flight together. A network's latency
    # overlaps across every slot; a calibrated α here is mostly CPU (the scheduler's and the
    # workers' handling of a task), which overlaps only as far as there are cores: once per
    # batch, 2,000 tiny tasks on 8 Dask workers were predicted at 5× their time, once per
    # round of 8 at half of it. Bytes at the rate a map pipelines them.
    together = run.slots if run.networked else max(1.0, min(run.slots, run.cpus))
    rounds = max(1.0, batches / together)
    first_round = alpha * max(1.0, min(batches, run.slots) / together)
    per_item = (rounds * alpha) / run.items
    return per_item + _bytes_s(cal, cost, run.target.bandwidth_Bps, run.cluster), first_round


def _bounds(run: _Run, batches: float) -> dict[str, float]:
    """Per-item time under each bound; the largest binds. Fewer items than slots leave
    slots idle."""
    cal, cost, items = run.cal, run.cost, run.items
    bounds = {"slots": run.wall / min(run.slots, items), "cores": run.busy / min(run.cpus, items)}
    if cal.in_process and not run.on_loop and run.slots > 1:
        bounds["GIL"] = cost.gil_bound()  # one process's threads take turns holding it
        if (cost.pool_s and run.cap == 1 and run.slots == cost.pool_threads
                and items >= run.slots):  # fmt: skip
            # The profile ran the task on this many threads, capped as these are: no bound
            # above is below what they did. Taken apart, the bounds overlap the GIL's part of
            # one thread with the rest of another perfectly; the measured pool did not (6.3%
            # optimistic on threads over 13 tasks, serial unbiased).
            bounds["pool"] = cost.pool_s
    if run.cluster and not cal.auto_partitions_per_worker:
        # One central scheduler dispatches every batch, whatever the workers: its time per
        # task (the chunksize=1 no-op cost) caps the tasks per second of any cluster. (A
        # job's fixed partitions are dispatched within its own cost, map_fixed_s.)
        bounds["scheduler"] = batches * run.grown["task_overhead_s"] / items
    return bounds


def _put_or_stay(run: _Run, compute: float, binding: str) -> tuple[float, float, str]:
    """The object put once: its copies' seconds, and the compute and binding bound, which
    change when the tasks stay where the object is (:func:`_put_s`)."""
    workers = run.target.workers if run.cluster else None
    put_s, stay = _put_s(run.cal, run.cost, run.items, run.target.bandwidth_Bps, workers)
    if stay is None:
        return put_s, compute, binding
    # Dask runs tasks where their data is unless copying it is worth it: on the first
    # holder's share of the slots and cores, the further copies are saved.
    holders, first = stay
    per_slot = run.wall / min(max(1, run.slots // holders), run.items)
    per_core = run.busy / min(max(1, run.cpus // holders), run.items)
    there = max(run.items * max(per_slot, per_core), compute)
    if first + there < put_s + compute:
        return first, there, "holder"
    return put_s, compute, binding


def _ramp(run: _Run, batches: float, binding: str, first_round: float) -> float:
    """What a cluster's map costs beyond its per-item terms: the ramp of its first round and
    the fixed cost of a map."""
    if not run.cluster:
        return 0.0
    cal, grown = run.cal, run.grown
    ramp = 0.0
    if binding != "scheduler":
        # A central scheduler hands each such round out one task after another: the last
        # slot starts (slots − 1) dispatches late (scheduler-bound, it is in the bound).
        ramp = (cal.serial_dispatch_rounds * (min(run.slots, batches) - 1)
                * grown["task_overhead_s"])  # fmt: skip
    if cal.auto_partitions_per_worker or run.wall > grown["task_overhead_s"]:
        # What a warm map of waits was measured to cost whatever its items
        # (calibrate.map_fixed_s): the ramp and the α of a first round of batches are part
        # of it, the rest is what the terms above leave out. Not for items shorter than
        # their own dispatch, whose first results are back before the rest are sent: 1,000
        # tiny tasks on 4 Dask workers took 23 ms in all, a map of waits 32 ms more. A map
        # that is one job (Spark) pays it whatever its items: results come back when the
        # job ends.
        ramp += max(0.0, grown["map_fixed_s"] - ramp - first_round)
    return ramp


#: Predictions this close (relative) are a tie: the machine's noise on a whole run is larger.
TIE = 0.02


def _asyncio_after_threads(
    out: list[Prediction], rows: Mapping[str, BackendCalibration]
) -> list[Prediction]:
    """A plain function on a backend that runs coroutines in-process (asyncio) runs on its
    thread pool plus a hop through the event loop: never ahead of the plain thread pool."""
    pools = [p.seconds for p in out
             if rows[p.backend].in_process and not rows[p.backend].coroutines
             and p.workers > 1]  # fmt: skip
    if not pools:
        return out
    return [
        dataclasses.replace(p, seconds=max(p.seconds, min(pools)))
        if rows[p.backend].in_process and rows[p.backend].coroutines
        else p
        for p in out
    ]


def _lightest_first(ranked: list[Prediction]) -> list[Prediction]:
    """Among the predictions that tie with the fastest (within :data:`TIE`), the one with the
    least start-up first: start-up is the term that varies most from run to run (a reusable
    process pool predicted 0.4% ahead of a plain loop took 67% longer: its start-up took
    0.8 s, not 0.6)."""
    if not ranked or not (ranked[0].memory is None or ranked[0].memory.fits):
        return ranked
    tied = [p for p in ranked if p.seconds <= ranked[0].seconds * (1 + TIE)
            and (p.memory is None or p.memory.fits)]  # fmt: skip
    first = min(tied, key=lambda p: p.startup_s)
    return [first, *(p for p in ranked if p is not first)]


def _span(low: float, high: float) -> str:
    """``1–3.5 s`` (one unit, given once, when both share it)."""
    a, b = seconds(low), seconds(high)
    unit = b.rsplit(" ", 1)[-1]
    return f"{a.removesuffix(' ' + unit)}–{b}"


def startup_note(ranked: Sequence[Prediction]) -> str | None:
    """A line saying that the pick depends on start-up, when the first two predictions are
    closer than the spread of either one's measured start-ups; else ``None``."""
    fits = [p for p in ranked if p.memory is None or p.memory.fits]
    if len(fits) < 2:
        return None
    first, second = fits[:2]
    width = max(
        (p.startup_spread[1] - p.startup_spread[0] for p in (first, second) if p.startup_spread),
        default=0.0,
    )
    if second.seconds - first.seconds >= width:
        return None
    started = "; ".join(
        f"{p.backend}'s start-up took {_span(*p.startup_spread[:2])} over its last "
        f"{p.startup_spread[2]} starts"
        for p in (first, second)
        if p.startup_spread and p.startup_spread[1] > p.startup_spread[0]
    )
    return (
        f"{first.backend} or {second.backend}: the choice depends on start-up "
        f"(predicted {seconds(second.seconds - first.seconds)} apart; {started})"
    )


def _put_s(
    cal: BackendCalibration,
    cost: _Cost,
    items: int,
    bandwidth_Bps: float | None,
    workers: int | None,
) -> tuple[float, tuple[int, float] | None]:
    """Seconds of a map's one shared object (``put`` once, :attr:`_Cost.put_bytes`) reaching
    every worker or node that runs its tasks; for an engine that copies between workers, also
    ``(holders, seconds)`` of leaving the tasks where the first copy is (else ``None``).

    The first copy as the calibration's ``put`` measured it (its α beyond a task's own, and
    β); each further copy one link's worth: from the driver's one link, one after the other
    (Ray's nodes), or worker to worker, each holder serving the next (Dask: doubling
    rounds). Extrapolated to a network, one holder per worker (a node each).
    """
    nbytes = cost.put_bytes
    kind = cal.put_copies
    if not nbytes or cal.in_process:
        return 0.0, None
    links = cal.argument_links
    fixed = max(0.0, cal.alpha_put_s - cal.alpha_value_s)
    if bandwidth_Bps and workers:
        first, copy = fixed + nbytes * links / bandwidth_Bps, nbytes / bandwidth_Bps
    else:
        first = fixed + nbytes / (cal.beta_put_Bps or cal.beta_value_Bps)
        copy = nbytes / (cal.beta_value_Bps * links)
    if kind == "machine":
        return first, None
    holders = cal.put_holders
    if workers and (kind == "worker" or bandwidth_Bps):
        holders = workers
    holders = max(1, min(holders, items))
    if kind == "node":
        return first + (holders - 1) * copy, None
    return first + math.ceil(math.log2(holders)) * copy, (holders, first)


def _bytes_s(
    cal: BackendCalibration, cost: _Cost, bandwidth_Bps: float | None, cluster: bool
) -> float:
    """Seconds per item of shipping its argument and result.

    On a network the model extrapolates to, an argument crosses ``argument_links`` links one
    after the other (Dask's: driver → scheduler → worker) and a result one. Otherwise, at the
    rates the calibration measured through a ``map`` (pipelined), or, in a calibration
    without them, from one payload at a time (whose arguments crossed ``links`` links).
    """
    arg = cost.nbytes - cost.result_bytes
    links = cal.argument_links
    if bandwidth_Bps and cluster:
        return (arg * links + cost.result_bytes) / bandwidth_Bps
    single = cal.beta_value_Bps
    return arg / (cal.beta_map_Bps or single) + cost.result_bytes / (
        cal.beta_result_Bps or single * links
    )


#: The relative rise between two worker counts below which a term is taken not to grow.
GROWTH_NOISE = 0.2


def at_workers(cal: BackendCalibration, workers: int | None) -> dict[str, float]:
    """A backend's start-up, per-task, per-item ("auto") and per-map overhead at ``workers``.

    As calibrated at its own count, unless ``workers`` is given and the calibration measured it
    at two counts (``by_workers``, :func:`smallbig.model.calibrate.add_scaling`): then each grows as
    a straight line through the two, never below the smaller measured value, and the "auto"
    overhead per item with the per-task cost. A cluster's start-up measured 3.5 s at 8 Dask
    workers and 9.8 s at 16 on this machine, against 0.99 s at 2.
    """
    out = {
        "startup_s": cal.startup_s,
        "task_overhead_s": cal.task_overhead_s,
        "auto_overhead_s": cal.auto_overhead_s,
        "map_fixed_s": cal.map_fixed_s,
    }
    points = cal.by_workers
    if workers is None or len(points) < 2:
        return out
    w0, w1 = points[0].workers, points[1].workers
    if w1 == w0:
        return out
    grown = {}
    for key in ("startup_s", "task_overhead_s", "map_fixed_s"):
        a, b = getattr(points[0], key), getattr(points[1], key)
        if a is None or b is None:
            continue  # a calibration from before the term was measured
        # Two single timings on a shared machine differ by up to ~20% with nothing grown:
        # a smaller rise is noise, and a line through noise extrapolated 8× is a guess.
        # (Ray's start-up here: 16.8, 16.4 and 15.2 s at 4, 8 and 16 workers.)
        slope = (b - a) / (w1 - w0) if b > (1 + GROWTH_NOISE) * a else 0.0
        grown[key] = max(min(a, b), a + slope * (workers - w0))
    if out["task_overhead_s"] > 0:
        ratio = grown["task_overhead_s"] / out["task_overhead_s"]
        grown["auto_overhead_s"] = out["auto_overhead_s"] * max(1.0, ratio)
    return {**out, **grown}


def _task(
    task: Any,
    item_s: float | None,
    item_bytes: float,
    cpu_s: float | None,
    releases_gil: bool,
    coroutine: bool,
    coroutine_cpu_s: float | None,
) -> TaskProfile:
    """The task as a :class:`TaskProfile`: the one given (or its dict, as ``run.json`` and
    hand-written profiles hold it, missing terms at their defaults), else one described by
    ``item_s`` and the rest (:meth:`TaskProfile.described`)."""
    if isinstance(task, TaskProfile):
        return task
    if task is not None:
        t = dict(task)
        try:
            return TaskProfile(
                name=t.get("name", "task"),
                items=t.get("items", 0),
                item_s=t["item_s"],
                cpu_s=t["cpu_s"],
                cores_used=t.get("cores_used", 0.0),
                item_s_1=t["item_s_1"],
                cpu_s_1=t["cpu_s_1"],
                gil_s=t["gil_s"],
                arg_bytes=int(t["arg_bytes"]),
                result_bytes=int(t["result_bytes"]),
                memory_bytes=int(t.get("memory_bytes") or 0),
                coroutine=bool(t["coroutine"]),
                coroutine_cpu_s=t.get("coroutine_cpu_s"),
                first_call_s=float(t.get("first_call_s") or 0.0),
                pool_s=t.get("pool_s"),
                pool_threads=t.get("pool_threads"),
                put_bytes=int(t.get("put_bytes") or 0),
                thread_cores=float(t.get("thread_cores") or 1.0),
                fresh_memory_cpu_s=float(t.get("fresh_memory_cpu_s") or 0.0),
            )
        except KeyError as exc:
            missing = exc.args[0]
            raise ValueError(f"task profile has no {missing!r} (smallbig.profile_task)") from None
    if item_s is None:
        raise ValueError("give a task profile (task=) or its time per item (item_s=)")
    return TaskProfile.described(item_s, item_bytes, cpu_s, releases_gil, coroutine,
                                 coroutine_cpu_s)  # fmt: skip


def _cost(task: TaskProfile) -> _Cost:
    """One item as the model takes it."""
    return _Cost(
        task.item_s,
        task.cpu_s,
        task.item_s_1,
        task.cpu_s_1,
        task.gil_s,
        task.arg_bytes + task.result_bytes,
        task.coroutine,
        task.coroutine_cpu_s,
        task.result_bytes,
        task.memory_bytes,
        task.first_call_s,
        task.pool_s,
        task.pool_threads,
        task.put_bytes,
        task.thread_cores,
        task.fresh_memory_cpu_s,
    )


def _capacity(
    cal: BackendCalibration, cores: float | None, workers: int | None, cost: _Cost,
    cap: int | None,
) -> tuple[int, float, str]:
    """``(slots, cpus, what limits the cpus)`` of one calibrated backend for this task.

    Each of ``slots`` items at once uses up to ``cap`` cores (uncapped: what it uses alone),
    so the backend gets ``min(its cores, slots × that)`` of them.
    """
    extrapolated = bool(workers and cal.distributed)
    w = workers if extrapolated else cal.workers
    have = w if extrapolated else cal.cores or cores or w
    if cost.coroutine and cal.coroutines:
        return w, 1, "one event loop runs every coroutine's CPU part"
    slots = (cal.threads or w) if cal.in_process else w
    per_item = cap if cap is not None else math.ceil(cost.inner - 1e-9)
    # Fewer than one core where a scale model's quota gives a laptop or a node less: at
    # least one core here, two processes on a laptop of 0.25 core were predicted twice as
    # fast as serial.
    cpus = min(have, max(1, slots * per_item))
    unit = "threads" if cal.in_process else "workers"
    return slots, cpus, f"{cpus:g} cores for {slots} {unit}"


def _why(binding: str, note: str, cost: _Cost, cap: int | None, work: str) -> str:
    if binding == "scheduler":
        return "scheduler-bound: one scheduler dispatches every task"
    if binding == "holder":
        return "run where the object put once is: copying it costs more than it saves"
    if binding == "GIL":
        return f"GIL-bound: {seconds(cost.gil_bound())} per item that threads cannot overlap"
    if binding == "pool":
        return f"as measured: {cost.pool_threads} threads ran it at {seconds(cost.pool_s)} per item"
    if binding == "slots" and work == "waiting":
        return "more slots overlap more waits"
    if binding == "slots":
        return "every slot busy for a whole item"
    inner = cost.inner
    if inner > 1.05 and cap is not None and cap < inner:
        return f"{note}; inner pools capped at {cap} thread(s) per task"
    if inner > 1.05 and cap is None:
        return f"{note}; each item uses {inner:.1f} cores by itself"
    return note


def task_cost(workload: Any, items: int = 8) -> Any:
    """What one item of ``workload`` costs: its :class:`~smallbig.model.taskprofile.TaskProfile`.

    Measured by :func:`~smallbig.model.taskprofile.profile_task` on ``items`` items after one
    warm-up item; for a workload with a coroutine twin, the twin's CPU per item with 32 items
    in flight.
    """
    import dataclasses

    from smallbig.model.taskprofile import profile_task

    profile = profile_task(workload.task, workload.prepare(items + 1, 0))
    if workload.async_task is not None:
        profile = dataclasses.replace(
            profile, coroutine=True, coroutine_cpu_s=coroutine_cpu_s(workload)
        )
    return dataclasses.replace(profile, name=workload.name)


def coroutine_cpu_s(workload: Any, in_flight: int = 32) -> float:
    """CPU seconds per item of ``workload``'s coroutine twin, ``in_flight`` items at once
    (:func:`smallbig.model.taskprofile.concurrent_cpu_s`)."""
    from smallbig.model.taskprofile import concurrent_cpu_s

    return concurrent_cpu_s(workload.async_task, workload.prepare(in_flight, 1))
