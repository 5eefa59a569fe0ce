"""Tidy records: one CSV row per measurement, written the moment it is measured.

An interrupted run keeps every row already measured; ``--resume`` skips them. Run metadata
(machine, versions, git revision, schema version) goes to ``run.json`` beside the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 2  # 2: cpu_s, paired
RECORDS = "records.csv"
METADATA = "run.json"


@dataclass(frozen=True)
class Record:
    """One measurement of one workload at one size on one backend."""

    workload: str
    backend: str
    workers: int
    size: int
    repeat: int
    phase: str  # "cold": start-up + first run; "warm": a later run
    wall_s: float
    # CPU seconds of this (the driver) process over the run, all its threads: for serial the
    # task's own CPU, which tells compute from waiting; for other backends what dispatch costs
    # here (in-process pools add their workers' CPU).
    cpu_s: float
    items_per_s: float
    bytes_shipped: int
    errors: int
    # Measured in turns with serial, repeat by repeat (the local backends): medians then pair
    # each repeat with serial's of the same round.
    paired: bool
    checksum: str
    correct: bool | None  # checksum equals serial's (None: no serial reference)

    @property
    def key(self) -> tuple:
        return (self.workload, self.backend, self.size, self.repeat, self.phase)


FIELDS = [f.name for f in dataclasses.fields(Record)]


class RecordWriter:
    """Appends records to ``out_dir/records.csv``, flushing each row to disk at once."""

    def __init__(self, out_dir: Path, resume: bool) -> None:
        self.path = Path(out_dir) / RECORDS
        self.done: set[tuple] = set()
        if resume and self.path.exists():
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != FIELDS:
                raise ValueError(
                    f"{self.path} was written by another version of smallbig (columns "
                    f"{header}); resume into a new --out directory"
                )
            for row in load_records(out_dir).itertuples(index=False):
                self.done.add((row.workload, row.backend, row.size, row.repeat, row.phase))
        elif self.path.exists():
            self.path.unlink()
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, FIELDS)
        if new:
            self._csv.writeheader()

    def write(self, record: Record) -> None:
        self._csv.writerow(dataclasses.asdict(record))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(record.key)

    def close(self) -> None:
        self._file.close()


def load_records(out_dir: str | Path) -> pd.DataFrame:
    """The records of a run directory as a DataFrame."""
    return pd.read_csv(Path(out_dir) / RECORDS, dtype={"checksum": str})


def metadata(
    backend_info: dict[str, Any] | None = None, workloads: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Machine and software facts attached to every run (as pyperf does), with what each
    backend and workload is (the cost model reads the workloads' traits from here)."""
    import psutil

    from backends.base import engine_version

    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {
            m: engine_version(m)
            for m in ("numpy", "pandas", "pillow", "numba", "distributed", "ray")
        },
        "git_revision": _git_revision(),
        "backends": backend_info or {},
        "workloads": workloads or {},
    }


def write_metadata(out_dir: Path, meta: dict[str, Any]) -> None:
    (Path(out_dir) / METADATA).write_text(json.dumps(meta, indent=2, default=str))


def read_metadata(out_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run directory."""
    return json.loads((Path(out_dir) / METADATA).read_text())


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
