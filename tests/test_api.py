"""The weather API over real HTTP: its JSON shape, bad queries, injected faults, clean stop."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp
import pytest
import urllib3

from smallbig.backends import get_backend
from smallbig.workloads.api import ApiItem, api_workload, fetch_summary, fetch_summary_async
from smallbig.workloads.base import checksum
from smallbig.workloads.weather_server import (
    ENDPOINTS,
    SGT,
    Faults,
    encode_payload,
    payload,
    serve_api,
    serve_api_process,
)

UNITS = {
    "air-temperature": ("DBT 1M F", "deg C"),
    "rainfall": ("TB1 Rainfall 5 Minute Total F", "mm"),
    "relative-humidity": ("RH 1M F", "percentage"),
    "wind-speed": ("Wind Speed AVG(S)10M M1M", "knots"),
    "wind-direction": ("Wind Dir AVG (S) 10M M1M", "degrees"),
}


LIMITS = {name: (low, high) for name, (_, _, low, high) in ENDPOINTS.items()}


def get(url: str, **fields: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", url, fields=fields, timeout=10)


def test_encoded_body_is_the_payload():
    # The server sends a pre-encoded body; it must decode to exactly the documented payload.
    moments = [datetime(2024, 3, 1, 12, 34, tzinfo=SGT), datetime(2024, 3, 1, 12, 35, tzinfo=SGT)]
    for endpoint in ENDPOINTS:
        assert json.loads(encode_payload(endpoint, moments)) == payload(endpoint, moments)


@pytest.fixture
def server():
    with serve_api() as srv:
        yield srv


@pytest.mark.parametrize("endpoint", sorted(UNITS))
def test_json_matches_the_real_api_shape(server, endpoint):
    url = f"{server.url}/v1/environment/{endpoint}"
    body = get(url, date_time="2024-03-01T12:34:56").json()
    assert set(body) == {"metadata", "items", "api_info"}
    assert body["api_info"] == {"status": "healthy"}
    meta = body["metadata"]
    assert set(meta) == {"stations", "reading_type", "reading_unit"}
    assert (meta["reading_type"], meta["reading_unit"]) == UNITS[endpoint]
    for station in meta["stations"]:
        assert set(station) == {"id", "device_id", "name", "location"}
        assert set(station["location"]) == {"latitude", "longitude"}
        assert isinstance(station["location"]["latitude"], float)
    low, high = LIMITS[endpoint]
    values = [r["value"] for r in body["items"][0]["readings"]]
    assert all(low <= v <= high for v in values) and len(set(values)) > 1
    [item] = body["items"]
    assert set(item) == {"timestamp", "readings"}
    assert item["timestamp"] == "2024-03-01T12:34:00+08:00"
    ids = {s["id"] for s in meta["stations"]}
    for reading in item["readings"]:
        assert set(reading) == {"station_id", "value"} and reading["station_id"] in ids
        assert isinstance(reading["value"], float)
    # Deterministic by (endpoint, timestamp).
    again = get(url, date_time="2024-03-01T12:34:56").json()
    assert again == body
    day = get(url, date="2024-03-01").json()
    assert len(day["items"]) == 288


@pytest.mark.parametrize(
    "params",
    [
        {"date_time": "yesterday"},
        {"date": "2024-13-01"},
        {"date_time": "2024-01-01"},
        {"date_time": "2024-01-01 00:00:00"},
        {"date_time": "2024-01-01T00:00:00+08:00"},
        {"date_time": "2024-01-01T00:00+08"},
    ],
)
def test_bad_query_gets_400_with_json_error(server, params):
    r = get(f"{server.url}/v1/environment/rainfall", **params)
    assert r.status == 400
    assert r.json()["code"] == 400 and "must look like" in r.json()["message"]


def test_sync_and_async_clients_agree(server):
    workload = api_workload(server.url)
    items = workload.prepare(30)
    with get_backend("threads", workers=8) as threads, get_backend("asyncio") as aio:
        by_threads = workload.run(threads, items)
        by_asyncio = workload.run(aio, items)
    assert all(o.error is None for o in by_threads)
    assert checksum(by_threads) == checksum(by_asyncio)
    assert by_threads[0].value["stations"] == 15


def test_injected_errors_are_retried(tmp_path):
    with serve_api(Faults(error_rate=0.3, malformed_rate=0.2, seed=7)) as srv:
        workload = api_workload(srv.url, retries=8)
        with get_backend("threads", workers=8) as ex:
            outcomes = workload.run(ex, workload.prepare(60))
        with get_backend("asyncio") as aio:
            async_outcomes = workload.run(aio, workload.prepare(60))
        assert srv.stats["errors"] > 5 and srv.stats["malformed"] > 5  # faults did happen
    assert [o.error for o in outcomes] == [None] * 60
    assert checksum(outcomes) == checksum(async_outcomes)


@pytest.mark.parametrize("fetch", [fetch_summary, fetch_summary_async])
def test_permanent_failures_are_recorded_per_item(fetch):
    with serve_api(Faults(malformed_rate=1.0)) as srv:
        item = ApiItem(srv.url, "rainfall", "2024-01-01T00:00:00", retries=2, backoff_s=0.01)
        with pytest.raises(RuntimeError, match="gave up after 3 attempts: malformed body"):
            if fetch is fetch_summary:
                fetch(item)
            else:
                asyncio.run(fetch(item))
        assert srv.stats["requests"] == 3


def test_failed_items_are_recorded_and_the_rest_complete():
    with serve_api(Faults(error_rate=1.0)) as bad, serve_api() as good:
        items = api_workload(good.url).prepare(4) + api_workload(bad.url, retries=1).prepare(2)
        workload = api_workload(good.url)
        with get_backend("threads", workers=4) as ex:
            outcomes = workload.run(ex, items)
    assert [o.error is None for o in outcomes] == [True] * 4 + [False] * 2
    assert "HTTP 50" in outcomes[-1].error


def test_rate_limit_429_honours_retry_after():
    with serve_api(Faults(rate_limit=5, retry_after_s=1)) as srv:
        workload = api_workload(srv.url, retries=10)
        start = time.monotonic()
        with get_backend("threads", workers=10) as ex:
            outcomes = workload.run(ex, workload.prepare(12), chunksize=1)
        elapsed = time.monotonic() - start
        assert srv.stats["limited"] > 0
    assert all(o.error is None for o in outcomes)
    assert elapsed >= 1.0  # the limited requests waited Retry-After before trying again


def test_serves_1000_concurrent_connections():
    async def hammer(url: str) -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> int:
                params = {"date_time": f"2024-01-01T00:{i % 60:02d}:00"}
                async with session.get(f"{url}/v1/environment/wind-speed", params=params) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(1000)))

    # Latency keeps every connection open at once; the server runs in its own process.
    with serve_api_process(Faults(latency_s=1.0)) as srv:
        start = time.monotonic()
        statuses = asyncio.run(hammer(srv.url))
        elapsed = time.monotonic() - start
    assert statuses == [200] * 1000
    assert elapsed < 10  # concurrently: 1,000 sequential requests would take 1,000 s


def test_server_binds_loopback_and_stops_cleanly():
    with serve_api() as srv:
        host, port = urlsplit(srv.url).hostname, urlsplit(srv.url).port
        assert host == "127.0.0.1"
        assert get(f"{srv.url}/v1/environment/rainfall").status == 200
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=2):
        pass


def test_unknown_endpoint_is_404(server):
    r = get(f"{server.url}/v1/environment/snowfall")
    assert r.status == 404 and set(ENDPOINTS).isdisjoint({"snowfall"})
