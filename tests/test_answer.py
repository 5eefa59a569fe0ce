"""The answer block: its lines in each situation a run can end in, from records, run.json and a
calibration made for the situation (the analysis is a pure function of them)."""

from __future__ import annotations

import pandas as pd
import pytest

from smallbig.present.answer import answer

SIZES = (1, 10, 100, 1000)


def _records(lines: dict[str, tuple[float, float]], workload: str = "w") -> pd.DataFrame:
    """Warm records of backends whose time is ``fixed + per_item × n``, three repeats each,
    ±1% apart (the median is the line)."""
    rows = []
    for backend, (fixed, per_item) in lines.items():
        for n in SIZES:
            for repeat, wobble in enumerate((0.99, 1.0, 1.01), start=1):
                rows.append(
                    {
                        "workload": workload,
                        "backend": backend,
                        "size": n,
                        "repeat": repeat,
                        "phase": "warm",
                        "wall_s": (fixed + per_item * n) * wobble,
                        "correct": True,
                        "failure": "",
                        "peak_rss_bytes": float("nan"),
                    }
                )
    return pd.DataFrame(rows)


INFO = {
    "serial": {"startup_s": 0.0, "in_process": True, "uses_threads": False},
    "threads": {"startup_s": 0.0, "in_process": True, "uses_threads": True},
    "asyncio": {
        "startup_s": 0.0,
        "in_process": True,
        "uses_threads": True,
        "supports_coroutines": True,
    },
    "processes": {"startup_s": 0.5, "in_process": False, "workers": 2},
    "dask": {"startup_s": 1.0, "in_process": False, "distributed": True, "workers": 2},
}


def _meta(backends, coroutine=False, data=None, releases_gil=True) -> dict:
    trait = {"coroutine": coroutine, "releases_gil": releases_gil}
    if data is not None:
        trait["data_bytes_per_item"] = data
    return {"backends": {b: INFO[b] for b in backends}, "workloads": {"w": trait}}


def _calibration(memory: float = 25e9) -> dict:
    def row(name, startup, overhead, workers, in_process, distributed=False):
        return {
            "backend": name,
            "workers": workers,
            "threads": workers,
            "coroutines": False,
            "cores": 2,
            "startup_s": startup,
            "in_process": in_process,
            "distributed": distributed,
            "inner_threads": 1,
            "driver_rss_bytes": 2e8,
            "idle_rss_bytes": 0 if in_process else 1e8,
            "worker_rss_bytes": 0 if in_process else 5e7,
            "auto_overhead_s": overhead,
            "alpha_value_s": 1e-4,
            "beta_value_Bps": 1e9,
        }

    return {
        "cpu_count": 2,
        "memory_bytes": memory,
        "backends": {
            "serial": row("serial", 0.0, 3e-7, 1, True),
            "threads": row("threads", 0.0, 2e-6, 6, True),
            "processes": row("processes", 0.5, 1e-5, 2, False),
            "dask": row("dask", 1.0, 2e-5, 2, False, True),
        },
    }


def _text(lines, meta, calibration=None) -> str:
    return str(answer(_records(lines), meta, calibration))


def test_serial_best_everywhere():
    text = _text({"serial": (0.0, 1e-5), "threads": (1e-3, 2e-5)}, _meta(["serial", "threads"]))
    assert "once or running: 1 and up: serial" in text
    assert "break-even" not in text  # no pool is advised anywhere


def test_a_pool_from_some_size_and_where_it_breaks_even():
    # threads: 10 ms more per run, 1 ms less per item: from 11 items.
    text = _text({"serial": (0.0, 2e-3), "threads": (1e-2, 1e-3)}, _meta(["serial", "threads"]))
    assert "once or running: 1–10: serial; 11 and up: threads" in text
    assert "break-even with serial (running / once): threads 11 / 11" in text


def test_once_and_running_differ_by_the_start_up():
    # processes: no fixed cost warm, half a second to start; 5 ms less per item.
    meta = _meta(["serial", "processes"])
    text = _text({"serial": (0.0, 1e-2), "processes": (0.0, 5e-3)}, meta)
    assert "running: 1 and up: processes" in text
    assert "once:    1–100: serial; 101 and up: processes" in text
    assert "processes 1 / 101" in text


def test_no_line_names_asyncio_for_a_plain_function():
    lines = {"serial": (0.0, 1e-2), "threads": (1e-3, 5e-3), "asyncio": (1e-3, 4.9e-3)}
    plain = _text(lines, _meta(["serial", "threads", "asyncio"]))
    # asyncio runs a plain function on a thread pool: it is threads, and named so.
    assert "asyncio" not in plain and "and up: threads" in plain
    coroutine = _text(lines, _meta(["serial", "threads", "asyncio"], coroutine=True))
    assert "asyncio" in coroutine


def test_backends_as_fast_are_named_once_the_lighter_first():
    # Within 1% of each other: threads (no start-up, no processes) is named, processes beside.
    lines = {"serial": (0.0, 1e-2), "threads": (0.0, 5.00e-3), "processes": (0.0, 4.98e-3)}
    text = _text(lines, _meta(["serial", "threads", "processes"]))
    assert "running: 1 and up: threads (processes as fast)" in text


def test_a_cluster_predicted_to_win_says_what_it_rests_on():
    # A second per item: 32 extrapolated workers beat two local cores from a few items.
    lines = {"serial": (0.0, 1.0), "processes": (0.0, 0.5), "dask": (0.1, 0.55)}
    meta = _meta(["serial", "processes", "dask"], data=1e3)
    text = _text(lines, meta, _calibration())
    assert "cluster, measured: dask (2 local workers on this machine's cores) never beats" in text
    predicted = next(line for line in text.splitlines() if "cluster, PREDICTED" in line)
    assert "32 workers" in predicted and "fastest from" in predicted


def test_data_past_the_memory_boundary_says_stream_it():
    # 1 GB per item on a 10 GB machine, cheap compute: no cluster ever pays, so stream.
    lines = {"serial": (0.0, 1e-3), "threads": (0.0, 9e-4)}
    meta = _meta(["serial", "threads"], data=1e9)
    cal = _calibration(memory=10e9)
    del cal["backends"]["dask"]
    text = _text(lines, meta, cal)
    memory = next(line for line in text.splitlines() if "memory:" in line)
    assert "10 GB hold 10 items at once" in memory and "stream them" in memory


def test_run_result_answer_is_the_same_block(tmp_path):
    from smallbig.running.runner import RunResult

    records = _records({"serial": (0.0, 1e-2), "threads": (0.0, 5e-3)})
    result = RunResult(records, _meta(["serial", "threads"]), None, tmp_path)
    assert str(result.answer()) == str(answer(records, result.metadata, None))
    assert '<section id="answer">' in result._repr_html_()
    # One short line: counts and the folder, never the records themselves.
    text = repr(result).replace(str(tmp_path), "DIR")
    assert len(text) < 80 and "RunResult" in text and "\n" not in text


def test_an_emulated_cluster_is_called_so():
    lines = {
        "serial": (0.0, 1.0),
        "processes": (0.0, 0.5),
        "dask@tcp://198.18.5.10:8786": (0.1, 0.3),
    }
    meta = _meta(["serial", "processes"])
    meta["backends"]["dask@tcp://198.18.5.10:8786"] = {
        "startup_s": 0.0, "distributed": True, "workers": 4,
        "emulated": {"nodes": 2, "workers_per_node": 2, "bandwidth_mbps": 100},
    }  # fmt: skip
    text = _text(lines, meta)
    assert "EMULATED cluster: 2 nodes × 2 workers behind 100 Mbit/s links" in text
    # Its nodes under CPU quotas: the verdict says it rests on a scale model.
    meta["backends"]["dask@tcp://198.18.5.10:8786"]["emulated"]["cpus_per_node"] = 0.25
    text = _text(lines, meta)
    assert "measured on a SCALE MODEL of 2 × 0.25 cores: 2 workers a node" in text, text
    assert "EMULATED" not in text
    # report.html's first screen says the same (issue 41: the verdict's wording there too).
    page = answer(_records(lines), meta, None).to_html()
    assert "measured on a SCALE MODEL of 2 × 0.25 cores" in page and "EMULATED" not in page


def _plain(x):
    return sum(i * i for i in range(200 + x))


@pytest.mark.alone
@pytest.mark.slow
def test_real_runs_never_name_asyncio_for_a_plain_function(tmp_path):
    from smallbig.running.runner import run

    pools = ["serial", "threads", "asyncio"]
    built = run(["images", "noop"], pools, sizes=[2, 8], repeats=1, out_dir=tmp_path / "a",
                progress=False)  # fmt: skip
    mine = run(backends=pools, sizes=[4, 16], repeats=1, out_dir=tmp_path / "b",
               progress=False, task=_plain, items=list(range(16)))  # fmt: skip
    for result in (built, mine):
        text = str(result.answer())
        assert "plain function" in text and "asyncio" not in text, text
