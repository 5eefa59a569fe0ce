"""Run the comparison, fit the cost model, advise — from Python as from the CLI.

Example::

    import compare
    records = compare.run(["noop"], ["serial", "threads"], sizes=[10, 100], out_dir="out").records
    profile = compare.overhead(["serial", "threads"])
    best = compare.advise(profile, items=10_000, item_s=0.002)[0].backend

Your own function, measured on a sample of your items::

    task = compare.profile_task(my_function, my_items[:17])
    best = compare.advise(profile, items=len(my_items), task=task)[0].backend
    result = compare.run(task=my_function, items=my_items, out_dir="mine")
    result.records, result.metadata, result.calibration
"""

from compare.calibrate import load_profile, overhead
from compare.costmodel import predict as advise
from compare.fits import break_even, fit_all, thresholds
from compare.records import load_records
from compare.runner import run
from compare.taskprofile import TaskProfile, profile_task

__all__ = [
    "TaskProfile",
    "advise",
    "break_even",
    "fit_all",
    "load_profile",
    "load_records",
    "overhead",
    "profile_task",
    "run",
    "thresholds",
]
