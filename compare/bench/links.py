"""``smallbig bench cluster --links``: the transfer terms against emulated multi-node Dask and
Ray clusters behind shaped links (:class:`smallbig.backends.emulation.emulated.EmulatedCluster`,
root only).

For each link rate and node count, a fresh emulated cluster, reached by address as a real one
would be. Its tasks move bytes: 1 MB arguments, 2 MiB results, one 1 MB object ``put`` once
per map and given to every task, the images workload with each file's bytes shipped, and the
weather API (served on the driver's own link, so that every
request and response crosses the emulated network). Each is timed cold (connecting plus the
first map) and warm, and predicted (a) by extrapolation from this machine's ordinary
calibration to the cluster's workers and link rate (``advise --workers N --bandwidth-mbps
B``), warm only (its start-up is a LocalCluster's, not a connection's), and (b) from a
calibration of the emulated cluster itself (``smallbig overhead --backends dask@…``). Then
the crossover with the best local backend, where the measured straight lines cross; where
they cross outside the sizes timed, it is timed again at sizes that bracket it
(:func:`~smallbig.bench.cluster.bracket`).

With ``cpus`` (``--scale-model``, under ``--cpus C``): a scale model. This process is the
laptop, held to C cores; every node of every cluster is held to the same C
(``cpus_per_node``), and every link's rate is scaled by C as the CPU is (a real link of
1 Gbit/s between nodes of one core becomes C Gbit/s between nodes of C cores). CPU-bound
cases join the others, since there a cluster of M nodes has M times the laptop's compute, and
each cluster map's fidelity (:mod:`smallbig.backends.emulation.fidelity`) is kept with its row: a
row measured
where the quotas did not hold is left out of the scores.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from smallbig.backends import get_backend
from smallbig.bench.cluster import (
    SAMPLE,
    Case,
    bracket,
    cold_extra_s,
    local_lines,
    measured_crossover,
    ordinary_calibration,
    predicted_crossover,
    print_crossovers,
    seconds_of,
    select,
    timed_map,
    warm_line,
)
from smallbig.model.calibrate import measure_overheads
from smallbig.model.taskprofile import profile_task
from smallbig.results.fmt import print_rows

BANDWIDTHS_MBPS = (100.0, 1000.0, None)  # None: unshaped veth links
NODES = (2, 4)
#: With --scale-model: the cases where a cluster can out-compute the laptop.
CPU_CASES = ("pure-Python CPU", "numba kernel")
PER_WORKER = 8  # items per worker in each timed map
PUT_ONCE = "1 MB put once"
BRACKET_REPEATS = 7  # maps at each size that brackets a crossover (short ones: noisy)


def link_cases(api_url: str) -> list[Case]:
    """The tasks that move bytes; ``api_url`` serves the weather API on the driver's link."""
    from smallbig.workloads.api import api_workload, fetch_summary
    from smallbig.workloads.images import images_workload, process_image
    from smallbig.workloads.tasks import big_argument, large_result, megabyte_arrays

    shipped = images_workload(ship_bytes=True).prepare
    # Every task from a module as light as a user's: a worker's first call imports it (here
    # compare's own modules would have cost each worker 0.26 s once, in the first case only).
    return [
        Case("1 MB argument", big_argument, megabyte_arrays, PER_WORKER),
        Case("2 MiB result", large_result, lambda n: list(range(n)), PER_WORKER),
        # A new array each map: Dask's scatter names an object by a hash of its content, so
        # the same array again would already be on every worker.
        Case(PUT_ONCE, big_argument, lambda n: [_fresh_megabyte()] * n, PER_WORKER, True),
        Case("images, bytes shipped", process_image, shipped, PER_WORKER),
        Case("weather API", fetch_summary, api_workload(api_url).prepare, 4 * PER_WORKER),
    ]


def scale_cases(api_url: str) -> list[Case]:
    """A scale model's cases: the CPU-bound ones, then those that move bytes."""
    from smallbig.workloads.tasks import numba_blur, python_long

    def seeds(n: int) -> list[int]:
        return list(range(n))

    return [
        Case(CPU_CASES[0], python_long, seeds, PER_WORKER),
        Case(CPU_CASES[1], numba_blur, seeds, 4 * PER_WORKER),
        *link_cases(api_url),
    ]


def max_nodes(cpus: float) -> int:
    """The most worker nodes of ``cpus`` cores this machine's CPU groups allow beside a
    laptop and a scheduler's node of the same."""
    from smallbig.backends.emulation.cpugroups import MAX_SHARE

    return max(1, int(MAX_SHARE * (os.cpu_count() or 1) / cpus + 1e-9) - 2)


def _fresh_megabyte() -> Any:
    import numpy as np

    return np.random.default_rng().random(2**20 // 8)


def links_bench(
    bandwidths: Sequence[float | None],
    nodes: Sequence[int],
    repeats: int,
    console: Console,
    engines: Sequence[str] = ("dask",),
    calibration: dict[str, Any] | None = None,
    wanted: Sequence[str] | None = None,
    cpus: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the model check (per engine, link rate, nodes, case, phase) and of the
    crossovers; ``calibration``: the ordinary one to predict from (default: measured first);
    ``wanted``: only the cases named like these (:func:`~smallbig.bench.cluster.select`);
    ``cpus``: a scale model of nodes of ``cpus`` cores against this process's laptop quota
    of as many."""
    if cpus is not None:
        from smallbig.backends.emulation.cpugroups import current

        held = current()
        if held is None or abs(float(held["cpus"]) - cpus) > 1e-9:
            raise ValueError(f"a scale model of {cpus:g}-core nodes compares them with a laptop "
                             f"of as many: run it under --cpus {cpus:g}")  # fmt: skip
    select((scale_cases if cpus else link_cases)(""), wanted)  # a misspelt case fails now
    rows: list[dict[str, Any]] = []
    crossings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        calibration, locals_ = ordinary_calibration(engines, calibration, tmp, console)
        for engine in engines:
            for rate in bandwidths:
                for n_nodes in nodes:
                    one = _one_cluster(engine, rate, n_nodes, calibration, locals_, repeats,
                                       console, wanted, cpus)  # fmt: skip
                    rows += one[0]
                    crossings += one[1]
    return rows, crossings


def _one_cluster(
    engine: str,
    rate: float | None,
    n_nodes: int,
    calibration: dict[str, Any],
    locals_: list[str],
    repeats: int,
    console: Console,
    wanted: Sequence[str] | None,
    cpus: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from smallbig.backends.emulation.emulated import EmulatedCluster
    from smallbig.workloads.weather_server import Faults, serve_api_process

    rows, crossings = [], []
    # A scale model's links are slowed as its CPUs are: the real rate times the quota.
    shaped = rate * cpus if rate and cpus else rate
    cluster = EmulatedCluster(engine, n_nodes, 1, shaped, cpus_per_node=cpus)
    api_faults = Faults(latency_s=0.02)
    with cluster, serve_api_process(api_faults, host=cluster.network.driver_address) as api:
        # The local lines too, while the API serves: its cases call it from every backend.
        todo = select((scale_cases if cpus else link_cases)(api.url), wanted)
        profiles = {c.name: _profile(c) for c in todo}
        measured, cal_n = _measure(engine, cluster.spec, todo, repeats)
        link = f"{rate:g} Mbit/s" if rate else "unshaped"
        if cpus and rate:
            link += f" (shaped {shaped:g})"
        console.print(f"{engine}, {n_nodes} nodes, {link}: connected in "
                      f"{measured[0]['startup_s']:.2f} s")  # fmt: skip
        own = {**calibration, "backends": {**calibration["backends"], engine: cal_n}}
        where = {"engine": engine, "link": link, "nodes": n_nodes}
        if cpus:
            where["scale"] = f"{n_nodes} × {cpus:g} cores"
        for m in measured:
            task = profiles[m["case"]]
            rows += _model_rows(where, m, task, calibration, own, shaped)
            if m["case"] == PUT_ONCE:
                continue  # locally, a put object is this process's own: no crossover to find
            case, sizes = _case(todo, m["case"]), [m["items"] // 4, m["items"]]
            lines = local_lines(case, sizes, calibration, locals_, task)
            for cold in (True, False):
                found = measured_crossover(m["line"], m["cold_extra_s"], lines, cold)
                row = {**where, "case": m["case"], "phase": "cold" if cold else "warm",
                       "predicted": predicted_crossover(own, engine, locals_, task, None, cold),
                       "measured": found, "timed at": f"{sizes[0]}, {sizes[1]}"}  # fmt: skip
                again = bracket(found, m["items"], m["items"] // case.per_worker)
                if again:
                    row["measured"] = _bracketed(
                        cluster.spec, case, again, m["cold_extra_s"], calibration, locals_, task,
                        repeats, cold, m["items"],
                    )  # fmt: skip
                    row["timed at"] += f"; {again[0]}, {again[1]}"
                crossings.append(row)
    return rows, crossings


def _bracketed(
    spec: str,
    case: Case,
    sizes: list[int],
    extra_s: float,
    calibration: dict[str, Any],
    locals_: list[str],
    task: Any,
    repeats: int,
    cold: bool,
    items: int,
) -> int | None:
    """The crossover of the cluster at ``spec`` and the local backends, timed warm at
    ``sizes`` (:func:`~smallbig.bench.cluster.bracket`); cold, the cluster's ``extra_s``
    measured on its first map is added, as before.

    Below the sizes timed first, each size is the median of at least :data:`BRACKET_REPEATS`
    maps, on both sides: these maps take a tenth of a second or so, where two repeats (and
    one locally) moved the numba kernel's warm crossover between 1 item and never from run to
    run. Above them, maps of seconds are timed ``repeats`` times, as the first sizes were."""
    if sizes[-1] < items:
        repeats = max(repeats, BRACKET_REPEATS)
    with get_backend(spec) as ex:  # a connection of its own: its start-up is not timed
        timed_map(ex, case, case.make(sizes[0]))  # warm: the first map of this connection
        line = warm_line(ex, case, sizes, repeats)[0]
    lines = local_lines(case, sizes, calibration, locals_, task, repeats)
    return measured_crossover(line, extra_s, lines, cold)


def _profile(case: Case) -> Any:
    sample = case.make(SAMPLE)
    # The put-once case's items all hold one array: the object a run puts once per map.
    return profile_task(case.fn, sample, put=sample[0] if case.put_once else None)


def _case(todo: Sequence[Case], name: str) -> Case:
    return next(c for c in todo if c.name == name)


def _measure(engine: str, spec: str, todo: Sequence[Case], repeats: int) -> tuple[list[dict], dict]:
    from smallbig.backends.emulation.fidelity import Monitor, watched, watched_links

    rows = []
    with get_backend(spec) as ex, warnings.catch_warnings():
        # Dask's note on a large graph, once per map: shipping arguments is what is timed.
        warnings.filterwarnings("ignore", message="Sending large graph")
        # A scale model's CPU groups (none: nothing to watch) and the cluster's links.
        info = ex.info()
        held, links = watched(info), watched_links(info)
        for case in todo:
            n = case.per_worker * ex.workers
            with Monitor(held, links) as fidelity:
                first = timed_map(ex, case, case.make(n))
                line, warm = warm_line(ex, case, [n // 4, n], repeats)
            rows.append({"case": case.name, "items": n, "startup_s": ex.startup_s,
                         "cold_s": ex.startup_s + first, "warm_s": warm, "line": line,
                         "cold_extra_s": cold_extra_s(ex.startup_s, first, line, n),
                         "fidelity": str(fidelity.verdict)})  # fmt: skip
        cal = measure_overheads(ex, spec, items=2000, repeats=2)
    cal["backend"] = engine
    return rows, cal


def _model_rows(
    where: dict[str, Any], m: dict, task: Any, ordinary: dict, own: dict, rate: float | None
) -> list[dict[str, Any]]:
    out = []
    engine, nodes = where["engine"], where["nodes"]
    for phase in ("cold", "warm"):
        got = m[f"{phase}_s"]
        kw = {"task": task, "cold": phase == "cold"}
        b = seconds_of(own, engine, m["items"], **kw)
        row = {**where, "case": m["case"], "items": m["items"], "phase": phase,
               "measured_s": got, "own calibration %": 100 * (b / got - 1)}  # fmt: skip
        if m["fidelity"]:  # the table's cell short; the --out row keeps why
            row["fidelity"] = m["fidelity"]
        if phase == "warm":  # the ordinary calibration's start-up is a local cluster's
            a = seconds_of(ordinary, engine, m["items"], workers=nodes, cold=False, task=task,
                           bandwidth_Bps=rate * 1e6 / 8 if rate else None)  # fmt: skip
            row["extrapolated %"] = 100 * (a / got - 1)
        out.append(row)
    return out


def print_links(rows: list[dict], crossings: list[dict], console: Console) -> None:
    """The two tables and the summary of each prediction's errors."""
    scaled = any("scale" in r for r in rows)
    shown = [{**r, "fidelity": "yes" if r["fidelity"].startswith("faithful") else "NO"}
             if "fidelity" in r else r for r in rows]  # fmt: skip
    print_rows(console, "Predicted − measured (error %), EMULATED clusters ("
               + ("a scale model: nodes and laptop under CPU quotas" if scaled
                  else "nodes share this machine's cores")
               + "; links shaped, no added latency)", shown)  # fmt: skip
    unfaithful = [r for r in rows if r.get("fidelity", "").startswith("unfaithful")]
    if unfaithful:
        console.print(f"{len(unfaithful)} row(s) where the scale model's quotas did not hold, "
                      "left out of the errors below:")  # fmt: skip
        for r in unfaithful:
            console.print(f"  {r['nodes']} nodes, {r['case']}, {r['phase']}: {r['fidelity']}")
    for key in ("own calibration", "extrapolated"):
        errors = [abs(r[f"{key} %"]) for r in rows if f"{key} %" in r and r not in unfaithful]
        if errors:
            console.print(f"{key}: median |error| {statistics.median(errors):.0f}%, "
                          f"worst {max(errors):.0f}%")  # fmt: skip
    print_crossovers(console, "Crossover with the best local backend (items)", crossings)
