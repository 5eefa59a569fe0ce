"""The worker side of :func:`smallbig.model.coldstart.first_call_s`, run as
``python -m smallbig.model.coldstart_worker`` in a fresh interpreter.

Reads the pickled ``(fn, items, kwargs)`` on stdin and prints the seconds of the first and
the last item as JSON. It imports what every worker has (smallbig's worker side) and nothing
more, so that the task's own imports are paid here as a worker pays them.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import time

# What every worker has imported before its first task: smallbig's worker side.
import smallbig.backends.lifeline  # noqa: F401
from smallbig.workloads.user import call_item


def main() -> int:
    """Time the items given on stdin; print ``{"first_s": …, "next_s": …}``."""
    blob = sys.stdin.buffer.read()
    start = time.perf_counter()
    fn, items, kwargs = pickle.loads(blob)  # the task's modules are imported here
    call = call_item(fn, kwargs)
    times = []
    for item in items:
        with contextlib.suppress(Exception):  # an item that raises still paid its imports
            call(item)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    print(json.dumps({"first_s": times[0], "next_s": times[-1] if len(times) > 1 else 0.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
