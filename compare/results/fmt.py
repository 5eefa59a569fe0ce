"""One way to print numbers in every table: times and sizes with a unit and three significant
digits, counts with thousands separators, booleans as yes/no, missing values as a dash."""

from __future__ import annotations

import math
from typing import Any

_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def seconds(t: float | None) -> str:
    """``0.000123`` → ``"123 µs"``, ``2.5`` → ``"2.5 s"``, ``4321.0`` → ``"4,321 s"``."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "-"
    if math.isinf(t):
        return "∞" if t > 0 else "-∞"
    if t == 0:
        return "0 s"
    if abs(t) >= 1000:
        return f"{t:,.0f} s"
    for scale, unit in _UNITS:
        if abs(t) >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def size(nbytes: float | None) -> str:
    """Bytes in decimal units: ``2.5e8`` → ``"250 MB"``, ``3.2e10`` → ``"32 GB"``."""
    if nbytes is None or (isinstance(nbytes, float) and math.isnan(nbytes)):
        return "-"
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def number(value: Any) -> str:
    """Any table cell: floats to three significant digits (whole ones and those from 1,000 up
    with separators), integers with separators, booleans as yes/no, ``None``/NaN as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def cell(column: str, value: Any) -> str:
    """A cell of a column named like a record field: ``*_s`` are seconds (``*_per_s`` a rate),
    ``*_pct`` percent, ``*_bytes`` a size."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if column.endswith("_bytes"):
            return size(value)
        if column.endswith("_s") and not column.endswith("per_s"):
            return seconds(float(value))
        if column.endswith("_pct") and not math.isnan(value):
            return f"{value:.3g}%"
    return number(value)


def print_rows(console: Any, title: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` (dicts named like record fields) as one rich table on ``console``."""
    from rich.table import Table

    cols = list(dict.fromkeys(c for row in rows for c in row))
    table = Table(title=title)
    for col in cols:  # headers wrap at their spaces instead of being cut
        table.add_column(col.replace("_", " "), justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(cell(col, row.get(col)) for col in cols))
    console.print(table)


def html_table(caption: str, header: list[str], rows: list[list[Any]], raw: bool = False) -> str:
    """An HTML table (cells escaped unless ``raw``: already HTML), the one look of every table
    smallbig shows in a page or a notebook."""
    import html

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return (
        f"<table class='data'><caption>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
