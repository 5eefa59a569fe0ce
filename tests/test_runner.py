"""compare: the model and thresholds on synthetic records; a real small run; bad options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smallbig.model.calibrate import load_profile
from smallbig.model.costmodel import predict
from smallbig.model.fits import (
    Fit,
    break_even,
    fastest,
    fit_all,
    fit_line,
    medians,
    thresholds,
)
from smallbig.model.validation import model_advice, model_check
from smallbig.present.report import recommendations
from smallbig.results.records import load_records
from smallbig.running.runner import run


def _records(lines: dict[str, tuple[float, float]], sizes=(1, 10, 100, 1000)) -> pd.DataFrame:
    rows = [
        {
            "workload": "w",
            "backend": b,
            "size": n,
            "phase": "warm",
            "wall_s": fixed + per * n,
            "correct": True,
        }
        for b, (fixed, per) in lines.items()
        for n in sizes
    ]
    return pd.DataFrame(rows)


def test_fit_line_recovers_known_terms():
    sizes = np.array([1, 10, 100, 1000])
    fit = fit_line(sizes, 0.5 + 0.002 * sizes)
    assert fit.fixed_s == pytest.approx(0.5) and fit.per_item_s == pytest.approx(0.002)
    assert fit.median_rel_error < 1e-9 and fit.predict(500) == pytest.approx(1.5)


def test_break_even_known_answers():
    serial = Fit(0.0, 0.010, 0, 4)
    pool = Fit(0.2, 0.004, 0, 4)  # pays 0.2 s up front, saves 6 ms per item
    assert break_even(pool, serial) == 34  # ceil(0.2 / 0.006)
    assert break_even(pool, serial, extra_fixed_s=1.0) == 200
    assert break_even(Fit(0, 0.001, 0, 4), serial) == 1.0
    assert break_even(Fit(0.1, 0.02, 0, 4), serial) is None


def test_thresholds_and_advice_on_synthetic_records():
    records = _records(
        {
            "serial": (0.0, 0.010),
            "processes": (0.2, 0.004),
            "dask": (1.0, 0.002),
            "threads": (0.01, 0.012),
        }
    )
    th = thresholds(records, startup={"dask": 2.0, "processes": 0.2}).set_index("backend")
    assert th.loc["processes", "break_even_warm"] == 34
    assert th.loc["processes", "break_even_cold"] == 67
    assert (
        pd.isna(th.loc["threads", "break_even_warm"]) and "≥ serial" in th.loc["threads", "reason"]
    )
    assert th.loc["dask", "crossover_vs"] == "processes"
    assert th.loc["dask", "crossover"] == 400  # ceil(0.8 / 0.002)
    advice = recommendations(records)
    assert list(advice["use"]) == ["serial", "processes", "dask"]
    assert advice.iloc[1]["from"] <= 34 < advice.iloc[2]["from"]


def test_small_real_run_writes_records_and_resumes(tmp_path):
    out = tmp_path / "out"
    records = run(
        ["noop", "sleep"],
        ["serial", "threads", "asyncio"],  # asyncio awaits the sleep's coroutine twin
        sizes=[2, 20],
        repeats=2,
        out_dir=out,
        workers=2,
        progress=False,
    ).records
    assert len(records) == 3 * 2 * 2 * 3
    assert set(records["phase"]) == {"cold", "warm"}
    assert records["correct"].all() and (records["errors"] == 0).all()
    # What the cost model reads: traits, the run's own calibration, and CPU beside wall time.
    meta = json.loads((out / "run.json").read_text())
    assert meta["workloads"]["sleep"]["coroutine"] and not meta["workloads"]["noop"]["coroutine"]
    assert 0 < meta["workloads"]["sleep"]["coroutine_cpu_s"] < 0.01  # awaiting costs no CPU
    assert set(load_profile(out / "calibration.json")["backends"]) == {
        "serial",
        "threads",
        "asyncio",
    }
    assert records["paired"].all()  # all local: measured in turns with serial
    slept = records[(records.backend == "serial") & (records.workload == "sleep")]
    assert (slept["cpu_s"] < 0.5 * slept["wall_s"]).all()  # sleeping is waiting, not CPU
    warm = records[(records.workload == "sleep") & (records.phase == "warm")]
    by = warm.groupby(["backend", "size"])["wall_s"].median()
    assert by[("threads", 20)] < by[("serial", 20)]  # sleeps overlap on threads
    # Resume: nothing is measured again; a larger repeat count adds only the new rows.
    again = run(
        ["noop", "sleep"],
        ["serial", "threads", "asyncio"],
        sizes=[2, 20],
        repeats=3,
        out_dir=out,
        workers=2,
        resume=True,
        progress=False,
    ).records
    assert len(again) == 3 * 2 * 2 * 4
    assert load_records(out).iloc[: len(records)].equals(records)


def test_run_from_python_draws_what_the_command_draws_and_report_draws_it_again(tmp_path):
    """One function draws a run's figures and report.html: smallbig.run(), `smallbig run` and
    `smallbig report` leave the same files (the command once drew figures that run() did not)."""
    from smallbig.cli import main

    out = tmp_path / "py"
    run(["noop"], ["serial", "threads"], sizes=[2, 8], repeats=1, out_dir=out, progress=False)
    drawn = {"noop_scaling.png", "phase_diagram.png", "report.html"}
    assert drawn <= {p.name for p in out.iterdir()}
    owned = {Path(p).name for p in json.loads((out / "run.json").read_text())["outputs"]}
    assert drawn <= owned  # the next run into the folder replaces them
    assert "noop_scaling.png" in (out / "report.html").read_text()
    (out / "noop_scaling.png").unlink()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert {"noop_scaling.png", "report.html"} <= {p.name for p in out.iterdir()}
    cli = tmp_path / "cli"
    argv = ["run", "--workloads", "noop", "--backends", "serial", "threads", "--sizes", "2", "8",
            "--repeats", "1", "--out", str(cli)]  # fmt: skip
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {p.name for p in cli.iterdir()}


def test_paired_medians_take_each_round_against_serials():
    # Serial's rounds ran at different speeds (a noisy neighbour); threads, measured in turns
    # with it, is judged by its ratio to serial's time in the same round: 0.4, 0.9, 0.5.
    rows = [
        {
            "workload": "w",
            "backend": b,
            "size": 10,
            "repeat": r,
            "phase": "warm",
            "wall_s": t,
            "paired": paired,
        }
        for b, times, paired in (
            ("serial", [1.0, 2.0, 3.0], True),
            ("threads", [0.4, 1.8, 1.5], True),
            ("dask", [0.4, 1.8, 1.5], False),  # measured on its own: the plain median
        )
        for r, t in enumerate(times, start=1)
    ]
    med = medians(pd.DataFrame(rows)).set_index("backend")["wall_s"]
    assert med["serial"] == pytest.approx(2.0)
    assert med["threads"] == pytest.approx(0.5 * 2.0)  # not the plain median, 1.5
    assert med["dask"] == pytest.approx(1.5)


def test_local_backends_take_turns_clusters_run_alone():
    from smallbig.running.plan import Plan

    plan = Plan.make({"w": [5]}, ["threads", "dask", "processes", "ray@127.0.0.1:6379"], 2)
    groups = plan.groups()
    assert groups == [["serial", "threads", "processes"], ["dask"], ["ray@127.0.0.1:6379"]]
    done = {("w", "threads", 5, 1, "warm")}  # measured before a resume
    order = [(p.repeat, p.backend) for p in plan.schedule(groups[0], done)]
    assert order == [
        (0, "serial"),
        (0, "threads"),
        (0, "processes"),
        (1, "processes"),  # round 1 starts with the second backend; threads has it already
        (1, "serial"),
        (2, "processes"),
        (2, "serial"),
        (2, "threads"),
    ]
    # A resume that finds a group done has nothing to schedule for it.
    everything = {p.key for p in plan.schedule(groups[1])}
    assert len(everything) == 3 and plan.schedule(groups[1], everything) == []


def test_resume_refuses_records_of_another_schema(tmp_path):
    old = "workload,backend,size\nnoop,serial,1\n"
    (tmp_path / "records.csv").write_text(old)
    with pytest.raises(ValueError, match="another version of smallbig"):
        run(["noop"], ["serial"], sizes=[1], out_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / "records.csv").read_text() == old  # kept as it was


def test_model_check_is_exact_on_records_the_model_made():
    # Records that follow the cost model exactly: the check must find no error and the
    # model's pick must be the fastest at every size.
    profile = {
        "cpu_count": 2,
        "backends": {
            "serial": {"workers": 1, "startup_s": 0.0, "auto_overhead_s": 1e-6, "in_process": True},
            "threads": {
                "workers": 6,
                "threads": 6,
                "cores": 2,
                "startup_s": 0.0,
                "auto_overhead_s": 2e-6,
                "in_process": True,
            },
            "processes": {
                "workers": 2,
                "startup_s": 0.5,
                "auto_overhead_s": 5e-5,
                "in_process": False,
                "alpha_value_s": 1e-3,
                "beta_value_Bps": 1e8,
            },
        },
    }
    item_s, cpu_share, nbytes = 0.004, 0.5, 1000
    rows = []
    for n in (1, 10, 100, 1000):
        ranked = predict(
            profile, n, item_s, nbytes, cpu_s=cpu_share * item_s, releases_gil=True, cold=False
        )
        for p in ranked:
            serial_wall = n * (item_s + 1e-6)
            rows.append(
                {
                    "workload": "w",
                    "backend": p.backend,
                    "size": n,
                    "phase": "warm",
                    "wall_s": p.seconds,
                    "cpu_s": cpu_share * serial_wall if p.backend == "serial" else 0.0,
                    "bytes_shipped": nbytes * n,
                }
            )
    records = pd.DataFrame(rows)
    points = model_check(records, profile, {"w": {"releases_gil": True}})
    assert len(points) == 12 and points["error_pct"].abs().max() < 0.1
    advice = model_advice(points)
    assert advice["right"].all()
    assert list(advice["advised"]) == ["serial", "threads", "threads", "threads"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backends", "sparkle"], "Invalid backend: 'sparkle'"),
        (["--workloads", "video"], "unknown workload 'video'"),
        (["--sizes", "0", "10"], "--sizes: must be ≥ 1, got 0"),
        (["--out", "/proc/smallbig"], "is not writable"),
    ],
)
def test_bad_options_fail_before_anything_starts(args, message, tmp_path):
    cmd = [sys.executable, "-m", "smallbig", "run", "--out", str(tmp_path / "o"), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert message in out.stdout + out.stderr
    assert not (tmp_path / "o" / "records.csv").exists()


def test_advice_accuracy_is_perfect_on_exact_lines():
    from smallbig.model.validation import advice_accuracy

    records = _records(
        {"serial": (0.0, 0.010), "processes": (0.2, 0.004), "dask": (1.0, 0.002)},
        sizes=(1, 10, 100, 1000, 10_000),
    )
    rows, summary = advice_accuracy(records)
    assert summary["points"] == 5 and summary["advised_fastest_pct"] == 100
    assert summary["advised_fastest_or_tied_pct"] == 100 and summary["max_slower_pct"] == 0
    assert summary["advised_within_close_pct"] == 100
    assert summary["median_error_pct"] < 1e-6
    assert [r["fastest"] for r in rows] == ["serial", "serial", "processes", "dask", "dask"]


def test_a_tie_with_serial_goes_to_serial():
    # At one item both lines give 10 ms: the pool would only add dispatch, so serial is
    # advised there, and threads from the second item on. asyncio stays within 5% of the
    # advised backend everywhere up to the largest measured size, so it is named beside it.
    records = _records(
        {"threads": (0.006, 0.004), "serial": (0.0, 0.010), "asyncio": (0.006, 0.0041)}
    )
    fits = {b: f for (_, b), f in fit_all(records).items()}
    assert fits["threads"].predict(1) == pytest.approx(fits["serial"].predict(1))
    assert fastest(fits, 1) == "serial" and fastest(fits, 2) == "threads"
    advice = recommendations(records)
    assert list(advice["use"]) == ["serial", "threads"] and list(advice["from"]) == [1, 2]
    assert advice["to"].iloc[0] == 1 and pd.isna(advice["to"].iloc[1])
    assert list(advice["close"]) == [["asyncio", "threads"], ["asyncio"]]
