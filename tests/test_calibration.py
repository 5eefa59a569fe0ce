"""The typed calibration (smallbig.model.calibration): one loader that reads every file smallbig
writes, names what it cannot read, and gives the cost model the same figures as the dict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallbig.model.calibrate import load_profile, write_profile
from smallbig.model.calibration import SCHEMA, Calibration, read_calibration
from smallbig.model.cluster import Cluster
from smallbig.model.costmodel import predict
from smallbig.model.taskprofile import TaskProfile

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "docs" / "results" / "run" / "calibration.json"


def _ranked(ranked):
    return [(p.backend, p.seconds, p.reason, p.workers) for p in ranked]


def test_a_calibration_smallbig_wrote_reads_typed_with_every_backend():
    data = json.loads(RUN.read_text())
    typed = read_calibration(data, str(RUN))
    assert set(typed.backends) == set(data["backends"]) and typed.schema == 1  # no "schema": 1
    dask, row = typed.backends["dask"], data["backends"]["dask"]
    assert dask.distributed and not dask.in_process and dask.workers == row["workers"]
    assert [s.workers for s in dask.by_workers] == [p["workers"] for p in row["by_workers"]]
    assert typed.backends["threads"].in_process and typed.backends["threads"].slots >= 1
    assert read_calibration(typed) is typed


def test_the_model_predicts_the_same_from_the_dict_and_from_the_typed_calibration():
    data = json.loads(RUN.read_text())
    typed = read_calibration(data)
    for kw in (dict(item_s=0.01), dict(item_s=1e-5, item_bytes=10**6, cold=False),
               dict(item_s=0.002, workers=16, latency_s=1e-3, bandwidth_Bps=1e8)):  # fmt: skip
        assert _ranked(predict(data, 500, **kw)) == _ranked(predict(typed, 500, **kw))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d, b: d.update(schema=SCHEMA + 1), ["schema", str(SCHEMA + 1), "upgrade"]),
        (lambda d, b: b["dask"].pop("startup_s"), ["'dask'", "'startup_s'", "missing"]),
        (lambda d, b: b["processes"].pop("beta_value_Bps"), ["'processes'", "beta_value_Bps"]),
        (lambda d, b: b["ray"].update(workers="two"), ["'ray'", "workers", "'two'", "int"]),
        (lambda d, b: b["dask"].update(in_process="no"), ["in_process", "bool"]),
        (lambda d, b: d.update(backends={}), ["no backend"]),
    ],
)
def test_a_file_it_cannot_read_is_named_with_the_backend_and_term(tmp_path, change, words):
    data = json.loads(RUN.read_text())
    change(data, data["backends"])
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message and all(w in message for w in words), message


def test_a_term_an_in_process_backend_never_ships_may_be_absent():
    row = {"workers": 2, "threads": 2, "startup_s": 0.0, "auto_overhead_s": 1e-6,
           "in_process": True}  # fmt: skip
    typed = read_calibration({"backends": {"threads": row}})
    assert typed.backends["threads"].beta_value_Bps is None
    assert predict({"backends": {"threads": row}}, 100, item_s=1e-3)[0].backend == "threads"


def test_written_calibrations_carry_the_schema(tmp_path):
    data = json.loads(RUN.read_text())
    written = write_profile(list(data["backends"].values()), tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["schema"] == SCHEMA == written["schema"]
    assert isinstance(read_calibration(load_profile(tmp_path / "c.json")), Calibration)


def test_a_cluster_is_one_object_and_a_described_task_a_task_profile():
    data = json.loads(RUN.read_text())
    big = Cluster(workers=16, latency_s=1e-3, bandwidth_Bps=1e8, worker_memory_bytes=None)
    by_terms = predict(data, 5000, item_s=0.01, workers=16, latency_s=1e-3, bandwidth_Bps=1e8)
    assert _ranked(predict(data, 5000, item_s=0.01, cluster=big)) == _ranked(by_terms)
    with pytest.raises(ValueError, match="not both"):
        predict(data, 10, item_s=0.01, cluster=big, workers=4)
    described = TaskProfile.described(0.004, 2000, cpu_s=0.001, releases_gil=True)
    assert described.releases_gil and described.cores_used == pytest.approx(0.25)
    by_hand = predict(data, 300, item_s=0.004, item_bytes=2000, cpu_s=0.001, releases_gil=True)
    assert _ranked(predict(data, 300, task=described)) == _ranked(by_hand)
