"""The emulator as a real server on loopback: the context manager, faults over a socket, clean shutdown."""

from __future__ import annotations

import logging

import httpx
import pytest

from parallel_tasks.emulator import FaultConfig, run_emulator_server
from tests.emulator.conftest import API_KEY, CheckedEmulator, run_path

RUN = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
KEY = {"x-api-key": API_KEY}


def test_serves_on_a_free_loopback_port_and_stops(emulator: CheckedEmulator) -> None:
    with run_emulator_server(emulator) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        response = httpx.get(base_url + run_path(RUN), headers=KEY)
        assert response.status_code == 200
        assert response.content == emulator.store.get(RUN)
        assert httpx.get(base_url + run_path(RUN)).status_code == 401
    assert [r.status for r in emulator.log] == [200, 401]
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + run_path(RUN), headers=KEY)


def test_two_servers_get_two_ports(emulator: CheckedEmulator) -> None:
    with run_emulator_server(emulator) as first, run_emulator_server(emulator) as second:
        assert first != second
        assert httpx.get(second + run_path(RUN), headers=KEY).status_code == 200


def test_default_server_serves_the_demo_set() -> None:
    with run_emulator_server() as base_url:
        assert httpx.get(base_url + run_path(RUN), headers={"x-api-key": "test-key"}).status_code == 200


def test_faults_over_a_real_socket(emulator: CheckedEmulator, caplog: pytest.LogCaptureFixture) -> None:
    emulator.set_faults(
        FaultConfig(script=["reset", "slow", "truncate", 429, "html", 503], slow_chunks=3, slow_chunk_delay_ms=20),
        run_id=RUN,
    )
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    with run_emulator_server(emulator) as base_url, httpx.Client(base_url=base_url, headers=KEY) as client:
        with pytest.raises(httpx.RemoteProtocolError):  # connection dropped mid-body
            client.get(run_path(RUN))
        with client.stream("GET", run_path(RUN)) as slow:
            parts = list(slow.iter_raw())
        assert len(parts) >= 2 and b"".join(parts) == emulator.store.get(RUN)
        full = emulator.store.get(RUN) or b""
        assert client.get(run_path(RUN)).content == full[: len(full) // 2]
        assert client.get(run_path(RUN)).headers["retry-after"] == "1"
        assert client.get(run_path(RUN)).headers["content-type"].startswith("text/html")
        assert client.get(run_path(RUN)).status_code == 503
        assert client.get(run_path(RUN)).status_code == 200
    assert not [r for r in caplog.records if "without completing response" in r.getMessage()]


def test_latency_over_a_real_socket(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(latency_ms=150))
    with run_emulator_server(emulator) as base_url:
        response = httpx.get(base_url + run_path(RUN), headers=KEY)
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.15
