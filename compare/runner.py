"""``smallbig run``: the matrix workloads × backends × sizes, measured into records."""

from __future__ import annotations

import contextlib
import gc
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from backends import available, backend_class, get_backend, parse_spec
from compare.advise import coroutine_cpu_s
from compare.calibrate import RUN_PROFILE, load_profile, measure_overheads, write_profile
from compare.records import (
    METADATA,
    Record,
    RecordWriter,
    load_records,
    metadata,
    write_metadata,
)
from workloads.base import Workload, checksum

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
def _workloads(names: Sequence[str], image_dir: str | None) -> Iterator[dict[str, Workload]]:
    from workloads.probes import probe_workloads

    with contextlib.ExitStack() as stack:
        found: dict[str, Workload] = {}
        for name in names:
            if name == "images":
                from workloads.images import images_workload

                found[name] = images_workload(image_dir)
            elif name == "api":
                from workloads.api import api_workload
                from workloads.weather_server import Faults, serve_api_process

                server = stack.enter_context(serve_api_process(Faults(latency_s=API_LATENCY_S)))
                found[name] = api_workload(server.url)
            else:
                found[name] = probe_workloads()[name]
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
) -> pd.DataFrame:
    """Measure every workload × backend × size; return the records as a DataFrame.

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
        Where ``records.csv`` and ``run.json`` go; rows are written as they are measured.
    resume : bool
        Skip points already in ``out_dir/records.csv``.
    """
    backends = list(backends or available())
    out = Path(out_dir)
    check_options(workloads, backends, sizes, repeats, out)
    # serial always runs, first: every speedup is against it and every checksum compared with
    # its answer.
    if "serial" not in backends:
        backends.insert(0, "serial")
    backends.sort(key=lambda b: b != "serial")
    writer = RecordWriter(out, resume)
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
            infos.update(json.loads((out / METADATA).read_text()).get("backends", {}))
        overheads.update((load_profile(out / RUN_PROFILE) or {}).get("backends", {}))
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
    )
    try:
        with _workloads(workloads, image_dir) as loaded, bar:
            plan = {w: list(sizes or DEFAULT_SIZES[w]) for w in loaded}
            traits = {name: w.traits() for name, w in loaded.items()}
            total = len(backends) * sum(len(s) for s in plan.values()) * (repeats + 1)
            task = bar.add_task("measuring", total=total)
            for spec in backends:
                todo = [
                    (w, n, r)
                    for w in plan
                    for n in plan[w]
                    for r in range(repeats + 1)
                    if (w, spec, n, r, "cold" if r == 0 else "warm") not in writer.done
                ]
                bar.advance(task, total // len(backends) - len(todo))
                if not todo:
                    continue
                # serial is one worker by definition; --workers sizes the others.
                count = None if spec == "serial" else workers
                with get_backend(spec, workers=count) as ex:
                    # What exists now lives through the backend's measurements: keep it out
                    # of every collection (gc.freeze), so that the collect before each
                    # measurement is cheap.
                    gc.collect()
                    gc.freeze()
                    infos[spec] = ex.info()
                    write_metadata(out, metadata(infos, traits))
                    warmed: set[str] = set()
                    for name, n, r in todo:
                        bar.update(task, description=f"{spec:>10} {name:>6} n={n:<6}")
                        if (name, n) not in prepared:  # identical items on every backend
                            items = loaded[name].prepare(n, 0)
                            prepared[name, n] = items, loaded[name].item_bytes(items) * n
                        record = _measure(ex, spec, loaded[name], *prepared[name, n], r, reference)
                        writer.write(record)
                        bar.advance(task)
                        if name not in warmed:
                            warmed.add(name)
                            _warm_workers(ex, loaded[name])
                    # The backend's overhead terms, measured while it is up: the run's own
                    # calibration, against which the report checks the cost model.
                    bar.update(task, description=f"{spec:>10} overheads")
                    overheads[spec] = measure_overheads(ex, spec, OVERHEAD_ITEMS, repeats=3)
                    write_profile(list(overheads.values()), out / RUN_PROFILE)
            for name, w in loaded.items():  # what the model needs that serial cannot show
                if w.async_task is not None:
                    sample = w.prepare(32, 1)
                    traits[name]["coroutine_cpu_s"] = coroutine_cpu_s(w.async_task, sample)
            write_metadata(out, metadata(infos, traits))
    finally:
        gc.unfreeze()
        writer.close()
    return load_records(out)


def _warm_workers(ex: Any, workload: Workload) -> None:
    """After the cold run, bring every worker process up to speed on ``workload``.

    The cold run of one item reaches one worker; without this, the first warm repeat that
    lands on another one pays its imports and JIT cache loads (~0.8 s for the numba kernel)
    and counts as warm. In-process backends share the process serial already warmed.
    """
    if not ex.in_process:
        workload.run(ex, workload.prepare(4 * ex.workers, 1), chunksize=1)


def _measure(
    ex: Any,
    spec: str,
    workload: Workload,
    items: list,
    bytes_shipped: int,
    repeat: int,
    reference: dict[tuple[str, int], str],
) -> Record:
    n = len(items)
    # Start every measurement with an empty collector: otherwise a full collection of this
    # process's heap (~0.1 s, mostly the harness's own objects) lands in whichever measurement
    # crosses the threshold, e.g. one of three serial repeats of 10,000 no-ops.
    gc.collect()
    cpu_start, start = time.process_time(), time.perf_counter()
    outcomes = workload.run(ex, items, chunksize="auto")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    phase = "cold" if repeat == 0 else "warm"
    if phase == "cold":
        wall += ex.startup_s  # the first run on a fresh backend pays for starting it
    digest = checksum(outcomes)
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
        checksum=digest,
        correct=None if expected is None else digest == expected,
    )
