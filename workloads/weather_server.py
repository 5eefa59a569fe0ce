"""A real HTTP server (aiohttp) that mimics data.gov.sg's real-time weather API v1.

``GET /v1/environment/{air-temperature|rainfall|relative-humidity|wind-speed|wind-direction}``
with ``date_time=YYYY-MM-DDTHH:MM:SS`` (one reading per station) or ``date=YYYY-MM-DD`` (every
5 minutes of that day). Readings are deterministic by (endpoint, timestamp). Latency, server
errors, rate limiting and malformed bodies can be injected to measure how backends cope.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import random
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from aiohttp import web

SGT = timezone(timedelta(hours=8))
IDLE_TIMEOUT_S = 15.0
STATS = web.AppKey("stats", dict)

# endpoint -> (reading_type, reading_unit, low, high)
ENDPOINTS = {
    "air-temperature": ("DBT 1M F", "deg C", 23.0, 34.0),
    "rainfall": ("TB1 Rainfall 5 Minute Total F", "mm", 0.0, 12.0),
    "relative-humidity": ("RH 1M F", "percentage", 55.0, 100.0),
    "wind-speed": ("Wind Speed AVG(S)10M M1M", "knots", 0.0, 20.0),
    "wind-direction": ("Wind Dir AVG (S) 10M M1M", "degrees", 0.0, 359.0),
}

# A fixed set of stations in the shape of the real API's (id, device_id, name, location).
STATIONS = [
    ("S109", "Ang Mo Kio Avenue 5", 1.3764, 103.8492),
    ("S117", "Banyan Road", 1.256, 103.679),
    ("S50", "Clementi Road", 1.3337, 103.7768),
    ("S107", "East Coast Parkway", 1.3135, 103.9625),
    ("S43", "Kim Chuan Road", 1.3399, 103.8878),
    ("S44", "Nanyang Avenue", 1.34583, 103.68166),
    ("S121", "Old Choa Chu Kang Road", 1.37288, 103.72244),
    ("S106", "Pulau Ubin", 1.4168, 103.9673),
    ("S111", "Scotts Road", 1.31055, 103.8365),
    ("S60", "Sentosa", 1.25, 103.8279),
    ("S115", "Tuas South Avenue 3", 1.29377, 103.61843),
    ("S24", "Upper Changi Road North", 1.3678, 103.9826),
    ("S116", "West Coast Highway", 1.281, 103.754),
    ("S104", "Woodlands Avenue 9", 1.44387, 103.78538),
    ("S100", "Woodlands Road", 1.4172, 103.74855),
]


@dataclass(frozen=True)
class Faults:
    """What the server injects. Rates are probabilities per request (seeded, repeatable).

    ``rate_limit`` is requests per second over all clients (0: unlimited); beyond it the server
    answers 429 with a ``Retry-After`` header.
    """

    latency_s: float = 0.0
    jitter_s: float = 0.0
    error_rate: float = 0.0
    malformed_rate: float = 0.0
    rate_limit: float = 0.0
    retry_after_s: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        # A NaN latency would hang every request; a rate of 5 means nothing: fail at once.
        limits = {
            "latency_s": 1e6,
            "jitter_s": 1e6,
            "error_rate": 1.0,
            "malformed_rate": 1.0,
            "rate_limit": math.inf,
            "retry_after_s": 1e6,
        }
        for name, high in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and 0 <= value <= high):
                raise ValueError(f"{name} must be a finite number from 0 to {high:g}, got {value}")


def readings(endpoint: str, timestamp: datetime) -> list[dict]:
    """Deterministic readings of every station for ``endpoint`` at ``timestamp``."""
    _, _, low, high = ENDPOINTS[endpoint]
    # One 16-bit fraction per station from one hash: cheaper per request than seeding a
    # Random (25 vs 43 µs for the whole list).
    digest = hashlib.blake2b(
        f"{endpoint}|{timestamp.isoformat()}".encode(), digest_size=2 * len(STATIONS)
    ).digest()
    fractions = struct.unpack(f">{len(STATIONS)}H", digest)
    return [
        {"station_id": sid, "value": round(low + (high - low) * f / 0xFFFF, 1)}
        for (sid, *_), f in zip(STATIONS, fractions, strict=True)
    ]


def payload(endpoint: str, timestamps: list[datetime]) -> dict:
    """The JSON body the real API returns for these timestamps."""
    reading_type, unit, *_ = ENDPOINTS[endpoint]
    stations = [
        {"id": sid, "device_id": sid, "name": name, "location": {"latitude": lat, "longitude": lon}}
        for sid, name, lat, lon in STATIONS
    ]
    return {
        "metadata": {"stations": stations, "reading_type": reading_type, "reading_unit": unit},
        "items": [
            {"timestamp": ts.isoformat(), "readings": readings(endpoint, ts)} for ts in timestamps
        ],
        "api_info": {"status": "healthy"},
    }


@functools.cache
def _metadata_json(endpoint: str) -> str:
    return json.dumps(payload(endpoint, [])["metadata"])


def encode_payload(endpoint: str, timestamps: list[datetime]) -> bytes:
    """``json.dumps(payload(...))`` as bytes, with the constant metadata encoded only once.

    The server's CPU is shared with the clients being measured, so every microsecond it
    spends per request is taken from them (json.dumps of the whole body cost ~90 µs).
    """
    items = json.dumps(
        [{"timestamp": ts.isoformat(), "readings": readings(endpoint, ts)} for ts in timestamps]
    )
    return (
        f'{{"metadata": {_metadata_json(endpoint)}, "items": {items}, '
        f'"api_info": {{"status": "healthy"}}}}'
    ).encode()


def _timestamps(query: dict) -> list[datetime]:
    """Timestamps asked for by ``date_time`` or ``date``; ``ValueError`` explains bad input."""
    if "date_time" in query:
        text = query["date_time"]
        try:
            # fromisoformat is ~10x cheaper than strptime; the checks keep the format strict.
            if len(text) != 19 or (text[10], text[13], text[16]) != ("T", ":", ":"):
                raise ValueError
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("date_time must look like YYYY-MM-DDTHH:MM:SS") from None
        return [moment.replace(second=0, tzinfo=SGT)]  # readings are per minute
    if "date" in query:
        text = query["date"]
        try:
            # fromisoformat also takes 20240101; the real API wants the dashes.
            if len(text) != 10 or (text[4], text[7]) != ("-", "-"):
                raise ValueError
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError("date must look like YYYY-MM-DD") from None
        start = datetime(day.year, day.month, day.day, tzinfo=SGT)
        return [start + timedelta(minutes=5 * i) for i in range(288)]
    now = datetime.now(SGT).replace(second=0, microsecond=0)
    return [now]


class _Limiter:
    """A token bucket over all clients (the loop is single-threaded: no lock needed)."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.last = rate, rate, None

    def allow(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        if self.last is not None:
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _OneLine(logging.Filter):
    """A malformed request is the client's mistake, not the server's: one line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            first = (exc.message or type(exc).__name__).strip().splitlines()[0]
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {first}", ()
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("aiohttp.server").addFilter(_OneLine())


def make_app(faults: Faults = Faults()) -> web.Application:
    """The aiohttp application, with ``faults`` injected."""
    rng = random.Random(faults.seed)
    limiter = _Limiter(faults.rate_limit)
    stats = {"requests": 0, "errors": 0, "limited": 0, "malformed": 0}

    async def environment(request: web.Request) -> web.Response:
        stats["requests"] += 1
        endpoint = request.match_info["endpoint"]
        if endpoint not in ENDPOINTS:
            return web.json_response(
                {"code": 404, "message": f"no endpoint {endpoint}"}, status=404
            )
        if not limiter.allow(asyncio.get_running_loop().time()):
            stats["limited"] += 1
            return web.json_response(
                {"code": 429, "message": "rate limit exceeded"},
                status=429,
                headers={"Retry-After": str(faults.retry_after_s)},
            )
        try:
            timestamps = _timestamps(dict(request.query))
        except ValueError as exc:
            return web.json_response({"code": 400, "message": str(exc)}, status=400)
        if faults.latency_s or faults.jitter_s:
            await asyncio.sleep(faults.latency_s + rng.uniform(0, faults.jitter_s))
        if rng.random() < faults.error_rate:
            stats["errors"] += 1
            status = rng.choice((500, 503))
            return web.json_response({"code": status, "message": "injected failure"}, status=status)
        if rng.random() < faults.malformed_rate:
            stats["malformed"] += 1
            return web.Response(text='{"metadata": {"stations": [', content_type="application/json")
        return web.Response(
            body=encode_payload(endpoint, timestamps), content_type="application/json"
        )

    app = web.Application()
    app[STATS] = stats
    app.router.add_get("/v1/environment/{endpoint}", environment)
    return app


@dataclass(frozen=True)
class ApiServer:
    """A running server: its base ``url``, live request ``stats`` and its process id."""

    url: str
    stats: dict
    pid: int


@contextlib.contextmanager
def serve_api(
    faults: Faults = Faults(),
    host: str = "127.0.0.1",
    port: int = 0,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> Iterator[ApiServer]:
    """Run the API on a background thread; yield it; stop it on exit.

    Binds 127.0.0.1 unless told otherwise; ``port=0`` picks a free port. A connection that
    sends no complete request for ``idle_timeout_s`` (a client gone quiet, a slow or partial
    request) is closed.
    """
    loop = asyncio.new_event_loop()
    started: dict = {}
    ready = threading.Event()
    app = make_app(faults)

    async def start() -> web.AppRunner:
        # aiohttp closes a connection with no complete request after keepalive_timeout (75 s
        # by default), a request's headers sent slowly or partly included.
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout_s)
        await runner.setup()
        # A deep backlog: a thousand clients connecting at once must not be refused.
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        started["port"] = runner.addresses[0][1]
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["runner"] = loop.run_until_complete(start())
        except BaseException as exc:
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(started["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="smallbig-weather-api", daemon=True)
    thread.start()
    ready.wait()
    if "error" in started:
        thread.join()
        raise started["error"]
    try:
        yield ApiServer(f"http://{host}:{started['port']}", app[STATS], os.getpid())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_api_process(faults: Faults = Faults(), host: str = "127.0.0.1") -> Iterator[ApiServer]:
    """Like :func:`serve_api`, in a child process: the server then never competes with the
    client for this process's GIL, as a real remote API would not. ``stats`` stays empty."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "smallbig.workloads.weather_server",
        "--host",
        host,
        "--faults",
        json.dumps(faults.__dict__),
        "--owner",
        str(os.getpid()),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"weather API process failed to start (exit {proc.poll()})")
        yield ApiServer(url, {}, proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        proc.kill()  # does nothing if it has exited
        proc.wait()
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted, printing the base URL first (``smallbig serve-api``)."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="smallbig serve-api",
        description="Serve a copy of data.gov.sg's real-time weather API (v1) until Ctrl-C, "
        "with injected latency, errors and rate limits. Prints its base URL first.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to listen on (default: 0, a free one; the URL printed first names it)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="ms added to each request (default: 0)"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="up to this many ms more, random (default: 0)"
    )
    parser.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="share of requests answered 500/503, from 0 to 1 (default: 0)",
    )
    parser.add_argument(
        "--malformed-rate",
        type=float,
        default=0.0,
        help="share of answers with a cut JSON body, from 0 to 1 (default: 0)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="requests per second before 429 answers (default: 0, unlimited)",
    )
    parser.add_argument("--faults", help=argparse.SUPPRESS)  # JSON, for serve_api_process
    parser.add_argument("--owner", type=int, help=argparse.SUPPRESS)  # its parent's pid
    args = parser.parse_args(argv)
    given = {
        "--port": (args.port, 65535),
        "--latency-ms": (args.latency_ms, 1e9),
        "--jitter-ms": (args.jitter_ms, 1e9),
        "--error-rate": (args.error_rate, 1),
        "--malformed-rate": (args.malformed_rate, 1),
        "--rate-limit": (args.rate_limit, math.inf),
    }
    for option, (value, high) in given.items():
        if not (math.isfinite(value) and 0 <= value <= high):
            bounds = "≥ 0" if high == math.inf else f"from 0 to {high:g}"
            parser.exit(2, f"{parser.prog}: error: {option} must be {bounds}, got {value:g}\n")
    if args.faults:
        faults = Faults(**json.loads(args.faults))
    else:
        faults = Faults(
            args.latency_ms / 1e3,
            args.jitter_ms / 1e3,
            args.error_rate,
            args.malformed_rate,
            args.rate_limit,
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with serve_api(faults, args.host, args.port) as server:
            print(server.url, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                # Started for a run: stop when the run is gone, even killed with SIGKILL
                # (it then never terminates us); its death makes us someone else's child.
                while not stop.wait(0.25):
                    if args.owner is not None and os.getppid() != args.owner:
                        break
    except OSError as exc:  # port in use, address not on this machine, no permission
        print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
