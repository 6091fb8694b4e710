"""The async client's default path (aiohttp, no httpx in between) against real servers: the emulator with
faults, and a small aiohttp server for what the emulator does not do (redirects, chunked bodies)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from parallel_tasks import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncParallelClient,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    ResponseTooLargeError,
    ResponseValidationError,
    RetryPolicy,
)
from parallel_tasks.emulator import Emulator, FaultConfig, demo_runs, run_emulator_server
from tests.conftest import CANARY_KEY

GOOD = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.002)


@pytest.fixture(scope="module")
def emulator() -> Emulator:
    return Emulator(demo_runs(), api_keys=[CANARY_KEY])


@pytest.fixture(scope="module")
def base_url(emulator: Emulator) -> Iterator[str]:
    with run_emulator_server(emulator) as url:
        yield url


@pytest.fixture
def faults(emulator: Emulator) -> Iterator[Emulator]:
    yield emulator
    emulator.set_faults(None)
    emulator.set_faults(None, run_id=GOOD)
    emulator.reset()


async def fetch(base_url: str, run_id: str = GOOD, **options: object) -> object:
    options.setdefault("retry_policy", FAST)
    async with AsyncParallelClient(CANARY_KEY, base_url=base_url, **options) as client:  # type: ignore[arg-type]
        result = await client.fetch(run_id)
    return result.run_input if result.ok else result.error


async def test_success_and_final_errors(base_url: str) -> None:
    run_input = await fetch(base_url)
    assert getattr(run_input, "processor", None) == "core"
    missing = await fetch(base_url, "trun_missing")
    assert isinstance(missing, NotFoundError) and str(missing).startswith("404 Not Found for run 'trun_missing'")
    async with AsyncParallelClient("wrong-key", base_url=base_url, retry_policy=FAST) as client:
        denied = (await client.fetch(GOOD)).error
    assert isinstance(denied, AuthenticationError) and CANARY_KEY not in repr(denied)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("reset", APIConnectionError), ("truncate", ResponseValidationError), ("html", ResponseValidationError)],
)
async def test_broken_responses_are_retried_then_reported(
    base_url: str, faults: Emulator, fault: str, expected: type[Exception]
) -> None:
    faults.set_faults(FaultConfig(status=None, script=(fault, fault, fault)), run_id=GOOD)
    assert isinstance(await fetch(base_url), expected)
    # One attempt and two retries; aiohttp may resend a request once on its own when a reused
    # keep-alive connection turns out to be closed (RFC 9112, 9.3.1), as a reset leaves one.
    assert 3 <= faults.requests_by_run[GOOD] <= 6
    faults.set_faults(FaultConfig(script=(fault, "ok")), run_id=GOOD)
    assert getattr(await fetch(base_url), "processor", None) == "core"


async def test_retry_after_is_honoured(base_url: str, faults: Emulator) -> None:
    faults.set_faults(FaultConfig(script=(429, "ok"), retry_after="ms", retry_after_s=0.2), run_id=GOOD)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert getattr(await fetch(base_url), "processor", None) == "core"
    assert loop.time() - started >= 0.2
    faults.set_faults(FaultConfig(status=429, retry_after="seconds", retry_after_s=3600), run_id=GOOD)
    limited = await fetch(base_url)
    assert isinstance(limited, RateLimitError) and limited.retry_after == 3600.0


async def test_read_timeout_and_overall_deadline(base_url: str, faults: Emulator) -> None:
    faults.set_faults(FaultConfig(latency_ms=1500), run_id=GOOD)
    timed_out = await fetch(base_url, read_timeout=0.2, retry_policy=RetryPolicy(max_retries=0))
    assert isinstance(timed_out, APITimeoutError) and "timed out" in str(timed_out)
    faults.set_faults(FaultConfig(script=("slow",), slow_chunks=10, slow_chunk_delay_ms=100), run_id=GOOD)
    cut = await fetch(base_url, retry_policy=RetryPolicy(max_retries=0, deadline=0.3))
    assert isinstance(cut, APITimeoutError) and "0.3s deadline" in str(cut)


async def test_a_body_that_keeps_coming_is_not_cut_by_the_stall_guard(base_url: str, faults: Emulator) -> None:
    """The guard against a stalled parser allows connect + read at first, then read per chunk: a body that
    takes longer than connect + read in all, but never stalls for read, arrives whole."""
    faults.set_faults(FaultConfig(script=("slow",), slow_chunks=8, slow_chunk_delay_ms=150), run_id=GOOD)
    run_input = await fetch(base_url, connect_timeout=0.3, read_timeout=0.4, retry_policy=RetryPolicy(max_retries=0))
    assert getattr(run_input, "processor", None) == "core", run_input  # 8 x 150 ms = 1.2 s > 0.7 s


async def test_declared_oversize_body(base_url: str) -> None:
    too_big = await fetch(base_url, max_response_bytes=100)
    assert isinstance(too_big, ResponseTooLargeError) and "declares" in str(too_big)


async def test_connection_refused_is_a_connection_error() -> None:
    from tests.e2e.conftest import free_port

    refused = await fetch(f"http://127.0.0.1:{free_port()}", connect_timeout=1)
    assert isinstance(refused, APIConnectionError) and "connection failed" in str(refused)
    assert refused.__cause__ is None and refused.__context__ is None


@pytest.fixture
async def odd_server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """Redirects to itself elsewhere, and streams an endless chunked body; records what it received."""
    seen: list[web.Request] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        raise web.HTTPTemporaryRedirect(location=f"{request.scheme}://localhost:{request.url.port}/stolen")

    async def stolen(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return web.json_response({"processor": "base", "input": "x"})

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b" " * 65536)
        return response

    app = web.Application()
    app.router.add_get("/redirect/v1/tasks/runs/{run_id}/input", redirect)
    app.router.add_get("/stolen", stolen)
    app.router.add_get("/endless/v1/tasks/runs/{run_id}/input", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_redirects_are_not_followed_and_the_key_stays_home(odd_server: tuple[str, list[web.Request]]) -> None:
    url, seen = odd_server
    error = await fetch(f"{url}/redirect")
    assert isinstance(error, APIStatusError) and error.status_code == 307
    assert "redirect to http://localhost not followed" in str(error)
    assert [r.path for r in seen] == [f"/redirect/v1/tasks/runs/{GOOD}/input"]


async def test_a_chunked_body_past_the_cap_is_cut_off(odd_server: tuple[str, list[web.Request]]) -> None:
    url, _ = odd_server
    error = await fetch(f"{url}/endless", max_response_bytes=1_000_000)
    assert isinstance(error, ResponseTooLargeError) and "is larger" in str(error)


def test_the_environment_proxy_is_looked_up_once_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from parallel_tasks._urls import environment_proxy as _environment_proxy

    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _environment_proxy("https://api.parallel.ai") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert _environment_proxy("https://api.parallel.ai") == "http://proxy.example:3128"
    assert _environment_proxy("http://127.0.0.1:8787") is None
    monkeypatch.setenv("NO_PROXY", "api.parallel.ai")
    assert _environment_proxy("https://api.parallel.ai") is None
    assert AsyncParallelClient("k")._aiohttp.proxy is None
