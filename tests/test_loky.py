"""joblib's loky pool as a backend: one registry entry, its reuse, memory-mapped ``put``, and
the pool it shares with ``joblib.Parallel``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from smallbig.backends import available, get_backend
from smallbig.backends.registry import BACKENDS
from smallbig.model.calibrate import measure_overheads
from smallbig.model.costmodel import predict
from smallbig.workloads import probes

pytestmark = pytest.mark.skipif("loky" not in available(), reason="pip install 'smallbig[joblib]'")

ROOT = Path(__file__).resolve().parents[1]


def describe(x: np.ndarray) -> tuple[str, str | None, float]:
    """What a worker received for ``x``: its type, the file behind it, its sum."""
    return type(x).__name__, getattr(x, "filename", None), float(x[:: 2**16].sum())


def test_a_new_backend_is_one_registry_entry():
    assert BACKENDS["loky"].engine == "joblib" and BACKENDS["loky"].extra == "joblib"
    # Nothing in compare/ names it: the comparison reads capabilities, not names.
    for path in (ROOT / "compare").rglob("*.py"):
        assert "loky" not in path.read_text(), path
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'joblib = ["joblib' in pyproject and "joblib," in pyproject.split("all = ")[1]


def test_put_memory_maps_a_large_array_once():
    array = np.arange(100 * 2**20 // 8, dtype=np.float64)  # 100 MB
    with get_backend("loky", workers=2) as ex:
        handle = ex.put(array)
        # What travels in each task is the handle, not the array.
        assert len(pickle.dumps(handle)) < 1000
        got = list(ex.map(describe, [handle] * 4, chunksize=1))
        kinds = {g[0] for g in got}
        assert kinds == {"memmap"}, got
        files = {g[1] for g in got}
        assert len(files) == 1 and os.path.getsize(files.pop()) >= array.nbytes
        assert all(g[2] == float(array[:: 2**16].sum()) for g in got)
        small = ex.put([1, 2, 3])  # anything else travels by value
        assert small == [1, 2, 3]
    assert not os.path.exists(next(iter({g[1] for g in got})))  # removed at shutdown


def test_a_second_backend_reuses_the_running_pool():
    with get_backend("loky", workers=2) as first:
        pids = set(first.map(_pid, range(40)))
        with get_backend("loky", workers=2) as again:
            assert again.info()["reused"] and not first.info()["reused"]
            assert set(again.map(_pid, range(40))) <= pids
            assert again.startup_s < first.startup_s
        # The first is still up after the second shut down: the pool ends with its last holder.
        assert first.submit(abs, -3).result(timeout=60) == 3
        row = measure_overheads(first, "loky", items=200, repeats=1)
    assert 0 < row["reuse_s"] < row["startup_s"]
    profile = {"backends": {"loky": row}}
    warm = predict(profile, 10, 0.01, cold=False)[0].seconds
    cold = predict(profile, 10, 0.01)[0].seconds
    assert cold - warm == pytest.approx(row["startup_s"] - row["reuse_s"])


def test_joblib_parallel_runs_on_the_same_pool():
    with get_backend("loky", workers=2) as ex:
        before = set(ex.map(_pid, range(40)))
        assert ex.engine_map(abs, [-1, -2, 3]) == [1, 2, 3]
        after = set(ex.map(_pid, range(40)))
    assert after <= before, "joblib.Parallel replaced the pool instead of reusing it"


def test_workers_are_capped_through_lokys_env():
    with get_backend("loky", workers=2) as ex:
        cap = ex.info()["inner_threads"]
        env = ex.submit(_env, "OPENBLAS_NUM_THREADS").result(timeout=60)
    assert cap == max(1, (os.cpu_count() or 1) // 2) and env == str(cap)


def _pid(_: object) -> int:
    return os.getpid()


def _env(name: str) -> str | None:
    return os.environ.get(name)


def test_probe_payload_reaches_workers_memory_mapped_through_map():
    # As under joblib.Parallel, a NumPy argument over 1 MB is memory-mapped, not pickled.
    array = probes.make_payload(4 * 2**20, seed=2)
    with get_backend("loky", workers=2) as ex:
        kind = ex.submit(describe, array).result(timeout=60)[0]
    assert kind == "memmap"
