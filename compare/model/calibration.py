"""A calibration, typed: what ``smallbig overhead`` and a run measured of each backend, as frozen
dataclasses with a schema version (pyperf's ``Run``/``Benchmark`` are the model), and one
loader that names what it cannot read.

On disk a calibration is JSON (``calibration.json``): ``{"schema": 1, "cpu_count": …,
"memory_bytes": …, "measured_at": …, "backends": {NAME: {…}, …}}``; files written before the
schema was recorded are version 1. The cost model reads a :class:`Calibration`, never the
dict's keys: a term the file lacks gets its default here, in one place, with its meaning.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The calibration format this code writes and the newest it reads.
SCHEMA = 1


@dataclass(frozen=True)
class Scaling:
    """A cluster backend's costs measured at one worker count (the calibration measures two,
    and the model draws a line through them: :func:`smallbig.model.costmodel.at_workers`).
    A term measured by a later version of the calibration is ``None`` in an older file."""

    workers: int
    startup_s: float | None = None
    task_overhead_s: float | None = None
    map_fixed_s: float | None = None


@dataclass(frozen=True)
class BackendCalibration:
    """One backend, as calibrated on this machine (see docs/model.md for how each is measured).

    The first four are measured on every backend, the next two on every backend that ships
    its tasks' bytes (not in-process); the rest have the default that a backend without the
    property, or a calibration from before the term was measured, stands for.
    """

    backend: str
    workers: int
    startup_s: float  # start, first task, shut down (median over the starts kept)
    auto_overhead_s: float  # per item of a map at chunksize="auto"
    alpha_value_s: float | None = None  # per task of a submit round trip, before its bytes
    beta_value_Bps: float | None = None  # bytes per second of one payload at a time
    task_overhead_s: float = 0.0  # per task of a map at chunksize=1
    threads: int | None = None  # threads of an in-process backend's pool
    cores: float | None = None  # the cores it ran on (a scale model's quota, if any)
    coroutines: bool = False  # awaits coroutine functions on an event loop
    in_process: bool = False  # its tasks run in this process (nothing is shipped)
    distributed: bool = False  # a cluster: a scheduler and workers of its own
    reuse_s: float | None = None  # getting a running pool back (joblib's reusable one)
    argument_links: int = 1  # links an argument crosses (Dask's: driver, scheduler, worker)
    serial_dispatch_rounds: int = 0  # rounds a central scheduler hands out one by one
    auto_partitions_per_worker: int | None = None  # a map is one job of this many (Spark)
    put_copies: str = "machine"  # where a put object is copied: machine, node or worker
    put_holders: int = 1  # copies a put object has once every worker ran a task on it
    inner_threads: int | None = None  # the native pools' cap in each task (None: uncapped)
    returns_freed_memory: bool = False  # its workers' allocator unmaps freed blocks at once
    driver_rss_bytes: float = 0.0  # this process's memory with the backend up
    idle_rss_bytes: float = 0.0  # its own processes' memory at rest
    worker_rss_bytes: float = 0.0  # one worker's memory at rest
    map_fixed_s: float = 0.0  # a warm map's cost whatever its items (cluster backends)
    beta_map_Bps: float | None = None  # argument bytes per second through a map (pipelined)
    beta_result_Bps: float | None = None  # result bytes per second through a map
    alpha_put_s: float = 0.0  # a put's round trip
    beta_put_Bps: float | None = None  # bytes per second of a put
    fit_error_value: float | None = None  # relative error of the payload line's fit
    fit_error_put: float | None = None  # of the put line's
    startup_spread_s: tuple[float, float] | None = None  # least and most of the starts kept
    startup_starts: int = 0  # how many starts those are
    by_workers: tuple[Scaling, ...] = ()  # costs at two worker counts (cluster backends)

    @property
    def slots(self) -> int:
        """Items it runs at once: an in-process backend's threads, else its workers."""
        return (self.threads or self.workers) if self.in_process else self.workers


@dataclass(frozen=True)
class Calibration:
    """Every backend calibrated on one machine, and that machine's facts."""

    backends: Mapping[str, BackendCalibration]
    cpu_count: float | None = None  # the cores of the machine (of its quota, under one)
    memory_bytes: float | None = None  # its memory
    measured_at: str | None = None
    schema: int = SCHEMA
    extra: Mapping[str, Any] = field(default_factory=dict)  # other keys, kept as they were


def read_calibration(source: Mapping[str, Any] | Calibration, where: str = "calibration") -> (
    Calibration
):
    """A :class:`Calibration` from its JSON form (or itself).

    Parameters
    ----------
    source : mapping or Calibration
        What :func:`smallbig.overhead` returns, or a ``calibration.json`` read as JSON.
    where : str
        Named in errors: the file it came from.

    Raises
    ------
    ValueError
        Naming ``where``, the backend and the term: a schema newer than this code reads, no
        backend, a measured term missing, or a term of the wrong kind.
    """
    if isinstance(source, Calibration):
        return source
    if not isinstance(source, Mapping) or not isinstance(source.get("backends"), Mapping):
        raise ValueError(
            f"{where} must be a calibration: a dict with 'backends' (smallbig.overhead)"
        )
    schema = source.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA:
        raise ValueError(
            f"{where} has calibration schema {schema!r}; this smallbig reads up to {SCHEMA}: "
            "upgrade smallbig, or measure again with this one"
        )
    if not source["backends"]:
        raise ValueError(f"{where} holds no backend's figures: delete it or measure again")
    backends = {
        name: _backend(name, row, f"{where}, backend {name!r}")
        for name, row in source["backends"].items()
    }
    top = {f.name for f in dataclasses.fields(Calibration)}
    return Calibration(
        backends=types.MappingProxyType(backends),
        cpu_count=_value("cpu_count", source.get("cpu_count"), float | None, where),
        memory_bytes=_value("memory_bytes", source.get("memory_bytes"), float | None, where),
        measured_at=_value("measured_at", source.get("measured_at"), str | None, where),
        schema=schema,
        extra={k: v for k, v in source.items() if k not in top},
    )


def _backend(name: str, row: Any, where: str) -> BackendCalibration:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected an object of figures, got {type(row).__name__}")
    hints = _hints(BackendCalibration)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(BackendCalibration):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in row or (row[f.name] is None and not _optional(hints[f.name])):
            if f.name == "backend":
                values["backend"] = name
            elif required:
                raise ValueError(f"{where}: the term {f.name!r} is missing: measure again")
            continue
        if f.name == "by_workers":
            values[f.name] = tuple(_scaling(p, f"{where}, by_workers") for p in row[f.name])
        elif f.name == "startup_spread_s":
            spread = row[f.name]
            if not isinstance(spread, list | tuple) or len(spread) != 2:
                raise ValueError(f"{where}: startup_spread_s must be [least, most]")
            values[f.name] = tuple(_value(f.name, s, float, where) for s in spread)
        else:
            values[f.name] = _value(f.name, row[f.name], hints[f.name], where)
    if not values.get("in_process"):
        for term in ("alpha_value_s", "beta_value_Bps"):
            if values.get(term) is None:
                raise ValueError(f"{where}: the term {term!r} is missing: measure again")
    return BackendCalibration(**values)


def _scaling(point: Any, where: str) -> Scaling:
    if not isinstance(point, Mapping) or "workers" not in point:
        raise ValueError(f"{where}: each point needs its 'workers'")
    hints = _hints(Scaling)
    values = {
        f.name: _value(f.name, point[f.name], hints[f.name], where)
        for f in dataclasses.fields(Scaling)
        if f.name in point
    }
    return Scaling(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolved once per class: resolving them on every read was 9.4 s of the 10.2 s the phase
    # diagram's 7,200 predictions took (two grids of 3,600, each reading its calibration).
    return typing.get_type_hints(cls)


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _value(name: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` as the kind ``hint`` names (a JSON number for a float, an int for a count)."""
    kinds = [k for k in (typing.get_args(hint) or (hint,)) if k is not type(None)]
    if value is None:
        if _optional(hint):
            return None
        raise ValueError(f"{where}: {name} is null, expected {kinds[0].__name__}")
    kind = kinds[0]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool):
        return value
    # Infinity is a rate nothing limits (Python's JSON writes it); NaN a term that did not fit,
    # read as such only where the term may be absent.
    if kind is float and number and not (math.isnan(value) and not _optional(hint)):
        return float(value)
    if kind is int and number and float(value).is_integer():
        return int(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{where}: {name} is {value!r}, expected {kind.__name__}")
