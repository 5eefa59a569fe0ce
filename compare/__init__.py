"""smallbig: when does a thread pool, a process pool, Dask, Ray or Spark pay off, and from what
data size? Run the comparison, fit the cost model, advise — from Python as from the CLI.

Example::

    import smallbig
    records = smallbig.run(["noop"], ["serial", "threads"], sizes=[10, 100], out_dir="out").records
    profile = smallbig.overhead(["serial", "threads"])
    best = smallbig.advise(profile, items=10_000, item_s=0.002)[0].backend

Your own function, measured on a sample of your items::

    task = smallbig.profile_task(my_function, my_items[:17])
    best = smallbig.advise(profile, items=len(my_items), task=task)[0].backend
    result = smallbig.run(task=my_function, items=my_items, out_dir="mine")
    result.records, result.metadata, result.calibration

How a run's data flows (each box a package; a package imports only those above it)::

    smallbig run / smallbig.run()           cli            parses, calls, prints
            |
            v
    running.plan -> running.runner          running        points, in turns; Ctrl-C safe
            |  uses backends.get_backend(spec)   backends   one Executor per engine
            |  on workloads.<name>.items          workloads  images, api, probes, yours
            v
    out/records.csv, out/run.json           results        a row per point, on disk at once
            |
            v
    model.calibrate -> calibration.json     model          start-up, per task, bytes/s
    model.taskprofile (your function)                       what one item costs
    model.costmodel.predict -> Prediction                   time, memory, crossovers
            |
            v
    present.answer / report / plots         present        the answer block, report.html, PNGs

``bench`` measures the model against what it predicts (figures, not tests). ``backends`` and
``workloads`` know nothing of each other nor of the rest; ``backends.emulation`` holds the
harness of emulated clusters (namespaces, shaped links, CPU groups, fidelity).

Names are imported on first use (PEP 562), so that a worker importing
``smallbig.workloads.tasks`` or ``smallbig.backends`` loads neither pandas nor rich.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public API: name -> "module:attribute", imported when first asked for.
_API = {
    "run": "smallbig.running.runner:run",
    "RunResult": "smallbig.running.runner:RunResult",
    "overhead": "smallbig.model.calibrate:overhead",
    "load_profile": "smallbig.model.calibrate:load_profile",
    "advise": "smallbig.model.costmodel:predict",
    "Prediction": "smallbig.model.costmodel:Prediction",
    "profile_task": "smallbig.model.taskprofile:profile_task",
    "TaskProfile": "smallbig.model.taskprofile:TaskProfile",
    "break_even": "smallbig.model.fits:break_even",
    "fit_all": "smallbig.model.fits:fit_all",
    "thresholds": "smallbig.model.fits:thresholds",
    "load_records": "smallbig.results.records:load_records",
    "get_backend": "smallbig.backends:get_backend",
    "available": "smallbig.backends:available",
    "Backend": "smallbig.backends.base:Backend",
}

__all__ = [
    "Backend",
    "Prediction",
    "RunResult",
    "TaskProfile",
    "advise",
    "available",
    "break_even",
    "fit_all",
    "get_backend",
    "load_profile",
    "load_records",
    "overhead",
    "profile_task",
    "run",
    "thresholds",
]

if TYPE_CHECKING:
    from smallbig.backends import available, get_backend
    from smallbig.backends.base import Backend
    from smallbig.model.calibrate import load_profile, overhead
    from smallbig.model.costmodel import Prediction
    from smallbig.model.costmodel import predict as advise
    from smallbig.model.fits import break_even, fit_all, thresholds
    from smallbig.model.taskprofile import TaskProfile, profile_task
    from smallbig.results.records import load_records
    from smallbig.running.runner import RunResult, run


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _API[name].split(":")
    except KeyError:
        raise AttributeError(f"module 'smallbig' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next look-up is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
