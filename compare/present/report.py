"""Tables and advice from records: median time, speedup vs serial, thresholds, best backend."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smallbig.model.fits import (
    BASELINE,
    CLOSE,
    baseline_item_s,
    fastest,
    fit_all,
    medians,
    thresholds,
)
from smallbig.results.fmt import cell, number, seconds, size
from smallbig.results.records import is_unfaithful


def speedup_table(records: pd.DataFrame) -> pd.DataFrame:
    """Median warm seconds and speedup vs serial per workload, backend and size."""
    med = medians(records)
    serial = med[med["backend"] == BASELINE].set_index(["workload", "size"])["wall_s"]
    med["speedup"] = [
        serial.get((w, n), float("nan")) / t
        for w, n, t in zip(med["workload"], med["size"], med["wall_s"], strict=True)
    ]
    return med


def memory_table(records: pd.DataFrame) -> pd.DataFrame:
    """Median peak resident bytes (this process plus the backend's own processes, warm runs)
    per workload, backend and size; NaN where unknown (records before schema 4, a remote
    engine that reports nothing)."""
    keys = ["workload", "backend", "size"]
    if "peak_rss_bytes" not in records:
        return pd.DataFrame(columns=[*keys, "peak_rss_bytes"])
    warm = records[(records["phase"] == "warm") & records["wall_s"].notna()]
    return warm.groupby(keys, as_index=False)["peak_rss_bytes"].median()


def added_memory(records: pd.DataFrame) -> pd.DataFrame:
    """What each backend adds to memory: the median over warm runs of the peak less what this
    process held just before the run (``base_rss_bytes``; the raw peak for records written
    before that column was)."""
    keys = ["workload", "backend", "size"]
    if "peak_rss_bytes" not in records:
        return pd.DataFrame(columns=[*keys, "added_bytes", "baseline_known"])
    warm = records[(records["phase"] == "warm") & records["wall_s"].notna()]
    base = warm.get("base_rss_bytes", pd.Series(float("nan"), index=warm.index))
    added = (
        (warm["peak_rss_bytes"] - base).clip(lower=0).where(base.notna(), warm["peak_rss_bytes"])
    )
    frame = warm[keys].assign(added_bytes=added, baseline_known=base.notna())
    return frame.groupby(keys, as_index=False).agg(
        added_bytes=("added_bytes", "median"), baseline_known=("baseline_known", "all")
    )


def baseline_rss(records: pd.DataFrame) -> float | None:
    """The median of what this process held before each run (``None``: not recorded)."""
    if "base_rss_bytes" not in records or records["base_rss_bytes"].isna().all():
        return None
    return float(records["base_rss_bytes"].median())


def recommendations(records: pd.DataFrame) -> pd.DataFrame:
    """Per workload, the backend the fitted model predicts fastest, over ranges of size.

    The ranges are the lower envelope of the fitted lines, found exactly: from the best backend
    at n=1, jump to the nearest size where a backend with a smaller per-item cost overtakes it.
    ``close`` names the backends predicted within :data:`CLOSE` of it over the whole range
    (up to the largest measured size for the last, open range): as good a choice within noise.
    """
    fits = fit_all(records)
    largest = records.groupby("workload")["size"].max()
    rows = []
    for workload in sorted({w for w, _ in fits}):
        cands = {b: f for (w, b), f in fits.items() if w == workload}
        n = 1
        best = fastest(cands, n)
        while True:
            ahead = [
                max(n + 1, math.floor(overtake) + 1)
                for f in cands.values()
                if f.per_item_s < cands[best].per_item_s
                and (
                    overtake := (f.fixed_s - cands[best].fixed_s)
                    / (cands[best].per_item_s - f.per_item_s)
                )
                is not None
            ]
            if not ahead:
                ends = (n, max(n, int(largest[workload])))
                close = _close(cands, best, ends)
                rows.append(
                    {"workload": workload, "from": n, "to": None, "use": best, "close": close}
                )
                break
            point = min(ahead)
            close = _close(cands, best, (n, point - 1))
            rows.append(
                {"workload": workload, "from": n, "to": point - 1, "use": best, "close": close}
            )
            n = point
            best = fastest(cands, n)
    return pd.DataFrame(rows)


def _close(cands: dict, best: str, ends: tuple[int, int]) -> list[str]:
    # Lines are straight, so being close at both ends means close everywhere between.
    return [
        b
        for b, fit in sorted(cands.items())
        if b != best and all(fit.predict(n) <= (1 + CLOSE) * cands[best].predict(n) for n in ends)
    ]


def print_report(
    records: pd.DataFrame,
    startup: dict[str, float],
    console: Console,
    infos: dict[str, dict] | None = None,
) -> None:
    """Per workload: the speedup table, what each backend adds to memory, and the fitted lines
    with their thresholds (``infos``: each backend's recorded ``info()``, for its
    capabilities). What to use is the answer block's (:mod:`smallbig.present.answer`)."""
    table = speedup_table(records)
    print_failures(records, console)
    th = thresholds(records, startup, infos=infos)
    mem = added_memory(records)
    for workload, group in table.groupby("workload"):
        pivot = group.pivot(index="backend", columns="size", values=["wall_s", "speedup"])
        out = Table(title=f"{workload}: median warm seconds (speedup vs serial)")
        out.add_column("backend")
        sizes = sorted(group["size"].unique())
        for n in sizes:
            out.add_column(f"n={n}", justify="right")
        for backend in pivot.index:
            cells = []
            for n in sizes:
                t, s = pivot.loc[backend, ("wall_s", n)], pivot.loc[backend, ("speedup", n)]
                cells.append(f"{seconds(t)} ({s:.2g}×)" if s == s else seconds(t))
            out.add_row(backend, *cells)
        console.print(out)
        memory = _memory_table(workload, mem[mem["workload"] == workload], sizes)
        if memory is not None:
            console.print(memory)
        console.print(_threshold_table(workload, th[th["workload"] == workload]))


def print_failures(records: pd.DataFrame, console: Console) -> None:
    """Say which measurements were wrong (a checksum unlike serial's), could not be made, or
    were made where a scale model's quotas did not hold."""
    wrong = records[records["correct"] == False]  # noqa: E712 - NaN-aware on purpose
    if len(wrong):
        console.print(
            f"[bold red]WRONG RESULTS: {len(wrong)} measurements differ from "
            f"serial's checksum:[/bold red]"
        )
        console.print(wrong[["workload", "backend", "size", "checksum"]].to_string())
    failed = records[records["failure"] != ""] if "failure" in records else records[:0]
    if len(failed):
        console.print(
            f"[bold red]{len(failed)} point(s) could not be measured[/bold red] (the backend "
            "was restarted; these have no time and are left out of every figure):"
        )
        _print_points(failed, "failure", console)
    unfaithful = records[is_unfaithful(records)]
    if len(unfaithful):
        console.print(
            f"[bold red]{len(unfaithful)} point(s) where the scale model's CPU quotas did not "
            "hold[/bold red] (left out of every figure; see docs/clusters.md):"
        )
        _print_points(unfaithful, "fidelity", console)


def _print_points(points: pd.DataFrame, column: str, console: Console) -> None:
    """One line per backend and reason (``column``), naming its points."""
    for (backend, reason), group in points.groupby(["backend", column]):
        where = group[["workload", "size", "repeat"]].itertuples(index=False)
        named = ", ".join(f"{w} n={n} #{r}" for w, n, r in where)
        console.print(f"  {backend}: {escape(reason)} ({named})")


def print_answer(answer: Any, console: Console) -> None:
    """The answer block (:func:`smallbig.present.answer.answer`), workload headings in bold."""
    head, *rest = answer.lines()
    console.print(f"[bold]{escape(head)}[/bold]")
    for line in rest:
        console.print(escape(line) if line.startswith(" ") else f"[bold]{escape(line)}[/bold]")


def _memory_table(workload: str, rows: pd.DataFrame, sizes: list) -> Table | None:
    """What each backend adds to memory, beside the time table: same rows, same columns."""
    if rows["added_bytes"].isna().all():
        return None
    pivot = rows.pivot(index="backend", columns="size", values="added_bytes")
    title = (
        f"{workload}: memory each backend adds (median peak above this process before it)"
        if rows["baseline_known"].all()
        else f"{workload}: median peak resident memory (this process + the backend's)"
    )
    out = Table(title=title)
    out.add_column("backend")
    for n in sizes:
        out.add_column(f"n={n}", justify="right")
    for backend in pivot.index:
        out.add_row(backend, *(size(pivot.loc[backend].get(n)) for n in sizes))
    return out


def _threshold_table(workload: str, rows: pd.DataFrame) -> Table:
    """The fitted line and the thresholds of each backend, one row each."""
    out = Table(title=f"{workload}: fitted time = fixed + per item × n; thresholds in items")
    columns = {
        "backend": "backend",
        "fixed_s": "fixed",
        "per_item_ms": "per item",
        "fit_error": "fit error",
        "break_even_warm": "break-even warm",
        "break_even_cold": "cold",
        "crossover": "crossover",
        "reason": "why none",
    }
    present = [c for c in columns if c in rows.columns]
    for c in present:
        out.add_column(columns[c], justify="left" if c in ("backend", "reason") else "right")
    for row in rows.to_dict("records"):
        out.add_row(*threshold_cells(row, present))
    return out


def threshold_cells(row: dict[str, Any], columns: list[str]) -> list[str]:
    """One row of :func:`~smallbig.model.fits.thresholds` as table cells, in ``columns``' order."""
    cells = []
    for c in columns:
        v = row.get(c)
        if c == "per_item_ms":
            cells.append(seconds(v / 1e3))
        elif c == "fit_error":
            cells.append(f"{v:.0%}" if v == v else "-")
        elif c == "crossover" and isinstance(row.get("crossover_vs"), str):
            at = number(v) if v is not None and v == v else "-"
            cells.append(f"{at} vs {row['crossover_vs']}")
        else:
            cells.append(cell(c, v))
    return cells


def print_model_check(
    records: pd.DataFrame, profile: dict, traits: dict[str, dict], console: Console
) -> pd.DataFrame:
    """How well the cost model, from the run's calibration alone, predicts the run.

    Prints the median error per workload and backend and how often the model's pick was the
    measured fastest; returns the per-point predictions
    (:func:`smallbig.model.validation.model_check`).
    """
    from smallbig.model.validation import error_table, model_advice, model_check

    points = model_check(records, profile, traits)
    if points.empty:
        return points
    errors = error_table(points)
    out = Table(title="cost model vs measured: median error of predicted warm time, %")
    out.add_column("workload")
    for backend in errors.columns:
        out.add_column(backend, justify="right")
    for workload, row in errors.iterrows():
        out.add_row(workload, *("-" if pd.isna(v) else f"{v:.0f}" for v in row))
    console.print(out)
    advice = model_advice(points)
    console.print(
        f"  the model's pick was the measured fastest at {int(advice['right'].sum())} of "
        f"{len(advice)} points; median error {points['error_pct'].abs().median():.0f}% "
        "(inputs: calibration.json and serial's cost per item, nothing else measured)"
    )
    return points


def print_memory_band(
    records: pd.DataFrame, profile: dict, traits: dict[str, dict], console: Console
) -> None:
    """Per workload: where its data outgrows this machine's memory and the small big data band
    (:mod:`smallbig.model.band`), for its measured cost per item, against the default extrapolated
    cluster."""
    from smallbig.model.band import small_big_band
    from smallbig.model.cluster import Cluster

    item_s = baseline_item_s(records)
    cluster = Cluster()
    lines = []
    for workload, seconds_per_item in item_s.items():
        data = traits.get(workload, {}).get("data_bytes_per_item")
        if not data or seconds_per_item != seconds_per_item:
            continue
        band = small_big_band(
            profile,
            float(seconds_per_item),
            float(data),
            releases_gil=bool(traits[workload].get("releases_gil")),
            cluster=cluster,
        )
        lines.append(f"  {workload} ({size(data)} per item): {band.describe()}")
    if lines:
        console.print(f"memory boundary and small big data ({escape(cluster.label())}):")
        for line in lines:
            console.print(escape(line))
