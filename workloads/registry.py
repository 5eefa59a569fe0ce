"""The built-in workloads by name, each opened with what it needs (the API workload its own
HTTP server on loopback), and the sizes a default run measures them at."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from smallbig.workloads.base import Workload

API_LATENCY_S = 0.005
SLEEP_S = 0.005  # per sleep item: like the API's latency, a wait that threads and asyncio hide
# Three orders of magnitude each, sized so that the default run fits in ~3 minutes on 2 cores.
# Five sizes per workload, about half a decade apart: a held-out size then sits between
# measured ones, and the fits see the curve's shape, not only its ends.
DEFAULT_SIZES = {
    "images": [1, 3, 10, 30, 100],
    "api": [4, 13, 40, 130, 400],
    "noop": [10, 100, 1000, 3000, 10000],
    "sleep": [2, 6, 20, 60, 200],
}


@contextlib.contextmanager
def _images(image_dir: str | None, ship_bytes: bool = False) -> Iterator[Workload]:
    from smallbig.workloads.images import images_workload

    yield images_workload(image_dir, ship_bytes=ship_bytes)


@contextlib.contextmanager
def _api(_image_dir: str | None, ship_bytes: bool = False) -> Iterator[Workload]:
    from smallbig.workloads.api import api_workload
    from smallbig.workloads.weather_server import Faults, serve_api_process

    with serve_api_process(Faults(latency_s=API_LATENCY_S)) as server:
        yield api_workload(server.url)


def _probe(name: str) -> Callable[[str | None], contextlib.AbstractContextManager[Workload]]:
    @contextlib.contextmanager
    def opened(_image_dir: str | None, ship_bytes: bool = False) -> Iterator[Workload]:
        from smallbig.workloads.probes import probe_workloads

        yield probe_workloads(sleep_s=SLEEP_S)[name]

    return opened


#: name -> ``opener(image_dir, ship_bytes)``, a context manager yielding the workload
#: (``ship_bytes``: items carry their files' bytes, for workers without the driver's files).
OPENERS: dict[str, Callable[[str | None, bool], Any]] = {
    "images": _images,
    "api": _api,
    "noop": _probe("noop"),
    "sleep": _probe("sleep"),
}
WORKLOADS = tuple(OPENERS)


@contextlib.contextmanager
def open_workloads(
    names: Sequence[str],
    image_dir: str | None = None,
    given: Sequence[Workload] = (),
    ship_bytes: bool = False,
) -> Iterator[dict[str, Workload]]:
    """The workloads ``names`` (and the ``given`` ones) by name, open for the ``with`` block;
    what they started (the API's server) stops at its end."""
    with contextlib.ExitStack() as stack:
        found: dict[str, Workload] = {w.name: w for w in given}
        for name in names:
            if name not in found:
                if name not in OPENERS:
                    raise ValueError(f"unknown workload {name!r}, expected one of {list(OPENERS)}")
                found[name] = stack.enter_context(OPENERS[name](image_dir, ship_bytes))
        yield found
