"""Every notebook runs top to bottom in a real Jupyter kernel; an error in any cell fails."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


def test_there_are_notebooks_stored_without_outputs():
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.fixture(scope="module")
def machine_cache(tmp_path_factory) -> str:
    """One cache for the three, as one user's machine has: a notebook reuses what an earlier
    one measured there (a cluster's figures at four times its workers: one start fewer)."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch, machine_cache):
    monkeypatch.setenv("SMALLBIG_CACHE", machine_cache)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    # What a notebook writes goes to output/ (gitignored), never beside the notebooks.
    assert {p.name for p in tmp_path.iterdir()} <= {"output"}
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Every cell that draws shows its figure: importing smallbig.present.plots once switched
    # matplotlib
    # to Agg, and the notebook's own plt figures then showed nothing.
    drawing = [c for c in notebook.cells if c.cell_type == "code" and _draws(c.source)]
    assert drawing
    for cell in drawing:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
    if path.name.startswith("03"):
        _check_a_cells_function_ran_on_process_backends(notebook)
        _check_your_own_function_is_shown_as_tables_and_a_figure(notebook)


def _check_a_cells_function_ran_on_process_backends(notebook) -> None:
    from smallbig.backends import available

    cell = next(c for c in notebook.cells if "def score(" in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert "score travels by value" in text, text
    for name in [b for b in ("processes", "dask", "ray") if b in available()]:
        assert f"{name}: 200 items, equal to a plain loop" in text, text


def _draws(source: str) -> bool:
    return "plt.show()" in source or "display(Image" in source


def _html(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def _check_your_own_function_is_shown_as_tables_and_a_figure(notebook) -> None:
    cells = {c.source.splitlines()[0]: c for c in notebook.cells if c.cell_type == "code"}
    profile = cells["task = smallbig.profile_task(top_words, docs[:17])"]
    assert "<table" in _html(profile) and "per item that threads cannot overlap" in _html(profile)
    advice = next(c for k, c in cells.items() if k.startswith("pools = "))
    assert "<table" in _html(advice) and "PREDICTED" in _html(advice)
    run = next(c for k, c in cells.items() if k.startswith("advised, rival"))
    assert 'id="answer"' in _html(run) and "median warm time" in _html(run)
    figure = next(c for k, c in cells.items() if k.startswith("measured = result.to_frame()"))
    assert any("image/png" in o.get("data", {}) for o in figure.outputs)
    # No raw reprs of smallbig's objects anywhere in the notebook's tables.
    text = "".join(_html(c) + str(c.outputs) for c in notebook.cells if c.cell_type == "code")
    assert "Fit(mode=" not in text and "Prediction(backend=" not in text
    # The cluster cell: a cluster backend's rows, whose times change with the worker count.
    whatif = next(c for k, c in cells.items() if k.startswith("frames = []"))
    rows = dict(re.findall(r"<th>(\w+)</th>((?:\s*<td>[^<]*</td>)+)", _html(whatif)))
    clusters = [b for b in rows if b in ("dask", "ray")]
    assert clusters, _html(whatif)
    for backend in clusters:
        times = re.findall(r"<td>([^<]*)</td>", rows[backend])
        assert len(times) == 3 and len(set(times)) == 3, rows  # 2, 16 and 64 workers differ
