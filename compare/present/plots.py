"""PNG plots a person can read at a glance: time and speedup vs size, overhead breakdown, and
the phase diagram of the best backend.

Drawn on bare ``matplotlib.figure.Figure`` objects and saved to files: importing this module
never switches the user's matplotlib backend.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from smallbig.model.calibration import read_calibration
from smallbig.model.cluster import Cluster
from smallbig.model.costmodel import predict
from smallbig.model.fits import BASELINE, break_even, fit_all
from smallbig.model.footprint import machine_memory
from smallbig.present.report import memory_table, speedup_table
from smallbig.results import fmt

# One colour per backend in every figure the product draws (a cluster by address takes its
# engine's): the reader learns it once. Other names take one of the rest, by a stable hash.
PALETTE = {
    "serial": "#7f7f7f",
    "threads": "#1f77b4",
    "processes": "#ff7f0e",
    "asyncio": "#2ca02c",
    "dask": "#d62728",
    "ray": "#9467bd",
}
_OTHERS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")


def color(backend: str) -> str:
    """The colour of ``backend`` (a name or ``NAME@ADDRESS``) in every figure."""
    name = backend.partition("@")[0]  # any name: a backend registered after this was written
    return PALETTE.get(name) or _OTHERS[zlib.crc32(name.encode()) % len(_OTHERS)]


def scaling(records: pd.DataFrame, workload: str, path: str | Path) -> Path:
    """Median warm time and speedup vs serial against size (log axes), break-evens marked."""
    table = speedup_table(records)
    table = table[table["workload"] == workload]
    fits = fit_all(records)
    memory = memory_table(records)
    memory = memory[(memory["workload"] == workload) & memory["peak_rss_bytes"].notna()]
    panels = 3 if len(memory) else 2  # memory beside time, when it was measured
    fig = Figure(figsize=(5.5 * panels, 4.6))
    ax_t, ax_s, *ax_m = fig.subplots(1, panels)
    base = fits.get((workload, BASELINE))
    marks = []
    speedups = 0
    for backend, group in table.groupby("backend"):
        c = color(backend)
        ax_t.plot(group["size"], group["wall_s"], "o-", color=c, label=backend)
        known = group[group["speedup"] > 0]  # no serial baseline: no speedup to draw
        ax_s.plot(known["size"], known["speedup"], "o-", color=c)
        speedups += len(known)
        mine = memory[memory["backend"] == backend]
        if ax_m and len(mine):
            ax_m[0].plot(mine["size"], mine["peak_rss_bytes"] / 1e6, "o-", color=c)
        # Each backend's break-even with serial (once only the last backend's, and only
        # when memory was drawn: the loop's variable read after it).
        if base is not None and backend != BASELINE and (workload, backend) in fits:
            n = break_even(fits[(workload, backend)], base)
            if n is not None and n > 1:
                marks.append((n, backend))
    if ax_m:
        ax_m[0].set(xscale="log", yscale="log", xlabel="items", ylabel="peak resident MB")
        ax_m[0].set_title("memory: this process + the backend's", fontsize=9)
        ax_m[0].grid(True, which="both", alpha=0.3)
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax_m[0].yaxis.set_major_formatter(plain)
        ax_m[0].yaxis.set_minor_formatter(plain)
    ax_s.axhline(1, color="grey", lw=1)
    ax_t.set(xscale="log", yscale="log", xlabel="items", ylabel="median warm seconds")
    ax_t.grid(True, which="both", alpha=0.3)
    ax_s.set(xlabel="items", ylabel="speedup vs serial")
    if speedups:
        _speedup_axis(ax_s, marks)
        title = "dotted lines mark where a backend breaks even with serial"
    else:
        # No serial point to divide by (none measured, or none kept: a scale model's
        # unfaithful rows are left out): say so, where a log axis of nothing would fail.
        ax_s.text(0.5, 0.5, "no serial time to compare with", ha="center",
                  transform=ax_s.transAxes)  # fmt: skip
        title = "no speedup without serial's time"
    fig.legend(*ax_t.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    fig.suptitle(f"{workload}: {title}")
    return _save(fig, path, layout=False)


def _speedup_axis(ax_s: Any, marks: list[tuple[int, str]]) -> None:
    """The speedup panel's log axes, plain labels and each backend's break-even line."""
    ax_s.set(xscale="log", yscale="log")
    ax_s.grid(True, which="both", alpha=0.3)
    # Speedups read plainly (0.5×, 2×), not as powers of ten; minor ticks are labelled only
    # within a decade, where there are few of them (over more they print on top of each other).
    times = FuncFormatter(lambda v, _: f"{v:g}×")
    ax_s.yaxis.set_major_formatter(times)
    low, high = ax_s.get_ylim()
    ax_s.yaxis.set_minor_formatter(times if high / low < 10 else NullFormatter())
    # Each break-even line labelled with its backend, labels staggered so none overlaps.
    for k, (n, backend) in enumerate(sorted(marks)):
        ax_s.axvline(n, color=color(backend), ls=":", lw=1.2)
        ax_s.annotate(
            f"{backend} ≥ {n:,}",
            (n, 1 - 0.08 * (k + 1)),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            color=color(backend),
            fontsize=8,
        )


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
    positive = [v for values in terms.values() for v in values if v > 0]
    floor = min(positive) / 3 if positive else 1e-6
    # Terms in shades of grey: colours belong to backends (their tick labels) in every figure.
    shades = ("#252525", "#636363", "#969696", "#d9d9d9")
    for i, (label, values) in enumerate(terms.items()):
        at = x + (i - 1.5) * 0.2
        # A zero cost (serial starts nothing) has no bar on a log axis: it is written as "0".
        heights = [v if v > 0 else np.nan for v in values]
        ax.bar(at, heights, 0.2, label=label, color=shades[i], edgecolor="black", lw=0.5)
        for xi, v in zip(at, values, strict=True):
            if v <= 0:
                ax.annotate("0", (xi, floor), ha="center", va="bottom", fontsize=8)
    ax.set(xticks=x, xticklabels=names, yscale="log", ylabel="seconds")
    ax.set_ylim(bottom=floor)
    for tick, name in zip(ax.get_xticklabels(), names, strict=True):
        tick.set_color(color(name))
    ax.legend(fontsize=8)
    ax.set_title("What each backend costs before any work is done")
    return _save(fig, path)


def phase_diagram(
    profile: dict[str, Any],
    path: str | Path,
    measured: pd.DataFrame | None = None,
    releases_gil: bool = False,
    cluster: Cluster | None = None,
    item_bytes: int = 0,
) -> Path:
    """Predicted best backend over (items × per-item compute); measured winners on top.

    Parameters
    ----------
    profile : dict
        A calibration (:func:`smallbig.overhead`).
    measured : DataFrame, optional
        The measured fastest backend per point (:func:`measured_winners`), drawn as dots.
    releases_gil : bool
        Predict for tasks that run outside the GIL.
    cluster : Cluster, optional
        Also draw, beside this machine's diagram, the one extrapolated to this cluster (only
        if the calibration holds a cluster backend to scale).
    item_bytes : int
        Bytes shipped per item: priced into the predictions and, when known, the top axis
        shows the dataset's size and a dashed line the memory boundary (the data fills this
        machine's memory).

    Both diagrams mark the break-even (where serial stops being fastest) and, on the cluster
    one, the crossover (where a cluster backend starts being fastest) and, hatched, the small
    big data between the memory boundary and the crossover.
    """
    names = list(profile["backends"])
    clusters = {n for n, row in profile["backends"].items() if row.get("distributed")}
    views: list[tuple[str, dict[str, Any]]] = [("this machine", {})]
    if cluster is not None and clusters:
        views.append((cluster.label(), {"cluster": cluster}))
    fig = Figure(figsize=(7.5 * len(views), 5.8))
    axes = np.atleast_1d(fig.subplots(1, len(views)))
    shown: set[str] = set()
    lines: dict[str, str] = {}
    memory = machine_memory(profile)
    memory_edge = memory / item_bytes if item_bytes > 0 else None
    hatched = False
    for ax, (title, extra) in zip(axes, views, strict=True):
        best = _best_grid(profile, names, releases_gil, item_bytes, extra)
        shown |= {names[k] for k in np.unique(best)}
        ax.pcolormesh(
            _ITEMS,
            _COMPUTE,
            best,
            cmap=ListedColormap([color(n) for n in names]),
            vmin=-0.5,
            vmax=len(names) - 0.5,
            shading="auto",
            alpha=0.55,
        )
        serial = names.index(BASELINE) if BASELINE in names else -1
        if _boundary(ax, best == serial, "black"):
            lines["break-even: serial stops being fastest"] = "black"
        on_cluster = np.isin(best, [names.index(n) for n in clusters])
        if clusters and _boundary(ax, ~on_cluster, "darkred"):
            lines["crossover: a cluster starts being fastest"] = "darkred"
        if memory_edge is not None and _ITEMS[0] <= memory_edge <= _ITEMS[-1]:
            ax.axvline(memory_edge, color=_MEMORY, ls="--", lw=1.6)
            lines[f"memory boundary: the data outgrows this machine's {fmt.size(memory)}"] = _MEMORY
            if extra:  # beyond memory, yet one machine beats the cluster: small big data
                band = (_ITEMS[None, :] >= memory_edge) & ~on_cluster
                if band.any():
                    ax.contourf(_ITEMS, _COMPUTE, band.astype(float), levels=[0.5, 1.5],
                                colors="none", hatches=["//"])  # fmt: skip
                    hatched = True
        ax.set(xscale="log", yscale="log", xlabel="items", ylabel="compute per item (s)")
        ax.set_title(title, fontsize=10)
        if item_bytes > 0:  # the same x axis, read as the dataset's size
            top = ax.secondary_xaxis(
                "top", functions=(lambda n: n * item_bytes / 1e6, lambda mb: mb * 1e6 / item_bytes)
            )
            top.set_xlabel(f"data (MB, {item_bytes / 1e3:g} kB per item)")
    dots = measured is not None and len(measured) > 0
    if dots:
        for row in measured.itertuples():
            axes[0].scatter(
                row.items, row.item_s, color=color(row.backend), edgecolor="black", s=60, zorder=3
            )
    handles = [
        Line2D([], [], color=color(n), marker="s", ls="", label=f"{n} (predicted)")
        for n in names
        if n in shown
    ]
    if dots:
        handles += [
            Line2D([], [], color=color(b), marker="o", markeredgecolor="black", ls="",
                   label=f"{b} (measured)")
            for b in sorted(set(measured["backend"]))
        ]  # fmt: skip
    handles += [
        Line2D([], [], color=c, lw=1.6, ls="--" if c == _MEMORY else "-", label=label)
        for label, c in lines.items()
    ]
    if hatched:
        handles.append(
            Patch(facecolor="none", hatch="//", label="small big data: too big for memory, "
                  "yet one machine streaming beats the cluster")
        )  # fmt: skip
    axes[0].legend(handles=handles, fontsize=8, loc="lower left")
    kind = "GIL-releasing" if releases_gil else "pure-Python"
    shown_how = "predicted (shaded), measured (dots)" if dots else "predicted (shaded)"
    fig.suptitle(f"Fastest backend for {kind} tasks: {shown_how}")
    return _save(fig, path)


_ITEMS = np.logspace(0, 6, 60)
_MEMORY = "#4b0082"  # the memory boundary: no backend's colour
_COMPUTE = np.logspace(-6, 0, 60)


def _best_grid(
    profile: dict[str, Any],
    names: list[str],
    releases_gil: bool,
    item_bytes: int,
    extra: dict[str, Any],
) -> np.ndarray:
    best = np.empty((len(_COMPUTE), len(_ITEMS)), int)
    calibration = read_calibration(profile)  # once, not in each of 3,600 predictions
    for i, c in enumerate(_COMPUTE):
        for j, n in enumerate(_ITEMS):
            ranked = predict(
                calibration, int(n), float(c), item_bytes, releases_gil=releases_gil, **extra
            )
            best[i, j] = names.index(ranked[0].backend)
    return best


def _boundary(ax: Any, inside: np.ndarray, colour: str) -> bool:
    """Draw the edge of the region ``inside`` (if it has one); say whether there was one."""
    if inside.all() or not inside.any():
        return False
    ax.contour(_ITEMS, _COMPUTE, inside.astype(float), levels=[0.5], colors=colour,
               linewidths=1.6)  # fmt: skip
    return True


def measured_winners(records: pd.DataFrame, item_seconds: dict[str, float]) -> pd.DataFrame:
    """The fastest measured backend per (workload, size), placed by its serial per-item time."""
    table = speedup_table(records)
    rows = []
    for (workload, size), group in table.groupby(["workload", "size"]):
        if workload in item_seconds:
            winner = group.loc[group["wall_s"].idxmin(), "backend"]
            rows.append({"items": size, "item_s": item_seconds[workload], "backend": winner})
    return pd.DataFrame(rows)


def _save(fig: Figure, path: str | Path, layout: bool = True) -> Path:
    # A bare Figure, not pyplot: nothing here touches the user's matplotlib backend, so their
    # own figures in Jupyter still show after `from smallbig.present import plots`.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
