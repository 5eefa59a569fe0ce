"""Tables and advice from records: median time, speedup vs serial, thresholds, best backend."""

from __future__ import annotations

import itertools
import math

import pandas as pd
from rich.console import Console
from rich.table import Table

from compare.model import fastest, fit_all, medians, thresholds, workers_of


def speedup_table(records: pd.DataFrame) -> pd.DataFrame:
    """Median warm seconds and speedup vs serial per workload, backend and size."""
    med = medians(records)
    serial = med[med["backend"] == "serial"].set_index(["workload", "size"])["wall_s"]
    med["speedup"] = [
        serial.get((w, n), float("nan")) / t
        for w, n, t in zip(med["workload"], med["size"], med["wall_s"], strict=True)
    ]
    return med


def recommendations(records: pd.DataFrame, limit: int = 10**9) -> pd.DataFrame:
    """Per workload, the backend the model predicts fastest (:func:`predict_times`), over
    ranges of size up to ``limit``.

    Every size up to 10,000 is evaluated (the parallelism floor bends the curves there); above
    it, sizes 1% apart, each change of winner pinned to the exact size by bisection.
    """
    fits = fit_all(records)
    workers = workers_of(records)
    rows = []
    for workload in sorted({w for w, _ in fits}):
        cands = {b: f for (w, b), f in fits.items() if w == workload}
        width = {b: k for (w, b), k in workers.items() if w == workload}

        def best(n: int, cands=cands, width=width) -> str:
            return fastest(cands, width, n)

        sizes = list(range(1, min(limit, 10_000) + 1))
        while sizes[-1] < limit:
            sizes.append(min(limit, math.ceil(sizes[-1] * 1.01)))
        start, winner = 1, best(1)
        for prev, n in itertools.pairwise(sizes):
            if (now := best(n)) == winner:
                continue
            lo, hi = prev, n  # best(lo) == winner != best(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if best(mid) == winner else (lo, mid)
            rows.append({"workload": workload, "from": start, "to": lo, "use": winner})
            start, winner = hi, now if hi == n else best(hi)
        rows.append({"workload": workload, "from": start, "to": None, "use": winner})
    return pd.DataFrame(rows)


def print_report(records: pd.DataFrame, startup: dict[str, float], console: Console) -> None:
    """Per workload: the speedup table, thresholds and the recommendation."""
    table = speedup_table(records)
    wrong = records[records["correct"] == False]  # noqa: E712 - NaN-aware on purpose
    if len(wrong):
        console.print(
            f"[bold red]WRONG RESULTS: {len(wrong)} measurements differ from "
            f"serial's checksum:[/bold red]"
        )
        console.print(wrong[["workload", "backend", "size", "checksum"]].to_string())
    th = thresholds(records, startup)
    advice = recommendations(records)
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
                cells.append(f"{t:.3f} ({s:.1f}x)")
            out.add_row(backend, *cells)
        console.print(out)
        sel = th[th["workload"] == workload].drop(columns="workload")
        console.print(sel.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}"))
        for row in advice[advice["workload"] == workload].to_dict("records"):
            start = int(row["from"])
            if pd.isna(row["to"]):
                span = f"{start:,}–∞ items"
            elif int(row["to"]) == start:
                span = f"{start:,} item" + ("" if start == 1 else "s")
            else:
                span = f"{start:,}–{int(row['to']):,} items"
            console.print(f"  {span}: use [bold]{row['use']}[/bold]")
