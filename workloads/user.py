"""The user's own task as a workload: a function named ``package.module:function`` and items
read from a SOURCE (a folder, a glob, a JSON-lines or CSV file, or ``range:N``).

Every backend decides how the function reaches its workers (``smallbig.backends.shipping``): by
reference where a fresh interpreter imports its module from the same file, by value otherwise
(``__main__``, a notebook, a module found only through the driver's own ``sys.path`` or the
current directory).
"""

from __future__ import annotations

import asyncio
import csv
import glob
import hashlib
import importlib
import importlib.machinery
import inspect
import json
import math
import os
import pickle
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from smallbig.workloads.base import Workload


def load_task(spec: str) -> Callable[..., Any]:
    """Import ``package.module:function``; the current directory is searched first.

    As ``python -m`` does, the current directory goes on ``sys.path`` so that a module beside
    the user's data (not installed) is found; its functions then travel to workers by value.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--task must look like package.module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of task {spec!r}: {exc}") from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            names = sorted(n for n in vars(module) if not n.startswith("_"))
            raise ValueError(
                f"module {module_name!r} has no {attr!r} (task {spec!r}); it has {names}"
            )
    if not callable(fn):
        raise ValueError(f"task {spec!r} is not callable: {type(fn).__name__}")
    return fn


def read_items(source: str) -> list[Any]:
    """The items a SOURCE names, in a stable order.

    ``range:N`` gives 0..N-1; a folder gives its files (not hidden, sorted) and a glob its
    matching files, each as a path string; a ``.jsonl``/``.ndjson`` file gives one JSON value
    per line and a ``.csv`` file one dict per row (values as strings).
    """
    if source.startswith("range:"):
        count = source.removeprefix("range:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"range SOURCE must be range:N with N ≥ 1, got {source!r}")
        return list(range(int(count)))
    path = Path(source)
    if path.is_dir():
        items = [str(p) for p in sorted(path.iterdir()) if p.is_file() and p.name[0] != "."]
    elif glob.has_magic(source):
        items = [p for p in sorted(glob.glob(source, recursive=True)) if os.path.isfile(p)]
    elif path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
        items = _json_lines(path)
    elif path.is_file() and path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            items = list(csv.DictReader(f))
    elif path.exists():
        raise ValueError(
            f"items SOURCE {source!r} must be a folder, a glob, a .jsonl or .csv file, or range:N"
        )
    else:
        raise ValueError(f"items SOURCE {source!r} does not exist (nor is it a glob or range:N)")
    if not items:
        raise ValueError(f"items SOURCE {source!r} holds no items")
    return items


def _json_lines(path: Path) -> list[Any]:
    items = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
    return items


def takes_kwargs(fn: Callable[..., Any], items: Sequence[Any]) -> bool:
    """Whether each item is ``fn``'s keyword arguments rather than its one argument.

    Yes when every item is a dict and every key names a parameter of ``fn`` (or ``fn`` takes
    ``**kwargs``): a CSV row ``{"city": ..., "day": ...}`` for ``def forecast(city, day)``.
    """
    if not items or not all(isinstance(item, dict) for item in items[:100]):
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    keys = set().union(*(item.keys() for item in items[:100]))
    return bool(keys) and keys <= names


class UserCall:
    """The user's function as a task of one item: ``fn(item)``, or ``fn(**item)``.

    A coroutine function is run to completion on a loop kept per thread (the synchronous
    backends' way to call it; the asyncio backend awaits :attr:`fn` itself).
    """

    def __init__(self, fn: Callable[..., Any], kwargs: bool = False) -> None:
        self.fn, self.kwargs = fn, kwargs
        self.coroutine = inspect.iscoroutinefunction(fn)

    def __call__(self, item: Any) -> Any:
        if self.coroutine:
            return _thread_loop().run_until_complete(self.call_async(item))
        return self.fn(**item) if self.kwargs else self.fn(item)

    async def call_async(self, item: Any) -> Any:
        """Await the coroutine function on ``item``."""
        return await (self.fn(**item) if self.kwargs else self.fn(item))


def call_item(fn: Callable[..., Any], kwargs: bool = False) -> UserCall:
    """``fn`` as a task of one item (see :class:`UserCall`)."""
    return UserCall(fn, kwargs)


_loops = threading.local()


class _ThreadLoop:
    """A thread's event loop, closed when the thread ends (its local storage goes): a loop
    left open kept the weather API's client sessions, reported unclosed at exit."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        weakref.finalize(self, _close_loop, self.loop)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running():
        return
    try:
        # Resumes the suspended async generators (the session holders), which close.
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _thread_loop() -> asyncio.AbstractEventLoop:
    held = getattr(_loops, "held", None)
    if held is None or held.loop.is_closed():
        held = _loops.held = _ThreadLoop()
    return held.loop


def fingerprint(value: Any) -> Any:
    """A small JSON-able stand-in for a result, equal for equal answers.

    Floats keep 9 significant digits and arrays their shape, dtype and the sum of their
    absolute values to 6: BLAS rounds the last bits differently with another thread count,
    and serial (the libraries' own threads) is compared with capped workers.
    """
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, str) or len(value) <= 200 else _digest(value)
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.9g}")
    if isinstance(value, list | tuple):
        return [fingerprint(v) for v in value[:1000]] + ([len(value)] if len(value) > 1000 else [])
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in list(value.items())[:1000]}
    if isinstance(value, bytes | bytearray):
        return _digest(bytes(value))
    if hasattr(value, "__array__"):
        import numpy as np

        array = np.asarray(value)
        summary: list[Any] = [list(array.shape), str(array.dtype)]
        if array.dtype.kind in "biufc":
            summary.append(float(f"{float(np.abs(array).sum(dtype=np.float64)):.6g}"))
        else:
            summary.append(_digest(pickle.dumps(array.tolist())))
        return summary
    try:
        return [type(value).__qualname__, _digest(pickle.dumps(value))]
    except Exception:
        return type(value).__qualname__


def _digest(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:16]


def user_workload(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    name: str | None = None,
    kwargs: bool | None = None,
    releases_gil: bool = False,
) -> Workload:
    """The workload that maps ``fn`` over ``items``.

    ``prepare(n)`` takes the first ``n`` items (every backend sees the same ones), cycling
    over them when ``n`` is larger (as the images workload cycles over its files).
    ``kwargs`` (default: decided by :func:`takes_kwargs`) makes each item ``fn``'s keyword
    arguments. Results are compared across backends by :func:`fingerprint`.
    """
    items = list(items)
    if not items:
        raise ValueError("a task needs at least one item")
    if kwargs is None:
        kwargs = takes_kwargs(fn, items)
    call = UserCall(fn, kwargs)
    label = name or getattr(fn, "__name__", "task")

    def prepare(n: int, seed: int = 0) -> list[Any]:
        return [items[i % len(items)] for i in range(n)]

    return Workload(
        label,
        prepare,
        call,
        async_task=call.call_async if call.coroutine else None,
        releases_gil=releases_gil,
        params={
            "function": f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', label)}",
            "items": len(items),
            "kwargs": kwargs,
        },
        fingerprint=fingerprint,
    )


def default_sizes(available: int) -> list[int]:
    """Up to five sizes, about half a decade apart, ending at every item there is."""
    sizes = {available}
    n = available
    while len(sizes) < 5 and n > 1:
        n = max(1, round(n / 3.16))
        sizes.add(n)
    return sorted(sizes)
