"""PNG plots a person can read at a glance: time and speedup vs size, overhead breakdown, and
the phase diagram of the best backend.

Drawn on bare ``matplotlib.figure.Figure`` objects and saved to files: importing this module
never switches the user's matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from compare.advise import predict
from compare.model import break_even, fit_all
from compare.report import speedup_table


def scaling(records: pd.DataFrame, workload: str, path: str | Path) -> Path:
    """Median warm time and speedup vs serial against size (log axes), break-evens marked."""
    table = speedup_table(records)
    table = table[table["workload"] == workload]
    fits = fit_all(records)
    fig = Figure(figsize=(11, 4.2))
    ax_t, ax_s = fig.subplots(1, 2)
    for backend, group in table.groupby("backend"):
        line = ax_t.plot(group["size"], group["wall_s"], "o-", label=backend)[0]
        known = group[group["speedup"] > 0]  # no serial baseline: no speedup to draw
        ax_s.plot(known["size"], known["speedup"], "o-", color=line.get_color(), label=backend)
        base = fits.get((workload, "serial"))
        if base is not None and backend != "serial":
            n = break_even(fits[(workload, backend)], base)
            if n is not None and n > 1:
                ax_s.axvline(n, color=line.get_color(), ls=":", lw=1)
    ax_s.axhline(1, color="grey", lw=1)
    for ax, label in ((ax_t, "median warm seconds"), (ax_s, "speedup vs serial")):
        ax.set(xscale="log", yscale="log", xlabel="items", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    # Speedups span less than a decade: label them plainly (0.5×, 2×), not as powers of ten.
    times = FuncFormatter(lambda v, _: f"{v:g}×")
    ax_s.yaxis.set_major_formatter(times)
    ax_s.yaxis.set_minor_formatter(times)
    ax_s.legend(fontsize=8)
    fig.suptitle(f"{workload}: dotted lines mark each backend's break-even vs serial")
    return _save(fig, path)


def overhead_breakdown(profile: dict[str, Any], path: str | Path) -> Path:
    """Start-up, per-task overhead and cost of shipping 1 MB, per backend (log scale)."""
    names = list(profile["backends"])
    rows = profile["backends"]
    terms = {
        "start-up (s)": [rows[b]["startup_s"] for b in names],
        "per task, chunksize=1 (s)": [rows[b]["task_overhead_s"] for b in names],
        "per item, auto (s)": [rows[b]["auto_overhead_s"] for b in names],
        "1 MB by value (s)": [
            rows[b]["alpha_value_s"] + 2**20 / rows[b]["beta_value_Bps"] for b in names
        ],
    }
    ax = (fig := Figure(figsize=(10, 4.2))).subplots()
    x = np.arange(len(names))
    for i, (label, values) in enumerate(terms.items()):
        ax.bar(x + (i - 1.5) * 0.2, np.maximum(values, 1e-7), 0.2, label=label)
    ax.set(xticks=x, xticklabels=names, yscale="log", ylabel="seconds")
    ax.legend(fontsize=8)
    ax.set_title("What each backend costs before any work is done")
    return _save(fig, path)


def phase_diagram(
    profile: dict[str, Any],
    path: str | Path,
    measured: pd.DataFrame | None = None,
    releases_gil: bool = False,
) -> Path:
    """Predicted best backend over (items × per-item compute); measured winners on top."""
    items = np.logspace(0, 6, 60)
    compute = np.logspace(-6, 0, 60)
    names = list(profile["backends"])
    best = np.empty((len(compute), len(items)), int)
    for i, c in enumerate(compute):
        for j, n in enumerate(items):
            ranked = predict(profile, int(n), float(c), releases_gil=releases_gil)
            best[i, j] = names.index(ranked[0].backend)
    ax = (fig := Figure(figsize=(7.5, 5.5))).subplots()
    cmap = matplotlib.colormaps["tab10"].resampled(len(names))
    ax.pcolormesh(
        items,
        compute,
        best,
        cmap=cmap,
        vmin=-0.5,
        vmax=len(names) - 0.5,
        shading="auto",
        alpha=0.55,
    )
    for k, name in enumerate(names):
        ax.scatter([], [], color=cmap(k), marker="s", label=f"{name} (predicted)")
    if measured is not None and len(measured):
        for row in measured.itertuples():
            k = names.index(row.backend) if row.backend in names else 0
            ax.scatter(row.items, row.item_s, color=cmap(k), edgecolor="black", s=60, zorder=3)
    ax.set(xscale="log", yscale="log", xlabel="items", ylabel="compute per item (s)")
    ax.legend(fontsize=8, loc="lower left")
    kind = "GIL-releasing" if releases_gil else "pure-Python"
    ax.set_title(f"Fastest backend for {kind} tasks: predicted (shaded), measured (dots)")
    return _save(fig, path)


def measured_winners(records: pd.DataFrame, item_seconds: dict[str, float]) -> pd.DataFrame:
    """The fastest measured backend per (workload, size), placed by its serial per-item time."""
    table = speedup_table(records)
    rows = []
    for (workload, size), group in table.groupby(["workload", "size"]):
        if workload in item_seconds:
            winner = group.loc[group["wall_s"].idxmin(), "backend"]
            rows.append({"items": size, "item_s": item_seconds[workload], "backend": winner})
    return pd.DataFrame(rows)


def _save(fig: Figure, path: str | Path) -> Path:
    # A bare Figure, not pyplot: nothing here touches the user's matplotlib backend, so their
    # own figures in Jupyter still show after `from compare import plots`.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
