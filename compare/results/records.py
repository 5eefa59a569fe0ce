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

# 2: cpu_s, paired; 3: failure; 4: bytes_out, peak_rss_bytes; 5: base_rss_bytes; 6: fidelity
SCHEMA_VERSION = 6
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
    # Why the backend could not measure this point (a worker died, the cluster was lost);
    # empty when it did. A failed point has no time: the analysis leaves it out.
    failure: str = ""
    # Pickled bytes of the results (``bytes_shipped`` is the items'): the data out.
    bytes_out: int = 0
    # Peak resident bytes of this process plus every process the backend started here,
    # sampled over the run (smallbig.backends.memory); NaN when unknown (a remote cluster's engine
    # that reports none).
    peak_rss_bytes: float = float("nan")
    # This process's resident bytes just before the run: what the backend adds is the peak
    # above it (the driver holds every engine imported so far, whichever backend runs).
    base_rss_bytes: float = float("nan")
    # Under a scale model's CPU quotas (smallbig.backends.emulation.fidelity): "faithful", or
    # "unfaithful: why"
    # (a busy group got less than its quota, or the machine was saturated), and then the
    # point is left out of the model's scores; "" when nothing was scaled.
    fidelity: str = ""

    @property
    def key(self) -> tuple:
        return (self.workload, self.backend, self.size, self.repeat, self.phase)


FIELDS = [f.name for f in dataclasses.fields(Record)]
# Columns added since schema 4: records written before them read as unknown (NaN; fidelity
# as "": nothing was scaled before it existed).
_ADDED = ("base_rss_bytes", "fidelity")


class RecordWriter:
    """Appends records to ``out_dir/records.csv``, flushing each row to disk at once.

    Parameters
    ----------
    out_dir : path
        The run's directory.
    resume : bool
        Keep the rows already there and skip their points. A last row cut short (a kill
        mid-write, a full disk) is dropped, its point measured again, and described in
        :attr:`repaired`.
    overwrite : bool
        Without ``resume``, replace an earlier run's records; with neither, a directory that
        holds records is refused rather than emptied.
    """

    def __init__(self, out_dir: Path, resume: bool, overwrite: bool = False) -> None:
        self.path = Path(out_dir) / RECORDS
        self.done: set[tuple] = set()
        self.repaired: str | None = None
        if resume and self.path.exists():
            self.repaired = _drop_cut_row(self.path)
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != FIELDS:
                raise ValueError(
                    f"{self.path} was written by another version of smallbig (columns "
                    f"{header}); resume into a new --out directory"
                )
            for row in load_records(out_dir).itertuples(index=False):
                self.done.add((row.workload, row.backend, row.size, row.repeat, row.phase))
        else:
            if self.path.exists() and self.path.stat().st_size and not overwrite:
                raise ValueError(
                    f"{self.path.parent} holds the records of an earlier run: pass --resume "
                    "to continue it or --overwrite to replace it (or choose another --out)"
                )
            clear_run(out_dir)
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


def _drop_cut_row(path: Path) -> str | None:
    """Cut off a last line that has no newline: every complete row ends with one, so it was
    cut mid-write, and even a value that looks whole (``0.00`` of ``0.0031``) may not be."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(keep)
        os.fsync(f.fileno())
    cut = data[keep:].decode(errors="replace")
    return f"dropped an incomplete last row of {path} ({cut[:60]!r}); its point is measured again"


def load_records(out_dir: str | Path) -> pd.DataFrame:
    """The records of a run directory as a DataFrame.

    Raises
    ------
    FileNotFoundError
        If there is no ``records.csv``.
    ValueError
        If it is empty or does not parse, naming the file.
    """
    path = Path(out_dir) / RECORDS
    try:
        frame = pd.read_csv(path, dtype={"checksum": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a records file smallbig can read: {exc}") from exc
    for name in _ADDED:
        if name not in frame.columns:
            frame[name] = float("nan")
    missing = [f for f in FIELDS if f not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a records file smallbig can read: no {missing}")
    # CSV keeps no difference between "" and missing: a point that did not fail reads "".
    for name in ("failure", "fidelity"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), "")
    return frame


def is_unfaithful(records: pd.DataFrame) -> pd.Series:
    """Which rows were measured where a scale model's CPU quotas did not hold."""
    if "fidelity" not in records:
        return pd.Series(False, index=records.index)
    return records["fidelity"].astype(str).str.startswith("unfaithful")


def metadata(
    backend_info: dict[str, Any] | None = None, workloads: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Machine and software facts attached to every run (as pyperf does), with what each
    backend and workload is (the cost model reads the workloads' traits from here)."""
    import psutil

    from smallbig.backends.base import engine_version
    from smallbig.backends.emulation.cpugroups import current

    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        # A scale model's laptop: the CPU quota this run was held to (None: every core).
        "cpu_quota": current(),
        "memory_bytes": psutil.virtual_memory().total,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {
            m: engine_version(m)
            for m in ("numpy", "pandas", "pillow", "numba", "distributed", "ray", "joblib",
                      "pyspark")
        },
        "git_revision": _git_revision(),
        "backends": backend_info or {},
        "workloads": workloads or {},
    }


def write_metadata(out_dir: Path, meta: dict[str, Any]) -> None:
    write_json(Path(out_dir) / METADATA, meta)


def read_metadata(out_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run directory."""
    return read_json(Path(out_dir) / METADATA)


def clear_run(out_dir: str | Path) -> None:
    """Remove what an earlier run wrote into ``out_dir`` (its run.json lists its figures),
    so that a new run's folder holds nothing of the old one's."""
    out = Path(out_dir)
    try:
        owned = read_metadata(out).get("outputs", [])
    except (FileNotFoundError, ValueError):
        owned = []
    # By name inside out_dir: the folder may have been moved since.
    for name in [Path(p).name for p in owned] + [METADATA, RECORDS, "calibration.json"]:
        (out / name).unlink(missing_ok=True)


def add_outputs(out_dir: str | Path, paths: list[Path]) -> None:
    """List ``paths`` (absolute) in run.json as files this run owns, one entry per name: a
    folder moved or copied since keeps its figures' old paths, which the new ones replace (a
    copied folder's report showed every figure twice)."""
    meta = read_metadata(out_dir)
    owned = {Path(p).name: p for p in meta.get("outputs", [])}
    owned.update({Path(p).name: str(Path(p).resolve()) for p in paths})
    meta["outputs"] = sorted(owned.values())
    write_metadata(Path(out_dir), meta)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON atomically: a kill mid-write leaves the old file or the new one,
    never half of one (a temporary file beside it, then an atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str | Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object from ``path`` that has ``keys``; a clear error naming the file if not.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is empty, not JSON, not an object or lacks one of ``keys``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): delete it or measure again") from exc
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(
            f"{path} is not a file smallbig wrote (it needs {list(keys) or 'a JSON object'}): "
            "delete it or measure again"
        )
    return data


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
