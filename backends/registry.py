"""Which backends exist, what each needs installed, and what each can do — without starting or
importing any engine (optional engines are imported only when asked for, as joblib registers
its Dask backend lazily)."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallbig.backends.base import Backend


@dataclass(frozen=True)
class Entry:
    """Where a backend's class lives and what it needs.

    Parameters
    ----------
    module, cls : str
        Import path of the class.
    engine : str, optional
        Module that must be importable (``None``: the standard library suffices); its version
        is the one ``info()`` reports.
    extra : str, optional
        The pip extra that installs ``engine``.
    default : bool
        Measured by a run or calibration that names no backends (:func:`default_backends`);
        otherwise only when named.
    requires : str, optional
        ``module:function`` that says, in one line, what else the engine needs and is
        missing (``None`` when nothing is): Spark's Java runtime, which pip cannot install.
    """

    module: str
    cls: str
    engine: str | None = None
    extra: str | None = None
    default: bool = True
    requires: str | None = None


#: name -> :class:`Entry`. Register your own backend by adding an entry: nothing in compare/
#: names backends, it reads their capabilities (:func:`capabilities`).
BACKENDS: dict[str, Entry] = {
    "serial": Entry("smallbig.backends.serial", "SerialBackend"),
    "threads": Entry("smallbig.backends.threads", "ThreadsBackend"),
    "processes": Entry("smallbig.backends.processes", "ProcessesBackend"),
    "asyncio": Entry("smallbig.backends.asyncio_backend", "AsyncioBackend"),
    "loky": Entry("smallbig.backends.loky_backend", "LokyBackend", "joblib", "joblib"),
    "dask": Entry("smallbig.backends.dask_backend", "DaskBackend", "distributed", "dask"),
    "ray": Entry("smallbig.backends.ray_backend", "RayBackend", "ray", "ray"),
    # Named, not by default: on 2 cores it took a first run from ~150 s to 279 s (its start
    # 5.5 s, 80 maps of at least 0.12 s each 28.8 s, its calibration 17-24 s, and 8 worker
    # JVMs for its growth with workers 35 s; docs/evidence.md).
    "spark": Entry(
        "smallbig.backends.spark_backend",
        "SparkBackend",
        "pyspark",
        "spark",
        default=False,
        requires="smallbig.backends.spark_launch:java_missing",
    ),
}

#: The capability flags a backend class declares (see :class:`smallbig.backends.base.Backend`).
CAPABILITIES = (
    "in_process",
    "distributed",
    "uses_threads",
    "supports_coroutines",
    "accepts_address",
    "listens_on_all_interfaces",
    "reusable",
)


def available() -> list[str]:
    """Names of the backends whose engine is installed, in registry order."""
    return [
        name for name, entry in BACKENDS.items() if _installed(entry.engine) and not missing(name)
    ]


def missing(name: str) -> str | None:
    """What the backend ``name`` needs beyond its pip extra and lacks, in one line; ``None``
    when nothing is missing."""
    entry = BACKENDS[name]
    if entry.requires is None:
        return None
    module, _, function = entry.requires.partition(":")
    return getattr(importlib.import_module(module), function)()


def default_backends() -> list[str]:
    """The installed backends a run or calibration measures when none are named."""
    return [name for name in available() if BACKENDS[name].default]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"NAME"`` or ``"NAME@ADDRESS"`` into ``(name, address)``; validate the name."""
    name, sep, address = spec.partition("@")
    if name not in BACKENDS:
        raise ValueError(f"Invalid backend: {name!r}, expected one of {sorted(BACKENDS)}")
    if sep and not address:
        raise ValueError(f"empty address in backend spec {spec!r}")
    return name, address or None


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``; ``ImportError`` names the extra if missing."""
    name, _ = parse_spec(name)
    entry = BACKENDS[name]
    if not _installed(entry.engine):
        raise ImportError(
            f"backend {name!r} needs the {entry.engine!r} package: "
            f"pip install 'smallbig[{entry.extra}]'"
        )
    lacking = missing(name)
    if lacking:
        raise ImportError(lacking)
    return getattr(importlib.import_module(entry.module), entry.cls)


def capabilities(spec: str) -> dict[str, Any]:
    """What the backend ``spec`` names can do, from its class: :data:`CAPABILITIES`, with
    ``distributed`` true for any cluster given by address."""
    name, address = parse_spec(spec)
    cls = backend_class(name)
    found = {flag: getattr(cls, flag) for flag in CAPABILITIES}
    found["distributed"] = found["distributed"] or address is not None
    return found


def is_cluster(spec: str, info: dict[str, Any] | None = None) -> bool:
    """Whether ``spec`` runs on a cluster: from its recorded ``info()`` (``run.json``) if
    given, else from its class; a backend no longer registered counts as local."""
    if info is not None and "distributed" in info:
        return bool(info["distributed"]) or "@" in spec
    try:
        return capabilities(spec)["distributed"]
    except (ValueError, ImportError):
        return "@" in spec


def engine_of(backend: type | Any) -> str:
    """The engine module a backend class (or instance) is registered with (``"python"``)."""
    cls = backend if isinstance(backend, type) else type(backend)
    for entry in BACKENDS.values():
        if entry.module == cls.__module__ and entry.cls == cls.__name__:
            return entry.engine or "python"
    return "python"


def _installed(engine: str | None) -> bool:
    return engine is None or importlib.util.find_spec(engine) is not None
