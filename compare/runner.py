"""``smallbig run``: the matrix workloads × backends × sizes, measured into records."""

from __future__ import annotations

import contextlib
import gc
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from backends import available, backend_class, get_backend, is_cluster, parse_spec
from backends.memory import INTERVAL_S, PeakMemory
from compare.calibrate import (
    RUN_PROFILE,
    load_profile,
    measure_overheads,
    remember_run,
    write_profile,
)
from compare.costmodel import coroutine_cpu_s, task_cost
from compare.records import (
    Record,
    RecordWriter,
    load_records,
    metadata,
    read_metadata,
    write_metadata,
)
from workloads.base import Workload
from workloads.user import default_sizes, user_workload

WORKLOADS = ("images", "api", "noop", "sleep")
# Three orders of magnitude each, sized so that the default run fits in ~3 minutes on 2 cores.
# Five sizes per workload, about half a decade apart: a held-out size then sits between
# measured ones, and the fits see the curve's shape, not only its ends.
DEFAULT_SIZES = {
    "images": [1, 3, 10, 30, 100],
    "api": [4, 13, 40, 130, 400],
    "noop": [10, 100, 1000, 3000, 10000],
    "sleep": [2, 6, 20, 60, 200],
}
API_LATENCY_S = 0.005
SLEEP_S = 0.005  # per sleep item: like the API's latency, a wait that threads and asyncio hide
# A remote engine's memory figure is a round trip to its scheduler, refreshed by heartbeats.
REMOTE_INTERVAL_S = 1.0
OVERHEAD_ITEMS = 2000  # no-ops for each backend's "auto" overhead: ~0.1–2 s per backend


def check_options(
    workloads: Sequence[str],
    backends: Sequence[str],
    sizes: Sequence[int] | None,
    repeats: int,
    out_dir: Path,
) -> None:
    """Fail with a clear message before anything starts."""
    for name in workloads:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}, expected one of {list(WORKLOADS)}")
    for spec in backends:
        name, _ = parse_spec(spec)
        backend_class(name)  # ImportError naming the extra if the engine is missing
    if sizes is not None and (not sizes or any(s <= 0 for s in sizes)):
        raise ValueError(f"sizes must be positive item counts, got {list(sizes)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ValueError(f"output directory {out_dir} is not writable: {exc}") from exc


@contextlib.contextmanager
def _workloads(
    names: Sequence[str], image_dir: str | None, given: Sequence[Workload] = ()
) -> Iterator[dict[str, Workload]]:
    from workloads.probes import probe_workloads

    with contextlib.ExitStack() as stack:
        found: dict[str, Workload] = {w.name: w for w in given}
        for name in names:
            if name in found:
                continue
            if name == "images":
                from workloads.images import images_workload

                found[name] = images_workload(image_dir)
            elif name == "api":
                from workloads.api import api_workload
                from workloads.weather_server import Faults, serve_api_process

                server = stack.enter_context(serve_api_process(Faults(latency_s=API_LATENCY_S)))
                found[name] = api_workload(server.url)
            else:
                found[name] = probe_workloads(sleep_s=SLEEP_S)[name]
        yield found


def run(
    workloads: Sequence[str] = WORKLOADS,
    backends: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    repeats: int = 3,
    out_dir: str | Path = "smallbig-results",
    workers: int | None = None,
    resume: bool = False,
    image_dir: str | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    task: Callable[..., Any] | None = None,
    items: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Measure every workload × backend × size; return the records as a DataFrame.

    The local backends are up together and take turns, repeat by repeat; each cluster is
    measured on its own (see :func:`_groups`). Every backend's overheads are measured after
    its points, into ``calibration.json``.

    Parameters
    ----------
    workloads, backends : sequence of str
        Names (backends also ``dask@ADDRESS`` / ``ray@ADDRESS``); default: all available.
        ``serial`` is always added: it is the baseline of speedups and checksums.
    sizes : sequence of int, optional
        Item counts for every workload (default: three orders of magnitude per workload).
    repeats : int
        Warm repeats per point, after the cold (first) run.
    out_dir : path
        Where ``records.csv``, ``run.json`` and ``calibration.json`` go; rows are written as
        they are measured.
    resume : bool
        Skip points already in ``out_dir/records.csv``.
    overwrite : bool
        Replace an earlier run in ``out_dir``; with neither this nor ``resume``, a folder
        that holds records is refused (``ValueError``) rather than emptied.
    task, items : optional
        Measure your own function over your own items instead of ``workloads``: each item
        is ``task``'s argument, or its keyword arguments when items are dicts of its
        parameters (:func:`workloads.user.user_workload`). Default sizes then end at
        ``len(items)``.
    """
    backends = list(backends or available())
    out = Path(out_dir)
    given: list[Workload] = []
    if task is not None:
        if items is None:
            raise ValueError("task= needs items=: the items to map it over")
        given.append(user_workload(task, items))
        workloads = [given[0].name]
        check_options([], backends, sizes, repeats, out)
        if sizes and max(sizes) > len(items):
            raise ValueError(f"sizes go up to {max(sizes)}, but there are {len(items)} items")
    else:
        check_options(workloads, backends, sizes, repeats, out)
    # serial always runs, first: every speedup is against it and every checksum compared with
    # its answer.
    if "serial" not in backends:
        backends.insert(0, "serial")
    backends.sort(key=lambda b: b != "serial")
    writer = RecordWriter(out, resume, overwrite)
    if writer.repaired:
        warnings.warn(writer.repaired, stacklevel=2)
    remember_run(out)
    infos: dict[str, Any] = {}
    overheads: dict[str, dict] = {}
    reference: dict[tuple[str, int], str] = {}
    prepared: dict[tuple[str, int], tuple[list, int]] = {}
    if resume:
        with contextlib.suppress(FileNotFoundError):
            done = load_records(out)
            for row in done[done["backend"] == "serial"].itertuples():
                reference.setdefault((row.workload, row.size), row.checksum)
        with contextlib.suppress(FileNotFoundError):
            infos.update(read_metadata(out).get("backends", {}))
        overheads.update((load_profile(out / RUN_PROFILE) or {}).get("backends", {}))
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
    )
    try:
        with _workloads(workloads, image_dir, given) as loaded, bar:
            plan = {w: list(sizes or _default_sizes(loaded[w])) for w in loaded}
            traits = {name: w.traits() for name, w in loaded.items()}
            total = len(backends) * sum(len(s) for s in plan.values()) * (repeats + 1)
            task = bar.add_task("measuring", total=total)
            for group in _groups(backends):
                todo = {
                    spec: {
                        (w, n, r)
                        for w in plan
                        for n in plan[w]
                        for r in range(repeats + 1)
                        if (w, spec, n, r, "cold" if r == 0 else "warm") not in writer.done
                    }
                    for spec in group
                }
                bar.advance(
                    task, total // len(backends) * len(group) - sum(map(len, todo.values()))
                )
                active = [spec for spec in group if todo[spec]]
                if not active:
                    continue
                with contextlib.ExitStack() as stack:
                    opened, readers, idle = {}, {}, {}
                    for spec in active:
                        opened[spec] = stack.enter_context(get_backend(spec, workers=workers))
                        infos[spec] = opened[spec].info()
                        readers[spec] = opened[spec].memory_reader()
                        idle[spec] = opened[spec].footprint()  # before any work
                    write_metadata(out, metadata(infos, traits))
                    # What exists now lives through these measurements: keep it out of every
                    # collection, so that the collect before each measurement is cheap.
                    gc.collect()
                    gc.freeze()
                    warmed: set[tuple[str, str]] = set()
                    paired = "serial" in active  # a resumed run may have no serial left
                    for name, n, r, spec in _schedule(plan, repeats, active, todo):
                        ex = opened[spec]
                        bar.update(task, description=f"{spec:>10} {name:>6} n={n:<6}")
                        if (name, n) not in prepared:  # identical items on every backend
                            items = loaded[name].prepare(n, 0)
                            prepared[name, n] = items, loaded[name].item_bytes(items) * n
                        try:
                            record = _measure(
                                ex,
                                spec,
                                loaded[name],
                                *prepared[name, n],
                                r,
                                reference,
                                paired,
                                readers[spec],
                            )
                        except Exception as exc:  # items' own errors are outcomes: the engine
                            record = _failed(ex, spec, name, n, r, paired, exc)
                            _say(progress, bar, f"{spec}: {record.failure}; restarting it")
                            ex.shutdown(wait=False, cancel_futures=True)
                            opened[spec] = stack.enter_context(get_backend(spec, workers=workers))
                            infos[spec] = opened[spec].info()
                            readers[spec] = opened[spec].memory_reader()
                            warmed = {w for w in warmed if w[0] != spec}
                        writer.write(record)
                        bar.advance(task)
                        if record.failure:
                            continue
                        if (spec, name) not in warmed:
                            warmed.add((spec, name))
                            _warm_workers(ex, loaded[name])
                    # Each backend's overhead terms, measured while it is up: the run's own
                    # calibration, against which the report checks the cost model.
                    for spec in active:
                        bar.update(task, description=f"{spec:>10} overheads")
                        overheads[spec] = measure_overheads(
                            opened[spec], spec, OVERHEAD_ITEMS, repeats=3, footprint=idle[spec]
                        )
                    write_profile(list(overheads.values()), out / RUN_PROFILE)
            for name, w in loaded.items():  # what the model needs that serial cannot show
                # What "too big for memory" counts: the data an item stands for.
                traits[name]["data_bytes_per_item"] = w.data_bytes(w.prepare(max(plan[name]), 0))
                if w.async_task is not None:
                    traits[name]["coroutine_cpu_s"] = coroutine_cpu_s(w)
            for w in given:  # the user's task: its traits are measured, not declared
                traits[w.name]["profile"] = task_cost(w).as_dict()
                traits[w.name]["releases_gil"] = traits[w.name]["profile"]["releases_gil"]
            write_metadata(out, metadata(infos, traits))
    finally:
        gc.unfreeze()
        writer.close()
    return load_records(out)


def _default_sizes(workload: Workload) -> list[int]:
    if workload.name in DEFAULT_SIZES:
        return DEFAULT_SIZES[workload.name]
    return default_sizes(workload.params["items"])


def _groups(backends: Sequence[str]) -> list[list[str]]:
    """Backends measured side by side, their repeats interleaved, in order.

    Every local backend is one group: an idle pool costs no CPU, so they can all be up while
    one measures, and a noisy minute on a shared machine then slows them alike instead of
    whichever one it falls on (threads and asyncio, the same 6 threads for a plain function,
    measured 9% apart when timed a minute apart). A cluster is a group of its own: an idle
    scheduler or raylet does use CPU.
    """
    local = [b for b in backends if not is_cluster(b)]
    return [local] + [[b] for b in backends if is_cluster(b)]


def _schedule(
    plan: dict[str, list[int]],
    repeats: int,
    active: list[str],
    todo: dict[str, set[tuple[str, int, int]]],
) -> Iterator[tuple[str, int, int, str]]:
    """``(workload, size, repeat, backend)`` in measuring order: per point, round by round,
    every backend once a round; serial first in the cold round (its checksum is the
    reference), then each round starts with the next backend, so none is always first."""
    for name, sizes in plan.items():
        for n in sizes:
            for r in range(repeats + 1):
                k = r % len(active)
                for spec in active[k:] + active[:k]:
                    if (name, n, r) in todo[spec]:
                        yield name, n, r, spec


def _warm_workers(ex: Any, workload: Workload) -> None:
    """After the cold run, bring every worker process up to speed on ``workload``.

    The cold run of one item reaches one worker; without this, the first warm repeat that
    lands on another one pays its imports and JIT cache loads (~0.8 s for the numba kernel)
    and counts as warm. In-process backends share the process serial already warmed.
    """
    if not ex.in_process:
        workload.run(ex, workload.prepare(4 * ex.workers, 1), chunksize=1)


def _say(progress: bool, bar: Progress, message: str) -> None:
    if progress:
        bar.console.print(f"[red]{escape(message)}[/red]")
    else:
        warnings.warn(message, stacklevel=3)


def _failed(
    ex: Any, spec: str, workload: str, n: int, repeat: int, paired: bool, exc: Exception
) -> Record:
    """The record of a point the backend could not measure (a dead worker, a lost cluster)."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return Record(
        workload=workload,
        backend=spec,
        workers=ex.workers,
        size=n,
        repeat=repeat,
        phase="cold" if repeat == 0 else "warm",
        wall_s=float("nan"),
        cpu_s=float("nan"),
        items_per_s=float("nan"),
        bytes_shipped=0,
        errors=n,
        paired=paired,
        checksum="",
        correct=None,
        failure=reason,
    )


def _measure(
    ex: Any,
    spec: str,
    workload: Workload,
    items: list,
    bytes_shipped: int,
    repeat: int,
    reference: dict[tuple[str, int], str],
    paired: bool,
    memory: Callable[[], int | None],
) -> Record:
    n = len(items)
    # Start every measurement with an empty collector: otherwise a full collection of this
    # process's heap (~0.1 s, mostly the harness's own objects) lands in whichever measurement
    # crosses the threshold, e.g. one of three serial repeats of 10,000 no-ops.
    gc.collect()
    with PeakMemory(memory, INTERVAL_S if ex.memory_is_local else REMOTE_INTERVAL_S) as peak:
        cpu_start, start = time.process_time(), time.perf_counter()
        outcomes = workload.run(ex, items, chunksize="auto")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    phase = "cold" if repeat == 0 else "warm"
    if phase == "cold":
        wall += ex.startup_s  # the first run on a fresh backend pays for starting it
    digest = workload.checksum(outcomes)
    if spec == "serial":
        reference.setdefault((workload.name, n), digest)
    expected = reference.get((workload.name, n))
    return Record(
        workload=workload.name,
        backend=spec,
        workers=ex.workers,
        size=n,
        repeat=repeat,
        phase=phase,
        wall_s=wall,
        cpu_s=cpu,
        items_per_s=n / wall if wall > 0 else float("inf"),
        bytes_shipped=bytes_shipped,
        errors=sum(o.error is not None for o in outcomes),
        paired=paired,
        checksum=digest,
        correct=None if expected is None else digest == expected,
        bytes_out=workload.item_bytes(outcomes) * n,
        peak_rss_bytes=float("nan") if peak.bytes is None else peak.bytes,
    )
