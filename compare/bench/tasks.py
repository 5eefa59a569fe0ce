"""``smallbig bench tasks``: does the advice hold on tasks it was not built on? Regret, measured.

For each task kind of :data:`smallbig.workloads.tasks.SUITE`: the task is profiled
(:func:`smallbig.profile_task`, on 17 of its items) and the advice taken from the profile and
this machine's calibration; then every backend runs all the items, cold (start-up included,
the median of three fresh starts: one cold run of two identical thread pools differed by 33%)
and warm (median of the repeats), in rounds that start every backend in turn (see
:func:`measure`). The score is the **regret**: the advised backend's measured
time ÷ the measured fastest − 1, a difference under :data:`TIE_S` counting as a tie.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from smallbig.backends import default_backends, get_backend
from smallbig.model.calibrate import overhead
from smallbig.model.costmodel import predict
from smallbig.model.taskprofile import profile_task
from smallbig.results.fmt import cell
from smallbig.results.records import write_json
from smallbig.workloads.tasks import SUITE, TaskKind
from smallbig.workloads.user import call_item

TIE_S = 0.02  # differences under this are ties: the machine's noise on a whole map
SAMPLE = 17  # items profiled, the first one a warm-up


def measure(
    specs: Sequence[str],
    kind: TaskKind,
    items: list,
    inner_threads: Any,
    repeats: int,
    colds: int,
    workers: int | None = None,
) -> dict[str, dict[str, float]]:
    """Median cold seconds (start-up + first map, each on a fresh backend) over ``colds``
    starts, and median warm seconds over ``repeats`` maps, of every backend in ``specs``.

    Measured in rounds: each round starts every backend in turn (each round one later) and
    times its share of the warm maps, so that each backend's medians sample the same moments
    of the machine as the others', after a different neighbour each time. Back to back, one
    backend's three figures shared one moment: on this shared machine a figure moved 20–40%
    between two moments, and the fastest was then often the backend measured at a quieter
    one (warm pandas: 0.51 s on processes and 0.35 s on another process pool in one run,
    0.51 and 0.53 s in the next minute).
    """
    cold: dict[str, list[float]] = {s: [] for s in specs}
    warm: dict[str, list[float]] = {s: [] for s in specs}
    rounds = max(1, colds)
    for r in range(rounds):
        share = repeats // rounds + (r < repeats % rounds)
        # Each round starts one backend later, so that no backend always follows the same one.
        for spec in [*specs[r % len(specs) :], *specs[: r % len(specs)]]:
            seconds, maps, in_process = _start_and_map(
                spec, kind, items, inner_threads, share, workers
            )
            cold[spec].append(seconds)
            warm[spec].extend(maps)
            if not in_process:
                # The first pool of threads in a process that had just shut a cluster down ran
                # 1 MB arguments 25–35% slower than the next (0.12 s, then 0.09 s; a fresh
                # process: 0.09 s), after a sleep of 3 s as well: one map on a pool thrown
                # away pays that here, as a user's fresh process does not pay it at all.
                _start_and_map("threads", kind, items, inner_threads, 0, None)
    return {s: {"cold": statistics.median(cold[s]), "warm": statistics.median(warm[s])}
            for s in specs}  # fmt: skip


def _start_and_map(
    spec: str, kind: TaskKind, items: list, inner_threads: Any, repeats: int, workers: int | None
) -> tuple[float, list[float], bool]:
    """Seconds of a fresh backend's start-up and first map, then of ``repeats`` more maps,
    and whether the backend ran in this process."""
    start = time.perf_counter()
    with get_backend(spec, workers=workers, inner_threads=inner_threads) as ex:
        # A coroutine function: awaited where the backend runs coroutines (asyncio), run to
        # completion on each worker's loop elsewhere, as `smallbig run --task` does.
        awaited = inspect.iscoroutinefunction(kind.fn) and not ex.supports_coroutines
        fn = call_item(kind.fn) if awaited else kind.fn
        list(ex.map(fn, items, chunksize="auto"))
        cold = time.perf_counter() - start
        maps = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(ex.map(fn, items, chunksize="auto"))
            maps.append(time.perf_counter() - t0)
        return cold, maps, ex.in_process


def score(
    calibration: dict, task: Any, n: int, measured: dict[str, dict], phase: str
) -> dict[str, Any]:
    """The advice for ``n`` items against what every backend measured in ``phase``."""
    ranked = predict(calibration, n, task=task, cold=phase == "cold")
    predicted = {p.backend: p.seconds for p in ranked if p.backend in measured}
    times = {spec: m[phase] for spec, m in measured.items()}
    # The model's first (ties go to the lighter backend), not merely the smallest figure.
    advised = next(p.backend for p in ranked if p.backend in measured)
    fastest = min(times, key=times.get)
    tie = times[advised] - times[fastest] < TIE_S
    errors = [abs(predicted[s] / times[s] - 1) for s in predicted]
    return {
        "advised": advised,
        "predicted_s": predicted[advised],
        "advised_s": times[advised],
        "fastest": fastest,
        "fastest_s": times[fastest],
        "regret_pct": 0.0 if tie else 100 * (times[advised] / times[fastest] - 1),
        "error_pct": 100 * abs(predicted[advised] / times[advised] - 1),
        "median_error_pct": 100 * statistics.median(errors),
        "why": next(p.reason for p in ranked if p.backend == advised),
        "_errors": errors,
    }


def tasks_bench(
    specs: Sequence[str],
    kinds: Sequence[TaskKind],
    repeats: int,
    colds: int,
    modes: Sequence[str],
    scale: float,
    console: Console,
    workers: int | None = None,
    out: str | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Rows per ``mode`` ("capped": the default inner-thread caps; "uncapped": none), each
    with the profile and the measured times it was scored on, and the calibration; written
    to ``out`` (JSON) after every task kind, so that a stopped run keeps what it measured."""
    with tempfile.TemporaryDirectory() as tmp:
        calibration = overhead(list(specs), workers, items=5000, repeats=3, path=f"{tmp}/cal.json")
    uncapped = copy.deepcopy(calibration)
    for row in uncapped["backends"].values():
        row["inner_threads"] = None
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with contextlib.ExitStack() as stack:
        url = _api_url(stack) if any(k.needs_api for k in kinds) else None
        for kind in kinds:
            _bench_kind(kind, url, specs, calibration, uncapped, repeats, colds, modes, scale,
                        console, workers, rows)  # fmt: skip
            if out:
                write_json(out, {"calibration": calibration, "rows": rows})
    return rows, calibration


def _api_url(stack: contextlib.ExitStack) -> str:
    """The weather API in a process of its own, open until ``stack`` closes."""
    from smallbig.workloads.tasks import API_LATENCY_S
    from smallbig.workloads.weather_server import Faults, serve_api_process

    return stack.enter_context(serve_api_process(Faults(latency_s=API_LATENCY_S))).url


def _bench_kind(
    kind: TaskKind,
    url: str | None,
    specs: Sequence[str],
    calibration: dict,
    uncapped: dict,
    repeats: int,
    colds: int,
    modes: Sequence[str],
    scale: float,
    console: Console,
    workers: int | None,
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    """Profile ``kind``, measure it on every backend, score the advice into ``rows``."""
    n = max(SAMPLE, int(kind.items * scale))
    items = kind.make_items(n, url) if kind.needs_api else kind.make_items(n)
    task = profile_task(kind.fn, items[:SAMPLE])
    console.print(
        f"{kind.name}: {len(items)} items; profiled {task.item_s * 1e3:.3g} ms/item "
        f"({task.item_s_1 * 1e3:.3g} capped), {task.cores_used:.2f} cores, "
        f"GIL {task.gil_s * 1e3:.3g} ms, {task.arg_bytes + task.result_bytes:,} bytes"
    )
    for mode in modes:
        cal = calibration if mode == "capped" else uncapped
        inner = "auto" if mode == "capped" else None
        measured = measure(specs, kind, items, inner, repeats, colds, workers)
        console.print(
            f"  {mode}: "
            + ", ".join(f"{s} {m['cold']:.3g}/{m['warm']:.3g}" for s, m in measured.items())
            + " s (cold/warm)"
        )
        for phase in ("cold", "warm"):
            row = {"mode": mode, "task": kind.name, "items": len(items), "phase": phase,
                   "profile": task.as_dict(), "measured": measured}  # fmt: skip
            rows[mode].append({**row, **score(cal, task, len(items), measured, phase)})


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and worst regret, median prediction error (advised, and every backend)."""
    regrets = [r["regret_pct"] for r in rows]
    errors = [e for r in rows for e in r["_errors"]]
    return {
        "mean_regret_pct": statistics.mean(regrets),
        "worst_regret_pct": max(regrets),
        "median_error_advised_pct": statistics.median(r["error_pct"] for r in rows),
        "median_error_pct": 100 * statistics.median(errors),
    }


def summary_line(s: dict[str, float]) -> str:
    """:func:`summary` in a sentence."""
    return (
        f"mean regret {s['mean_regret_pct']:.1f}%, worst {s['worst_regret_pct']:.1f}% (ties "
        f"under {TIE_S * 1e3:.0f} ms); median error of predicted time "
        f"{s['median_error_advised_pct']:.0f}% for the advised backend, "
        f"{s['median_error_pct']:.0f}% over every backend"
    )


def cmd_tasks(args: argparse.Namespace, console: Console) -> int:
    specs = args.backends or default_backends()
    kinds = [k for k in SUITE if not args.tasks or k.name in args.tasks]
    unknown = set(args.tasks or ()) - {k.name for k in SUITE}
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}, expected {[k.name for k in SUITE]}")
    modes = ["capped", "uncapped"] if args.uncapped else ["capped"]
    # --out: what the advice was scored on, so that another model can be scored on the same.
    results, _ = tasks_bench(
        specs, kinds, args.repeats, args.colds, modes, args.scale, console, args.workers, args.out
    )
    cols = [
        "task", "items", "phase", "advised", "predicted_s", "advised_s", "fastest",
        "fastest_s", "regret_pct", "error_pct", "median_error_pct", "why",
    ]  # fmt: skip
    for mode, rows in results.items():
        table = Table(
            title=f"advice vs measured, inner threads {mode} (medians of {args.colds} cold "
            f"starts and {args.repeats} warm maps)"
        )
        for col in cols:
            table.add_column(col.replace("_", " "), justify="left" if col == "why" else "right")
        for row in rows:
            table.add_row(*(cell(c, row[c]) for c in cols))
        console.print(table)
        console.print(f"{mode}: {summary_line(summary(rows))}")
    return 0
