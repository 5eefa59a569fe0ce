"""``ray``: a local Ray runtime by default, or an existing Ray cluster by address.

Ray is started only if no Ray runtime is connected in this process, and shut down only by the
backend that started it. Ray's own processes listen on all network interfaces whatever node IP
is given (``info()["listens_on_all_interfaces"]``); nothing else of ours is widened.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import inspect
import itertools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from smallbig.backends.addresses import check_ray_head
from smallbig.backends.chunks import call
from smallbig.backends.cluster import ClusterBackend
from smallbig.backends.errors import EngineStartError
from smallbig.backends.futures import SettlerThread, linked_future, resolve, settle
from smallbig.backends.inner import Capped, InnerThreads, kept_env, own_thread_env
from smallbig.backends.lifeline import owned_temp_dir, start_reaper, stop_reaper
from smallbig.backends.memory import descendants
from smallbig.backends.shipping import ByValue


class RayBackend(ClusterBackend):
    """Ray backend.

    Parameters
    ----------
    workers : int, optional
        ``num_cpus`` of the local Ray runtime; defaults to the CPU count. With ``address``, or
        when Ray is already connected, ``workers`` reports the cluster's CPUs.
    address : str, optional
        ``HOST:PORT`` of an existing cluster's head (``ray start --head --port PORT``).
    connect_timeout : float
        Seconds to wait for the address to answer before failing.
    object_store_mb : int
        Object store size of a local runtime (Ray's default takes 30% of memory).
    inner_threads : int, "auto" or None
        Native pool threads per task (:mod:`smallbig.backends.inner`). Ray sets ``OMP_NUM_THREADS``
        to
        a task's ``num_cpus`` (1) in its workers. In a runtime this backend starts,
        ``"auto"`` caps every pool at ``cores // workers``; on a cluster given by address,
        ``"auto"`` leaves the cluster's own settings, and a number caps them.
    """

    name = "ray"
    listens_on_all_interfaces = True
    # Measured on an emulated cluster at 100 Mbit/s: 1 and 4 MB put once, tasks on 2 nodes:
    # 0.15 and 0.69 s more than tiny tasks, two copies' worth out of the driver's one link.
    put_copies = "node"

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        connect_timeout: float = 15.0,
        object_store_mb: int = 1024,
        inner_threads: InnerThreads = "auto",
    ) -> None:
        super().__init__(workers, inner_threads)
        # Must be set before Ray starts: no usage reporting from a benchmark tool.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self._ray = ray
        self._owns = False
        self._temp_dir: str | None = None
        self._reaper: subprocess.Popen | None = None
        before = descendants()
        start = time.perf_counter()
        # Memory: the processes ray.init starts here, or (a cluster by address, a runtime
        # someone else started) unknown: Ray's own figures need its state API and dashboard.
        self._own_roots = None
        if address is not None:
            check_ray_head(address, connect_timeout)
        if not ray.is_initialized():
            if address is None:
                self._cap_inner_threads(self.workers)
                # Under the system temp dir, and short: Ray's socket paths must fit 107 bytes.
                self._temp_dir = owned_temp_dir("smallbig-ray-")
                self._reaper = start_reaper(self._temp_dir)
                with (
                    _start_failure("Ray's local cluster"),
                    own_thread_env(),
                    kept_env(["RAY_TMPDIR"]),
                    _keep_sigterm_handler(),
                    self._cleanup_on_error(),
                ):
                    # Ray's documented variable, read as it starts its processes: their
                    # sockets, logs and spill files go under ours (ray.init's `_temp_dir` is
                    # one of its "hidden / experimental, may change without notice" options).
                    os.environ["RAY_TMPDIR"] = self._temp_dir
                    ray.init(
                        # A cluster of its own even where `ray start` left one running, or
                        # RAY_ADDRESS names one: without "local", ray.init joins that.
                        address="local",
                        num_cpus=self.workers,
                        include_dashboard=False,
                        object_store_memory=object_store_mb * 2**20,
                        logging_level=logging.ERROR,
                        # No runtime_env for the caps: it cost ~2 s more start-up. The first
                        # capped task sets them in each worker (smallbig.backends.inner).
                        log_to_driver=False,
                    )
                    _await_workers(ray, self.workers)
                self._claim_processes(before)
            else:
                with _keep_sigterm_handler(), kept_env(["RAY_AUTH_MODE"]):
                    ray.init(
                        address=address,
                        logging_level=logging.ERROR,
                        log_to_driver=False,
                        **_emulated_connection(address),
                    )
                    # A cluster starts a job's workers as its first tasks arrive, as
                    # ray.init does its own: connected, a first map still paid 1.7-1.9 s on
                    # two emulated nodes, and a cold prediction left it out (-66 to -96%).
                    _await_workers(ray, int(ray.cluster_resources().get("CPU", 1)))
            self._owns = True
        self.workers = int(ray.cluster_resources().get("CPU", self.workers))
        if self.inner_threads is None:
            self.inner_threads_by = "Ray (OMP_NUM_THREADS = a task's num_cpus, 1)"
            if inner_threads not in ("auto", None):
                self._cap_inner_threads(1)
        self.address = address or ray.get_runtime_context().gcs_address
        self.startup_s = time.perf_counter() - start
        self._settler = _Settler(ray)
        self._remote_call = ray.remote(call)
        self._remotes: weakref.WeakKeyDictionary[Callable, Any] = weakref.WeakKeyDictionary()
        # Apart from _remotes, which maps a function to its capped export: the engine's own
        # path must run the function bare.
        self._engine_remotes: weakref.WeakKeyDictionary[Callable, Any] = weakref.WeakKeyDictionary()

    @contextlib.contextmanager
    def _cleanup_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            stop_reaper(self._reaper)
            self._temp_dir = self._reaper = None
            raise

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> cf.Future:
        remote = self._remote_for(fn)
        if remote is None:
            ref = self._remote_call.remote(fn, args, kwargs)
        else:
            ref = remote.remote(*args, **kwargs)
        # Cancelling our future drops the task's result but does not ray.cancel() it: a cancel
        # that races the task's completion reply crashed the whole driver process in Ray 2.60
        # ("Check failed: it != submissible_tasks_.end() Tried to complete task that was not
        # pending", task_manager.cc), twice in five runs of the test suite. The task's workers
        # are freed when this backend stops its runtime or disconnects from the cluster.
        return self._track(ref, linked_future(_keep_running))

    def engine_map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        remote = self._engine_remotes.get(fn)
        if remote is None:  # exported once, as a user of Ray's API would
            remote = self._engine_remotes[fn] = self._ray.remote(fn)
        return self._ray.get([remote.remote(item) for item in items])

    def _remote_for(self, fn: Callable[..., Any]) -> Any:
        """A cached ``ray.remote`` export of ``fn`` (a function, a by-value function, either
        capped), else ``None``.

        Ray exports a remote function once; shipping ``fn`` inside every task's arguments
        instead cost 18% over the native API on no-op tasks.
        """
        key = fn.fn if isinstance(fn, Capped) else fn
        if not (inspect.isfunction(key) or isinstance(key, ByValue)):
            return None
        if isinstance(key, ByValue) and len(key.payload) > MAX_EXPORT_BYTES:
            return None  # a bound method or partial carrying data: it goes with its task
        remote = self._remotes.get(key)
        if remote is None:
            remote = self._remotes[key] = self._ray.remote(_exported(fn))
        return remote

    def put(self, obj: Any) -> Any:
        """``ray.put`` ``obj``; tasks given the handle, even inside a chunk, receive ``obj``."""
        self._check_open()
        return RayRef(self._ray.put(obj))

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["owns_runtime"] = self._owns
        # Nodes that run tasks (each holds its own copy of a put object).
        info["nodes"] = sum(
            1 for n in self._ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0
        )
        if not self._temp_dir:  # a cluster by address: an emulated one of ours says so
            from smallbig.backends.emulation.emulated import describe

            info["emulated"] = describe(self.address)
        return info

    def _release(self) -> None:
        if self._owns:
            # For an address this disconnects the driver only; the cluster keeps running.
            self._ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        if self._reaper is not None:
            stop_reaper(self._reaper)


#: The largest by-value callable exported as a remote function. Ray keeps every export for
#: the job's life and refuses one over 95 MiB; a callable that carries more than a function's
#: code (a bound method's object, a partial's table) travels inside its task's arguments.
MAX_EXPORT_BYTES = 2**20
#: Seconds a cluster's workers get to come up before start-up counts as done.
WORKERS_UP_S = 120.0


def _worker_pid() -> int:
    time.sleep(0.1)  # long enough that the tasks of one round overlap, one per worker
    return os.getpid()


@contextlib.contextmanager
def _start_failure(what: str) -> Iterator[None]:
    """An engine's own start-up error (Ray raises a bare ``Exception`` when its node does
    not register within its fixed 30 s) as :class:`~smallbig.backends.errors.EngineStartError`,
    saying so under a CPU quota: on a laptop of 0.25 core, Ray's node never did."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, (ValueError, TypeError, OSError, EngineStartError)):
            raise
        from smallbig.backends.emulation.cpugroups import current

        held = current()
        why = (f"; this process is held to {float(held['cpus']):g} cores (--cpus), and the "
               "engine's own start-up waits are fixed: try more cores") if held else ""  # fmt: skip
        raise EngineStartError(f"{what} did not start: {exc}{why}") from exc


def _await_workers(ray: Any, workers: int) -> None:
    """Return once ``workers`` worker processes have each run a task.

    ``ray.init`` returns before its workers exist; they start as tasks arrive, so a cold
    run paid them inside its first map (7–20 s more at 8–16 workers on this 2-core machine)
    while start-up looked done. Dask's LocalCluster already waits for its workers.
    """
    probe = ray.remote(num_cpus=1)(_worker_pid)
    seen: set[int] = set()
    deadline = time.monotonic() + WORKERS_UP_S
    while len(seen) < workers and time.monotonic() < deadline:
        seen.update(ray.get([probe.remote() for _ in range(workers)]))


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Give back the application's SIGTERM handler, which ``ray.init`` replaces with one that
    prints a stack dump and exits without running any cleanup."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(previous) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


class RayRef:
    """Handle returned by ``RayBackend.put``: unpickles, inside a task, as the object itself.

    Ray resolves ``ObjectRef`` arguments only at the top level; this wrapper also works inside
    the lists a chunked ``map`` ships.
    """

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple:
        return (_ray_get, (self.ref,))


def _ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


def _exported(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function ``ray.remote`` exports for ``fn``, holding no reference to the key
    :meth:`RayBackend._remote_for` caches it under: a by-value callable is copied, or the
    cache's value would keep its own key (and all the callable carries) alive for good."""
    if inspect.isfunction(fn):
        return fn  # a module's function: it lives as long as its module anyway
    inner = fn.fn if isinstance(fn, Capped) else fn
    if isinstance(inner, ByValue):
        inner = ByValue(inner.payload, inner.key)
    if isinstance(fn, Capped):
        inner = Capped(inner, fn.threads, fn.shared)
    return _as_function(inner)


def _as_function(call: Callable[..., Any]) -> Callable[..., Any]:
    """A plain function that calls ``call``: ``ray.remote`` takes functions, not objects."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)

    inner = call.fn if isinstance(call, Capped) else call
    run.__name__ = run.__qualname__ = getattr(inner, "__name__", "task")
    return run


def _keep_running() -> None:
    return None


# refs ray.wait looks at at once: the oldest in flight, which tasks mostly finish first; a wait
# over every ref costs time linear in the refs, each time.
WAIT_WINDOW = 512
FLUSH_S = 0.02


class _Settler(SettlerThread):
    """Moves Ray outcomes into our futures from one thread: ``ray.wait`` on the refs in flight
    until all are ready or :data:`FLUSH_S` passed, then one ``ray.get`` for the ready ones.

    One ``ObjectRef.future()`` with its callback per task (Ray's own concurrent.futures
    bridge) cost 37% over Ray's plain ``ray.get`` of 2,000 no-op tasks.
    """

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self._idle = True
        super().__init__("smallbig-ray-settler")

    def watch(self, ref: Any, future: cf.Future) -> None:
        """Called from any thread: settle ``future`` with ``ref``'s outcome."""
        with self._lock:
            self._incoming.append((ref, future))
            idle = self._idle
            self._idle = False
        if idle:  # a wake-up per task made the two threads fight for the GIL
            self._wake.set()

    def _run(self) -> None:
        pending: dict[Any, cf.Future] = {}  # in submission order
        while not self._closed:
            with self._lock:
                # Straight into pending: no local here may hold a settled future (and its
                # result) while the thread sleeps, or a map's consumer could not free it.
                if not self._incoming and not pending:
                    self._idle = True
                    self._wake.clear()
                pending.update(self._incoming)
                self._incoming = []
            if not pending:
                self._wake.wait()
                continue
            window = list(itertools.islice(pending, WAIT_WINDOW))
            try:
                # Back when all are ready, or after FLUSH_S with those that are: one call per
                # batch, not per result, so it does not compete with the submitting thread.
                ready, _ = self._ray.wait(window, num_returns=len(window), timeout=FLUSH_S)
            except Exception:  # the runtime is going away under us
                if self._closed:
                    return
                raise
            self._settle(ready, pending)

    def _settle(self, ready: list, pending: dict[Any, cf.Future]) -> None:
        futures = [pending.pop(ref) for ref in ready]
        try:
            values = self._ray.get(ready)
        except Exception:  # one of them failed: each its own outcome
            for ref, future in zip(ready, futures, strict=True):
                settle(future, lambda ref=ref: _unwrap(self._ray, ref))
        else:
            for future, value in zip(futures, values, strict=True):
                resolve(future, value)


def _unwrap(ray: Any, ref: Any) -> Any:
    """Result of a Ray task, re-raising the task's own exception with its original type."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _emulated_connection(address: str) -> dict[str, str]:
    """``ray.init``'s extra arguments for an emulated cluster of ours at ``address`` (and
    token authentication on, which the caller's environment restores); none for any other
    address.

    Its nodes all run on this machine, and Ray attaches a driver to a raylet of its own
    machine, the head's first: the driver's own node is named instead, as ``ray start``
    tells a user of a machine with several nodes to (``ray.init(_node_ip_address=...)``).
    """
    from smallbig.backends.emulation.emulated import ray_connection

    connection = ray_connection(address)
    if connection is None:
        return {}
    # Ray reads its configuration once: it refreshes it itself when it turns token mode on
    # for a local runtime (ray._private.authentication), and so must a driver that turns it
    # on to join a cluster by address.
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config

    Config.initialize("")
    return {"_node_ip_address": connection["node_ip_address"]}
