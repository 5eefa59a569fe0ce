"""advise ranks by the model; calibration measures real backends; plots are real PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import calibration_row, ratio_on_some_try, warm_map_s
from PIL import Image

from smallbig.backends import available, get_backend
from smallbig.model.calibrate import load_profile, measure_overheads, overhead
from smallbig.model.costmodel import predict
from smallbig.present import plots

# Its figures are measured times, CPU shares or rates: run with the machine to itself.
pytestmark = pytest.mark.alone

PROFILE = {
    "backends": {
        "serial": calibration_row(1, 0.0, 1e-7, True),
        "threads": calibration_row(2, 0.0, 1e-6, True),
        "processes": calibration_row(2, 0.2, 2e-6, False, alpha=1e-3, beta=5e8),
        "dask": calibration_row(2, 1.0, 5e-6, False, True, alpha=5e-3, beta=2e8),
    }
}


def test_tiny_jobs_stay_serial():
    assert predict(PROFILE, items=10, item_s=1e-4)[0].backend == "serial"


def test_pure_python_compute_goes_to_processes_not_threads():
    ranked = predict(PROFILE, items=1000, item_s=0.01)
    assert ranked[0].backend == "processes"
    threads = next(p for p in ranked if p.backend == "threads")
    assert "GIL-bound" in threads.reason
    assert threads.seconds == pytest.approx(10.0, rel=0.01)


def test_gil_releasing_work_goes_to_threads():
    assert predict(PROFILE, items=1000, item_s=0.01, releases_gil=True)[0].backend == "threads"


def test_cluster_extrapolation_wins_with_many_workers():
    ranked = predict(PROFILE, items=100_000, item_s=0.05, workers=64)
    assert ranked[0].backend == "dask" and ranked[0].workers == 64
    # Heavy payloads over a slow network push it back below the local pool.
    slow = predict(
        PROFILE, items=100_000, item_s=0.05, item_bytes=10**7, workers=64, bandwidth_Bps=1e6
    )
    assert (
        slow[0].backend != "dask"
        and "transfer" in next(p for p in slow if p.backend == "dask").reason
    )


def test_cpu_bound_threads_are_capped_by_the_cores_waiting_ones_by_the_threads():
    threads = {**calibration_row(6, 0.0, 0.0, True), "threads": 6, "cores": 2}
    profile = {"backends": {"serial": calibration_row(1, 0.0, 0.0, True), "threads": threads}}

    def seconds(**task):
        return {p.backend: p.seconds for p in predict(profile, releases_gil=True, **task)}

    assert seconds(items=600, item_s=0.01)["threads"] == pytest.approx(3.0)  # /2 cores, not /6
    assert seconds(items=600, item_s=0.01, cpu_s=0.0)["threads"] == pytest.approx(1.0)  # /6
    # Fewer items than threads: one item still takes its whole time.
    assert seconds(items=1, item_s=0.01, cpu_s=0.0)["threads"] == pytest.approx(0.01)
    assert seconds(items=3, item_s=0.01)["threads"] == pytest.approx(0.015)  # 3 items, 2 cores


def test_asyncio_runs_coroutines_on_its_loop_and_plain_functions_on_its_threads():
    loop = {**calibration_row(256, 0.0, 1e-6, True), "threads": 6, "coroutines": True, "cores": 2}
    profile = {"backends": {"asyncio": loop}}
    plain = predict(profile, items=600, item_s=0.01, cpu_s=0.0, releases_gil=True)[0]
    assert plain.workers == 6 and plain.seconds == pytest.approx(1.0 + 600e-6)
    coro = predict(
        profile, items=600, item_s=0.01, cpu_s=0.002, coroutine=True, coroutine_cpu_s=1e-4
    )[0]
    # 600 waits of 10 ms overlap 256 at a time (23 ms), but the loop's CPU takes 60 ms.
    assert coro.workers == 256 and coro.seconds == pytest.approx(0.06 + 600e-6)
    assert "one event loop" in coro.reason


def test_bad_task_description_is_rejected():
    with pytest.raises(ValueError, match="items must be"):
        predict(PROFILE, items=0, item_s=0.1)
    cmd = [sys.executable, "-m", "smallbig", "advise", "--items", "10", "--item-ms", "1"]
    out = subprocess.run([*cmd, "--wait-ms", "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--wait-ms must be between 0 and --item-ms" in out.stdout


def test_calibration_measures_real_backends(tmp_path):
    path = tmp_path / "cal.json"
    profile = overhead(["serial", "processes"], workers=2, items=2000, repeats=1, path=path)
    assert load_profile(path)["backends"].keys() == {"serial", "processes"}
    proc, serial = profile["backends"]["processes"], profile["backends"]["serial"]
    assert proc["startup_s"] > 0 and serial["startup_s"] == 0
    assert proc["task_overhead_s"] > serial["task_overhead_s"]  # a process hop costs more
    assert proc["beta_value_Bps"] > 1e6  # shipping bytes to a process: at least MB/s
    # Its workers keep freed memory as this process does (Dask's do not: test_taskprofile.py).
    assert proc["returns_freed_memory"] is False and serial["returns_freed_memory"] is False
    # The saved profile feeds advise from the command line.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "smallbig",
            "advise",
            "--items",
            "50",
            "--item-ms",
            "0.001",
            "--profile",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PREDICTED" in out.stdout and "serial" in out.stdout


def test_plots_are_readable_pngs(tmp_path):
    rows = [
        {
            "workload": "w",
            "backend": b,
            "size": n,
            "phase": "warm",
            "correct": True,
            "wall_s": f + p * n,
        }
        for b, (f, p) in {"serial": (0, 0.01), "processes": (0.2, 0.004)}.items()
        for n in (1, 10, 100)
    ]
    records = pd.DataFrame(rows)
    paths = [
        plots.scaling(records, "w", tmp_path / "s.png"),
        plots.overhead_breakdown(json.loads(json.dumps(PROFILE)), tmp_path / "o.png"),
        plots.phase_diagram(
            PROFILE, tmp_path / "p.png", plots.measured_winners(records, {"w": 0.01})
        ),
        # No serial time kept (a scale model's serial rows left out as unfaithful): the
        # speedup panel says so, where a log axis of nothing failed the whole report.
        plots.scaling(records[records["backend"] != "serial"], "w", tmp_path / "n.png"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 400
            assert len(np.unique(np.asarray(image.convert("L")))) > 20  # not a blank canvas


def test_a_dask_argument_crosses_two_links_and_a_result_one():
    # Measured on an emulated cluster (tests/test_emulated.py): 10 MiB as a task's argument
    # 1.77 s at 100 Mbit/s, the same bytes back as a result 0.90 s.
    def row(links):
        return {**calibration_row(2, 0.0, 0.0, False, True, beta=1e12), "argument_links": links}

    def task(arg, result):
        return {"item_s": 1e-3, "cpu_s": 1e-3, "item_s_1": 1e-3, "cpu_s_1": 1e-3, "gil_s": 0.0,
                "arg_bytes": arg, "result_bytes": result, "coroutine": False}  # fmt: skip

    link = 100e6 / 8
    for links in (1, 2):
        profile = {"backends": {"dask": row(links)}}
        seconds = {
            kind: predict(profile, 1, task=task(*sizes), workers=2, bandwidth_Bps=link,
                          cold=False)[0].seconds - 1e-3
            for kind, sizes in (("argument", (10**7, 0)), ("result", (0, 10**7)))
        }  # fmt: skip
        assert seconds["argument"] == pytest.approx(links * 10**7 / link, rel=0.01)
        assert seconds["result"] == pytest.approx(10**7 / link, rel=0.01)
    # From a calibration over the link itself, whose arguments took two links' time: a
    # result is charged one.
    profile = {"backends": {"dask": {**row(2), "beta_value_Bps": link / 2}}}
    back = predict(profile, 1, task=task(0, 10**7), cold=False)[0].seconds - 1e-3
    assert back == pytest.approx(10**7 / link, rel=0.01)


def megabyte(i):
    """A 1 MB result made in the worker."""
    return i.to_bytes(8, "little") * (2**17)


def test_a_map_of_large_arguments_or_results_is_predicted_from_what_it_costs(tmp_path):
    # One payload at a time, 300 arguments of 1 MB were predicted 3.4× slower than they ran:
    # a map pipelines them. Both directions, on a real process pool, warm.
    from smallbig import profile_task
    from smallbig.backends import get_backend
    from smallbig.workloads import probes

    array = probes.make_payload(2**20)
    # Distinct arrays, as data is: one array repeated is pickled once per batch.
    distinct = [np.concatenate(([float(i)], array[1:])) for i in range(300)]
    for name, fn, items in (("argument", probes.payload, distinct),
                            ("result", megabyte, list(range(300)))):  # fmt: skip
        # Up to three tries, each a fresh calibration, map and profile: once, late in a CI run,
        # 300 MB of results landing in fresh pages took 2.25x less than predicted (fresh pages
        # there varied 7x from one map to the next); in another, all three tries read
        # 2.3-3.4x against one calibration taken before them. A model 3.4x off misses every try.
        seen: list[str] = []

        def ratio(fn=fn, items=items, seen=seen) -> float:
            profile = overhead(["processes"], 2, items=2000, repeats=2, path=tmp_path / "cal.json")
            with get_backend("processes", workers=2) as ex:
                measured = warm_map_s(ex, fn, items, items[:20])
            task = profile_task(fn, items[:8])
            predicted = predict(profile, len(items), task=task, cold=False)
            seconds = next(p.seconds for p in predicted if p.backend == "processes")
            row = profile["backends"]["processes"]
            rates = {k: f"{row[k] / 1e6:.0f} MB/s" for k in ("beta_map_Bps", "beta_result_Bps")}
            seen.append(f"predicted {seconds:.2f} s, measured {measured:.2f} s, {rates}")
            return seconds / measured

        try:
            ratio_on_some_try(name, ratio, 0.5, 2.0, tries=3)
        except AssertionError as failed:
            raise AssertionError(f"{failed}: {seen}") from None


def test_the_advice_says_when_the_pick_depends_on_start_up(tmp_path):
    from smallbig.model.calibrate import note_startup

    history = tmp_path / "startups.json"
    rows = {}
    for startup in (1.0, 3.5, 1.2):  # three sessions' start-ups of the same cluster
        row = {**calibration_row(2, startup, 5e-6, False, True), "backend": "dask"}
        rows["dask"] = note_startup(row, history)
    assert rows["dask"]["startup_spread_s"] == [1.0, 3.5] and rows["dask"]["startup_starts"] == 3
    rows["processes"] = note_startup(
        {**calibration_row(2, 1.0, 2e-6, False), "backend": "processes"}, history
    )
    profile = {"backends": rows}
    # 400 items of 10 ms: the two are predicted 0.2 s apart; dask's start-up varied by 2.5 s.
    close = predict(profile, 400, 0.01, releases_gil=True)
    note = close.startup_note()
    assert note and "depends on start-up" in note, note
    assert "dask's start-up took 1–3.5 s over its last 3 starts" in note, note
    # Far apart (many items: the per-item costs decide), or warm: nothing to say.
    assert predict(profile, 10**6, 0.01, releases_gil=True).startup_note() is None
    assert predict(profile, 400, 0.01, releases_gil=True, cold=False).startup_note() is None
    assert json.loads(history.read_text())["dask|2"] == [1.0, 3.5, 1.2]


def test_the_pool_the_profile_measured_bounds_threads_from_below():
    # Bounds of 1 ms (CPU, the GIL clipped at it) but six capped threads measured 1.3 ms.
    cal = {**calibration_row(6, 0.0, 1e-6, True), "threads": 6, "inner_threads": 1}
    task = {"item_s": 4e-3, "cpu_s": 1e-3, "item_s_1": 4e-3, "cpu_s_1": 1e-3, "gil_s": 1e-3,
            "arg_bytes": 0, "result_bytes": 0, "coroutine": False}  # fmt: skip
    profile = {"backends": {"threads": cal}, "cpu_count": 2}
    bare = predict(profile, 600, task=task, cold=False)[0]
    measured = predict(profile, 600, task={**task, "pool_s": 1.3e-3, "pool_threads": 6},
                       cold=False)[0]  # fmt: skip
    assert bare.seconds < 600 * 1.3e-3 <= measured.seconds < 600 * 1.4e-3
    assert "6 threads ran it at 1.3 ms per item" in measured.reason, measured.reason
    # Fewer items than threads, other thread counts, or uncapped pools: the pass says nothing.
    for items, threads in ((4, 6), (600, 12)):
        other = {**task, "pool_s": 1.3e-3, "pool_threads": threads}
        assert predict(profile, items, task=other, cold=False)[0].seconds == pytest.approx(
            predict(profile, items, task=task, cold=False)[0].seconds
        )


def test_an_object_put_once_is_paid_per_copy_not_per_task():
    # 40 tasks share one 10 MB object, put once: per machine (a process pool's file), per node
    # each from the driver's link (Ray), per worker each from another (Dask), or Dask's tasks
    # left where it is when copying costs more than the work it spreads.
    from smallbig.model.taskprofile import profile_task

    shared = np.ones(10**6 // 8 * 10)
    profile = profile_task(probes_sum, [(shared, i) for i in range(6)], put=shared)
    assert abs(profile.put_bytes - shared.nbytes) < 1000 and profile.arg_bytes < 1000

    rate = 1e7  # bytes per second, every copy
    def seconds(kind, holders, item_s, put_bytes):
        row = {**calibration_row(4, 0.0, 0.0, False, kind != "machine", alpha=0.01, beta=rate),
               "alpha_put_s": 0.03, "beta_put_Bps": rate, "put_copies": kind,
               "put_holders": holders, "threads": 4, "cores": 4}  # fmt: skip
        task = {"item_s": item_s, "cpu_s": 1e-6, "item_s_1": item_s, "cpu_s_1": 1e-6,
                "gil_s": 0.0, "arg_bytes": 0, "result_bytes": 0, "coroutine": False,
                "put_bytes": put_bytes}  # fmt: skip
        return predict({"backends": {kind: row}}, 40, task=task, cold=False)[0].seconds

    def term(kind, holders, item_s=0.1):
        return seconds(kind, holders, item_s, 10**7) - seconds(kind, holders, item_s, 0)

    first = 0.02 + 1.0  # the put's α beyond a task's, and 10 MB at 10 MB/s
    assert term("machine", 1) == pytest.approx(first)
    assert term("node", 4) == pytest.approx(first + 3 * 1.0)
    assert term("worker", 4) == pytest.approx(first + 2 * 1.0)  # two rounds of doubling
    # Tiny tasks: one worker's time for all 40 (0.04 s) beats two copies: none is made.
    assert term("worker", 4, item_s=1e-3) == pytest.approx(first + 0.04 - 0.01, rel=1e-3)
    # In-process backends share it: nothing to ship.
    assert seconds("machine", 1, 0.1, 10**7) > 0
    in_proc = {"backends": {"threads": {**calibration_row(4, 0.0, 0.0, True), "threads": 4}}}
    task = {"item_s": 0.1, "cpu_s": 1e-6, "item_s_1": 0.1, "cpu_s_1": 1e-6, "gil_s": 0.0,
            "arg_bytes": 0, "result_bytes": 0, "coroutine": False}  # fmt: skip
    assert predict(in_proc, 40, task={**task, "put_bytes": 10**7}, cold=False)[0].seconds == (
        predict(in_proc, 40, task=task, cold=False)[0].seconds
    )


def test_a_cold_maps_fresh_workers_pay_their_first_calls_on_their_own_share_of_cores():
    # A first call (imports, JIT) of 2 s where one thread had a quarter of a core: 0.5 CPU
    # seconds, paid by every fresh worker at once, each at its share of its cores.
    task = {"item_s": 0.04, "cpu_s": 0.01, "item_s_1": 0.04, "cpu_s_1": 0.01, "gil_s": 0.01,
            "arg_bytes": 0, "result_bytes": 0, "coroutine": False, "first_call_s": 2.0,
            "thread_cores": 0.25}  # fmt: skip

    def first_calls(row, **kw):
        name = "dask" if row["distributed"] else "processes"
        cal = {"backends": {name: {**row, "threads": row["workers"]}}}
        return predict(cal, 8, task=task, cold=True, **kw)[0].startup_s - row["startup_s"]

    # Three nodes of a quarter core, a worker each: side by side, 2 s (each node at the
    # speed it was profiled at), not three in turn on "one core".
    nodes = {**calibration_row(3, 1.0, 1e-5, False, True), "cores": 0.75}
    assert first_calls(nodes) == pytest.approx(2.0)
    # The same three nodes at a full core each: 0.5 s.
    assert first_calls({**nodes, "cores": 3.0}) == pytest.approx(0.5)
    # Four processes on a laptop of half a core share it: 0.5 CPU s each, 4 s in all.
    pool = {**calibration_row(4, 0.2, 1e-5, False), "cores": 0.5}
    assert first_calls(pool) == pytest.approx(4.0)
    # The laptop's local cluster extrapolated to 16 workers: nodes like the laptop's.
    local = {**calibration_row(2, 1.0, 1e-5, False, True), "cores": 0.25}
    assert first_calls(local, workers=16) == pytest.approx(2.0)


def probes_sum(pair):
    array, i = pair
    return float(array[::4096].sum()) + i


HISTORY_SCRIPT = """
import json, sys, time

import numpy as np

import smallbig
from smallbig.backends import available, get_backend
from smallbig.workloads import tasks

def cold_s(spec, items):
    start = time.perf_counter()
    with get_backend(spec) as ex:
        list(ex.map(tasks.tiny, items, chunksize="auto"))
    return time.perf_counter() - start

if __name__ == "__main__":
    local = ["serial", "threads", "asyncio"]
    profile = smallbig.overhead(local, path=sys.argv[1])
    # A notebook's past: other work on every backend there is, data kept in memory.
    kept = [{"row": i, "values": [i, str(i)]} for i in range(200_000)]
    for spec in available():
        with get_backend(spec) as ex:
            list(ex.map(np.sqrt, [np.ones(1_000)] * 500, chunksize="auto"))
    items = list(range(20_000))
    task = smallbig.profile_task(tasks.tiny, items[:17])
    advised = smallbig.advise(profile, items=len(items), task=task)[0].backend
    measured = {spec: min(cold_s(spec, items) for _ in range(2)) for spec in local}
    print(json.dumps({"advised": advised, "measured": measured}))
"""


@pytest.mark.slow
def test_a_tiny_task_in_a_process_with_a_history_is_advised_within_10pct(tmp_path):
    """Issue 45.4: after other work on every backend (Ray and Dask started and stopped in the
    same process, data kept), a pure-Python task of ~10 µs an item is advised a backend whose
    measured time is within 10% of the fastest local one's."""
    script = tmp_path / "history.py"
    script.write_text(HISTORY_SCRIPT)

    def regret() -> float:
        run = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "profile.json")],
            capture_output=True,
            text=True,
            timeout=280,
            env={**os.environ, "SMALLBIG_CACHE": str(tmp_path / "cache")},
        )
        assert run.returncode == 0, run.stderr[-3000:]
        got = json.loads(run.stdout.strip().splitlines()[-1])
        measured = got["measured"]
        return measured[got["advised"]] / min(measured.values())

    # Three tries: a neighbour's burst in one of the cold maps is not a wrong advice, while a
    # prediction from a faster state than the caller's is wrong every time.
    ratio_on_some_try("regret of the advised backend", regret, 0.0, 1.10, tries=3)


@pytest.mark.slow
@pytest.mark.skipif("spark" not in available(), reason="pip install 'smallbig[spark]' and Java")
def test_a_spark_map_is_predicted_as_one_job_on_sizes_the_calibration_did_not_use(tmp_path):
    """A Spark map is one job: its fixed cost (~0.2 s here) is paid whatever the items, and
    no item pays a submit's round trip. Spread over the calibration's 2,000 no-ops as a cost
    per item, 10,000 no-ops were predicted at 1.1 s where they took 0.23 s."""
    from smallbig.workloads import probes

    cases = [(probes.noop, list(range(9000)), 0.0), (probes.sleep, [0.004] * 300, 0.004)]
    with get_backend("spark", workers=2) as ex:
        # The calibration's maps, on this session of Spark (its growth with workers, a
        # second cluster at 8, is not what is checked here).
        profile = {"cpu_count": 2, "backends": {"spark": measure_overheads(ex, "spark", 2000, 3)}}
        for fn, items, item_s in cases:

            def ratio(fn=fn, items=items, item_s=item_s) -> float:
                measured = warm_map_s(ex, fn, items, items[:8])
                ranked = predict(profile, len(items), max(item_s, 1e-6), 8, cpu_s=1e-6, cold=False)
                return next(p.seconds for p in ranked if p.backend == "spark") / measured

            # Within 1.5× either way (the run's own check reads 3-18% median here); three
            # tries, since one map of ~0.2 s on a shared machine can be twice another.
            ratio_on_some_try(fn.__name__, ratio, 1 / 1.5, 1.5, tries=3)
