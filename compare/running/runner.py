"""``smallbig run``: the matrix workloads × backends × sizes, measured into records."""

from __future__ import annotations

import contextlib
import gc
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smallbig.backends import backend_class, default_backends, get_backend, parse_spec
from smallbig.backends.emulation.fidelity import Group, Link, Monitor, watched, watched_links
from smallbig.backends.memory import INTERVAL_S, PeakMemory, ProcessTree
from smallbig.model.calibrate import (
    RUN_PROFILE,
    SCALING_REUSE_S,
    add_scaling,
    load_profile,
    measure_overheads,
    note_startup,
    remember_run,
    write_profile,
)
from smallbig.model.costmodel import coroutine_cpu_s, task_cost
from smallbig.model.fits import BASELINE
from smallbig.results.records import (
    Record,
    RecordWriter,
    load_records,
    metadata,
    read_metadata,
    write_metadata,
)
from smallbig.running.plan import Plan, Point
from smallbig.workloads.base import Workload
from smallbig.workloads.registry import DEFAULT_SIZES, WORKLOADS, open_workloads
from smallbig.workloads.user import default_sizes, user_workload

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


@dataclass
class RunResult:
    """What a run measured, as written to its folder: the records, ``run.json``'s metadata
    and the run's own calibration (``None`` if no backend got as far as calibrating)."""

    records: pd.DataFrame
    metadata: dict[str, Any]
    calibration: dict[str, Any] | None
    out_dir: Path

    @property
    def startup(self) -> dict[str, float]:
        """Start-up seconds per backend."""
        return {b: i.get("startup_s", 0.0) for b, i in self.metadata.get("backends", {}).items()}

    def answer(self) -> Any:
        """What to use, per workload (:func:`smallbig.present.answer.answer`): the block the
        terminal and ``report.html`` show first."""
        from smallbig.present.answer import answer

        return answer(self.records, self.metadata, self.calibration)

    def to_frame(self) -> pd.DataFrame:
        """Median warm seconds and speedup vs serial per workload, backend and size."""
        from smallbig.present.report import speedup_table

        return speedup_table(self.records)

    def __repr__(self) -> str:
        return (
            f"<RunResult {len(self.records)} records, "
            f"{self.records['workload'].nunique()} workload(s), "
            f"{self.records['backend'].nunique()} backend(s) in {self.out_dir}>"
        )

    def _repr_html_(self) -> str:
        from smallbig.present.report_html import speedup_html

        return self.answer().to_html() + speedup_html(self.records)


def run(
    workloads: Sequence[str] = WORKLOADS,
    backends: Sequence[str] | None = None,
    *,
    sizes: Sequence[int] | None = None,
    repeats: int = 3,
    out_dir: str | Path = "smallbig-results",
    workers: int | None = None,
    resume: bool = False,
    image_dir: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    report: bool = True,
    task: Callable[..., Any] | None = None,
    items: Sequence[Any] | None = None,
    ship_bytes: bool | None = None,
) -> RunResult:
    """Measure every workload × backend × size; return the records, metadata and calibration.

    The plan of points is made first (:class:`smallbig.running.plan.Plan`); a resumed run measures
    the
    plan minus the points already in ``records.csv``. The local backends are up together and
    take turns, repeat by repeat; each cluster is measured on its own. Every backend's
    overheads are measured after its points, into ``calibration.json``.

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
        parameters (:func:`smallbig.workloads.user.user_workload`). Default sizes then end at
        ``len(items)``.
    report : bool
        Also draw the figures and write ``report.html`` into ``out_dir``
        (:func:`smallbig.present.outputs.write_outputs`, as ``smallbig run`` does).
    ship_bytes : bool, optional
        Images carry their files' bytes to the workers instead of their paths. Default: when
        a backend is a cluster reached at an address other than this machine's loopback,
        whose workers cannot be assumed to see this machine's files.

    Returns
    -------
    RunResult
        ``.records`` (a DataFrame, one row per measurement), ``.metadata``, ``.calibration``.
    """
    backends = list(backends or default_backends())
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
    writer = RecordWriter(out, resume, overwrite)
    if writer.repaired:
        warnings.warn(writer.repaired, stacklevel=2)
    remember_run(out)
    session = _Session(out, writer, workers, progress)
    if resume:
        session.resume_from(out)
    try:
        ships = remote_workers(backends) if ship_bytes is None else ship_bytes
        with open_workloads(workloads, image_dir, given, ships) as loaded, session.bar:
            plan = Plan.make(
                {w: list(sizes or _default_sizes(loaded[w])) for w in loaded}, backends, repeats
            )
            session.traits = {name: w.traits() for name, w in loaded.items()}
            session.execute(plan, loaded)
            _measure_traits(loaded, given, plan, session.traits)
            meta = session.metadata()
            write_metadata(out, meta)
    finally:
        gc.unfreeze()
        writer.close()
    # A resumed run with nothing left to measure calibrated nothing new: the file's is current.
    calibration = session.calibration or load_profile(out / RUN_PROFILE)
    if report:
        from smallbig.present.outputs import write_outputs

        write_outputs(out)
    return RunResult(load_records(out), meta, calibration, out)


def remote_workers(backends: Sequence[str]) -> bool:
    """Whether a backend of ``backends`` is reached at an address off this machine's
    loopback: its workers may not share this machine's filesystem."""
    import ipaddress

    from smallbig.backends.addresses import split_address

    for spec in backends:
        address = parse_spec(spec)[1]
        if address is None:
            continue
        try:
            host = split_address(address)[0]
        except ValueError:
            return True  # an address it cannot read: not known to be this machine
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return True
        except ValueError:  # a host name
            if host != "localhost":
                return True
    return False


class _Session:
    """The state of a run's execution: the records' writer, each backend's info and overheads,
    serial's checksums, the items prepared, the progress bar."""

    def __init__(self, out: Path, writer: RecordWriter, workers: int | None, progress: bool):
        self.out, self.writer, self.workers, self.progress = out, writer, workers, progress
        self.infos: dict[str, Any] = {}
        self.overheads: dict[str, dict] = {}
        self.reference: dict[tuple[str, int], str] = {}  # serial's checksum per point
        self.prepared: dict[tuple[str, int], tuple[list, int]] = {}
        self.traits: dict[str, dict] = {}
        self.calibration: dict[str, Any] | None = None
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
        )

    def resume_from(self, out: Path) -> None:
        """Take up what the interrupted run already knows."""
        with contextlib.suppress(FileNotFoundError):
            done = load_records(out)
            for row in done[done["backend"] == BASELINE].itertuples():
                self.reference.setdefault((row.workload, row.size), row.checksum)
        with contextlib.suppress(FileNotFoundError):
            self.infos.update(read_metadata(out).get("backends", {}))
        self.overheads.update((load_profile(out / RUN_PROFILE) or {}).get("backends", {}))

    def metadata(self) -> dict[str, Any]:
        return metadata(self.infos, self.traits)

    def execute(self, plan: Plan, loaded: dict[str, Workload]) -> None:
        """Measure the points of ``plan`` not yet in the records, group by group."""
        task = self.bar.add_task("measuring", total=plan.total)
        for group in plan.groups():
            points = plan.schedule(group, self.writer.done)
            self.bar.advance(task, plan.total // len(plan.backends) * len(group) - len(points))
            if points:
                active = [b for b in group if any(p.backend == b for p in points)]
                self._execute_group(active, points, loaded, task)

    def _execute_group(
        self, active: list[str], points: list[Point], loaded: dict[str, Workload], task: Any
    ) -> None:
        with contextlib.ExitStack() as stack:
            opened, readers, idle, held = {}, {}, {}, {}

            def start(spec: str) -> None:
                opened[spec] = stack.enter_context(get_backend(spec, workers=self.workers))
                self.infos[spec] = opened[spec].info()
                readers[spec] = opened[spec].memory_reader()
                # A scale model's CPU groups and an emulated cluster's links, watched per point.
                held[spec] = (watched(self.infos[spec]), watched_links(self.infos[spec]))

            for spec in active:
                start(spec)
                idle[spec] = opened[spec].footprint()  # before any work
            write_metadata(self.out, self.metadata())
            # What exists now lives through these measurements: keep it out of every
            # collection, so that the collect before each measurement is cheap.
            gc.collect()
            gc.freeze()
            warmed: set[tuple[str, str]] = set()
            paired = BASELINE in active  # a resumed run may have no serial left
            for point in points:
                spec, name, n = point.backend, point.workload, point.size
                ex = opened[spec]
                self.bar.update(task, description=f"{spec:>10} {name:>6} n={n:<6}")
                if (name, n) not in self.prepared:  # identical items on every backend
                    items = loaded[name].prepare(n, 0)
                    self.prepared[name, n] = items, loaded[name].item_bytes(items) * n
                try:
                    record = _measure(
                        ex,
                        point,
                        loaded[name],
                        *self.prepared[name, n],
                        self.reference,
                        paired,
                        readers[spec],
                        held[spec],
                    )
                except Exception as exc:  # items' own errors are outcomes: the engine failed
                    record = _failed(ex, point, paired, exc)
                    _say(self.progress, self.bar, f"{spec}: {record.failure}; restarting it")
                    ex.shutdown(wait=False, cancel_futures=True)
                    start(spec)
                    warmed = {w for w in warmed if w[0] != spec}
                self.writer.write(record)
                self.bar.advance(task)
                if not record.failure and (spec, name) not in warmed:
                    warmed.add((spec, name))
                    _warm_workers(ex, loaded[name])
            # Each backend's overhead terms, measured while it is up: the run's own
            # calibration, against which the report checks the cost model.
            for spec in active:
                self.bar.update(task, description=f"{spec:>10} overheads")
                self.overheads[spec] = note_startup(
                    measure_overheads(
                        opened[spec], spec, OVERHEAD_ITEMS, repeats=3, footprint=idle[spec]
                    )
                )
        # A cluster's start-up and per-task cost at more workers, once it is down: how
        # they grow, for the extrapolation to clusters this machine does not have.
        for spec in active:
            row = self.overheads.get(spec)
            if row and row.get("distributed") and "by_workers" not in row:
                self.bar.update(task, description=f"{spec:>10} at more workers")
                self.overheads[spec] = add_scaling(row, spec, SCALING_REUSE_S)
        self.calibration = write_profile(list(self.overheads.values()), self.out / RUN_PROFILE)


def _measure_traits(
    loaded: dict[str, Workload], given: list[Workload], plan: Plan, traits: dict[str, dict]
) -> None:
    """What the model needs that serial's records cannot show, into ``traits``."""
    for name, w in loaded.items():
        # What "too big for memory" counts: the data an item stands for.
        traits[name]["data_bytes_per_item"] = w.data_bytes(w.prepare(max(plan.sizes[name]), 0))
        if w.async_task is not None:
            traits[name]["coroutine_cpu_s"] = coroutine_cpu_s(w)
    for w in given:  # the user's task: its traits are measured, not declared
        traits[w.name]["profile"] = task_cost(w).as_dict()
        traits[w.name]["releases_gil"] = traits[w.name]["profile"]["releases_gil"]


def _default_sizes(workload: Workload) -> list[int]:
    if workload.name in DEFAULT_SIZES:
        return DEFAULT_SIZES[workload.name]
    return default_sizes(workload.params["items"])


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


def _failed(ex: Any, point: Point, paired: bool, exc: Exception) -> Record:
    """The record of a point the backend could not measure (a dead worker, a lost cluster)."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return Record(
        workload=point.workload,
        backend=point.backend,
        workers=ex.workers,
        size=point.size,
        repeat=point.repeat,
        phase=point.phase,
        wall_s=float("nan"),
        cpu_s=float("nan"),
        items_per_s=float("nan"),
        bytes_shipped=0,
        errors=point.size,
        paired=paired,
        checksum="",
        correct=None,
        failure=reason,
    )


def _measure(
    ex: Any,
    point: Point,
    workload: Workload,
    items: list,
    bytes_shipped: int,
    reference: dict[tuple[str, int], str],
    paired: bool,
    memory: Callable[[], int | None],
    watch: tuple[list[Group], list[Link]],
) -> Record:
    """Measure ``point`` on ``ex``: time, CPU, memory, the checksum against serial's, and,
    under a scale model's quotas or on emulated links, whether they held (``watch``)."""
    n, spec = len(items), point.backend
    # Start every measurement with an empty collector: otherwise a full collection of this
    # process's heap (~0.1 s, mostly the harness's own objects) lands in whichever measurement
    # crosses the threshold, e.g. one of three serial repeats of 10,000 no-ops.
    gc.collect()
    base = ProcessTree(set()).rss()
    interval = INTERVAL_S if ex.memory_is_local else REMOTE_INTERVAL_S
    with Monitor(*watch) as fidelity, PeakMemory(memory, interval) as peak:
        cpu_start, start = time.process_time(), time.perf_counter()
        outcomes = workload.run(ex, items, chunksize="auto")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if point.phase == "cold":
        wall += ex.startup_s  # the first run on a fresh backend pays for starting it
    digest = workload.checksum(outcomes)
    if spec == BASELINE:
        reference.setdefault((workload.name, n), digest)
    expected = reference.get((workload.name, n))
    return Record(
        workload=workload.name,
        backend=spec,
        workers=ex.workers,
        size=n,
        repeat=point.repeat,
        phase=point.phase,
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
        base_rss_bytes=base,
        fidelity=str(fidelity.verdict),
    )
