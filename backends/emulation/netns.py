"""Emulated network links on this machine: network namespaces, veth pairs, one bridge, htb.

A :class:`Network` is a switch (a Linux bridge in a namespace of its own) and hosts, each in a
namespace of its own, joined to the switch by a veth pair. The driver (this process, in the
machine's own namespace) is joined the same way: every argument and result it sends or gets
crosses a link like any node's. Each link can be shaped with ``htb`` in both directions (the
egress of both ends of its veth pair); ``netem`` is not in this kernel, so links add
bandwidth limits but no latency beyond a veth's.

Network rules: addresses come only from 198.18.0.0/15 (RFC 2544, set aside for benchmarks),
only on links made here; no namespace has a default route, and nothing is NATed, so nothing
started in them reaches any other address. Everything made is named ``sb<pid>x<n>...`` and is
removed when the network is closed, or by a reaper process once its owner is gone (SIGKILL).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from smallbig.backends.lifeline import POLL_S, alive

#: Where every address comes from (RFC 2544's range for benchmarks); a network takes a /24.
RANGE = ipaddress.ip_network("198.18.0.0/15")
_COUNTER = itertools.count()


class NetworkError(OSError):
    """A namespace, link or qdisc could not be made (no root, no iproute2, ...)."""


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    _run(cmd)


def _run(cmd: Sequence[str]) -> None:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise NetworkError(f"{cmd[0]} is not installed (iproute2): {exc}") from None
    if out.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: {out.stderr.strip() or out.returncode}")


def check_privileges() -> None:
    """``NetworkError`` in one line unless this process may make namespaces and links."""
    if os.geteuid() != 0:
        raise NetworkError(
            "an emulated cluster needs root (CAP_NET_ADMIN) to make network namespaces"
        )


class Network:
    """A switch, ``hosts`` namespaces joined to it and the driver's own link.

    Parameters
    ----------
    hosts : int
        Namespaces to make besides the switch's (a scheduler's node and the workers' nodes).
    bandwidth_mbps : float, optional
        Shape every link, the driver's included, to this many Mbit/s in each direction
        (``None``: unshaped veth links).
    """

    def __init__(self, hosts: int, bandwidth_mbps: float | None = None) -> None:
        if hosts < 1:
            raise ValueError(f"hosts must be at least 1, got {hosts}")
        if bandwidth_mbps is not None and bandwidth_mbps <= 0:
            raise ValueError(f"bandwidth_mbps must be positive, got {bandwidth_mbps}")
        self.id = f"sb{os.getpid()}x{next(_COUNTER)}"
        # A /24 of the range per network, from the owner's pid: two owners rarely collide,
        # and a collision only fails to add the address (no traffic leaves the links).
        n = (os.getpid() * 7 + int(self.id.rsplit("x", 1)[1])) % 512
        subnet = list(RANGE.subnets(new_prefix=24))[n]
        self.subnet = subnet
        self.bandwidth_mbps = bandwidth_mbps
        self.driver_address = str(subnet[1])
        #: Namespace name and address of each host, in order.
        self.hosts = [(f"{self.id}h{i}", str(subnet[10 + i])) for i in range(hosts)]
        self.switch = f"{self.id}sw"
        self._ends: list[tuple[str, str | None]] = []  # every link end: device, namespace
        self._reaper: subprocess.Popen | None = None

    def __enter__(self) -> Network:
        check_privileges()
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "smallbig.backends.emulation.netns", str(os.getpid()), self.id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the group must not take the reaper along
        )
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("link", "set", "lo", "up", netns=self.switch)
        _ip("link", "add", "br0", "type", "bridge", netns=self.switch)
        _ip("link", "set", "br0", "up", netns=self.switch)
        # The driver's own link: its end stays in this (the machine's) namespace.
        self._link(f"{self.id}d", None, self.driver_address)
        for i, (name, address) in enumerate(self.hosts):
            _ip("netns", "add", name)
            _ip("link", "set", "lo", "up", netns=name)
            self._link(f"{self.id}n{i}", name, address)

    def _link(self, end: str, netns: str | None, address: str) -> None:
        """A veth pair: ``end`` (in ``netns``, or here) with ``address``, its peer on the
        switch's bridge; both ends shaped."""
        peer = f"{end}p"
        _ip("link", "add", end, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.switch)
        _ip("link", "set", peer, "master", "br0", netns=self.switch)
        _ip("link", "set", peer, "up", netns=self.switch)
        if netns is not None:
            _ip("link", "set", end, "netns", netns)
        _ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", end, netns=netns)
        _ip("link", "set", end, "up", netns=netns)
        for dev, ns in ((end, netns), (peer, self.switch)):
            self._ends.append((dev, ns))
            if self.bandwidth_mbps is not None:
                self._shape(dev, ns, self.bandwidth_mbps)

    def _shape(self, dev: str, netns: str | None, mbps: float | None) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        if mbps is None:
            _run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"])
            return
        rate = f"{mbps:g}mbit"
        _run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb",
              "default", "10"])  # fmt: skip
        _run([*prefix, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10",
              "htb", "rate", rate, "ceil", rate])  # fmt: skip

    def set_bandwidth(self, mbps: float | None) -> None:
        """Shape every link to ``mbps`` in each direction from now on (``None``: unshaped).

        A running cluster keeps its processes and connections: one start serves several
        rates (a Ray cluster takes half a minute to start here).
        """
        if mbps is not None and mbps <= 0:
            raise ValueError(f"bandwidth_mbps must be positive, got {mbps}")
        for dev, ns in self._ends:
            if self.bandwidth_mbps is not None:
                self._shape(dev, ns, None)
            if mbps is not None:
                self._shape(dev, ns, mbps)
        self.bandwidth_mbps = mbps

    def set_link(self, host: int, up: bool) -> None:
        """Cut host ``host`` off (``up=False``) or join it again.

        Its port on the switch goes down, not its own interface: the node keeps its address
        and routes and its packets are lost on the way, as when a cable or a switch fails
        (a downed interface would instead fail every send at once with "no route").
        """
        _ip("link", "set", f"{self.id}n{host}p", "up" if up else "down", netns=self.switch)

    def command(self, host: int, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command that runs inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host][0], *argv]

    def popen(self, host: int, argv: Sequence[str], **kwargs: object) -> subprocess.Popen:
        """Start ``argv`` inside host ``host``'s namespace."""
        return subprocess.Popen(self.command(host, argv), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop every process in the namespaces, then remove them (their links go with them)."""
        remove(self.id)
        if self._reaper is not None:
            self._reaper.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=5)
            self._reaper = None


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def remove(prefix: str) -> None:
    """Kill every process in the namespaces named ``prefix...`` and remove the namespaces."""
    names = _namespaces(prefix)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids(names)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.1)
        if not pids:
            break
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
    # The driver's end of its link, should its peer's namespace not have taken it along.
    subprocess.run(["ip", "link", "delete", f"{prefix}d"], capture_output=True, timeout=30)


def _pids(names: list[str]) -> list[int]:
    pids = []
    for name in names:
        out = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30
        )
        pids += [int(p) for p in out.stdout.split() if p.isdigit()]
    return pids


def _reap(owner: int, prefix: str) -> None:
    while alive(owner):
        threading.Event().wait(POLL_S)
    remove(prefix)


if __name__ == "__main__":
    _reap(int(sys.argv[1]), sys.argv[2])
