"""Memory as a cost: the sampler sees every process a backend starts; records carry it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import pytest
from helpers import check_memory_recorded

from smallbig.backends import available, get_backend
from smallbig.backends.memory import PeakMemory, ProcessTree
from smallbig.backends.registry import capabilities
from smallbig.model.calibrate import load_profile
from smallbig.results.records import FIELDS
from smallbig.running.runner import run
from smallbig.workloads import probes

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [n for n in available() if n in ("processes", "dask", "ray")])
def test_the_peak_counts_memory_held_in_worker_processes(name):
    with get_backend(name, workers=2) as ex:
        ex.submit(probes.noop, 0).result(timeout=60)  # workers up and warm
        reader = ex.memory_reader()
        with PeakMemory(reader) as idle:
            time.sleep(0.3)
        with PeakMemory(reader) as busy:
            assert ex.submit(probes.hold, 300).result(timeout=60) == 300 * 2**20
    # 300 MB held in a worker, not in this process: the sampler must walk the backend's tree.
    assert busy.bytes - idle.bytes > 200e6, (idle.bytes, busy.bytes)


def test_a_process_started_later_under_a_root_is_counted():
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "p = subprocess.Popen([sys.executable, '-c', "
         "'b = bytearray(200 * 2**20); b[::4096] = bytes(len(b[::4096])); import time; "
         "time.sleep(30)']); time.sleep(30)"]
    )  # fmt: skip
    try:
        tree = ProcessTree({child.pid}, driver=False)
        first = tree.rss()
        deadline = time.monotonic() + 20
        while tree.rss() - first < 150e6 and time.monotonic() < deadline:
            time.sleep(0.2)  # the grandchild is found at the next walk (every second)
        assert tree.processes() == 2 and tree.rss() - first > 150e6
    finally:
        for proc in ProcessTree({child.pid}, driver=False)._procs.values():
            proc.kill()
        child.kill()  # the root is not among its own descendants: it slept out its 30 s
        child.wait()


def test_sampling_costs_under_one_percent_of_a_core():
    with get_backend("processes", workers=2) as ex:
        reader = ex.memory_reader()
        reader()  # the first reading walks the tree
        cpu = time.thread_time()
        for _ in range(100):
            reader()
        per_read = (time.thread_time() - cpu) / 100
    # 10 readings a second, plus a walk of every process each second (~ms).
    assert per_read * 10 < 0.005, f"{per_read * 1e6:.0f} µs per reading"


def test_records_and_calibration_carry_memory_on_the_in_process_backends(tmp_path):
    """Every backend's memory columns are checked on the runs the signal tests resume
    (tests/test_signals.py, one per engine group); here the in-process ones none of those
    run, against this process's own memory."""
    backends = [b for b in available() if capabilities(b)["in_process"]]
    result = run(["noop"], backends, sizes=[4], repeats=1, out_dir=tmp_path, progress=False)
    profile = result.calibration["backends"]  # what the run returns is what it wrote
    assert profile == load_profile(tmp_path / "calibration.json")["backends"]
    me = ProcessTree(set()).rss()
    assert check_memory_recorded(tmp_path, floor=0.5 * me) == set(backends)
    assert len(result.records) == 2 * len(backends)
    assert "bytes_out" in FIELDS and "peak_rss_bytes" in FIELDS


def test_resume_into_records_of_the_previous_schema_says_so(tmp_path):
    old = [f for f in FIELDS if f not in ("bytes_out", "peak_rss_bytes")]  # schema 3
    with (tmp_path / "records.csv").open("w", newline="") as f:
        csv.writer(f).writerow(old)
    with pytest.raises(ValueError, match=r"another version of smallbig.*new --out"):
        run(["noop"], ["serial"], sizes=[1], out_dir=tmp_path, resume=True, progress=False)
    assert os.path.getsize(tmp_path / "records.csv") > 0
