"""The httpx transports play every fault the way a network would, sync and async alike."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from parallel_tasks.emulator import AsyncEmulatorTransport, EmulatorTransport, FaultConfig
from tests.emulator.conftest import API_KEY, BASE, CheckedEmulator, run_path

RUN = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
KEY = {"x-api-key": API_KEY}


class SleepRecorder:
    """Stands in for time.sleep / anyio.sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.calls.append(seconds)


def sync_client(emulator: CheckedEmulator, sleep: SleepRecorder) -> httpx.Client:
    return httpx.Client(transport=EmulatorTransport(emulator, sleep=sleep), base_url=BASE, headers=KEY)


def async_client(emulator: CheckedEmulator, sleep: SleepRecorder) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncEmulatorTransport(emulator, sleep=sleep.asleep), base_url=BASE, headers=KEY)


def test_factories_return_transports_over_the_same_emulator(emulator: CheckedEmulator) -> None:
    assert emulator.transport().emulator is emulator
    assert emulator.async_transport().emulator is emulator


def test_sync_reset_raises_while_reading_the_body(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["reset"]), run_id=RUN)
    with sync_client(emulator, SleepRecorder()) as client, client.stream("GET", run_path(RUN)) as response:
        assert response.status_code == 200  # the headers arrived
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    with sync_client(emulator, SleepRecorder()) as client:
        assert client.get(run_path(RUN)).status_code == 200  # one reset only


async def test_async_reset_raises_while_reading_the_body(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["reset"]), run_id=RUN)
    async with async_client(emulator, SleepRecorder()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(run_path(RUN))
        assert (await client.get(run_path(RUN))).status_code == 200


def test_sync_truncate_html_and_status_faults(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["truncate", "html", 503, 429]), run_id=RUN)
    with sync_client(emulator, SleepRecorder()) as client:
        truncated = client.get(run_path(RUN))
        with pytest.raises(json.JSONDecodeError):
            truncated.json()
        html = client.get(run_path(RUN))
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert client.get(run_path(RUN)).status_code == 503
        limited = client.get(run_path(RUN))
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"


async def test_async_truncate_html_and_status_faults(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["truncate", "html", 502]), run_id=RUN)
    async with async_client(emulator, SleepRecorder()) as client:
        with pytest.raises(json.JSONDecodeError):
            (await client.get(run_path(RUN))).json()
        assert (await client.get(run_path(RUN))).headers["content-type"].startswith("text/html")
        assert (await client.get(run_path(RUN))).status_code == 502


def test_sync_slow_body_arrives_in_parts_with_pauses(emulator: CheckedEmulator) -> None:
    sleep = SleepRecorder()
    emulator.set_faults(FaultConfig(script=["slow"], slow_chunks=4, slow_chunk_delay_ms=250), run_id=RUN)
    with sync_client(emulator, sleep) as client, client.stream("GET", run_path(RUN)) as response:
        parts = list(response.iter_raw())
    assert len(parts) == 4
    assert b"".join(parts) == emulator.store.get(RUN)
    assert sleep.calls == [0.25, 0.25, 0.25]


async def test_async_slow_body_arrives_in_parts_with_pauses(emulator: CheckedEmulator) -> None:
    sleep = SleepRecorder()
    emulator.set_faults(FaultConfig(script=["slow"], slow_chunks=3, slow_chunk_delay_ms=100), run_id=RUN)
    async with async_client(emulator, sleep) as client, client.stream("GET", run_path(RUN)) as response:
        parts = [part async for part in response.aiter_raw()]
    assert len(parts) == 3
    assert sleep.calls == [0.1, 0.1]


def test_sync_latency_waits_before_the_response(emulator: CheckedEmulator) -> None:
    sleep = SleepRecorder()
    emulator.set_faults(FaultConfig(latency_ms=120))
    with sync_client(emulator, sleep) as client:
        assert client.get(run_path(RUN)).status_code == 200
    assert sleep.calls == [pytest.approx(0.12)]


async def test_async_latency_waits_before_the_response(emulator: CheckedEmulator) -> None:
    sleep = SleepRecorder()
    emulator.set_faults(FaultConfig(latency_ms=80))
    async with async_client(emulator, sleep) as client:
        assert (await client.get(run_path(RUN))).status_code == 200
    assert sleep.calls == [pytest.approx(0.08)]


def test_no_fault_no_sleep(emulator: CheckedEmulator) -> None:
    sleep = SleepRecorder()
    with sync_client(emulator, sleep) as client:
        for _ in range(3):
            client.get(run_path(RUN))
    assert sleep.calls == []


async def test_default_async_transport_really_sleeps(emulator: CheckedEmulator) -> None:
    """The default transport waits with the event loop's own sleep: a request with a long latency is still
    waiting after the loop has run many times, and the loop is free meanwhile (nothing blocks it)."""
    emulator.set_faults(FaultConfig(latency_ms=60_000))
    async with httpx.AsyncClient(transport=emulator.async_transport(), base_url=BASE, headers=KEY) as client:
        request = asyncio.ensure_future(client.get(run_path(RUN)))
        for _ in range(100):
            await asyncio.sleep(0)
        assert not request.done()  # without a real wait it would have answered in the first few turns
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request


def test_default_sync_transport_really_sleeps(emulator: CheckedEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default transport waits with ``time.sleep`` for the latency and between the parts of a slow body."""
    waits = SleepRecorder()
    monkeypatch.setattr(time, "sleep", waits)
    emulator.set_faults(FaultConfig(script=["slow"], slow_chunks=3, slow_chunk_delay_ms=20, latency_ms=30), run_id=RUN)
    with httpx.Client(transport=emulator.transport(), base_url=BASE, headers=KEY) as client:
        assert client.get(run_path(RUN)).content == emulator.store.get(RUN)
    assert waits.calls == [pytest.approx(0.03), 0.02, 0.02]


async def test_asgi_app_through_httpx_asgi_transport(emulator: CheckedEmulator) -> None:
    """The ASGI app answers through the same core (httpx's own ASGITransport plays it)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app), base_url=BASE) as client:
        ok = await client.get(run_path(RUN), headers=KEY)
        assert ok.status_code == 200 and ok.content == emulator.store.get(RUN)
        assert (await client.get(run_path(RUN))).status_code == 401
        assert (await client.delete(run_path(RUN), headers=KEY)).headers["allow"] == "GET"
        assert (await client.get("/v1/tasks/runs/%2E%2E/input", headers=KEY)).status_code == 422
    assert [r.status for r in emulator.log] == [200, 401, 405, 422]


async def test_asgi_lifespan_is_acknowledged(emulator: CheckedEmulator) -> None:
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, str]] = []

    async def receive() -> dict[str, str]:
        return messages.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message)

    await emulator.app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
