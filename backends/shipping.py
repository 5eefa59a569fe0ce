"""How a function reaches worker processes: by reference where they can import it, else by value.

A worker process imports what a fresh interpreter of this environment finds: the standard
library, site-packages, installed (editable included) packages and ``PYTHONPATH``. What the
driver found only through its own ``sys.path`` (``sys.path.insert(0, "../src")`` in a notebook,
pytest's rootdir, the current directory) is not there, nor is ``__main__`` or a notebook cell.
Nor is what an import hook of the driver alone finds (pytest's assertion rewriter, IPython's):
only the finders a fresh interpreter installs too (editable installs' ``.pth`` ones) count.
Pools the driver spawns itself (multiprocessing, loky, Dask's nanny) start their workers with
the driver's ``sys.path``: for them, that path is asked instead.

So the decision is made from where each module's file lies, not from its name: the function
is pickled once with a pickler that notes every module it refers to; if all of them are
importable by a fresh interpreter from the same file, the function travels by reference (the
engine pickles it as it always does). Otherwise it travels by value: cloudpickle, with every
such module registered by value for that one dump, so that the module-level helpers it calls
travel with it. A worker unpickles a by-value function once and keeps it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

# The importers of the interpreter itself, and the path finder whose path we give explicitly.
_STANDARD_FINDERS = (
    importlib.machinery.BuiltinImporter,
    importlib.machinery.FrozenImporter,
    importlib.machinery.PathFinder,
)
# Where a module's spec says it came from when no file holds it.
_NO_FILE = ("built-in", "frozen")
_MAINS = ("__main__", "__mp_main__")


_ASK_FRESH = (
    "import json, sys\n"
    "finders = [f if isinstance(f, type) else type(f) for f in sys.meta_path]\n"
    "print(json.dumps({'path': sys.path[1:],"
    " 'finders': [f'{f.__module__}.{f.__qualname__}' for f in finders]}))"
)


@functools.cache
def _fresh_interpreter() -> dict[str, list[str]]:
    # One subprocess per driver, run outside any project folder (the first entry of its path,
    # the current directory of ``-c``, is dropped): what a worker starts with.
    with tempfile.TemporaryDirectory(prefix="smallbig-path-") as empty:
        out = subprocess.run(
            [sys.executable, "-c", _ASK_FRESH],
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    return json.loads(out)


def fresh_path() -> tuple[str, ...]:
    """``sys.path`` of a fresh interpreter of this environment, run outside any project folder
    (its first entry, the current directory of ``-c``, dropped): what a worker imports from."""
    return tuple(p for p in _fresh_interpreter()["path"] if p)


def _fresh_finder(finder: Any) -> bool:
    """Whether a fresh interpreter installs ``finder``'s kind too (an editable install's, set
    up by its ``.pth`` file), unlike import hooks of this process alone: pytest's assertion
    rewriter, IPython's, a notebook's or a user's, which find modules no worker can import."""
    kind = finder if isinstance(finder, type) else type(finder)
    return f"{kind.__module__}.{kind.__qualname__}" in _fresh_interpreter()["finders"]


def _same_place(spec: Any, module: types.ModuleType) -> bool:
    """Whether ``spec`` (found afresh) loads the file (or folders) ``module`` came from."""
    if spec is None:
        return False
    here = getattr(module, "__file__", None)
    if here is not None and spec.origin not in (None, "namespace"):
        return os.path.realpath(spec.origin) == os.path.realpath(here)
    found = {os.path.realpath(p) for p in (spec.submodule_search_locations or ())}
    ours = {os.path.realpath(p) for p in getattr(module, "__path__", ())}
    return bool(ours) and ours <= found


@functools.lru_cache(maxsize=4096)
def _top_importable(top: str, file: str | None, path: tuple[str, ...]) -> bool:
    # ``file`` is part of the key: a module of the same name loaded from elsewhere is asked anew.
    module = sys.modules.get(top)
    if module is None:
        return False
    spec = getattr(module, "__spec__", None)
    if top in sys.builtin_module_names or (spec is not None and spec.origin in _NO_FILE):
        return True  # compiled into the interpreter, or frozen in it
    if spec is None:
        return False  # made at run time (types.ModuleType): nowhere to import it from
    if _same_place(importlib.machinery.PathFinder.find_spec(top, list(path)), module):
        return True
    # Installed packages' own finders (an editable install's), set up by .pth files at start.
    for finder in sys.meta_path:
        if isinstance(finder, type) and issubclass(finder, _STANDARD_FINDERS):
            continue
        if not _fresh_finder(finder):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            found = find(top, None)
        except Exception:
            continue
        if _same_place(found, module):
            return True
    return False


def refresh() -> None:
    """Forget what was learnt of the workers' path: call it after changing ``PYTHONPATH``."""
    _fresh_interpreter.cache_clear()
    _top_importable.cache_clear()


def _workers_path(driver_path: bool) -> tuple[str, ...]:
    return tuple(sys.path) if driver_path else fresh_path()


def importable_by_workers(module_name: str, driver_path: bool = False) -> bool:
    """Whether a worker imports the loaded module ``module_name`` from the file the driver
    loaded it from (``__main__`` never: a worker's ``__main__`` is its own).

    ``driver_path``: the workers start with this process's ``sys.path`` (pools it spawns:
    multiprocessing, loky and Dask's nanny pass it on); otherwise they are fresh interpreters
    of this environment (Ray's workers, a cluster's started on their own).
    """
    if module_name in _MAINS or not module_name:
        return False
    top = module_name.partition(".")[0]
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None) if module else None
    return _top_importable(top, file, _workers_path(driver_path))


class _ModuleNoter(cloudpickle.Pickler):
    """cloudpickle's pickler, noting the module of every function, class and module it meets."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            self.modules.add(obj.__name__)
        elif isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        return super().reducer_override(obj)


def _dump(obj: Any) -> tuple[bytes, set[str]]:
    buffer = io.BytesIO()
    noter = _ModuleNoter(buffer)
    noter.dump(obj)
    return buffer.getvalue(), noter.modules


def _not_importable(modules: set[str], driver_path: bool = False) -> set[str]:
    # __main__ is cloudpickle's by value already; a name not loaded is no module of ours.
    return {
        m
        for m in modules
        if m not in _MAINS and m in sys.modules and not importable_by_workers(m, driver_path)
    }


# cloudpickle's by-value registry is process-wide: registrations are made and undone under
# this lock, for the length of one dump.
_REGISTRY_LOCK = threading.Lock()


def _dump_by_value(fn: Any, modules: set[str], driver_path: bool) -> bytes:
    tops = {m.partition(".")[0] for m in modules}
    with _REGISTRY_LOCK:
        registered: list[str] = []
        try:
            # Helpers of a by-value module may live in yet another such module: a few rounds
            # until no new one appears.
            for _ in range(8):
                already = cloudpickle.list_registry_pickle_by_value()
                for top in sorted(tops - set(registered) - already):
                    if top in sys.modules:
                        cloudpickle.register_pickle_by_value(sys.modules[top])
                        registered.append(top)
                payload, seen = _dump(fn)
                more = {m.partition(".")[0] for m in _not_importable(seen, driver_path)} - tops
                if not more:
                    return payload
                tops |= more
            return payload
        finally:
            for top in registered:
                cloudpickle.unregister_pickle_by_value(sys.modules[top])


def by_reference(fn: Callable[..., Any], driver_path: bool = False) -> bool:
    """Whether ``fn`` can travel to a worker by reference (see the module's docstring and
    :func:`importable_by_workers` for ``driver_path``)."""
    try:
        pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False  # a lambda, a local function
    try:
        _, modules = _dump(fn)
    except Exception:
        return True  # let the engine report what cannot be pickled
    return not any(m in _MAINS for m in modules) and not _not_importable(modules, driver_path)


def portable(fn: Callable[..., Any], driver_path: bool = False) -> Callable[..., Any]:
    """``fn`` itself if workers can import it, else a :class:`ByValue` of it."""
    if isinstance(fn, ByValue) or by_reference(fn, driver_path):
        return fn
    _, modules = _dump(fn)
    return ByValue(_dump_by_value(fn, _not_importable(modules, driver_path), driver_path))


_LOADED: dict[str, Any] = {}


class ByValue:
    """A callable shipped by value; each worker unpickles it once (by its digest) and keeps it."""

    __slots__ = ("__weakref__", "key", "payload")

    def __init__(self, payload: bytes, key: str | None = None) -> None:
        self.payload = payload
        self.key = key or hashlib.sha1(payload).hexdigest()

    def __reduce__(self) -> tuple:
        return (ByValue, (self.payload, self.key))

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        # ``self`` is positional-only: a task's own keyword named ``self`` reaches the task.
        fn = _LOADED.get(self.key)
        if fn is None:
            fn = _LOADED[self.key] = cloudpickle.loads(self.payload)
        return fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ByValue({len(self.payload)} bytes, {self.key[:8]})"
