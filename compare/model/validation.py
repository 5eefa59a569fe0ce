"""How well the cost model predicts a run's measured points, from the run's own calibration.

The model (:func:`smallbig.model.costmodel.predict`) takes each backend's overheads from the run's
``calibration.json`` and the task's cost from serial's records: seconds per item (the slope of
serial's fitted line), the share of them spent on a CPU, bytes per item, and the workload's
traits from ``run.json``. Nothing the other backends measured on the workload goes in: but
for serial's own points, every prediction is out of sample.
"""

from __future__ import annotations

import statistics
from typing import Any

import pandas as pd

from smallbig.model.costmodel import predict
from smallbig.model.fits import CLOSE, baseline_warm, fastest, fit_line, medians


def task_costs(records: pd.DataFrame, traits: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Per workload, the task's cost as :func:`predict` takes it, from serial's warm records."""
    serial = baseline_warm(records)
    costs = {}
    for workload, rows in serial.groupby("workload"):
        line = rows.groupby("size")["wall_s"].median()
        item_s = fit_line(line.index.to_numpy(), line.to_numpy()).per_item_s
        trait = traits.get(workload, {})
        costs[workload] = {
            "item_s": item_s,
            "cpu_s": item_s * min(1.0, rows["cpu_s"].sum() / rows["wall_s"].sum()),
            "item_bytes": int((rows["bytes_shipped"] / rows["size"]).median()),
            "releases_gil": trait.get("releases_gil", False),
            "coroutine": trait.get("coroutine", False),
            "coroutine_cpu_s": trait.get("coroutine_cpu_s"),
            "task": _scaled(trait.get("profile"), item_s),
        }
    return costs


def _scaled(profile: dict[str, Any] | None, item_s: float) -> dict[str, Any] | None:
    """A task profile's times scaled to serial's measured seconds per item in the run: the
    profile gives the shape (capped vs not, GIL, CPU), the run the level."""
    if not profile or profile["item_s"] <= 0:
        return None
    k = item_s / profile["item_s"]
    times = ("item_s", "cpu_s", "item_s_1", "cpu_s_1", "gil_s")
    return {**profile, **{t: profile[t] * k for t in times if profile.get(t) is not None}}


def model_check(
    records: pd.DataFrame, profile: dict[str, Any], traits: dict[str, dict]
) -> pd.DataFrame:
    """Predicted beside measured warm seconds, per workload, size and calibrated backend.

    Columns: workload, size, backend, predicted_s, measured_s, error_pct (signed: positive
    when the model predicted too slow).
    """
    rows = []
    costs = task_costs(records, traits)
    for point in medians(records).itertuples():
        if point.workload not in costs or point.backend not in profile["backends"]:
            continue
        cost = costs[point.workload]
        ranked = predict(
            profile,
            int(point.size),
            cost["item_s"],
            cost["item_bytes"],
            task=cost["task"],
            cpu_s=cost["cpu_s"],
            releases_gil=cost["releases_gil"],
            coroutine=cost["coroutine"],
            coroutine_cpu_s=cost["coroutine_cpu_s"],
            cold=False,
        )
        predicted = next(p.seconds for p in ranked if p.backend == point.backend)
        rows.append(
            {
                "workload": point.workload,
                "size": int(point.size),
                "backend": point.backend,
                "predicted_s": predicted,
                "measured_s": point.wall_s,
                "error_pct": 100 * (predicted / point.wall_s - 1),
            }
        )
    return pd.DataFrame(rows)


def model_advice(points: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, size): the backend the model advises and the one measured fastest.

    Columns: workload, size, advised, fastest, right, slower_pct (how much slower the
    advised backend measured than the fastest).
    """
    rows = []
    for (workload, size), group in points.groupby(["workload", "size"]):
        by = group.set_index("backend")
        advised, fastest = by["predicted_s"].idxmin(), by["measured_s"].idxmin()
        measured = by["measured_s"]
        rows.append(
            {
                "workload": workload,
                "size": size,
                "advised": advised,
                "fastest": fastest,
                "right": advised == fastest,
                "slower_pct": 100 * (measured[advised] / measured[fastest] - 1),
            }
        )
    return pd.DataFrame(rows)


def error_table(points: pd.DataFrame) -> pd.DataFrame:
    """Median absolute error (%) of predicted time per workload (rows) and backend (columns)."""
    absolute = points.assign(error_pct=points["error_pct"].abs())
    return absolute.pivot_table(
        index="workload", columns="backend", values="error_pct", aggfunc="median"
    )


def advice_accuracy(records: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Hold out each measured size in turn, fit on the others, predict the held-out one.

    Returns per (workload, held-out size): the advised and the measured fastest backend and
    the median relative error of the predicted times; and the summary (share of correct
    advice, median error over all predictions).
    """
    med = medians(records)
    warm = records[records["phase"] == "warm"].groupby(["workload", "backend", "size"])["wall_s"]
    low, high = warm.min(), warm.max()
    rows, errors = [], []
    for (workload, size), point in med.groupby(["workload", "size"]):
        fits = {}
        for backend, group in med[med["workload"] == workload].groupby("backend"):
            train = group[group["size"] != size]
            if len(train) >= 2 and backend in set(point["backend"]):
                fits[backend] = fit_line(train["size"].to_numpy(), train["wall_s"].to_numpy())
        if not fits:
            continue
        predicted = {b: fit.predict(size) for b, fit in fits.items()}
        measured = point.set_index("backend")["wall_s"]
        errs = [abs(predicted[b] - measured[b]) / measured[b] for b in predicted]
        errors += errs
        advised = fastest(fits, size)
        quickest = measured.idxmin()
        rows.append(
            {
                "workload": workload,
                "held_out": size,
                "advised": advised,
                "fastest": quickest,
                "advised_s": measured[advised],
                "fastest_s": measured[quickest],
                "right": advised == quickest,
                # Within noise: the advised backend's repeats reach below the fastest's slowest
                # repeat, so the two are not told apart by this run.
                "tied": bool(
                    advised == quickest
                    or low[workload, advised, size] <= high[workload, quickest, size]
                ),
                # What a wrong pick costs: how much slower the advised backend measured.
                "slower_pct": 100 * (measured[advised] / measured[quickest] - 1),
                "median_err_pct": 100 * statistics.median(errs),
            }
        )
    right = [r["right"] for r in rows]
    summary = {
        "points": len(rows),
        "advised_fastest_pct": 100 * sum(right) / max(len(right), 1),
        "advised_fastest_or_tied_pct": 100 * sum(r["tied"] for r in rows) / max(len(rows), 1),
        # The report's own yardstick: a backend within CLOSE of the advised one is named as
        # an equal choice, so an advised backend within CLOSE of the fastest is one too.
        "advised_within_close_pct": 100
        * sum(r["slower_pct"] <= 100 * CLOSE for r in rows)
        / max(len(rows), 1),
        "median_slower_pct": statistics.median(r["slower_pct"] for r in rows) if rows else 0.0,
        "max_slower_pct": max((r["slower_pct"] for r in rows), default=0.0),
        "median_error_pct": 100 * statistics.median(errors) if errors else float("nan"),
    }
    return rows, summary
