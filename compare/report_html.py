"""``report.html``: one self-contained file to share a run — machine, tables, figures, advice.

The tables are the ones ``smallbig run`` prints, recorded by rich and exported as HTML with
inline styles; the figures are embedded as base64 PNGs. Nothing is fetched from the network
to view it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from rich.console import Console

from compare.calibrate import RUN_PROFILE, load_profile
from compare.records import load_records, read_metadata
from compare.report import print_memory_band, print_model_check, print_report

REPORT = "report.html"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table.facts td { padding: 0.1em 1em 0.1em 0; } figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { color: #555; }
pre { font-size: 12px; line-height: 1.25; overflow-x: auto; }
"""


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
    # Recorded, not printed: the same tables as in the terminal, exported as HTML.
    console = Console(record=True, width=100, file=io.StringIO(), color_system="truecolor")
    startup = {b: i.get("startup_s", 0.0) for b, i in meta.get("backends", {}).items()}
    print_report(records, startup, console, meta.get("backends", {}))
    if profile is not None:
        print_model_check(records, profile, meta.get("workloads", {}), console)
        print_memory_band(records, profile, meta.get("workloads", {}), console)
    tables = console.export_html(inline_styles=True, code_format="<pre>{code}</pre>")
    figures = [
        out / Path(p).name for p in meta.get("outputs", []) if Path(p).suffix.lower() == ".png"
    ]
    body = [
        "<h1>smallbig: when does a pool or a cluster pay off?</h1>",
        _facts(meta, out),
        "<h2>Tables, thresholds and advice</h2>",
        tables,
        "<h2>Figures</h2>",
        *(_figure(p) for p in figures if p.exists()),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>smallbig report: {html.escape(out.resolve().name)}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    path = out / REPORT
    tmp = path.with_name(f".{REPORT}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def _facts(meta: dict[str, Any], out: Path) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    rows = {
        "run folder": str(out.resolve()),
        "measured at": meta.get("timestamp", "?"),
        "machine": f"{meta.get('cpu_count', '?')} cores, "
        f"{meta.get('memory_bytes', 0) / 2**30:.0f} GiB, {meta.get('machine', '?')}",
        "Python": meta.get("python", "?"),
        "versions": versions,
        "smallbig revision": meta.get("git_revision") or "unknown",
        "backends": ", ".join(meta.get("backends", {})),
    }
    cells = "".join(
        f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f'<table class="facts">{cells}</table>'


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.name)
    return (
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
        f"<figcaption>{name}</figcaption></figure>"
    )
