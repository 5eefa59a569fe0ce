"""``smallbig bench cluster``: the cluster model against clusters of 4–16 workers.

On tasks whose time does not depend on this machine's two cores (waits, a weather API with
20 ms latency, and tiny tasks that only the scheduler bounds), each cluster of N workers is
started by smallbig as a user would (``get_backend(engine, workers=N)``) and measured: cold
(its start-up plus the first ``map`` of the task, whose workers have not run it yet) and warm
(median of repeated maps). Three predictions of the same figure:

- **flat**: the ordinary calibration with its cluster's cost kept as at its own workers (the
  model before it grew with N);
- **extrapolated**: the ordinary calibration, start-up and per-task cost grown to N from the
  two worker counts it measured (:func:`smallbig.model.costmodel.at_workers`);
- **at N**: a calibration of the very cluster measured (its start-up, per-task cost and
  transfers at N).

Then the crossover with the best local backend, for a job run once (start-up included) and a
pool already running: predicted by extrapolation, and measured where the straight lines
through each backend's warm times at two sizes cross (plus the measured start-ups, cold) —
times of these tasks are straight lines in the items, and timing a 6-thread pool at the
25,000 waits where a 16-worker cluster overtakes it would take minutes per case. Items scale
with N (each worker gets about :data:`TARGET_S` of work), so every row asks the same question
of a bigger cluster.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rich.console import Console

from smallbig.backends import available, backend_class, get_backend
from smallbig.model.band import first_win
from smallbig.model.calibrate import measure_overheads, overhead
from smallbig.model.costmodel import predict
from smallbig.model.fits import break_even, fit_line
from smallbig.model.taskprofile import profile_task
from smallbig.results.fmt import print_rows
from smallbig.workloads import probes
from smallbig.workloads.tasks import tiny

WAITS_S = (0.002, 0.010, 0.050)
API_LATENCY_S = 0.020
TARGET_S = 0.5  # seconds of work per worker in each measured map
TINY_PER_WORKER = 250  # tiny tasks per worker: the scheduler, not the work, bounds them
CROSSOVER_CAP_S = 60.0  # a local backend predicted slower than this at a size is not timed
SAMPLE = 17


@dataclass(frozen=True)
class Case:
    """A task of the benchmark: its function and how to make ``n`` of its items."""

    name: str
    fn: Callable[[Any], Any]
    make: Callable[[int], list]
    per_worker: int
    #: Every item is one object, which each timed map puts once and hands to every task.
    put_once: bool = False


def local_backends() -> list[str]:
    """The available backends that run on this machine alone (every one but the clusters)."""
    return [b for b in available() if not backend_class(b).distributed]


def ordinary_calibration(
    engines: Sequence[str], given: dict[str, Any] | None, folder: str, console: Console
) -> tuple[dict[str, Any], list[str]]:
    """The calibration the extrapolation starts from, and the local backends it holds.

    ``given`` (a profile of ``smallbig overhead``) is used as it is, and must hold every engine;
    without it, every available backend is calibrated first (a minute here)."""
    if given is None:
        console.print("calibrating (the ordinary calibration: default workers)")
        given = overhead([*local_backends(), *engines], None, items=5000, repeats=3,
                         path=f"{folder}/cal.json")  # fmt: skip
    held = given["backends"]
    missing = [e for e in engines if e not in held]
    if missing:
        raise ValueError(f"the calibration holds no {' or '.join(missing)}: calibrate it with "
                         f"`smallbig overhead --backends ... {' '.join(missing)}`")  # fmt: skip
    locals_ = [b for b in local_backends() if b in held]
    if not locals_:
        raise ValueError("the calibration holds no local backend to find a crossover with")
    return given, locals_


def cases(api_url: str) -> list[Case]:
    """The benchmark's tasks; ``api_url`` serves the weather API at :data:`API_LATENCY_S`."""
    from smallbig.workloads.api import api_workload, fetch_summary

    out = [
        Case(f"wait {s * 1e3:g} ms", probes.sleep, lambda n, s=s: [s] * n, round(TARGET_S / s))
        for s in WAITS_S
    ]
    prepare = api_workload(api_url).prepare
    per_api = round(TARGET_S / API_LATENCY_S)
    out.append(Case(f"weather API {API_LATENCY_S * 1e3:g} ms", fetch_summary, prepare, per_api))
    out.append(Case("tiny tasks", tiny, lambda n: list(range(n)), TINY_PER_WORKER))
    return out


def select(todo: Sequence[Case], wanted: Sequence[str] | None) -> list[Case]:
    """The cases of ``todo`` whose name contains one of ``wanted`` (any case; all if none):
    the benchmark takes minutes, and one case again is often all a change needs."""
    if not wanted:
        return list(todo)
    named = {w: [c for c in todo if w.lower() in c.name.lower()] for w in wanted}
    unknown = [w for w, found in named.items() if not found]
    if unknown:
        known = ", ".join(repr(c.name) for c in todo)
        raise ValueError(f"no case named like {', '.join(map(repr, unknown))}; known: {known}")
    return [c for c in todo if any(c in found for found in named.values())]


def timed_map(ex: Any, case: Case, items: list) -> float:
    """Wall seconds of one ``map(..., chunksize="auto")`` of ``items``, results collected."""
    start = time.perf_counter()
    if case.put_once:  # the put is part of the map's time (Dask's scatter is synchronous)
        items = [ex.put(items[0])] * len(items)
    list(ex.map(case.fn, items, chunksize="auto"))
    return time.perf_counter() - start


def warm_line(ex: Any, case: Case, sizes: Sequence[int], repeats: int) -> tuple[Any, float]:
    """The straight line through ``ex``'s warm seconds (median of ``repeats``) at ``sizes``,
    and those seconds at the last size."""
    times = [
        statistics.median(timed_map(ex, case, case.make(n)) for _ in range(repeats)) for n in sizes
    ]
    return fit_line(np.array(sizes, float), np.array(times)), times[-1]


def measure_cluster(
    engine: str, workers: int, todo: Sequence[Case], repeats: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Cold and warm seconds of every case on one fresh ``engine`` cluster of ``workers``,
    the warm line through a quarter of its items and all of them, and that cluster's
    calibration (taken after the cases, so that they meet it cold)."""
    rows = []
    with get_backend(engine, workers=workers) as ex:
        for case in todo:
            n = case.per_worker * workers
            first = timed_map(ex, case, case.make(n))
            line, warm = warm_line(ex, case, [n // 4, n], repeats)
            rows.append({"case": case.name, "items": n, "startup_s": ex.startup_s,
                         "cold_s": ex.startup_s + first, "warm_s": warm, "line": line,
                         "cold_extra_s": cold_extra_s(ex.startup_s, first, line, n)})  # fmt: skip
        cal = measure_overheads(ex, engine, items=5000, repeats=2)
    return rows, cal


def local_lines(
    case: Case,
    sizes: Sequence[int],
    cal: dict[str, Any],
    locals_: Sequence[str],
    task: Any,
    repeats: int = 1,
) -> dict[str, tuple[Any, float]]:
    """Per local backend, its warm line through ``sizes`` (the median of ``repeats`` maps at
    each) and what a cold map pays over it: its start-up and its fresh workers' first calls
    (:func:`cold_extra_s`).

    A backend predicted over 3× the best local one (or over :data:`CROSSOVER_CAP_S`) at the
    larger size is not timed: serial on thousands of waits would take minutes to lose.
    """
    predicted = {s: seconds_of(cal, s, sizes[-1], task) for s in locals_}
    best = min(predicted.values())
    out = {}
    for spec in locals_:
        if predicted[spec] > min(3 * best, CROSSOVER_CAP_S):
            continue
        with get_backend(spec) as ex:
            first = timed_map(ex, case, case.make(SAMPLE))  # warm, as the cluster is
            line = warm_line(ex, case, sizes, repeats)[0]
            out[spec] = (line, cold_extra_s(ex.startup_s, first, line, SAMPLE))
    return out


def cold_extra_s(startup_s: float, first_s: float, line: Any, items: int) -> float:
    """What a cold map of ``items`` paid over the warm ``line``: the start-up, and the first
    map's excess over the line (every fresh worker's imports and JIT), never below the
    start-up. The model's cold prediction holds both; a crossover measured with the start-up
    alone left the first calls out (a numba import on fresh cluster workers)."""
    return startup_s + max(0.0, first_s - line.predict(items))


def flat(calibration: dict[str, Any]) -> dict[str, Any]:
    """``calibration`` without what it measured at other worker counts."""
    out = copy.deepcopy(calibration)
    for row in out["backends"].values():
        row.pop("by_workers", None)
    return out


def seconds_of(cal: dict[str, Any], backend: str, n: int, task: Any, **kw: Any) -> float:
    """Predicted seconds of ``backend`` for ``n`` items of ``task``."""
    ranked = predict(cal, n, task=task, **kw)
    return next(p.seconds for p in ranked if p.backend == backend)


def predicted_crossover(
    cal: dict[str, Any],
    engine: str,
    locals_: Sequence[str],
    task: Any,
    workers: int | None,
    cold: bool,
) -> int | None:
    """Smallest item count from which ``engine`` at ``workers`` is predicted faster than every
    local backend; ``None`` below 10 million items."""

    def wins(n: int) -> bool:
        ranked = predict(cal, n, task=task, workers=workers, cold=cold)
        times = {p.backend: p.seconds for p in ranked}
        return times[engine] < min(times[b] for b in locals_)

    return first_win(wins, np.unique(np.geomspace(1, 1e7, 60).astype(int)))


def measured_crossover(
    cluster: Any, extra_s: float, lines: dict[str, tuple[Any, float]], cold: bool
) -> int | None:
    """Where the cluster's measured line (plus, ``cold``, what its cold map paid over it:
    :func:`cold_extra_s`) crosses below every timed local backend's (plus theirs);
    ``None``: never (its per-item time is not below theirs)."""
    if not lines:
        return None
    crossings = [
        break_even(cluster, line, (extra_s - local_extra_s) if cold else 0.0)
        for line, local_extra_s in lines.values()
    ]
    return None if None in crossings else int(max(crossings))


def bracket(found: int | None, items: int, workers: int) -> list[int] | None:
    """Sizes to time again when ``found``, the crossover of lines through a quarter of
    ``items`` and all of them, lies outside those sizes: about half and twice it, so that
    lines through sizes that bracket it say where it is (fixed costs bend a map's time at a
    few items: a line from 32 items on missed them by 0.3 s on a scale model). Never under
    one item a worker nor under four rounds of them at the larger size: below a round, a
    cluster's map takes the same time for one item as for ``workers``, and a line through
    such sizes measures a round's fixed cost, not a cost per item. ``None`` when ``found``
    lies inside, the cluster never wins, or it lies over 4× ``items`` away (local maps of
    minutes)."""
    if found is None or items // 4 <= found <= items or found > 4 * items:
        return None
    return [max(1, found // 2, workers), max(2 * found, 4 * workers)]


@contextmanager
def weather_api() -> Iterator[str]:
    """The weather API in a process of its own, at :data:`API_LATENCY_S` per request."""
    from smallbig.workloads.weather_server import Faults, serve_api_process

    with serve_api_process(Faults(latency_s=API_LATENCY_S)) as server:
        yield server.url


def model_rows(
    engine: str, workers: int, m: dict[str, Any], task: Any, calibration: dict, at_n: dict
) -> list[dict[str, Any]]:
    """The three predictions of one measured case, cold and warm, with their errors."""
    rows = []
    for phase in ("cold", "warm"):
        kw = {"task": task, "cold": phase == "cold"}
        got = m[f"{phase}_s"]
        guesses = {
            "flat": seconds_of(flat(calibration), engine, m["items"], workers=workers, **kw),
            "extrapolated": seconds_of(calibration, engine, m["items"], workers=workers, **kw),
            "at N": seconds_of(at_n, engine, m["items"], **kw),
        }
        rows.append({
            "engine": engine, "workers": workers, "case": m["case"], "items": m["items"],
            "phase": phase, "measured_s": got,
            **{f"{k} %": 100 * (v / got - 1) for k, v in guesses.items()},
        })  # fmt: skip
    return rows


def cluster_bench(
    engines: Sequence[str],
    worker_counts: Sequence[int],
    repeats: int,
    console: Console,
    inputs: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    wanted: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the model check (per engine, workers, case, phase) and of the crossovers.

    ``inputs``, if given, receives what the predictions were made from (the calibrations,
    at N too, the task profiles, each measured case and local line), so that another model
    can be scored on the same measurements without running the clusters again.
    ``calibration``: the ordinary calibration to predict from (default: measured first);
    ``wanted``: only the cases named like these (:func:`select`)."""
    inputs = {} if inputs is None else inputs
    select(cases(""), wanted)  # a misspelt case fails now, not after the calibration
    with tempfile.TemporaryDirectory() as tmp, weather_api() as url:
        calibration, locals_ = ordinary_calibration(engines, calibration, tmp, console)
        todo = select(cases(url), wanted)
        profiles = {c.name: profile_task(c.fn, c.make(SAMPLE)) for c in todo}
        sizes = {c.name: [c.per_worker * min(worker_counts) // 4,
                          c.per_worker * max(worker_counts)] for c in todo}  # fmt: skip
        local = {c.name: local_lines(c, sizes[c.name], calibration, locals_, profiles[c.name])
                 for c in todo}  # fmt: skip
        inputs.update(calibration=calibration, at_n={}, measured=[],
                      profiles={k: p.as_dict() for k, p in profiles.items()},
                      local={k: {s: [asdict(line), up] for s, (line, up) in v.items()}
                             for k, v in local.items()})  # fmt: skip
        rows, crossings = [], []
        for engine in engines:
            for n_workers in worker_counts:
                measured, cal_n = measure_cluster(engine, n_workers, todo, repeats)
                console.print(f"{engine} at {n_workers} workers: start-up "
                              f"{measured[0]['startup_s']:.2f} s")  # fmt: skip
                at_n = {**calibration, "backends": {engine: cal_n}}
                inputs["at_n"][f"{engine}|{n_workers}"] = cal_n
                inputs["measured"] += [{**m, "engine": engine, "workers": n_workers,
                                        "line": asdict(m["line"])} for m in measured]  # fmt: skip
                for m in measured:
                    task = profiles[m["case"]]
                    rows += model_rows(engine, n_workers, m, task, calibration, at_n)
                    for cold in (True, False):
                        crossings.append({
                            "engine": engine, "workers": n_workers, "case": m["case"],
                            "phase": "cold" if cold else "warm",
                            "predicted": predicted_crossover(calibration, engine, locals_,
                                                             task, n_workers, cold),
                            "measured": measured_crossover(m["line"], m["cold_extra_s"],
                                                           local[m["case"]], cold),
                            "against": " ".join(local[m["case"]]),
                        })  # fmt: skip
    return rows, crossings


def summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median and worst |error| (%) of prediction ``key`` over ``rows``."""
    errors = [abs(r[f"{key} %"]) for r in rows]
    return {"median": statistics.median(errors), "worst": max(errors)}


def print_cluster(rows: list[dict], crossings: list[dict], console: Console) -> None:
    """The model check, its summary per prediction, and the crossovers."""
    print_rows(console, "Predicted − measured (error %), local clusters of N workers (sharing "
               f"this machine's {os.cpu_count()} cores; tasks that wait)", rows)  # fmt: skip
    for key in ("flat", "extrapolated", "at N"):
        s = summary(rows, key)
        console.print(f"{key}: median |error| {s['median']:.0f}%, worst {s['worst']:.0f}%")
    print_crossovers(console, "Crossover with the best local backend (items; measured: where "
                     "the straight lines through the timed sizes cross)", crossings)  # fmt: skip


def print_crossovers(console: Console, title: str, crossings: list[dict]) -> None:
    """The crossover rows with each predicted ÷ measured ratio, and how many agree: within
    2× of each other, or both saying the cluster never wins (a local backend is faster per
    item, so no size is big enough), which is an answer as right as a size."""
    for r in crossings:
        predicted, measured = r["predicted"], r["measured"]
        if predicted and measured:
            r["ratio"] = predicted / measured
        else:
            r["ratio"] = "both never" if predicted is measured is None else None
    print_rows(console, title, crossings)
    if crossings:
        sized = [r["ratio"] for r in crossings if isinstance(r["ratio"], float)]
        never = sum(r["ratio"] == "both never" for r in crossings)
        close = sum(0.5 <= x <= 2 for x in sized)
        console.print(f"crossovers: {close} of {len(sized)} within 2× where both find one; "
                      f"{never} where both say never; {len(crossings) - len(sized) - never} "
                      "where only one does")  # fmt: skip
