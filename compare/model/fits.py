"""Fitted lines of measured time and the thresholds they imply — pure functions over records.

Per backend and workload, warm time is fitted as ``T(n) = fixed + per_item · n`` (least squares
on the medians); cold time adds the measured start-up. ``per_item`` holds per-task overhead,
transfer and compute divided over the workers; ``fixed`` the per-run cost (dispatch, ramp-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smallbig.backends import is_cluster
from smallbig.results.fmt import seconds
from smallbig.results.records import is_unfaithful

#: The backend every speedup, break-even and checksum is measured against.
BASELINE = "serial"
# Backends predicted within this of the advised one, over its whole range, are named beside it:
# a few percent is within the run-to-run noise of a shared machine.
CLOSE = 0.05


@dataclass(frozen=True)
class Fit:
    """``T(n) = fixed_s + per_item_s · n`` and how well it fits (median relative error)."""

    fixed_s: float
    per_item_s: float
    median_rel_error: float
    points: int

    def predict(self, n: float) -> float:
        return self.fixed_s + self.per_item_s * n


def fit_line(sizes: np.ndarray, times: np.ndarray) -> Fit:
    """Fit ``fixed + per_item·n`` with weights 1/t, so small and large sizes count alike."""
    sizes, times = np.asarray(sizes, float), np.asarray(times, float)
    if len(sizes) == 1:
        return Fit(0.0, float(times[0] / sizes[0]), 0.0, 1)
    w = 1.0 / np.maximum(times, 1e-9)
    design = np.column_stack([np.ones_like(sizes), sizes]) * w[:, None]
    (fixed, per_item), *_ = np.linalg.lstsq(design, times * w, rcond=None)
    fixed, per_item = max(fixed, 0.0), max(per_item, 0.0)
    predicted = fixed + per_item * sizes
    rel = np.abs(predicted - times) / np.maximum(times, 1e-9)
    return Fit(float(fixed), float(per_item), float(np.median(rel)), len(sizes))


def medians(records: pd.DataFrame, phase: str = "warm") -> pd.DataFrame:
    """Median wall seconds per (workload, backend, size) for one phase.

    A backend measured in turns with serial (``paired`` rows: the same repeat of both ran
    seconds apart) gets the median of its per-round ratio to serial, times serial's median:
    what slows a whole round on a shared machine then cancels, as in a paired comparison.
    """
    keys = ["workload", "backend", "size"]
    sel = records[(records["phase"] == phase) & records["wall_s"].notna()]  # not failed ones
    sel = sel[~is_unfaithful(sel)]  # nor ones where a scale model's quotas did not hold
    plain = sel.groupby(keys, as_index=False)["wall_s"].median()
    if "paired" not in sel.columns or not sel["paired"].astype(bool).any():
        return plain
    rounds = ["workload", "size", "repeat"]
    serial = sel[sel["backend"] == BASELINE].set_index(rounds)["wall_s"]
    same_round = serial.reindex(pd.MultiIndex.from_frame(sel[rounds])).to_numpy()
    ratio = sel.assign(ratio=sel["wall_s"].to_numpy() / same_round)
    ratio = ratio[ratio["paired"].astype(bool) & ratio["ratio"].notna()]
    per_round = ratio.groupby(keys)["ratio"].median()
    serial_median = plain[plain["backend"] == BASELINE].set_index(["workload", "size"])["wall_s"]
    joined = plain.join(per_round, on=keys).join(
        serial_median.rename("serial_s"), on=["workload", "size"]
    )
    paired = (joined["ratio"] * joined["serial_s"]).fillna(joined["wall_s"])
    return plain.assign(wall_s=paired.to_numpy())


def baseline_warm(records: pd.DataFrame) -> pd.DataFrame:
    """The :data:`BASELINE`'s warm records."""
    return records[(records["backend"] == BASELINE) & (records["phase"] == "warm")]


def baseline_item_s(records: pd.DataFrame) -> pd.Series:
    """Per workload, the :data:`BASELINE`'s median warm seconds per item."""
    warm = baseline_warm(records)
    return (warm["wall_s"] / warm["size"]).groupby(warm["workload"]).median()


def fit_all(records: pd.DataFrame) -> dict[tuple[str, str], Fit]:
    """A warm-time fit per (workload, backend)."""
    fits = {}
    for (workload, backend), group in medians(records).groupby(["workload", "backend"]):
        fits[(workload, backend)] = fit_line(group["size"].to_numpy(), group["wall_s"].to_numpy())
    return fits


def fastest(fits: dict[str, Fit], n: float, baseline: str = BASELINE) -> str:
    """The backend whose fitted line is lowest at ``n`` items; a tie goes to ``baseline`` (a
    pool that only equals serial adds dispatch and a failure mode), then by name."""
    times = {b: fit.predict(n) for b, fit in fits.items()}
    least = min(times.values())
    tied = [b for b, t in times.items() if t <= least + 1e-9 * abs(least)]  # equal but rounding
    return min(tied, key=lambda b: (b != baseline, b))


def break_even(fast: Fit, slow: Fit, extra_fixed_s: float = 0.0) -> float | None:
    """Smallest ``n`` where ``fast`` (plus ``extra_fixed_s``, e.g. start-up) beats ``slow``.

    Returns 1.0 if it wins from the first item, ``None`` if it never does (its per-item cost is
    not below the other's: the overhead per item exceeds what parallelism saves).
    """
    fixed_gap = fast.fixed_s + extra_fixed_s - slow.fixed_s
    slope_gap = slow.per_item_s - fast.per_item_s
    if fixed_gap <= 0 and slope_gap >= 0:
        return 1.0
    if slope_gap <= 0:
        return None
    return max(1.0, math.ceil(fixed_gap / slope_gap))


def thresholds(
    records: pd.DataFrame,
    startup: dict[str, float],
    baseline: str = BASELINE,
    infos: dict[str, dict] | None = None,
) -> pd.DataFrame:
    """Per workload and backend: warm and cold break-even vs ``baseline``, and for cluster
    backends the crossover against the best local pool, with the reason when there is none.

    Which backends are clusters comes from their capabilities: ``infos`` (each backend's
    recorded ``info()``, as in ``run.json``) or else their registered class.
    """
    fits = fit_all(records)
    infos = infos or {}
    cluster = {b: is_cluster(b, infos.get(b)) for _, b in fits}
    rows = []
    for workload in sorted({w for w, _ in fits}):
        base = fits.get((workload, baseline))
        local = [b for (w, b) in fits if w == workload and not cluster[b] and b != baseline]
        for (w, backend), fit in sorted(fits.items()):
            if w != workload:
                continue
            row = {
                "workload": workload,
                "backend": backend,
                "fixed_s": fit.fixed_s,
                "per_item_ms": fit.per_item_s * 1e3,
                "fit_error": fit.median_rel_error,
            }
            if base is not None and backend != baseline:
                row["break_even_warm"] = break_even(fit, base)
                row["break_even_cold"] = break_even(fit, base, startup.get(backend, 0.0))
                if row["break_even_warm"] is None:
                    row["reason"] = (
                        f"per item {seconds(fit.per_item_s)} ≥ {baseline}'s "
                        f"{seconds(base.per_item_s)}"
                    )
            if cluster[backend] and local:
                best = min(local, key=lambda b: fits[(workload, b)].per_item_s)
                row["crossover_vs"] = best
                row["crossover"] = break_even(fit, fits[(workload, best)])
                if row["crossover"] is None:
                    why = (
                        f"never beats {best}: per item {seconds(fit.per_item_s)} ≥ "
                        f"{seconds(fits[(workload, best)].per_item_s)}"
                    )
                    row["reason"] = "; ".join(filter(None, [row.get("reason"), why]))
            rows.append(row)
    return pd.DataFrame(rows)
