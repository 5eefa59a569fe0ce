"""The answer first: per workload, which backend to use for how many items, in a few lines.

One function (:func:`answer`) makes it from what a run wrote (records, ``run.json``,
``calibration.json``); the terminal, ``report.html`` and :meth:`RunResult.answer` show the
same lines. Per workload:

- the backend to use over ranges of sizes **for a job run once** (each backend's start-up
  included) and **for a pool already running** (a session that keeps it, or gets a reusable
  one back);
- where each advised pool breaks even with serial, warm and cold;
- the memory boundary, and the small big data band when there is one;
- the cluster verdict, and what it rests on: measured here (a local cluster shares this
  machine's cores, said so), or PREDICTED for a named cluster.

Backends that are the same choice are named once: for a plain function, a backend whose only
difference is running coroutines (its plain functions go to a thread pool) is the thread pool
itself; of backends within the noise (:data:`~smallbig.model.fits.CLOSE`), the one with the smaller
start-up and footprint is named and the others are said to be as fast.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from smallbig.backends import is_cluster
from smallbig.model.fits import BASELINE, CLOSE, Fit, baseline_item_s, break_even, fit_all
from smallbig.present.report import baseline_rss
from smallbig.results.fmt import size


@dataclass(frozen=True)
class Span:
    """Use ``use`` from ``start`` to ``end`` items (``end`` ``None``: and above);
    ``as_fast`` are within the noise of it over the whole span."""

    start: int
    end: int | None
    use: str
    as_fast: tuple[str, ...] = ()
    #: Starts beyond the largest size measured: where the fitted lines are extrapolated.
    extrapolated: bool = False

    def text(self) -> str:
        if self.end is None:
            where = f"{self.start:,} and up"
        elif self.end == self.start:
            where = f"{self.start:,}"
        else:
            where = f"{self.start:,}–{self.end:,}"
        also = f" ({', '.join(self.as_fast)} as fast)" if self.as_fast else ""
        beyond = " (extrapolated)" if self.extrapolated else ""
        return f"{where}: {self.use}{also}{beyond}"


@dataclass(frozen=True)
class WorkloadAnswer:
    """The answer for one workload (or the user's task)."""

    workload: str
    kind: str  # "a plain function" / "a coroutine function", with its data per item
    once: tuple[Span, ...]
    warm: tuple[Span, ...]
    break_even: tuple[str, ...] = ()
    memory: str | None = None
    cluster: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The answer in words, a heading then indented lines."""
        out = [f"{self.workload} ({self.kind})"]
        once = "; ".join(s.text() for s in self.once)
        warm = "; ".join(s.text() for s in self.warm)
        if once == warm:
            out.append(f"  once or running: {once}")
        else:
            out.append(f"  once:    {once}")
            out.append(f"  running: {warm}")
        if self.break_even:
            out.append(f"  break-even with serial (running / once): {'; '.join(self.break_even)}")
        if self.memory:
            out.append(f"  memory: {self.memory}")
        out.extend(f"  cluster{line}" for line in self.cluster)
        return out


@dataclass(frozen=True)
class Answer:
    """The answer block: one :class:`WorkloadAnswer` per workload, and the run's facts."""

    workloads: tuple[WorkloadAnswer, ...]
    notes: tuple[str, ...] = field(default=())

    def lines(self) -> list[str]:
        out = [
            "What to use, by number of items",
            "  (once: a job run once, start-up included; running: a pool a session keeps or "
            "gets back)",
        ]
        for wa in self.workloads:
            out.extend(wa.lines())
        out.extend(self.notes)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return f"Answer({', '.join(w.workload for w in self.workloads)})"

    def to_html(self) -> str:
        """The block as HTML: a heading and a list per workload."""
        legend = self.lines()[1].strip().strip("()")
        parts = [
            '<section id="answer"><h2>What to use, by number of items</h2>',
            f"<p class='note'>{html.escape(legend)}</p>",
        ]
        for wa in self.workloads:
            head, *rest = wa.lines()
            items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in rest)
            parts.append(f"<h3>{html.escape(head)}</h3><ul>{items}</ul>")
        if self.notes:
            notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in self.notes)
            parts.append(notes)
        parts.append("</section>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()


def answer(
    records: pd.DataFrame, metadata: dict[str, Any], calibration: dict[str, Any] | None
) -> Answer:
    """The answer block of a run: see the module's docstring.

    Parameters
    ----------
    records : DataFrame
        The run's records (:func:`smallbig.results.records.load_records`).
    metadata : dict
        Its ``run.json``: each backend's ``info()`` and each workload's traits.
    calibration : dict, optional
        Its ``calibration.json``: start-ups, footprints, and what the cluster prediction scales.
    """
    infos = metadata.get("backends", {})
    traits = metadata.get("workloads", {})
    cal = (calibration or {}).get("backends", {})
    fits = fit_all(records)
    startup = {b: float(i.get("startup_s") or 0.0) for b, i in infos.items()}
    largest = records.groupby("workload")["size"].max()
    item_s = baseline_item_s(records)
    out = []
    for workload in sorted({w for w, _ in fits}):
        trait = traits.get(workload, {})
        coroutine = bool(trait.get("coroutine") or trait.get("profile", {}).get("coroutine"))
        lines = {b: f for (w, b), f in fits.items() if w == workload}
        lines = _same_choice_once(lines, infos, coroutine)
        local = {b: f for b, f in lines.items() if not is_cluster(b, infos.get(b))}
        light = _lightness(infos, cal)
        top = int(largest[workload])
        warm = _envelope(local, top, light)
        cold = {
            b: Fit(f.fixed_s + startup.get(b, 0.0), f.per_item_s, 0, 0) for b, f in local.items()
        }
        once = _envelope(cold, top, light)
        data = trait.get("data_bytes_per_item")
        kind = "a coroutine function" if coroutine else "a plain function"
        if data:
            kind += f", {size(data)} per item"
        out.append(
            WorkloadAnswer(
                workload,
                kind,
                tuple(once),
                tuple(warm),
                tuple(_break_evens(local, startup, {s.use for s in (*once, *warm)})),
                _memory(calibration, item_s.get(workload), data, trait),
                tuple(_cluster(lines, local, infos, calibration, item_s.get(workload), trait)),
            )
        )
    notes = []
    baseline = baseline_rss(records)
    if baseline:
        notes.append(
            f"memory figures: what a backend adds to this process ({size(baseline)} before "
            "each run, median)"
        )
    return Answer(tuple(out), tuple(notes))


def _same_choice_once(
    lines: dict[str, Fit], infos: dict[str, dict], coroutine: bool
) -> dict[str, Fit]:
    """Drop the backends that, for this task, are another backend under a second name: for a
    plain function, one that supports coroutines runs it on a thread pool, as the thread pool
    does (kept if no thread pool of this process was measured)."""
    if coroutine:
        return lines
    threads = [
        b
        for b in lines
        if infos.get(b, {}).get("uses_threads") and not infos.get(b, {}).get("supports_coroutines")
    ]
    if not threads:
        return lines
    return {b: f for b, f in lines.items() if not infos.get(b, {}).get("supports_coroutines")}


def _lightness(infos: dict[str, dict], cal: dict[str, dict]) -> dict[str, tuple]:
    """What makes a backend the lighter of two equally fast: start-up, then footprint."""
    return {
        b: (
            b != BASELINE,
            float(i.get("startup_s") or 0.0),
            float(cal.get(b, {}).get("idle_rss_bytes") or 0.0),
            b,
        )
        for b, i in infos.items()
    }


def _envelope(lines: dict[str, Fit], largest: int, light: dict[str, tuple]) -> list[Span]:
    """The lower envelope of straight lines ``lines`` as spans of sizes, exactly: from the
    best at n = 1, jump to the nearest size where a line of smaller slope overtakes it."""
    if not lines:
        return []
    spans: list[Span] = []
    n = 1
    best = _lowest(lines, n)
    while True:
        ahead = []
        for f in lines.values():
            gap = lines[best].per_item_s - f.per_item_s
            if gap > 0:
                ahead.append(max(n + 1, math.floor((f.fixed_s - lines[best].fixed_s) / gap) + 1))
        end = min(ahead) - 1 if ahead else None
        # An open span is judged up to ten times its start (or the largest size measured):
        # lines that cross where it starts are close there and nowhere after.
        last = end if end is not None else max(largest, 10 * n)
        spans.append(_named(lines, best, (n, last), end, light, n > largest))
        if end is None:
            break
        n = end + 1
        best = _lowest(lines, n)
    return _merge(spans)


def _lowest(lines: dict[str, Fit], n: int) -> str:
    times = {b: f.predict(n) for b, f in lines.items()}
    least = min(times.values())
    tied = [b for b, t in times.items() if t <= least + 1e-9 * abs(least)]
    return min(tied, key=lambda b: (b != BASELINE, b))


def _named(
    lines: dict[str, Fit],
    best: str,
    ends: tuple[int, int],
    end: int | None,
    light: dict,
    extrapolated: bool,
) -> Span:
    # Straight lines: as fast at both ends of the span means as fast all along it.
    close = [
        b
        for b, f in lines.items()
        if b != best and all(f.predict(n) <= (1 + CLOSE) * lines[best].predict(n) for n in ends)
    ]
    group = [best, *close]
    name = min(group, key=lambda b: light.get(b, (True, math.inf, math.inf, b)))
    return Span(ends[0], end, name, tuple(sorted(b for b in group if b != name)), extrapolated)


def _merge(spans: list[Span]) -> list[Span]:
    """Neighbouring spans that name the same backend become one."""
    merged: list[Span] = []
    for span in spans:
        if merged and merged[-1].use == span.use:
            prev = merged.pop()
            as_fast = tuple(sorted({*prev.as_fast, *span.as_fast}))
            span = Span(prev.start, span.end, span.use, as_fast, prev.extrapolated)
        merged.append(span)
    return merged


def _break_evens(local: dict[str, Fit], startup: dict[str, float], advised: set[str]) -> list[str]:
    base = local.get(BASELINE)
    if base is None:
        return []
    out = []
    for backend in sorted(advised - {BASELINE}):
        warm = break_even(local[backend], base)
        cold = break_even(local[backend], base, startup.get(backend, 0.0))
        out.append(f"{backend} {_count(warm)} / {_count(cold)}")
    return out


def _count(n: float | None) -> str:
    return "never" if n is None else f"{n:,.0f}"


def _items(n: float) -> str:
    return f"{n:,.0f} item" + ("" if n == 1 else "s")


def _memory(
    calibration: dict[str, Any] | None, item_s: float | None, data: float | None, trait: dict
) -> str | None:
    if calibration is None or not data or item_s is None or item_s != item_s:
        return None
    from smallbig.model.band import small_big_band
    from smallbig.model.cluster import Cluster

    band = small_big_band(
        calibration,
        float(item_s),
        float(data),
        releases_gil=bool(trait.get("releases_gil")),
        cluster=Cluster(),
    )
    text = f"{size(band.memory_bytes)} hold {_many(band.boundary)} items at once"
    small_big = band.small_big
    if small_big is None:
        return f"{text}; the PREDICTED cluster wins before that"
    if small_big[1] is None:
        return f"{text}; past that, stream them: map(..., buffersize=N)"
    return f"{text}; from there to {_many(small_big[1] - 1)}, stream them: small big data"


def _many(n: float) -> str:
    """A count in words past a million: ``6.32 billion``."""
    for scale, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if n >= scale:
            return f"{n / scale:.3g} {word}"
    return f"{n:,.0f}"


def _cluster(
    lines: dict[str, Fit],
    local: dict[str, Fit],
    infos: dict[str, dict],
    calibration: dict[str, Any] | None,
    item_s: float | None,
    trait: dict,
) -> list[str]:
    """The cluster lines, each starting with what it rests on (", measured: ...")."""
    out = []
    for backend, fit in sorted(lines.items()):
        if backend in local:
            continue
        info = infos.get(backend, {})
        emulated = info.get("emulated")
        if emulated:
            rate = emulated.get("bandwidth_mbps")
            links = f"{f'{rate:g} Mbit/s' if rate else 'unshaped'} links"
            cpus = emulated.get("cpus_per_node")
            if cpus:
                # What the verdict rests on: a scale model's quotas, not a cluster's cores.
                where = (
                    f"measured on a SCALE MODEL of {emulated['nodes']} × {cpus:g} cores: "
                    f"{emulated['workers_per_node']} workers a node behind {links}"
                )
            else:
                where = (
                    f"an EMULATED cluster: {emulated['nodes']} nodes × "
                    f"{emulated['workers_per_node']} workers behind {links}, on this "
                    "machine's cores"
                )
        elif "@" not in backend:
            where = f"{info.get('workers', '?')} local workers on this machine's cores"
        else:
            where = f"the cluster at {backend.partition('@')[2]}"
        rivals = {b: f for b, f in local.items() if b != BASELINE} or local
        best = min(rivals, key=lambda b: rivals[b].per_item_s)
        cross = break_even(fit, local[best])
        verdict = f"never beats {best}" if cross is None else f"beats {best} from {_items(cross)}"
        out.append(f", measured: {backend} ({where}) {verdict}")
    prediction = _predicted_cluster(calibration, item_s, trait)
    if prediction:
        out.append(prediction)
    return out


def _predicted_cluster(
    calibration: dict[str, Any] | None, item_s: float | None, trait: dict
) -> str | None:
    if calibration is None or item_s is None or item_s != item_s:
        return None
    from smallbig.model.band import small_big_band
    from smallbig.model.cluster import Cluster

    if not any(row.get("distributed") for row in calibration.get("backends", {}).values()):
        return None
    cluster = Cluster()
    band = small_big_band(
        calibration,
        float(item_s),
        float(trait.get("data_bytes_per_item") or 0.0),
        releases_gil=bool(trait.get("releases_gil")),
        cluster=cluster,
    )
    what = (
        f"fastest from {_many(band.crossover)} items"
        if band.crossover is not None
        else "never the fastest"
    )
    link = f"{cluster.bandwidth_Bps * 8 / 1e9:g} Gbit/s, {cluster.latency_s * 1e3:g} ms"
    return f", PREDICTED ({cluster.workers} workers, {link}): {what}"
