"""``report.html``: one self-contained page that answers the question first, then shows why.

The answer block (:mod:`smallbig.present.answer`) fills the first screen; per workload then come a
table of times with speedups and the spread of the repeats, what each backend adds to memory,
the fitted lines and thresholds, and the figure with a caption saying what to look at; the
model's check, and the machine, versions and settings last. Figures are embedded as base64
PNGs: nothing is fetched from the network to view it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

from smallbig.model.calibrate import RUN_PROFILE, load_profile
from smallbig.model.fits import CLOSE, thresholds
from smallbig.present.answer import answer
from smallbig.present.report import added_memory, speedup_table, threshold_cells
from smallbig.results.fmt import html_table, seconds, size
from smallbig.results.records import load_records, read_metadata

REPORT = "report.html"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.35em; margin: 0.2em 0; } .sub { color: #555; margin: 0 0 0.6em 0; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
#answer { background: #f4f8ff; border: 1px solid #c9d8f0; padding: 0.4em 1em; }
#answer h2 { margin-top: 0.3em; border: none; } #answer h3 { font-size: 1em; margin: 0.5em 0 0; }
#answer ul { margin: 0.1em 0; padding-left: 1.2em; } #answer li { margin: 0.05em 0; }
.note { color: #555; font-size: 0.9em; margin: 0.3em 0; }
table.data { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
table.data th, table.data td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
table.data th:first-child, table.data td:first-child { text-align: left; }
table.data caption { text-align: left; font-weight: 600; padding: 0.2em 0; }
.spread { color: #777; font-size: 0.85em; } .best { font-weight: 700; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #444; } table.facts td { padding: 0.1em 1em 0.1em 0; }
"""

# What to look at in each kind of figure (by the name the run gave it).
_CAPTIONS = {
    "_scaling": "Time and speedup against size, per backend (log axes): where a line crosses "
    "serial's is its break-even (dotted); the memory panel shows the peak each point reached.",
    "phase_diagram": "The backend predicted fastest for each number of items and time per "
    "item, from this run's calibration; dots are the measured winners, the dashed line the "
    "memory boundary, hatching the small big data band.",
}


def write_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` from the run's records, metadata, calibration and the
    figures its ``run.json`` lists; return its path.

    Raises
    ------
    FileNotFoundError, ValueError
        If ``out_dir`` holds no run, or a file of it is corrupt (naming the file).
    """
    out = Path(out_dir)
    records = load_records(out)
    meta = read_metadata(out)
    profile = load_profile(out / RUN_PROFILE)
    # By name inside out_dir, once each: the folder may have been moved or copied since.
    names = dict.fromkeys(Path(p).name for p in meta.get("outputs", []))
    figures = [out / n for n in names if Path(n).suffix.lower() == ".png" and (out / n).exists()]
    infos = meta.get("backends", {})
    startup = {b: float(i.get("startup_s") or 0.0) for b, i in infos.items()}
    th = thresholds(records, startup, infos=infos)
    body = [
        "<h1>smallbig: which backend, from how many items</h1>",
        f"<p class='sub'>{html.escape(_summary(meta, records))}</p>",
        answer(records, meta, profile).to_html(),
    ]
    for workload in sorted(records["workload"].unique()):
        body.append(f"<h2>{html.escape(workload)}</h2>")
        body.append(speedup_html(records[records["workload"] == workload]))
        body.append(_memory_html(records, workload, profile))
        body.append(_thresholds_html(th[th["workload"] == workload]))
        body.extend(_figure(p) for p in figures if p.name.startswith(f"{workload}_"))
    rest = [p for p in figures if not any(p.name.startswith(f"{w}_") for w in records["workload"])]
    if rest or profile is not None:
        body.append("<h2>The cost model</h2>")
        body.extend(_figure(p) for p in rest)
        if profile is not None:
            body.append(_model_check_html(records, profile, meta.get("workloads", {})))
    body.append("<h2>Machine, versions and settings</h2>")
    body.append(_facts(meta, out, records))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>smallbig report: {html.escape(out.resolve().name)}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    path = out / REPORT
    tmp = path.with_name(f".{REPORT}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def speedup_html(records: pd.DataFrame) -> str:
    """Per workload, a table of median warm seconds with the speedup over serial and the
    spread (fastest–slowest) of the repeats; the fastest backend at each size in bold."""
    table = speedup_table(records)
    warm = records[(records["phase"] == "warm") & records["wall_s"].notna()]
    spread = warm.groupby(["workload", "backend", "size"])["wall_s"].agg(["min", "max"])
    parts = []
    for workload, group in table.groupby("workload"):
        sizes = sorted(group["size"].unique())
        best = group.loc[group.groupby("size")["wall_s"].idxmin()].set_index("size")["backend"]
        rows = []
        for backend, by_backend in group.groupby("backend"):
            cells = [backend]
            at = by_backend.set_index("size")
            for n in sizes:
                if n not in at.index:
                    cells.append("-")
                    continue
                t, s = at.loc[n, "wall_s"], at.loc[n, "speedup"]
                lo, hi = spread.loc[(workload, backend, n)]
                text = f"{seconds(t)}" + (f" ({s:.2g}×)" if s == s else "")
                range_ = f"<br><span class='spread'>{seconds(lo)}–{seconds(hi)}</span>"
                bold = best.get(n) == backend
                cells.append(
                    (
                        f"<span class='best'>{html.escape(text)}</span>"
                        if bold
                        else html.escape(text)
                    )
                    + range_
                )
            rows.append(cells)
        parts.append(
            html_table(
                f"{workload}: median warm time (speedup over serial); below, the spread of "
                "the repeats; the fastest at each size in bold",
                ["backend", *(f"n={n:,}" for n in sizes)],
                rows,
                raw=True,
            )
        )
    return "".join(parts)


def _memory_html(records: pd.DataFrame, workload: str, profile: dict | None) -> str:
    added = added_memory(records)
    rows_of = added[added["workload"] == workload]
    if rows_of.empty or rows_of["added_bytes"].isna().all():
        return ""
    sizes = sorted(rows_of["size"].unique())
    idle = (profile or {}).get("backends", {})
    rows = []
    for backend, group in rows_of.groupby("backend"):
        at = group.set_index("size")["added_bytes"]
        footprint = idle.get(backend, {}).get("idle_rss_bytes")
        rows.append([backend, size(footprint), *(size(at.get(n)) for n in sizes)])
    return html_table(
        f"{workload}: memory each backend adds (median peak above what this process held "
        "just before each run), and the backend's own processes at rest",
        ["backend", "at rest", *(f"n={n:,}" for n in sizes)],
        rows,
    )


def _thresholds_html(rows: pd.DataFrame) -> str:
    columns = {
        "backend": "backend",
        "fixed_s": "fixed",
        "per_item_ms": "per item",
        "fit_error": "fit error",
        "break_even_warm": "break-even, pool running",
        "break_even_cold": "break-even, with start-up",
        "crossover": "crossover",
        "reason": "why none",
    }
    present = [c for c in columns if c in rows.columns]
    out = [threshold_cells(row, present) for row in rows.to_dict("records")]
    return html_table(
        "fitted time = fixed + per item × n, and the sizes (items) where each backend starts "
        f"to win; backends within {CLOSE:.0%} are as fast",
        [columns[c] for c in present],
        out,
    )


def _model_check_html(records: pd.DataFrame, profile: dict, traits: dict) -> str:
    from smallbig.model.validation import error_table, model_advice, model_check

    points = model_check(records, profile, traits)
    if points.empty:
        return ""
    errors = error_table(points)
    rows = [[w, *("-" if pd.isna(v) else f"{v:.0f}%" for v in row)] for w, row in errors.iterrows()]
    advice = model_advice(points)
    caption = (
        "the cost model (from calibration.json and serial's cost per item alone) against the "
        f"measured warm times: median error; its pick was the measured fastest at "
        f"{int(advice['right'].sum())} of {len(advice)} points"
    )
    return html_table(caption, ["workload", *errors.columns], rows)


def _summary(meta: dict[str, Any], records: pd.DataFrame) -> str:
    return (
        f"measured {meta.get('timestamp', '?')} on {meta.get('cpu_count', '?')} cores; "
        f"{records['workload'].nunique()} workload(s), {records['backend'].nunique()} "
        "backend(s); machine and settings at the end"
    )


def _facts(meta: dict[str, Any], out: Path, records: pd.DataFrame) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    repeats = int(records["repeat"].max()) if "repeat" in records and len(records) else 0
    rows = {
        "run folder": str(out.resolve()),
        "measured at": meta.get("timestamp", "?"),
        "machine": f"{meta.get('cpu_count', '?')} cores, "
        f"{meta.get('memory_bytes', 0) / 2**30:.0f} GiB, {meta.get('machine', '?')}",
        "Python": meta.get("python", "?"),
        "versions": versions,
        "smallbig revision": meta.get("git_revision") or "unknown",
        "backends": ", ".join(
            f"{b} ({i.get('workers', '?')} workers)" for b, i in meta.get("backends", {}).items()
        ),
        "sizes": "; ".join(
            f"{w}: {', '.join(f'{n:,}' for n in sorted(g['size'].unique()))}"
            for w, g in records.groupby("workload")
        ),
        "repeats": f"a cold run, then {repeats} warm" if repeats else "-",
    }
    cells = "".join(
        f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f'<table class="facts">{cells}</table>'


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.name)
    what = next((text for key, text in _CAPTIONS.items() if key in path.stem), "")
    return (
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{name}</b>: {html.escape(what)}</figcaption></figure>"
    )
