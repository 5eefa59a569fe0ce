"""What a new user meets through the command line: help, tables, advice text, figures."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from matplotlib.colors import to_hex

from smallbig.cli import build_parser
from smallbig.present import plots
from smallbig.results.fmt import cell, number, seconds


def _smallbig(*args: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "smallbig", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _parsers(parser: argparse.ArgumentParser, path=("smallbig",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_says_what_it_means_and_its_default():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help"
            assert "``" not in action.help, where
            has_default = action.default not in (None, False, argparse.SUPPRESS)
            if action.option_strings and has_default and not action.choices:
                assert "default" in action.help, f"{where} does not say its default"
    help_text = _smallbig("serve-api", "--help").stdout
    assert "``" not in help_text and "printed first" in help_text
    assert "--latency-ms" in help_text and "--latency-ms" in _smallbig("bench", "api", "-h").stdout


def test_version_and_python_dash_m():
    out = _smallbig("--version")
    assert out.returncode == 0 and out.stdout.startswith("smallbig ")
    module = subprocess.run(
        [sys.executable, "-m", "smallbig", "backends"], capture_output=True, text=True, timeout=60
    )
    assert module.returncode == 0 and "serial" in module.stdout, module.stderr


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.000123, "123 µs"),
        (0.0456, "45.6 ms"),
        (2.5, "2.5 s"),
        (4321.0, "4,321 s"),
        (3.2e-8, "32 ns"),
        (0.0, "0 s"),
        (float("nan"), "-"),
    ],
)
def test_times_keep_three_significant_digits(value, text):
    assert seconds(value) == text


def test_cells_are_formatted_one_way():
    assert number(True) == "yes" and number(False) == "no" and number(None) == "-"
    assert number(12345) == "12,345" and number(0.0123) == "0.0123" and number(2.0) == "2"
    assert cell("startup_s", 0.0004) == "400 µs" and cell("req_per_s", 1977.4) == "1,977"
    assert cell("regret_pct", 17.64) == "17.6%"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    out = _smallbig(
        "run", "--workloads", "noop", "sleep", "--backends", "serial", "threads",
        "--sizes", "2", "20", "--repeats", "1", "--out", "res", "--tables", cwd=cwd, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return cwd, out.stdout


def test_a_default_run_prints_the_answer_and_where_the_tables_are(tmp_path):
    out = _smallbig(
        "run", "--workloads", "noop", "sleep", "--backends", "serial", "threads", "asyncio",
        "--sizes", "2", "20", "--repeats", "1", "--out", "res", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [x for x in out.stdout.splitlines() if "━" not in x]  # the progress bars' lines
    assert len(lines) <= 60, out.stdout
    assert lines[0].startswith("What to use, by number of items")
    assert "noop (a plain function" in out.stdout and "sleep (a coroutine function" in out.stdout
    noop = out.stdout.split("noop (")[1].split("sleep (")[0]
    assert "asyncio" not in noop  # a plain function: the thread pool is named, not the loop
    assert "fitted time" not in out.stdout  # the tables are in report.html, or with --tables
    end = " ".join(lines[-2:])  # a long path wraps
    assert "report.html" in end and "--tables" in end


def test_run_tables_fit_100_columns_and_show_small_times(small_run):
    _, stdout = small_run
    assert max(map(len, stdout.splitlines())) <= 100
    assert "0.000" not in stdout and "µs" in stdout  # no-ops take microseconds: say so
    assert "fitted time = fixed + per item" in stdout  # the thresholds are a table too
    assert "and up: " in stdout and "–∞" not in stdout  # open ranges in words
    assert "What to use, by number of items" in stdout  # the answer, after the tables
    assert "–∞" not in stdout


def test_a_run_lists_what_it_drew_with_absolute_paths(small_run):
    cwd, _ = small_run
    meta = json.loads((cwd / "res" / "run.json").read_text())
    drawn = meta["outputs"]
    assert {p.rsplit("/", 1)[-1] for p in drawn} >= {"noop_scaling.png", "sleep_scaling.png"}
    assert all(p.startswith("/") and (cwd / "res" / p.rsplit("/", 1)[-1]).exists() for p in drawn)
    again = _smallbig("run", "--workloads", "noop", "--backends", "serial", "--sizes", "3",
                      "--repeats", "1", "--out", "res", cwd=cwd)  # fmt: skip
    assert again.returncode == 2 and "--overwrite" in again.stdout


def test_waiting_is_called_waiting(tmp_path):
    out = _advise(tmp_path, "--items", "5000", "--item-ms", "40", "--wait-ms", "39")
    assert "waiting dominates" in out.stdout and "compute dominates" not in out.stdout


def test_an_extrapolation_without_a_cluster_calibrated_says_so(tmp_path):
    out = _advise(tmp_path, "--items", "5000", "--item-ms", "3", "--workers", "64")
    assert "cannot extrapolate to a cluster" in out.stdout
    assert "extrapolated to a cluster" not in out.stdout


def _advise(tmp_path, *args):
    """``smallbig advise ARGS`` on a real calibration; it must succeed."""
    out = _smallbig("advise", *args, "--profile", str(_profile(tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _profile(tmp_path):
    """A calibration of serial and threads only, measured for real."""
    from smallbig.model.calibrate import overhead

    path = tmp_path / "cal.json"
    overhead(["serial", "threads"], items=500, repeats=1, path=path)
    return path


def _colours(fig) -> dict[str, set[str]]:
    """Backend name → colours it is drawn in, from a figure's lines, legends and ticks."""
    seen: dict[str, set[str]] = {}
    names = set(plots.PALETTE) | {"mine"}
    for ax in fig.axes:
        artists = list(ax.get_lines())
        legend = ax.get_legend()
        if legend is not None:
            artists += legend.legend_handles
        for artist in artists:
            name = (artist.get_label() or "").split(" ")[0].rstrip(":")
            if name in names:
                seen.setdefault(name, set()).add(to_hex(artist.get_color()))
        for tick in ax.get_xticklabels():
            if tick.get_text() in names:
                seen.setdefault(tick.get_text(), set()).add(to_hex(tick.get_color()))
    for legend in fig.legends:
        for artist in legend.legend_handles:
            if artist.get_label() in names:
                seen.setdefault(artist.get_label(), set()).add(to_hex(artist.get_color()))
    return seen


def test_each_backend_has_one_colour_in_every_figure(monkeypatch, tmp_path):
    import pandas as pd

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, layout=True: drawn.append(fig))
    names = ["serial", "threads", "processes", "asyncio", "dask", "ray", "mine"]
    rows = [
        {"workload": "w", "backend": b, "size": n, "repeat": 1, "phase": "warm",
         "wall_s": 0.01 * n / (1 + k) + 0.001 * k, "paired": False, "correct": True}
        for k, b in enumerate(names) for n in (1, 10, 100, 1000)
    ]  # fmt: skip
    records = pd.DataFrame(rows)
    profile = {"cpu_count": 2, "backends": {}}
    for k, b in enumerate(names):
        profile["backends"][b] = {
            "workers": 1 + k, "threads": 1 + k, "cores": 2, "startup_s": 0.1 * k,
            "task_overhead_s": 1e-4 * (k + 1), "auto_overhead_s": 1e-5 * (k + 1),
            "alpha_value_s": 1e-4, "beta_value_Bps": 1e9, "in_process": k < 4,
            "distributed": b in ("dask", "ray"), "coroutines": b == "asyncio",
        }  # fmt: skip
    plots.scaling(records, "w", tmp_path / "s.png")
    plots.overhead_breakdown(profile, tmp_path / "o.png")
    plots.phase_diagram(profile, tmp_path / "p.png", plots.measured_winners(records, {"w": 1e-3}))
    seen: dict[str, set[str]] = {}
    for fig in drawn:
        for name, colours in _colours(fig).items():
            seen.setdefault(name, set()).update(colours)
    assert set(seen) >= {"serial", "threads", "processes", "asyncio", "dask", "ray", "mine"}
    for name, colours in seen.items():
        assert colours == {to_hex(plots.color(name))}, (name, colours)
    assert plots.color("dask@tcp://10.0.0.1:8786") == plots.color("dask")
    assert len({plots.color(n) for n in names[:6]}) == 6


def test_the_phase_diagram_shows_where_a_cluster_pays_off(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, layout=True: drawn.append(fig))
    row = {"threads": 1, "cores": 2, "task_overhead_s": 1e-4, "alpha_value_s": 1e-4,
           "beta_value_Bps": 1e9, "inner_threads": 1}  # fmt: skip
    profile = {
        "cpu_count": 2,
        "backends": {
            "serial": {**row, "workers": 1, "startup_s": 0.0, "auto_overhead_s": 1e-6,
                       "in_process": True},
            "processes": {**row, "workers": 2, "startup_s": 0.3, "auto_overhead_s": 2e-5},
            "dask": {**row, "workers": 2, "startup_s": 2.0, "auto_overhead_s": 1e-4,
                     "distributed": True},
        },
    }  # fmt: skip
    plots.phase_diagram(profile, tmp_path / "p.png", cluster=plots.Cluster(workers=64),
                        item_bytes=100_000)  # fmt: skip
    plots.phase_diagram({**profile, "backends": {k: v for k, v in profile["backends"].items()
                         if k != "dask"}}, tmp_path / "q.png", cluster=plots.Cluster())  # fmt: skip
    both, local_only = drawn
    local, far = [ax for ax in both.axes if ax.get_title()]
    assert "PREDICTED" in far.get_title() and "64 workers" in far.get_title()
    assert "PREDICTED" not in local.get_title()
    labels = [t.get_text() for t in local.get_legend().get_texts()]
    assert any(t.startswith("break-even") for t in labels)
    assert any(t.startswith("crossover") for t in labels)
    tops = [c.get_xlabel() for ax in both.axes for c in ax.child_axes]
    assert len(tops) == 2 and all("data (MB" in t for t in tops)  # the size in bytes too
    assert "(dots)" not in both._suptitle.get_text()  # no dots drawn: none claimed
    # Without a cluster backend calibrated there is nothing to extrapolate: one panel.
    assert len([ax for ax in local_only.axes if ax.get_title()]) == 1
