"""Benchmarks that print figures (not tests): ``smallbig bench overhead``.

Every figure is a median over repeats measured in the same run, after a warm-up, because the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from smallbig.backends import default_backends, get_backend
from smallbig.bench import CHUNKS
from smallbig.model import validation
from smallbig.model.fits import CLOSE
from smallbig.results.fmt import print_rows
from smallbig.results.timing import median_time, paired_ratio
from smallbig.workloads import probes


def _map_all(ex: Any, n: int, chunksize: int | str) -> Callable[[], None]:
    def run() -> None:
        for _ in ex.map(probes.noop, range(n), chunksize=chunksize):
            pass

    return run


def _submit_all(ex: Any, n: int) -> Callable[[], None]:
    def run() -> None:
        for f in [ex.submit(probes.noop, i) for i in range(n)]:
            f.result()

    return run


def _engine_pair(ex: Any, fn: Callable[[Any], Any], items: list[Any]) -> tuple | None:
    """``(ours, theirs)``: ``fn`` over ``items`` through the adapter and through the engine's
    own API at the same batching (:attr:`engine_chunksize`: Dask's and Ray's submit per item,
    joblib's ``batch_size="auto"``); ``None`` for a backend without an engine path."""
    engine_map = getattr(ex, "engine_map", None)
    if engine_map is None:
        return None
    if ex.engine_chunksize == 1:

        def ours() -> None:
            for f in [ex.submit(fn, item) for item in items]:
                f.result()
    else:

        def ours() -> None:
            for _ in ex.map(fn, items, chunksize=ex.engine_chunksize):
                pass

    return ours, lambda: engine_map(fn, items)


#: Pairs (adapter, engine) of the 1 MB-argument maps, at least. On 2 Dask workers one pair's
#: ratio ranged 0.66–1.29 in one run (15 pairs: median 0.99); three pairs gave −4%, +34% and
#: −25% in three runs of the same code.
MB_PAIRS = 11
#: The fixed batch sizes ``"auto"`` is held against on a cluster.
WAIT_S = 0.01  # the wait-bound task of the sweep: this machine's cores do not bound it


def chunk_sweep(ex: Any, per_worker: int, repeats: int) -> list[dict[str, Any]]:
    """On a cluster backend, ``WAIT_S`` waits (``per_worker`` per worker): per chunk size of
    :data:`CHUNKS`, the adapter's ``map`` against the engine's own API running the same
    batches (run in turns, paired), then ``"auto"`` against the best fixed size."""
    items = [WAIT_S] * (per_worker * ex.workers)
    rows = []
    for c in CHUNKS:
        batches = [items[i : i + c] for i in range(0, len(items), c)]

        def theirs(batches: list = batches) -> None:
            ex.engine_map(probes.sleep_each, batches)

        ours_s, theirs_s, ratio = paired_ratio(_waits(ex, items, c), theirs, repeats)
        rows.append(
            {
                "chunksize": c,
                "adapter_s": ours_s,
                "engine_s": theirs_s,
                "adapter_over_engine_pct": (ratio - 1) * 100,
            }
        )
    best = min(rows, key=lambda r: r["adapter_s"])
    auto = median_time(_waits(ex, items, "auto"), repeats)
    rows.append(
        {
            "chunksize": "auto",
            "adapter_s": auto,
            "auto_over_best_pct": (auto / best["adapter_s"] - 1) * 100,
            "best": best["chunksize"],
            "ideal_s": len(items) * WAIT_S / ex.workers,
        }
    )
    return rows


def _waits(ex: Any, items: list[float], chunksize: int | str) -> Callable[[], None]:
    def run() -> None:
        for _ in ex.map(probes.sleep, items, chunksize=chunksize):
            pass

    return run


def adapter_overhead(
    specs: list[str],
    items: int,
    single_items: int,
    tasks: int,
    repeats: int,
    workers: int | None,
    sweep: int = 0,
) -> list[dict[str, Any]]:
    """Per backend: µs per no-op item of ``map`` (chunksize 1 and "auto"), and the adapter's
    cost against the engine's own API, on no-op tasks and on tasks of a 1 MB argument; on a
    cluster, with ``sweep`` waits per worker, :func:`chunk_sweep` too (in ``row["sweep"]``)."""
    rows = []
    mb = probes.make_payload(2**20, seed=3)
    for spec in specs:
        with get_backend(spec, workers=workers) as ex:
            n1 = single_items if ex.distributed else items
            single = median_time(_map_all(ex, n1, 1), repeats) / n1
            auto = median_time(_map_all(ex, items, "auto"), repeats) / items
            row = {
                "backend": spec,
                "workers": ex.workers,
                "startup_s": ex.startup_s,
                "chunk1_items": n1,
                "chunk1_us": single * 1e6,
                "auto_us": auto * 1e6,
            }
            noop = _engine_pair(ex, probes.noop, list(range(tasks)))
            if noop is not None:
                ours, theirs, ratio = paired_ratio(*noop, repeats)
                row.update(submit_us=ours / tasks * 1e6, native_us=theirs / tasks * 1e6)
                row["adapter_overhead_pct"] = (ratio - 1) * 100
                n_mb = max(10, tasks // 20)
                ours, theirs, ratio = paired_ratio(
                    *_engine_pair(ex, probes.payload, [mb] * n_mb), max(repeats, MB_PAIRS)
                )
                row.update(mb_ms=ours / n_mb * 1e3, mb_native_ms=theirs / n_mb * 1e3)
                row["mb_overhead_pct"] = (ratio - 1) * 100
            if ex.distributed and sweep:
                row["sweep"] = chunk_sweep(ex, sweep, repeats)
            rows.append(row)
    return rows


def cmd_adapter_overhead(args: argparse.Namespace, console: Console) -> int:
    specs = args.backends or default_backends()
    rows = adapter_overhead(
        specs, args.items, args.single_items, args.tasks, args.repeats, args.workers, args.sweep
    )
    first = ["backend", "workers", "startup_s", "chunk1_items", "chunk1_us", "auto_us"]
    print_rows(
        console,
        f"map over no-op items: µs per item (median of {args.repeats})",
        [{k: r.get(k) for k in first} for r in rows],
    )
    engine = [r for r in rows if "native_us" in r]
    if engine:
        keep = ["backend", *(k for k in engine[0] if k not in first and k != "sweep")]
        print_rows(
            console,
            "the adapter against the engine's own API",
            [{k: r[k] for k in keep} for r in engine],
        )
    for row in (r for r in rows if "sweep" in r):
        print_rows(
            console,
            f"{row['backend']}, {row['workers']} workers: "
            f"{WAIT_S * 1e3:g} ms waits, {args.sweep} per worker (a local cluster: its "
            "workers share this machine's cores, which waits do not use)",
            row["sweep"],
        )
    console.print(
        f"auto: {args.items:,} items; adapter (submit_us) vs the engine's own API (native_us: "
        f"Dask's and Ray's submit + gather; joblib.Parallel with batch_size='auto', and "
        f"Spark's sc.parallelize(items, n).map(fn).collect(), against the adapter's map at "
        f"'auto'): {args.tasks:,} no-op tasks, and {max(10, args.tasks // 20):,} tasks of a "
        f"1 MB argument (mb_*, at least {MB_PAIRS} pairs), run alternately; "
        "the *_overhead_pct are medians of the paired ratios"
    )
    return 0


def kernels(side: int, repeats: int) -> list[dict[str, Any]]:
    """First call and steady state of the four kernels on a ``side``×``side`` scan."""
    import numpy as np

    from smallbig.workloads import kernels as k
    from smallbig.workloads.imagegen import scan

    image = scan(np.random.default_rng(0), side, side, "L")
    rows = []
    for name, kernel in k.KERNELS.items():
        start = time.perf_counter()
        kernel(image)
        first = time.perf_counter() - start
        # Pure Python takes tens of seconds at 2000²: its first call is its steady state.
        steady = first if name == "python" else median_time(lambda f=kernel: f(image), repeats)
        rows.append({"kernel": name, "first_s": first, "steady_s": steady})
    base = {r["kernel"]: r["steady_s"] for r in rows}
    for row in rows:
        row["vs_python"] = base["python"] / row["steady_s"]
        row["vs_numpy"] = base["numpy"] / row["steady_s"]
    hits = k.blur_serial.stats.cache_hits
    rows.append(
        {
            "kernel": f"(numba disk cache {'warm' if hits else 'cold'}: first_s "
            f"{'loads' if hits else 'compiles'})"
        }
    )
    return rows


def api_throughput(concurrency: list[int], latency_s: float, rounds: int) -> list[dict]:
    """Requests/s of threads and asyncio at each concurrency, against concurrency/latency.

    Also the CPU each request cost the client and the server, and the ceiling those costs set
    on this machine: client and server each run Python on one core at most (the GIL, one event
    loop), and together on all of them. Above that ceiling no client design reaches the ideal.
    """
    import psutil

    from smallbig.workloads.api import api_workload
    from smallbig.workloads.weather_server import Faults, serve_api_process

    cores = psutil.cpu_count() or 1
    client = psutil.Process()
    rows = []
    with serve_api_process(Faults(latency_s=latency_s)) as server:
        workload = api_workload(server.url)
        server_proc = psutil.Process(server.pid)
        for conc in concurrency:
            items = workload.prepare(conc * rounds)
            for spec in ("threads", "asyncio"):
                with get_backend(spec, workers=conc) as ex:
                    workload.run(ex, items[:conc], chunksize=1)  # warm connections up
                    cpu0 = _cpu_seconds(client), _cpu_seconds(server_proc)
                    start = time.perf_counter()
                    outcomes = workload.run(ex, items, chunksize=1)
                    rate = len(items) / (time.perf_counter() - start)
                    cpu1 = _cpu_seconds(client), _cpu_seconds(server_proc)
                client_ms, server_ms = (
                    (b - a) / len(items) * 1e3 for a, b in zip(cpu0, cpu1, strict=True)
                )
                busiest = max(client_ms, server_ms, (client_ms + server_ms) / cores)
                # CPU times tick every 10 ms: a short run may show none at all.
                ceiling = 1e3 / busiest if busiest > 0 else float("nan")
                ideal = conc / latency_s
                rows.append(
                    {
                        "backend": spec,
                        "concurrency": conc,
                        "requests": len(items),
                        "req_per_s": rate,
                        "ideal": ideal,
                        "pct_ideal": 100 * rate / ideal,
                        "client_cpu_ms": client_ms,
                        "server_cpu_ms": server_ms,
                        "cpu_ceiling": ceiling,
                        "errors": sum(o.error is not None for o in outcomes),
                    }
                )
    return rows


def _cpu_seconds(proc: Any) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def cmd_advice(args: argparse.Namespace, console: Console) -> int:
    from smallbig.model.calibrate import last_run
    from smallbig.results.records import load_records

    if args.records is None:
        args.records = str(last_run())
        console.print(f"records of the last run: {args.records}")
    records = load_records(args.records)
    rows, summary = validation.advice_accuracy(records)
    if not rows:
        console.print(
            f"no size in {args.records} can be held out: a backend needs 3 or more measured "
            "sizes (run with --sizes of at least three values)"
        )
        return 2
    print_rows(console, "advice accuracy, each size held out in turn", rows)
    console.print(
        f"advised backend = measured fastest in {summary['advised_fastest_pct']:.0f}% of "
        f"{summary['points']} held-out points; within {CLOSE:.0%} of it in "
        f"{summary['advised_within_close_pct']:.0f}%; "
        f"{summary['advised_fastest_or_tied_pct']:.0f}% counting ties within the repeats' "
        "range; median error of predicted time "
        f"{summary['median_error_pct']:.0f}%; a wrong pick measured at most "
        f"{summary['max_slower_pct']:.0f}% slower than the fastest"
    )
    # The other model: no fit to the workload at all, only the run's own calibration.
    from pathlib import Path

    from smallbig.model.calibrate import RUN_PROFILE, load_profile
    from smallbig.present.report import print_model_check
    from smallbig.results.records import read_metadata

    profile = load_profile(Path(args.records) / RUN_PROFILE)
    if profile is not None:
        workloads = read_metadata(args.records).get("workloads", {})
        print_model_check(records, profile, workloads, console)
    return 0


def cmd_kernels(args: argparse.Namespace, console: Console) -> int:
    rows = kernels(args.side, args.repeats)
    print_rows(
        console, f"pixel kernel on {args.side}×{args.side} (steady: median of {args.repeats})", rows
    )
    return 0


def cmd_api(args: argparse.Namespace, console: Console) -> int:
    rows = api_throughput(args.concurrency, args.latency_ms / 1e3, args.rounds)
    print_rows(console, f"weather API, {args.latency_ms:g} ms latency", rows)
    return 0
