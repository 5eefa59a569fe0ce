"""A multi-node Dask, Ray or Spark cluster on this machine: a scheduler (head, master) node
and worker nodes, each in a network namespace of its own, behind shaped links
(:mod:`smallbig.backends.emulation.netns`).

What is real: each node's network stack, the links' bandwidth, the engine's own processes
talking over them. What is not: the nodes share this machine's cores and memory, and the
links add no latency beyond a veth's (no ``netem`` here). Every result measured on it says so:
the cluster notes itself under smallbig's cache folder, and a backend reaching its address
reports it in ``info()["emulated"]`` (and so in ``run.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from smallbig.backends.emulation.cpugroups import CpuGroup, Usage, check_quotas
from smallbig.backends.emulation.netns import Network
from smallbig.backends.lifeline import (
    alive,
    owned_temp_dir,
    start_reaper,
    stop_holders,
    stop_reaper,
)

ENGINES = ("dask", "ray", "spark")
PORTS = {"dask": 8786, "ray": 6379, "spark": 7077}  # the scheduler's, the head's (GCS), master's
#: The Spark master's status page (JSON at /json), on its node's address only: how the
#: cluster knows its workers registered.
SPARK_MASTER_UI = 8080
#: What ``ray start`` prints once its node has joined.
RAY_STARTED = "Ray runtime started"
#: Seconds without a worker's heartbeat after which the scheduler drops it and runs its tasks
#: elsewhere. Dask's default is 5 minutes: a node cut off for good would stall a run that long.
WORKER_TTL_S = 10.0
#: What a Dask worker does by the wall clock (its defaults, ms), stretched on a scale model's
#: nodes: the profiler's samples and cycle, the event loop's tick check, the system and memory
#: monitors.
DASK_CLOCKS_MS = {
    "WORKER__PROFILE__INTERVAL": 10,
    "WORKER__PROFILE__CYCLE": 1000,
    "ADMIN__TICK__INTERVAL": 20,
    "ADMIN__SYSTEM_MONITOR__INTERVAL": 500,
    "WORKER__MEMORY__MONITOR_INTERVAL": 100,
}


def _registry() -> Path:
    from platformdirs import user_cache_dir

    root = Path(os.environ.get("SMALLBIG_CACHE") or user_cache_dir("smallbig"))
    return root / "emulated"


def describe(address: str) -> dict[str, Any] | None:
    """What the emulated cluster at ``address`` is (nodes, workers, bandwidth), if one of
    ours runs there; ``None`` for any other address."""
    from smallbig.backends.addresses import split_address

    try:
        host, port = split_address(address.removeprefix("spark://"))
    except ValueError:
        return None
    facts = _note(host, port)
    if facts is None:
        return None
    return {k: v for k, v in facts.items() if k not in ("owner", "connect")}


def spark_driver_host(address: str) -> str | None:
    """The address a driver on this machine gives the executors of the emulated Spark
    cluster at ``address`` (``spark://HOST:PORT``) to reach it: its own link's; ``None`` for
    any other address."""
    from smallbig.backends.addresses import split_address

    try:
        facts = _note(*split_address(address.removeprefix("spark://")))
    except ValueError:
        return None
    return (facts.get("connect") or {}).get("driver_host") if facts else None


def ray_connection(address: str) -> dict[str, str] | None:
    """How a driver on this machine joins the emulated Ray cluster at ``address``: the node
    it attaches to (``node_ip_address``, the driver's own link); ``None`` for any other
    address."""
    from smallbig.backends.addresses import split_address

    try:
        facts = _note(*split_address(address))
    except ValueError:
        return None
    return facts.get("connect") if facts else None


def _note(host: str, port: int) -> dict[str, Any] | None:
    try:
        facts = json.loads((_registry() / f"{host}_{port}.json").read_text())
    except (OSError, ValueError):
        return None
    return facts if alive(int(facts.get("owner", 0))) else None


def make_ray_token() -> None:
    """Make the user's Ray token (``~/.ray/auth_token``) unless it exists, as ``ray
    get-auth-token --generate`` does."""
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token",
                    "--generate"], capture_output=True, check=True, timeout=60)  # fmt: skip


class EmulatedCluster:
    """Start it with ``with EmulatedCluster(...) as cluster:``; ``cluster.spec`` is the
    ``NAME@ADDRESS`` to give ``--backends`` (or :func:`backends.get_backend`).

    Parameters
    ----------
    engine : str
        ``"dask"``, ``"ray"`` or ``"spark"`` (a standalone master and a worker per node).
    nodes : int
        Worker nodes (each a namespace of its own), besides the scheduler's.
    workers_per_node : int
        Worker processes per node, one thread each.
    bandwidth_mbps : float, optional
        Every link's rate in each direction, the driver's included (``None``: unshaped).
    start_timeout : float
        Seconds for the scheduler and every worker to come up.
    worker_ttl_s : float
        The scheduler's ``worker-ttl``: how long a silent worker is waited for.
    cpus_per_node : float, optional
        Hold every node (the scheduler's or head's included) to this many cores, each in a CPU
        group of its own (:mod:`smallbig.backends.emulation.cpugroups`): a scale model's nodes.
        ``None``: every
        node shares all of this machine's cores.
    """

    def __init__(
        self,
        engine: str = "dask",
        nodes: int = 2,
        workers_per_node: int = 1,
        bandwidth_mbps: float | None = None,
        start_timeout: float = 120.0,
        worker_ttl_s: float = WORKER_TTL_S,
        cpus_per_node: float | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
        if nodes < 1 or workers_per_node < 1:
            raise ValueError("nodes and workers_per_node must be at least 1")
        if cpus_per_node is not None:
            check_quotas([cpus_per_node] * (1 + nodes))  # refused before anything starts
        self.cpus_per_node = cpus_per_node
        #: Each node's CPU group (0: the scheduler's or head's), with quotas only.
        self.groups: list[CpuGroup] = []
        self.engine, self.nodes, self.workers_per_node = engine, nodes, workers_per_node
        self.bandwidth_mbps = bandwidth_mbps
        self._timeout = start_timeout
        self.worker_ttl_s = worker_ttl_s
        #: Link faults scheduled with :meth:`cut`, and what happened (for ``run.json``).
        self.faults: list[dict[str, Any]] = []
        self._timers: list[threading.Timer] = []
        self.network = Network(1 + nodes, bandwidth_mbps)
        self._procs: list[subprocess.Popen] = []
        self._note: Path | None = None
        self._folder: str | None = None  # Ray's: its nodes' temp dirs and start logs
        self._reaper: subprocess.Popen | None = None
        self._connect: dict[str, str] | None = None
        self.port = PORTS[engine]
        host = self.network.hosts[0][1]
        scheme = {"dask": "tcp://", "spark": "spark://"}.get(engine, "")
        self.address = f"{scheme}{host}:{self.port}"
        self.spec = f"{engine}@{self.address}"

    @property
    def workers(self) -> int:
        return self.nodes * self.workers_per_node

    def info(self) -> dict[str, Any]:
        """What ``run.json`` records of it."""
        return {
            "emulated": True,
            "engine": self.engine,
            "nodes": self.nodes,
            "workers_per_node": self.workers_per_node,
            "bandwidth_mbps": self.bandwidth_mbps,
            "shares_this_machine": self.cpus_per_node is None,
            "cpus_per_node": self.cpus_per_node,
            "time_dilation": self.dilation,
            # Each node's CPU group (0: the scheduler's or head's): what a run's fidelity
            # monitor reads.
            "cpu_groups": [g.name for g in self.groups],
            # Each link's end at its host: what the monitor reads each link's bytes from.
            "links": self._links(),
            "added_latency": "none (a veth's)",
            "worker_ttl_s": self.worker_ttl_s,
            "faults": self.faults,
        }

    def _links(self) -> dict[str, Any]:
        net = self.network
        first = "head" if self.engine == "ray" else "scheduler"
        # Each host's own end, in its namespace (the driver's in this machine's own).
        ends = [["driver", f"{net.id}d", None]] + [
            [first if i == 0 else f"node {i}", f"{net.id}n{i}", name]
            for i, (name, _) in enumerate(net.hosts)
        ]
        return {"ends": ends}

    def cut(self, node: int, after_s: float, for_s: float | None = None) -> None:
        """Cut worker node ``node`` (1 … ``nodes``) off the network ``after_s`` seconds from
        now, for ``for_s`` seconds (``None``: for good). Its processes keep running; the
        scheduler drops its workers after ``worker_ttl_s`` and runs their tasks elsewhere."""
        if not 1 <= node <= self.nodes:
            raise ValueError(f"node must be 1 to {self.nodes}, got {node}")
        if after_s < 0 or (for_s is not None and for_s <= 0):
            raise ValueError("after_s must be ≥ 0 and for_s > 0 (or None: for good)")
        fault = {"node": node, "after_s": after_s, "for_s": for_s, "events": []}
        self.faults.append(fault)
        self._later(after_s, node, False, fault)
        if for_s is not None:
            self._later(after_s + for_s, node, True, fault)
        self._write_note()

    def set_bandwidth(self, mbps: float | None) -> None:
        """Shape every link to ``mbps`` from now on (``None``: unshaped); see
        :meth:`smallbig.backends.emulation.netns.Network.set_bandwidth`."""
        self.network.set_bandwidth(mbps)
        self.bandwidth_mbps = mbps
        self._write_note()

    def _later(self, delay: float, node: int, up: bool, fault: dict[str, Any]) -> None:
        def act() -> None:
            with contextlib.suppress(OSError):  # the cluster may have closed meanwhile
                self.network.set_link(node, up)
                fault["events"].append({"link": "up" if up else "down", "at": time.time()})
                self._write_note()

        timer = threading.Timer(delay, act)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _write_note(self) -> None:
        if self._note is not None:
            facts = {**self.info(), "owner": os.getpid(), "connect": self._connect}
            self._note.write_text(json.dumps(facts))

    def usage(self) -> list[Usage]:
        """Each node's CPU use so far (0: the scheduler's or head's); empty without quotas."""
        return [group.usage() for group in self.groups]

    def _popen(self, node: int, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` on ``node``, inside its CPU group where it has one."""
        command = self.network.command(node, argv)
        if self.groups:
            # Joined before `ip netns exec`, which mounts a sysfs of the namespace's own (the
            # CPU groups' folder is not in it): what it runs inherits the group.
            command = self.groups[node].wrap(command)
        return subprocess.Popen(command, **kwargs)

    def __enter__(self) -> EmulatedCluster:
        try:
            if self.cpus_per_node is not None:
                for node in range(1 + self.nodes):
                    self.groups.append(CpuGroup(f"n{node}", self.cpus_per_node).__enter__())
            self.network.__enter__()
            {"dask": self._start_dask, "ray": self._start_ray, "spark": self._start_spark}[
                self.engine
            ]()
            self._note = _registry() / f"{self.network.hosts[0][1]}_{self.port}.json"
            self._note.parent.mkdir(parents=True, exist_ok=True)
            self._write_note()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_dask(self) -> None:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        host = self.network.hosts[0][1]
        ttl = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": f"{self.worker_ttl_s:g}s"}
        self._procs.append(
            self._popen(
                0,
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host,
                 "--port", str(self.port), "--no-dashboard", "--no-show"],
                env=ttl,
                **quiet,
            )
        )  # fmt: skip
        self._wait_for_port(host, self.port)
        for node in range(1, 1 + self.nodes):
            self._procs.append(
                self._popen(
                    node,
                    [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                     "--host", self.network.hosts[node][1], "--nthreads", "1",
                     "--nworkers", str(self.workers_per_node), "--no-dashboard",
                     "--death-timeout", "60"],
                    env=self._dilated_env(),
                    **quiet,
                )
            )  # fmt: skip
        from distributed import Client

        with Client(self.address, timeout=self._timeout, set_as_default=False) as client:
            client.wait_for_workers(self.workers, timeout=self._timeout)

    @property
    def dilation(self) -> float:
        """How many times slower than a core each worker of a node runs (1: no quota)."""
        if self.cpus_per_node is None:
            return 1.0
        return max(1.0, self.workers_per_node / self.cpus_per_node)

    def _dilated_env(self) -> dict[str, str]:
        """A worker's environment, with what it does by the wall clock slowed as its CPU is.

        A node held to C cores runs everything 1/C times slower, but an engine's periodic
        work keeps its wall-clock rhythm: Dask's profiler samples every 10 ms whatever the
        quota, and on a node of 0.35 core it took 13% of the node when idle (0.046 core),
        against 5% of a real core. Its interval and cycle are stretched by the same factor,
        so that it costs the share it would on a full core.
        """
        env = dict(os.environ)
        if self.dilation > 1:
            for key, ms in DASK_CLOCKS_MS.items():
                env[f"DASK_DISTRIBUTED__{key}"] = f"{ms * self.dilation:.0f}ms"
        return env

    def _start_ray(self) -> None:
        # A folder of ours for every node's temp dir (nodes that share one collide on its
        # socket paths) and their start logs; the reaper stops whatever holds a
        # file in it once this process is gone, the driver's node included.
        self._folder = folder = owned_temp_dir("smallbig-emu-")
        self._reaper = start_reaper(folder)
        # Ray 2.5x+ starts a head with token authentication, from the user's own token: the
        # token a local runtime of this process uses too, so one driver can reach both.
        make_ray_token()
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
        # The GCS declares a silent node dead after worker_ttl_s, as Dask's worker-ttl does
        # (then its tasks are retried elsewhere): a health check a second, each given a second.
        checks = str(max(1, round(self.worker_ttl_s)))
        env |= {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                "RAY_health_check_failure_threshold": checks}  # fmt: skip
        head = self.network.hosts[0][1]
        starts = [self._ray_start(0, ["--head", "--port", str(self.port), "--num-cpus", "0",
                                      "--include-dashboard=false"], env)]  # fmt: skip
        self._await_ray(starts)  # the others join it
        join = ["--address", f"{head}:{self.port}"]
        cpus = ["--num-cpus", str(self.workers_per_node)]
        # The driver's own node, on the driver's link, with no CPU: a Ray driver attaches to
        # a raylet of the machine it runs on, and the objects it puts leave from there. (On
        # its own, with many raylets on one machine, it would pick the head's and give
        # workers the head's address for itself: its tasks' arguments never arrived.)
        nodes = [(node, [*join, *cpus]) for node in range(1, 1 + self.nodes)]
        nodes.append((None, [*join, "--num-cpus", "0"]))
        # A few at a time: `ray start` gives its raylet 30 s to register, and 3-5 nodes
        # starting at once on 2 cores missed that (every one of them, on a fresh machine).
        wave = max(1, (os.cpu_count() or 2) // 2)
        for first in range(0, len(nodes), wave):
            self._await_ray([self._ray_start(n, a, env) for n, a in nodes[first : first + wave]])
        self._connect = {"node_ip_address": self.network.driver_address}

    def _start_spark(self) -> None:
        """A standalone master on node 0 and a worker on each other node, every JVM bound to
        its node's address; the driver (this process) joins by ``spark://`` and gives the
        executors its own link's address (:func:`spark_driver_host`)."""
        from smallbig.backends.spark_launch import daemon_env, spark_class

        self._folder = folder = owned_temp_dir("smallbig-emu-")
        self._reaper = start_reaper(folder)
        head = self.network.hosts[0][1]
        env = daemon_env(folder, self.dilation)
        logs = []

        def start(node: int, cls: str, args: list[str]) -> None:
            ip = self.network.hosts[node][1]
            log = Path(folder) / f"start-n{node}.log"
            logs.append(log)
            with log.open("w") as out:
                node_env = {**env, "SPARK_LOCAL_IP": ip, "SPARK_LOCAL_HOSTNAME": ip,
                            "SPARK_WORKER_DIR": os.path.join(folder, f"n{node}")}  # fmt: skip
                self._procs.append(self._popen(node, [*spark_class(), cls, "--host", ip, *args],
                                               env=node_env, stdin=subprocess.DEVNULL,
                                               stdout=out, stderr=subprocess.STDOUT))  # fmt: skip

        start(0, "org.apache.spark.deploy.master.Master",
              ["--port", str(self.port), "--webui-port", str(SPARK_MASTER_UI)])  # fmt: skip
        self._wait_for_port(head, self.port)
        for node in range(1, 1 + self.nodes):
            start(node, "org.apache.spark.deploy.worker.Worker",
                  [self.address, "--cores", str(self.workers_per_node), "--memory", "1g",
                   "--webui-port", "8081"])  # fmt: skip
        self._await_spark(head, logs)
        self._connect = {"driver_host": self.network.driver_address}

    def _await_spark(self, head: str, logs: list[Path]) -> None:
        """Until the master lists every node's worker as alive (its status page's JSON)."""
        import urllib.request

        deadline = time.monotonic() + self._timeout
        alive = 0
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited with {proc.returncode}: "
                                       f"{_tail(logs)}")  # fmt: skip
            with contextlib.suppress(OSError, ValueError):
                url = f"http://{head}:{SPARK_MASTER_UI}/json/"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    alive = int(json.loads(answer.read())["aliveworkers"])
                if alive >= self.nodes:
                    return
            time.sleep(0.2)
        raise TimeoutError(
            f"Spark workers not up within {self._timeout:g} s ({alive} of {self.nodes}): "
            f"{_tail(logs)}"
        )

    def _ray_start(self, node: int | None, args: list[str], env: dict[str, str]) -> Path:
        """Start ``ray start`` on host ``node`` (``None``: the driver's own); its log."""
        assert self._folder is not None
        name = "driver" if node is None else f"n{node}"
        ip = self.network.driver_address if node is None else self.network.hosts[node][1]
        log = Path(self._folder) / f"start-{name}.log"
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", *args,
                "--node-ip-address", ip, f"--temp-dir={self._folder}/{name}",
                "--disable-usage-stats", "--block"]  # fmt: skip
        with log.open("w") as out:
            kwargs: dict[str, Any] = {"env": env, "stdout": out, "stderr": subprocess.STDOUT}
            if node is None:
                # Cluster machinery on the driver's link: in the head's CPU group, not the
                # laptop's.
                argv = self.groups[0].wrap(argv) if self.groups else argv
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
            else:
                proc = self._popen(node, argv, stdin=subprocess.DEVNULL, **kwargs)
        self._procs.append(proc)
        return log

    def _await_ray(self, logs: list[Path]) -> None:
        deadline = time.monotonic() + self._timeout
        waiting = list(logs)
        while waiting:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start exited with {proc.returncode}: {_tail(logs)}")
            waiting = [log for log in waiting if RAY_STARTED not in log.read_text()]
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Ray nodes not up within {self._timeout:g} s: {_tail(waiting)}"
                )
            time.sleep(0.2)

    def _wait_for_port(self, host: str, port: int) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{_program(proc.args)} exited with {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
                return
            time.sleep(0.2)
        raise TimeoutError(f"nothing listened on {host}:{port} within {self._timeout:g} s")

    def close(self) -> None:
        """Stop every process of the cluster and remove its namespaces and links."""
        for timer in self._timers:
            timer.cancel()
        if self._note is not None:
            with contextlib.suppress(OSError):
                self._note.unlink()
            self._note = None
        if self._folder is not None:  # the driver's Ray node, outside the namespaces
            stop_holders(self._folder, spare=os.getpid())
        self.network.close()  # kills whatever runs in the namespaces first
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._procs = []
        if self._reaper is not None:
            stop_reaper(self._reaper)
            self._reaper = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        for group in self.groups:
            group.close()
        self.groups = []


def _program(argv: list[str]) -> str:
    """What a node's command runs (its module), for an error message."""
    return " ".join(argv[argv.index("-m") + 1 :][:1]) if "-m" in argv else " ".join(argv[:3])


def _tail(logs: list[Path], lines: int = 5) -> str:
    """The last lines of each log, for an error message."""
    parts = []
    for log in logs:
        with contextlib.suppress(OSError):
            parts.append(f"{log.name}: " + " | ".join(log.read_text().splitlines()[-lines:]))
    return "; ".join(parts)
