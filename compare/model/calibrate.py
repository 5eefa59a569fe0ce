"""``smallbig overhead``: measure each backend's fixed costs from the probes; save a profile.

Per backend: start-up seconds; per-task overhead at chunksize 1 and "auto" (and for a cluster
what a warm map costs whatever its items); transfer latency α
and bandwidth β (``T(bytes) = α + bytes/β``, by value and via ``put``), with fit quality; and
the bytes per second of arguments and results pipelined through one ``map``.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smallbig.backends import default_backends, get_backend, parse_spec
from smallbig.backends.emulation.cpugroups import current, effective_cores
from smallbig.backends.inner import returns_freed_memory
from smallbig.model.calibration import SCHEMA, read_calibration
from smallbig.model.fits import fit_line
from smallbig.results.records import read_json, write_json
from smallbig.results.timing import median_time, paired_ratio
from smallbig.workloads import probes
from smallbig.workloads.base import cache_dir

PAYLOAD_BYTES = (16 * 2**10, 2**20, 8 * 2**20)
RUN_PROFILE = "calibration.json"  # the overheads a run measured, beside its records


def default_profile_path() -> Path:
    """Where this machine's calibration profile is kept (its start-up history and growth with
    workers beside it): a folder of its own for each laptop quota of a scale model, since a
    laptop of 0.35 core is another machine."""
    quota = current()
    folder = cache_dir() if quota is None else cache_dir() / f"laptop-{quota['cpus']:g}-cores"
    return folder / "calibration.json"


def remember_run(out_dir: str | Path) -> None:
    """Note ``out_dir`` as the last run's, for commands that read a run by default."""
    marker = cache_dir() / "last-run"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(Path(out_dir).resolve()))


def last_run() -> Path:
    """The output directory of the last ``smallbig run`` (``smallbig-results`` if none)."""
    marker = cache_dir() / "last-run"
    return Path(marker.read_text().strip()) if marker.exists() else Path("smallbig-results")


def calibrate_backend(spec: str, workers: int | None, items: int, repeats: int) -> dict:
    """All overhead terms of one backend, measured in one session of it; for a cluster that
    smallbig starts itself, also at :data:`SCALING_FACTOR` times its workers
    (:func:`measure_scaling`)."""
    with get_backend(spec, workers=workers) as ex:
        row = measure_overheads(ex, spec, items, repeats)
    return add_scaling(note_startup(row), spec)


def _cached(path: Path) -> dict[str, Any]:
    """A cache file of this machine's figures; ``{}`` if missing or damaged (only a cache)."""
    try:
        return read_json(path, ()) if path.exists() else {}
    except ValueError:
        return {}


#: Start-ups kept per backend and worker count, for their spread.
KEPT_STARTS = 20


def note_startup(row: dict[str, Any], history: str | Path | None = None) -> dict[str, Any]:
    """``row`` with ``startup_spread_s``: the fewest and most seconds among the last
    :data:`KEPT_STARTS` start-ups of this backend at its workers on this machine, this one
    included, and ``startup_starts``, how many. The history is kept beside the machine's
    calibration (``startups.json``): one calibration sees one start, and a start-up varies
    from one session to the next (Ray's took 8.2–11 s here on one afternoon)."""
    path = Path(history) if history else default_profile_path().parent / "startups.json"
    seen = _cached(path)
    key = f"{row['backend']}|{row['workers']}"
    starts = [*seen.get(key, []), float(row["startup_s"])][-KEPT_STARTS:]
    seen[key] = starts
    write_json(path, seen)
    return {**row, "startup_spread_s": [min(starts), max(starts)], "startup_starts": len(starts)}


#: No-op tasks, one per item, for the per-task cost at another worker count.
SCALING_TASKS = 200


def measure_scaling(spec: str, workers: int) -> dict[str, float] | None:
    """Start-up and per-task cost (``chunksize=1`` no-ops) of ``spec`` at ``workers``; kept in
    this machine's cache (``scaling.json``) for :func:`add_scaling` to reuse. ``None`` when
    the backend could not start that many: a Ray runtime already running in this process
    is joined as it is (a test session's kept 2 workers, and its "8 workers" were cached)."""
    with get_backend(spec, workers=workers) as ex:
        if ex.workers != workers:
            return None
        n = one_task_items(ex, max(SCALING_TASKS, 10 * ex.workers), 10 * ex.workers)
        per_task = median_time(
            lambda: list(ex.map(probes.noop, range(n), chunksize=1)), repeats=2
        ) / n
        row = {"workers": ex.workers, "startup_s": ex.startup_s, "task_overhead_s": per_task,
               "map_fixed_s": map_fixed_s(ex, repeats=3)}  # fmt: skip
    path = _scaling_path()
    kept = _cached(path)
    kept[f"{spec}|{workers}"] = {**row, "measured_at": time.time()}
    write_json(path, kept)
    return row


#: Seconds one map of no-ops at ``chunksize=1`` may take in a calibration. It binds only where
#: a task costs tens of milliseconds: Spark's 27 ms a task made 100 of them 2.7 s a map, 11.6 s
#: of its 27 s calibration; others' 0.1-1 ms tasks keep every item.
ONE_TASK_MAP_S = 0.5


def one_task_items(ex: Any, most: int, fewest: int) -> int:
    """How many no-ops a ``chunksize=1`` map of ``ex`` times: ``most``, or as many as fit in
    :data:`ONE_TASK_MAP_S` by a first map of ``fewest`` (which also warms every worker),
    but never fewer than ``fewest``."""
    start = time.perf_counter()
    list(ex.map(probes.noop, range(fewest), chunksize=1))
    per_task = (time.perf_counter() - start) / fewest
    return max(fewest, min(most, int(ONE_TASK_MAP_S / per_task) if per_task > 0 else most))


def _scaling_path() -> Path:
    return default_profile_path().parent / "scaling.json"


def _kept_scaling(spec: str, workers: int, within_s: float) -> dict[str, Any] | None:
    kept = _cached(_scaling_path()).get(f"{spec}|{workers}")
    if not kept or time.time() - kept.get("measured_at", 0) > within_s:
        return None
    return kept if kept.get("workers") == workers else None


#: The second worker count a cluster's growth is measured at, as a multiple of its own. Start-up
#: grew little from 2 to 4 workers here and steadily beyond (Ray 8.4, 8.7, 12.3, 18.5 s at 2,
#: 4, 8, 16; Dask 0.45, 0.81, 1.73, 3.62 s): a line through 2 and 4 put Ray at 16 workers at
#: 9.4 s, where one through 2 and 8 says 17.5 s.
SCALING_FACTOR = 4
#: ...but no more than this many workers (or twice its own, if more): a machine of 32 cores
#: would otherwise start 128 worker processes to calibrate.
SCALING_MAX_WORKERS = 32

#: How old a measurement at the second worker count a run may reuse (``smallbig overhead`` always
#: measures it again): a run then starts each cluster once, not twice (Ray: ~20 s more here).
SCALING_REUSE_S = 6 * 3600.0


def add_scaling(row: dict[str, Any], spec: str, reuse_within_s: float = 0.0) -> dict[str, Any]:
    """``row`` with ``by_workers``: its start-up and per-task cost at its own worker count and
    at :data:`SCALING_FACTOR` times it, for a cluster smallbig starts itself (one given by
    address has the workers it has), so that the model grows them with the workers it
    extrapolates to (:func:`smallbig.model.costmodel.predict`). The figures at the second count are
    measured now, or taken from a measurement on this machine at most ``reuse_within_s``
    seconds old (the row then says when: ``measured_at``)."""
    if not row.get("distributed") or parse_spec(spec)[1] is not None:
        return row
    grown = ("workers", "startup_s", "task_overhead_s", "map_fixed_s")
    here = {k: row[k] for k in grown if k in row}
    own = row["workers"]
    more = min(SCALING_FACTOR * own, max(2 * own, SCALING_MAX_WORKERS))
    there = _kept_scaling(spec, more, reuse_within_s) if reuse_within_s > 0 else None
    if there is None:
        try:
            there = measure_scaling(spec, more)
        except Exception as exc:
            # The run's own figures stand; only their growth with workers is lost. (Spark at
            # 8 workers once failed its first job after every other engine had run here.)
            warnings.warn(
                f"{spec} at {more} workers could not be measured ({type(exc).__name__}: "
                f"{str(exc)[:200]}): its growth with workers is left out of the model",
                RuntimeWarning,
                stacklevel=2,
            )
    return row if there is None else {**row, "by_workers": [here, there]}


def measure_overheads(
    ex: Any, spec: str, items: int, repeats: int, footprint: dict[str, int | None] | None = None
) -> dict[str, Any]:
    """The overhead terms of the open backend ``ex`` (named ``spec``), as a profile row.

    Parameters
    ----------
    ex : Backend
        A started backend; its start-up time is the one it measured when it started.
    spec : str
        Its name as given (``NAME`` or ``NAME@ADDRESS``).
    items, repeats : int
        No-op items for the ``chunksize="auto"`` figure; timed runs per term (medians).
    footprint : dict, optional
        Its :meth:`~smallbig.backends.base.Backend.footprint` when it was idle (default: now).
    """
    info = ex.info()
    idle = footprint or ex.footprint()
    row: dict[str, Any] = {
        "backend": spec,
        "workers": ex.workers,
        # How many plain functions run at once (asyncio: its thread pool, not its 256
        # coroutine slots), whether coroutines run natively, and the cores the workers
        # share: this machine's, or for an existing cluster one per worker thread.
        "threads": info.get("threads", ex.workers),
        "coroutines": ex.supports_coroutines,
        "cores": _cores(ex, spec, info),
        "startup_s": ex.startup_s,
        # A pool that a second backend (a session's next call) gets back running: what
        # that reuse costs, apart from the first start (smallbig.model.costmodel: warm).
        "reuse_s": _reuse_s(ex, spec) if ex.reusable else None,
        "in_process": ex.in_process,
        "distributed": ex.distributed,
        "argument_links": ex.argument_links,
        "serial_dispatch_rounds": ex.serial_dispatch_rounds,
        "auto_partitions_per_worker": ex.auto_partitions_per_worker,
        **put_copies(ex, info),
        # The cap on native pool threads per task (None: the libraries' own), which decides
        # whether a task runs at its uncapped or its one-thread cost (smallbig.model.costmodel).
        "inner_threads": info.get("inner_threads"),
        # Workers that unmap an item's large blocks when it ends, where this process (which
        # profiles tasks) keeps them: each item faults its memory in again there
        # (TaskProfile.fresh_memory_cpu_s).
        "returns_freed_memory": bool(ex.submit(returns_freed_memory).result(timeout=60))
        and not returns_freed_memory(),
        # Memory at rest: this process (every backend shares it) and what the backend's own
        # processes hold (None: a remote engine that reports nothing); per worker, their share.
        "driver_rss_bytes": idle["driver"],
        "idle_rss_bytes": idle["backend"],
        "worker_rss_bytes": None
        if idle["backend"] is None
        else (0 if ex.in_process else idle["backend"] // ex.workers),
    }
    for label, chunk in (("task_overhead_s", 1), ("auto_overhead_s", "auto")):
        n = items if chunk == "auto" else one_task_items(ex, max(20, items // 20), 20)
        t = median_time(
            lambda n=n, c=chunk: list(ex.map(probes.noop, range(n), chunksize=c)), repeats
        )
        row[label] = t / n
        if chunk == 1:
            one_task_map = t, n
    if ex.auto_partitions_per_worker is not None:
        # A map that is one job pays the job's cost whatever its items (map_fixed_s): what
        # an item adds is the slope between two sizes, not the mean. Spark's 0.2 s per job
        # spread over 2,000 no-ops read 0.1 ms an item, and 10,000 were predicted at 1.1 s
        # where they took 0.23 s.
        # The two sizes alternate, eight times the items apart: measured one after the other,
        # the larger ran on a JVM still warming up, and a test's calibration read 40 us an
        # item where alternated maps read under 2 (9,000 no-ops predicted 1.6x too slow).
        small, large = items // 4, 2 * items
        large_s, small_s, _ = paired_ratio(
            lambda: list(ex.map(probes.noop, range(large), chunksize="auto")),
            lambda: list(ex.map(probes.noop, range(small), chunksize="auto")),
            max(repeats, 5),
        )
        row["auto_overhead_s"] = max(0.0, (large_s - small_s) / (large - small))
        job_s = small_s - row["auto_overhead_s"] * small
        # A map at chunksize=1 is one job too, of a task per item: the job's cost is paid
        # once (map_fixed_s), not by each of the map's tasks.
        t1, n1 = one_task_map
        row["task_overhead_s"] = max(0.0, t1 - max(0.0, job_s)) / n1
    if ex.distributed:
        row["map_fixed_s"] = map_fixed_s(ex, repeats)
        if ex.auto_partitions_per_worker is not None:
            # Where the no-op maps' line meets zero items is the job's own cost (its results
            # come back when it ends, so none overlap the sending): Spark's read 0.20 s where
            # the line through maps of waits met zero at 0.15 s.
            row["map_fixed_s"] = max(row["map_fixed_s"], job_s)
    arrays = {b: probes.make_payload(b) for b in PAYLOAD_BYTES}
    sizes = np.array(PAYLOAD_BYTES, float)
    by_value = [
        median_time(lambda a=arrays[b]: ex.submit(probes.payload, a).result(), repeats)
        for b in PAYLOAD_BYTES
    ]

    def via_put(a: np.ndarray) -> None:
        ex.submit(probes.payload, ex.put(a)).result()

    by_put = [median_time(lambda a=arrays[b]: via_put(a), repeats) for b in PAYLOAD_BYTES]
    row.update(pipelined_rates(ex, arrays[2**20], repeats))
    for label, times in (("value", by_value), ("put", by_put)):
        fit = fit_line(sizes, np.array(times))
        row[f"alpha_{label}_s"] = fit.fixed_s
        row[f"beta_{label}_Bps"] = 1 / fit.per_item_s if fit.per_item_s > 0 else float("inf")
        row[f"fit_error_{label}"] = fit.median_rel_error
    return row


#: Waits of :data:`MAP_WAIT_S` per worker in the two maps whose line gives a map's fixed cost.
MAP_WAITS_PER_WORKER = (10, 40)
MAP_WAIT_S = 0.010


def map_fixed_s(ex: Any, repeats: int) -> float:
    """Seconds a warm cluster's ``map(..., chunksize="auto")`` costs whatever its items: where
    the line through maps of 10 ms waits, 5 and 20 per worker, meets zero items.

    Timing rounds, dispatch one task after another, the last results' way back: on 16 local
    workers those lines met zero at 45–126 ms (both engines), where the per-task and latency
    terms made 74 ms of it on Dask and 5 ms on Ray. Waits, not no-ops: maps of no-ops met
    zero at about half of it (their first results come back while the rest are still being
    sent out). The median of ``repeats`` pairs, the two sizes alternating."""
    sizes = [k * ex.workers for k in MAP_WAITS_PER_WORKER]

    def timed(n: int) -> float:
        start = time.perf_counter()
        list(ex.map(probes.sleep, [MAP_WAIT_S] * n, chunksize="auto"))
        return time.perf_counter() - start

    timed(sizes[0])  # every worker has run the task once
    fixed = []
    for _ in range(max(3, repeats)):
        small, large = timed(sizes[0]), timed(sizes[1])
        fixed.append(small - (large - small) / (sizes[1] - sizes[0]) * sizes[0])
    return max(0.0, statistics.median(fixed))


def put_copies(ex: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Where a put object is kept (``put_copies``: per machine, worker or node) and how many
    copies a map makes of it when every worker runs some of its tasks (``put_holders``)."""
    holders = {"machine": 1, "worker": ex.workers}.get(ex.put_copies, info.get("nodes", 1))
    return {"put_copies": ex.put_copies, "put_holders": holders}


#: 1 MB items per worker in the pipelined transfer figures: two maps, this many and 4×.
PIPELINED_PER_WORKER = 8
#: Seconds the smaller of those maps may take, so that the larger takes about 4 s: on a
#: slow link 64 MB maps took 10 s each (the calibration minutes), and a Ray map whose
#: transfers queue for over 10 s has them requested again (its pull timeout): Ray's 128 MB
#: argument maps over 100 Mbit/s ran at 4.5 MB/s, and the resends went on into the next map
#: (result rate read 374 MB/s on an 11.8 MB/s link, the advice 98% fast).
PIPELINED_SMALL_S = 1.0


def pipelined_sizes(workers: int, per_item_s: float) -> list[int]:
    """The two map sizes of :func:`pipelined_rates`: :data:`PIPELINED_PER_WORKER` items per
    worker (at most 64) and 4×, fewer where ``per_item_s`` (one item's seconds, from a map
    of one item per worker) would make the smaller map take over :data:`PIPELINED_SMALL_S`;
    never under 2, so that a slope still has two maps' worth of items."""
    n = min(64, PIPELINED_PER_WORKER * workers)
    if per_item_s > 0:
        n = min(n, max(2, int(PIPELINED_SMALL_S / per_item_s)))
    return [n, 4 * n]


def pipelined_rates(ex: Any, array: np.ndarray, repeats: int) -> dict[str, float]:
    """Bytes per second of many 1 MB arguments (and, apart, results) in one ``map``, as a
    map ships them: pickled and sent while earlier ones are still running. The slope of the
    line through two map sizes, so that a map's fixed cost is not taken for bandwidth. One
    payload at a time (α, β) pays every latency in turn: a 1 MB argument per item was
    predicted 3.4× slower on processes than it ran."""
    if ex.in_process:
        return {}

    def rate(fn: Any, arguments: Any) -> float:
        def timed(given: Any) -> float:
            start = time.perf_counter()
            list(ex.map(fn, *given, chunksize="auto"))
            return time.perf_counter() - start

        with warnings.catch_warnings():
            # Dask's note on a large graph: shipping arguments is what is measured here.
            warnings.filterwarnings("ignore", message="Sending large graph")
            # One item per worker first: how slow the link is decides the sizes.
            sizes = pipelined_sizes(ex.workers, timed(arguments(ex.workers)) / ex.workers)
            small, large = arguments(sizes[0]), arguments(sizes[1])  # made before the clock
            timed(large)  # warm-up: the workers' buffers grown to the larger map
            # The two sizes alternate and each pair gives a slope; the median slope. A slope
            # from two separate medians doubled when a neighbour's burst hit one of them
            # (processes' 1 MB arguments predicted 2.1x their time in one CI run).
            slopes = []
            for _ in range(max(3, repeats)):
                gc.collect()
                slopes.append((timed(large) - timed(small)) / (sizes[1] - sizes[0]))
        per_item = statistics.median(slopes)
        return array.nbytes / per_item if per_item > 0 else float("inf")

    def distinct(n: int) -> list[np.ndarray]:
        # One array n times would be shipped once: Dask names an argument by its content.
        return [np.concatenate(([float(i)], array[1:])) for i in range(n)]

    return {
        "beta_map_Bps": rate(probes.payload, lambda n: (distinct(n),)),
        "beta_result_Bps": rate(probes.block, lambda n: (range(n), [array.nbytes] * n)),
    }


def _reuse_s(ex: Any, spec: str) -> float:
    """Start-up of a second ``spec`` backend opened while ``ex`` holds the pool."""
    with get_backend(spec, workers=ex.workers) as again:
        return again.startup_s


def overhead(
    backends: Sequence[str] | None = None,
    workers: int | None = None,
    items: int = 20_000,
    repeats: int = 3,
    path: str | Path | None = None,
) -> dict[str, Any]:
    """Measure every backend and save the profile (JSON) to ``path``; return it."""

    rows = [calibrate_backend(s, workers, items, repeats) for s in (backends or default_backends())]
    return write_profile(rows, path or default_profile_path())


def _cores(ex: Any, spec: str, info: dict[str, Any]) -> float:
    """The cores a backend's workers share: a cluster's, one per worker thread; an emulated
    one's, its nodes' quotas (or this machine's, which unquoted nodes share); a local
    backend's, this machine's, or the laptop's quota under a scale model."""
    emulated = info.get("emulated") or {}
    if emulated.get("cpus_per_node"):
        return float(emulated["nodes"] * emulated["cpus_per_node"])
    if parse_spec(spec)[1] and not emulated:
        return ex.workers
    return os.cpu_count() if emulated else effective_cores()


def write_profile(rows: Sequence[dict[str, Any]], path: str | Path) -> dict[str, Any]:
    """Save profile ``rows`` (one per backend) with this machine's facts as JSON; return it."""
    import psutil

    profile = {
        "schema": SCHEMA,
        # The laptop's cores: a scale model's quota, if it runs under one (the model's cores
        # bound divides CPU seconds by them).
        "cpu_count": effective_cores(),
        "memory_bytes": psutil.virtual_memory().total,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backends": {r["backend"]: r for r in rows},
    }
    out = Path(path)
    write_json(out, profile)
    profile["path"] = str(out)
    return profile


def load_profile(path: str | Path | None = None) -> dict[str, Any] | None:
    """The saved profile, or ``None`` if there is none yet.

    Raises
    ------
    ValueError
        Naming the file, and the backend and term it cannot read
        (:func:`smallbig.model.calibration.read_calibration`).
    """
    p = Path(path) if path else default_profile_path()
    if not p.exists():
        return None
    profile = read_json(p, ("backends",))
    read_calibration(profile, str(p))  # every term the model reads, readable
    return profile
