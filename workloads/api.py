"""The api workload: fetch one timestamp's weather readings and reduce them to a summary.

Network-I/O bound: most of an item's time is spent waiting, which threads and asyncio overlap.
The sync client keeps one ``urllib3.PoolManager`` (one connection pool) per worker thread; the
async client one ``aiohttp.ClientSession`` per event loop. Both retry 429/5xx, malformed bodies
and connection errors with exponential backoff, honouring ``Retry-After``; an item that still
fails raises, and :func:`smallbig.workloads.base.guarded` records it against that item.

urllib3 rather than requests, which is built on it: requests' per-call machinery doubled the
client's CPU per request (2.6 vs 1.2 ms at 64 threads), and with the client and server sharing
two cores, that CPU is what limits the throughput of threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import urllib3

from smallbig.workloads.base import Workload
from smallbig.workloads.weather_server import ENDPOINTS

RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class ApiItem:
    """One request: an endpoint at one timestamp of a server at ``base_url``."""

    base_url: str
    endpoint: str
    date_time: str
    timeout_s: float = 10.0
    retries: int = 4
    backoff_s: float = 0.05

    @property
    def id(self) -> str:
        return f"{self.endpoint}@{self.date_time}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/environment/{self.endpoint}"


class RetryableError(Exception):
    """A failure worth another try (429, 5xx, a malformed body, a dropped connection)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def summarise(body: dict) -> dict:
    """Join readings to station names; return a small summary of the first item."""
    names = {s["id"]: s["name"] for s in body["metadata"]["stations"]}
    item = body["items"][0]
    pairs = sorted((r["value"], names[r["station_id"]]) for r in item["readings"])
    values = [v for v, _ in pairs]
    return {
        "timestamp": item["timestamp"],
        "unit": body["metadata"]["reading_unit"],
        "stations": len(pairs),
        "mean": round(sum(values) / len(values), 3),
        "min": [pairs[0][1], pairs[0][0]],
        "max": [pairs[-1][1], pairs[-1][0]],
    }


def _delay(item: ApiItem, attempt: int, error: RetryableError) -> float:
    if error.retry_after is not None:
        return error.retry_after
    return min(2.0, item.backoff_s * 2**attempt)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_local = threading.local()


def _pool() -> urllib3.PoolManager:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = urllib3.PoolManager()
    return pool


def fetch_summary(item: ApiItem) -> dict:
    """Fetch ``item`` with the sync client and summarise it; raise if every attempt fails."""
    for attempt in range(item.retries + 1):
        try:
            return _fetch_once(item)
        except RetryableError as exc:
            if attempt == item.retries:
                raise RuntimeError(f"gave up after {attempt + 1} attempts: {exc}") from exc
            time.sleep(_delay(item, attempt, exc))
    raise AssertionError("unreachable")


def _fetch_once(item: ApiItem) -> dict:
    try:
        # retries=False: this function's own loop retries, honouring Retry-After.
        response = _pool().request(
            "GET",
            item.url,
            fields={"date_time": item.date_time},
            timeout=item.timeout_s,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as exc:  # connection refused, reset, timed out
        raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
    if response.status in RETRY_STATUS:
        raise RetryableError(f"HTTP {response.status}", _retry_after(response.headers))
    if response.status >= 400:  # a 4xx other than 429 will not get better by retrying
        raise RuntimeError(f"HTTP {response.status} from {item.url}")
    try:
        return summarise(response.json())
    except (ValueError, KeyError, IndexError) as exc:
        raise RetryableError(f"malformed body: {type(exc).__name__}") from exc


# loop -> (suspended holder, its session); the holder is kept so that it stays alive until
# the loop closes it, and removes its own entry then.
_async_sessions: dict[asyncio.AbstractEventLoop, tuple[Any, aiohttp.ClientSession]] = {}


async def _session_holder() -> AsyncIterator[aiohttp.ClientSession]:
    # An async generator left suspended: the loop's shutdown_asyncgens() (asyncio.run and
    # the asyncio backend both call it) resumes it, which closes the session cleanly.
    connector = aiohttp.TCPConnector(limit=0)  # the backend's own limit caps concurrency
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            yield session
        finally:
            _async_sessions.pop(asyncio.get_running_loop(), None)


async def _async_session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    entry = _async_sessions.get(loop)
    if entry is None or entry[1].closed:
        holder = _session_holder()
        entry = _async_sessions[loop] = (holder, await holder.__anext__())
    return entry[1]


async def fetch_summary_async(item: ApiItem) -> dict:
    """Coroutine twin of :func:`fetch_summary`, for the asyncio backend."""
    session = await _async_session()
    timeout = aiohttp.ClientTimeout(total=item.timeout_s)
    for attempt in range(item.retries + 1):
        try:
            async with session.get(
                item.url, params={"date_time": item.date_time}, timeout=timeout
            ) as response:
                if response.status in RETRY_STATUS:
                    raise RetryableError(f"HTTP {response.status}", _retry_after(response.headers))
                response.raise_for_status()
                try:
                    return summarise(await response.json())
                except (ValueError, KeyError, IndexError, aiohttp.ContentTypeError) as exc:
                    raise RetryableError(f"malformed body: {type(exc).__name__}") from exc
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            error = RetryableError(f"{type(exc).__name__}: {exc}")
        except RetryableError as exc:
            error = exc
        if attempt == item.retries:
            raise RuntimeError(f"gave up after {attempt + 1} attempts: {error}") from error
        await asyncio.sleep(_delay(item, attempt, error))
    raise AssertionError("unreachable")


def api_workload(
    base_url: str, *, start: str = "2024-01-01T00:00:00", retries: int = 4
) -> Workload:
    """The api workload against a server at ``base_url`` (see :func:`serve_api`)."""
    first = datetime.fromisoformat(start)
    endpoints = list(ENDPOINTS)

    def prepare(n: int, seed: int = 0) -> list[ApiItem]:
        # Distinct timestamps per seed; endpoints in turn, as a dashboard would poll them.
        base = first + timedelta(days=seed)
        return [
            ApiItem(
                base_url,
                endpoints[i % len(endpoints)],
                (base + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S"),
                retries=retries,
            )
            for i in range(n)
        ]

    return Workload(
        "api",
        prepare,
        fetch_summary,
        fetch_summary_async,
        releases_gil=True,  # it waits on the network
        params={"base_url": base_url},
    )
