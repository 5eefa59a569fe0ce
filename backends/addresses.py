"""Is there a Dask scheduler or a Ray head at this address? Answered within seconds.

The engines' own clients wait a long time on a wrong address: Dask's for 61 s on a port that
accepts and says nothing, and it read a garbage answer as a frame length and tried to
allocate 3 EiB; Ray's past 85 s. A short probe of each engine's opening bytes fails at once,
naming the address and what was found there.
"""

from __future__ import annotations

import socket
import struct
import time
from urllib.parse import urlsplit

# HTTP/2's client preface and an empty SETTINGS frame: what a gRPC client (Ray's GCS) sends
# first. A gRPC server answers with a SETTINGS frame: type 4, no flags (not an ACK), stream 0,
# a length that is a whole number of 6-byte settings (RFC 9113, 6.5).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 4
_H2_MAX_FRAME = 16384  # the size every peer must accept before settings say otherwise
ANSWER_S = 5.0  # a real scheduler or head answers in milliseconds


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``tcp://host:port`` or ``host:port``; ``ValueError`` otherwise."""
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a port that is not a number, or out of range
        host = port = None
    if not host or not port:
        raise ValueError(f"cluster address {address!r} must look like HOST:PORT")
    return host, port


def check_dask_scheduler(address: str, timeout: float) -> None:
    """``ConnectionError`` naming ``address`` unless a Dask scheduler answers there.

    A Dask server speaks first: its handshake, an 8-byte length and a small msgpack message
    that names the pickle protocol.
    """
    with _connect(address, timeout) as sock:
        head = _read(sock, 8, address, "a Dask scheduler")
        (size,) = struct.unpack("<Q", head)
        if not 0 < size < 2**20:
            raise ConnectionError(_not(address, "a Dask scheduler", head))
        body = _read(sock, size, address, "a Dask scheduler")
        if b"pickle-protocol" not in body:
            raise ConnectionError(_not(address, "a Dask scheduler", head + body))


def check_ray_head(address: str, timeout: float) -> None:
    """``ConnectionError`` naming ``address`` unless a gRPC server (Ray's GCS) answers there."""
    with _connect(address, timeout) as sock:
        sock.sendall(_H2_PREFACE)
        head = _read(sock, 9, address, "a Ray head (gRPC)")
        if not _is_h2_settings(head):
            raise ConnectionError(_not(address, "a Ray head (gRPC)", head))


def _is_h2_settings(head: bytes) -> bool:
    """Whether a frame header opens a server's first SETTINGS frame.

    Checking the type byte alone let one garbage answer in 256 through, and Ray's client then
    waited on it for minutes; with the flags, stream and length checked, random bytes pass
    about once in 2**50.
    """
    length = int.from_bytes(head[:3], "big")
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return (
        head[3] == _H2_SETTINGS
        and head[4] == 0
        and stream == 0
        and length % 6 == 0
        and length <= _H2_MAX_FRAME
    )


def _connect(address: str, timeout: float) -> socket.socket:
    host, port = split_address(address)
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ConnectionError(f"cannot reach cluster at {address}: {exc}") from exc


def _read(sock: socket.socket, n: int, address: str, what: str) -> bytes:
    data = b""
    deadline = time.monotonic() + ANSWER_S
    while len(data) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(n - len(data))
        except TimeoutError:
            raise ConnectionError(
                f"no answer from {address} within {ANSWER_S:g} s: it accepts connections "
                f"but is not {what}"
            ) from None
        except OSError as exc:
            raise ConnectionError(f"cannot talk to {address}: {exc}") from exc
        if not chunk:
            raise ConnectionError(_not(address, what, data, closed=True))
        data += chunk
    return data


def _not(address: str, what: str, seen: bytes, closed: bool = False) -> str:
    got = f"it closed the connection after {seen[:16]!r}" if closed else f"it sent {seen[:16]!r}"
    return f"{address} is not {what}: {got}"
