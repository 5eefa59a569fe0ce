"""One executor protocol over serial code, threads, processes, asyncio, Dask, Ray and Spark.

>>> from smallbig.backends import get_backend
>>> with get_backend("threads", workers=4) as ex:
...     list(ex.map(abs, [-1, -2], chunksize="auto"))
[1, 2]
"""

from __future__ import annotations

from typing import Any

from smallbig.backends.base import Backend
from smallbig.backends.errors import EngineStartError
from smallbig.backends.registry import (
    BACKENDS,
    Entry,
    available,
    backend_class,
    capabilities,
    default_backends,
    is_cluster,
    parse_spec,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "EngineStartError",
    "Entry",
    "available",
    "backend_class",
    "capabilities",
    "default_backends",
    "get_backend",
    "is_cluster",
    "parse_spec",
]


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
