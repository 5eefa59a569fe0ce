"""One executor protocol over serial code, threads, processes, asyncio, Dask and Ray.

>>> from backends import get_backend
>>> with get_backend("threads", workers=4) as ex:
...     list(ex.map(abs, [-1, -2], chunksize="auto"))
[1, 2]
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from backends.base import Backend

__all__ = ["BACKENDS", "Backend", "available", "backend_class", "get_backend", "parse_spec"]

#: name -> (module, class, engine module that must be importable, pip extra). Optional engines
#: are imported only when asked for, as joblib registers its Dask backend lazily.
BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "serial": ("backends.serial", "SerialBackend", None, None),
    "threads": ("backends.threads", "ThreadsBackend", None, None),
    "processes": ("backends.processes", "ProcessesBackend", None, None),
    "asyncio": ("backends.asyncio_backend", "AsyncioBackend", None, None),
    "dask": ("backends.dask_backend", "DaskBackend", "distributed", "dask"),
    "ray": ("backends.ray_backend", "RayBackend", "ray", "ray"),
}


def available() -> list[str]:
    """Names of the backends whose engine is installed, in registry order."""
    return [name for name, (*_, engine, _extra) in BACKENDS.items() if _installed(engine)]


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
    module, cls, engine, extra = BACKENDS[name]
    if not _installed(engine):
        raise ImportError(
            f"backend {name!r} needs the {engine!r} package: pip install 'smallbig[{extra}]'"
        )
    return getattr(importlib.import_module(module), cls)


def get_backend(spec: str, *, workers: int | None = None, **options: Any) -> Backend:
    """Start a backend by spec.

    Parameters
    ----------
    spec : str
        ``NAME`` (see :data:`BACKENDS`) or ``NAME@ADDRESS`` to use an existing Dask scheduler
        (``dask@tcp://host:8786``) or Ray cluster (``ray@host:6379``).
    workers : int, optional
        Parallel workers (> 0); each backend has its own default.
    **options
        Backend-specific keyword options; an unknown one raises ``TypeError`` naming it.

    Returns
    -------
    Backend
        A running ``concurrent.futures.Executor``; use it in a ``with`` block or call
        ``shutdown()``.
    """
    name, address = parse_spec(spec)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)):
        raise ValueError(f"workers must be an integer greater than 0, got {workers!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be an integer greater than 0, got {workers!r}")
    cls = backend_class(name)
    if address is not None:
        if not cls.accepts_address:
            raise ValueError(f"backend {name!r} runs locally and takes no address (got {spec!r})")
        options["address"] = address
    unknown = sorted(set(options) - _accepted_options(cls))
    if unknown:
        raise TypeError(f"backend {name!r} got unknown option(s) {unknown}")
    return cls(workers=workers, **options)


def _accepted_options(cls: type[Backend]) -> set[str]:
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in ("self", "workers")}


def _installed(engine: str | None) -> bool:
    return engine is None or importlib.util.find_spec(engine) is not None
