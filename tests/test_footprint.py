"""The memory boundary in the advice: data larger than memory is streamed or spread, never held."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import calibration_row

from smallbig.model.costmodel import predict
from smallbig.model.footprint import AT_ONCE, NO_FIT, STREAMING

GB = 1e9


def _profile() -> dict:
    def row(*args, idle=0.0, per_worker=0.0, **kw):
        return {
            **calibration_row(*args, **kw),
            "driver_rss_bytes": 0.2 * GB,
            "idle_rss_bytes": idle,
            "worker_rss_bytes": per_worker,
        }

    return {
        "memory_bytes": 16 * GB,
        "cpu_count": 2,
        "backends": {
            "serial": row(1, 0.0, 1e-7, True),
            "threads": row(4, 0.0, 1e-6, True),
            "processes": row(2, 0.2, 2e-6, False, idle=0.2 * GB, per_worker=0.1 * GB),
            "dask": row(2, 1.0, 5e-6, False, True, idle=0.4 * GB, per_worker=0.2 * GB,
                        alpha=5e-3, beta=2e8),
        },
    }  # fmt: skip


def test_data_that_fits_is_held_at_once_and_its_peak_grows_with_it():
    small = predict(_profile(), 10_000, 0.01, 1000)
    big = predict(_profile(), 10_000, 0.01, 1000, data_bytes=8 * GB)
    assert all(p.memory.mode == AT_ONCE for p in small + big)
    by = {p.backend: p.memory.peak_bytes for p in big}
    assert by["serial"] == pytest.approx(0.2 * GB + 8 * GB, rel=0.01)
    assert by["processes"] > by["serial"]  # its workers on top


def test_data_larger_than_memory_is_streamed_on_every_local_backend():
    ranked = predict(_profile(), 100_000, 0.01, data_bytes=100 * GB)  # 1 MB items, 16 GB here
    assert ranked[0].memory.fits
    for p in ranked:
        assert p.memory.mode == STREAMING, p
        assert p.memory.peak_bytes < 16 * GB
        # Bounded by what is in flight, not by the data: 2 chunks per slot.
        assert p.memory.buffersize == 2 * p.workers
    # The same data ten times larger streams in the same peak.
    larger = predict(_profile(), 1_000_000, 0.01, data_bytes=1000 * GB)
    assert {p.backend: p.memory.peak_bytes for p in larger} == pytest.approx(
        {p.backend: p.memory.peak_bytes for p in ranked}
    )


def test_a_cluster_whose_memory_holds_the_data_holds_it():
    ranked = predict(
        _profile(), 100_000, 0.01, data_bytes=100 * GB, workers=8, worker_memory_bytes=32 * GB
    )
    modes = {p.backend: p.memory.mode for p in ranked}
    assert modes["dask"] == AT_ONCE  # 8 × 32 GB hold 100 GB
    assert modes["serial"] == modes["processes"] == STREAMING
    small = predict(
        _profile(), 100_000, 0.01, data_bytes=100 * GB, workers=8, worker_memory_bytes=4 * GB
    )
    assert {p.backend: p.memory.mode for p in small}["dask"] == STREAMING


def test_a_backend_that_cannot_run_it_even_streaming_is_never_advised():
    # Each running item needs 5 GB: one at a time fits in 16 GB, four threads' worth does not.
    task = {
        "item_s": 1.0, "cpu_s": 0.1, "item_s_1": 1.0, "cpu_s_1": 0.1, "gil_s": 0.0,
        "arg_bytes": 100, "result_bytes": 100, "memory_bytes": 5 * GB, "coroutine": False,
    }  # fmt: skip
    ranked = predict(_profile(), 1000, task=task)
    threads = next(p for p in ranked if p.backend == "threads")
    assert threads.memory.mode == NO_FIT and "if it had the memory" in threads.reason
    # Fastest by time (4 slots of a task that mostly waits), yet ranked after every one that fits.
    assert ranked[-1].backend == "threads" and ranked[0].memory.fits


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"data_bytes": -1.0}, "data_bytes"),
        ({"data_bytes": float("nan")}, "data_bytes"),
        ({"worker_memory_bytes": 0.0}, "worker_memory_bytes"),
        ({"worker_memory_bytes": float("inf")}, "worker_memory_bytes"),
    ],
)
def test_bad_sizes_are_refused_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        predict(_profile(), 100, 0.01, **kwargs)


def _advise(*args: str, tmp_path) -> subprocess.CompletedProcess:
    import json

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(_profile()))
    return subprocess.run(
        [sys.executable, "-m", "smallbig", "advise", "--profile", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_names_the_boundary_and_advises_streaming(tmp_path):
    out = _advise("--items", "200000", "--item-ms", "5", "--data-gb", "300", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "does not fit in this machine's memory (16 GB) at once" in text
    assert "1.5 MB each" in text  # 300 GB over 200,000 items
    first = next(line for line in out.stdout.splitlines() if line.startswith("│ 1 "))
    assert "stream: buffersize=" in first, out.stdout
    out = _advise("--items", "200", "--item-ms", "5", "--data-gb", "1", tmp_path=tmp_path)
    assert "fits in memory (16 GB here) at once" in " ".join(out.stdout.split())


@pytest.mark.parametrize(
    "option, value", [("--data-gb", "0"), ("--data-gb", "nan"), ("--worker-memory-gb", "-2")]
)
def test_the_cli_refuses_bad_sizes(option, value, tmp_path):
    out = _advise("--items", "10", "--item-ms", "5", option, value, tmp_path=tmp_path)
    assert out.returncode == 2 and option in out.stderr and "Traceback" not in out.stderr


def test_the_small_big_data_band_lies_between_memory_and_the_crossover():
    from smallbig.model.band import small_big_band
    from smallbig.model.cluster import Cluster

    profile = _profile()  # 16 GB here
    # Workers with this machine's memory (None), on a 10 Gbit/s network.
    cluster = Cluster(workers=16, latency_s=1e-3, bandwidth_Bps=1.25e9, worker_memory_bytes=None)
    # A cluster that takes two minutes to provision wins only on large data.
    profile["backends"]["dask"]["startup_s"] = 120.0
    band = small_big_band(profile, 0.01, 1e6, releases_gil=True, cluster=cluster)
    assert band.boundary == pytest.approx(16_000)  # 16 GB of 1 MB items
    assert band.crossover is not None and band.crossover > band.boundary
    assert band.small_big == (band.boundary, band.crossover)
    # Just below the crossover one machine (streaming) is predicted fastest; at it, the cluster.
    n = band.crossover
    below, at = (predict(profile, k, 0.01, releases_gil=True, data_bytes=k * 1e6, cluster=cluster)
                 for k in (n - 1, n))  # fmt: skip
    assert below[0].backend != "dask" and below[0].memory.mode == STREAMING
    assert at[0].backend == "dask"
    assert "small big data: 16,000–" in band.describe()
    # A cluster that starts in a second wins before the data outgrows memory: no band.
    profile["backends"]["dask"]["startup_s"] = 1.0
    early = small_big_band(profile, 0.01, 1e6, releases_gil=True, cluster=cluster)
    assert early.crossover < early.boundary and early.small_big is None
    assert "already from" in early.describe()
