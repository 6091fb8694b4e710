"""Secrets, part 1: a redirect to another origin never receives the API key.

Two real servers on loopback: the "API" at 127.0.0.1 answers every request with a redirect to the same
path on 127.0.0.2 (another origin), with the key in the Location's query for good measure; the other
origin would answer 200 to anyone. Every client path (sync, async over aiohttp by default, async over
httpx's transport) and both flows refuse to follow: the other origin sees no request at all, the API saw
the key (so it was really sent, to the right place), and the error names the redirect, not the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parallel_tasks import APIStatusError, AsyncParallelClient, ParallelClient, RetryPolicy
from parallel_tasks.flows import audit_run_inputs, fetch_run_input
from tests.conftest import CANARY_KEY
from tests.reliability.conftest import RecordingApp, save_credentials, serve_app, stored_runs

pytestmark = pytest.mark.timeout(120)

RUN = "trun_7ed1cec700000000000000000000000a"
REDIRECTS = (301, 302, 303, 307, 308)
POLICY = RetryPolicy(max_retries=2, initial_delay=0.0, max_delay=0.0)


class Origins:
    def __init__(self) -> None:
        self.status = 307
        self.other = RecordingApp(self._answer_anyone)
        self.api = RecordingApp(self._redirect)
        self.other_url = self.api_url = ""

    def _answer_anyone(self, scope: Any, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        body = json.dumps({"processor": "core", "input": "served to whoever asked"}).encode()
        return 200, [("content-type", "application/json")], body

    def _redirect(self, scope: Any, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        location = f"{self.other_url}{path}?api_key={CANARY_KEY}"
        echoed = [("x-echo", CANARY_KEY.upper()), ("set-cookie", f"k={CANARY_KEY}")]
        return self.status, [("location", location), ("content-type", "text/plain"), *echoed], b"moved"

    def reset(self, status: int) -> None:
        self.status = status
        self.api.requests.clear()
        self.other.requests.clear()

    def check(self, error: BaseException | None, *, status: int) -> None:
        """The other origin got nothing; the API got the key; the error names the redirect and not the key."""
        assert self.other.requests == []
        assert self.api.requests and all(r.headers.get("x-api-key") == CANARY_KEY for r in self.api.requests)
        assert isinstance(error, APIStatusError) and error.status_code == status, repr(error)
        text = f"{error} {error!r} {error.__dict__}"
        assert "redirect to http://127.0.0.2 not followed" in text
        assert CANARY_KEY not in text


@pytest.fixture(scope="module")
def origins() -> Iterator[Origins]:
    found = Origins()
    with serve_app(found.other, host="127.0.0.2") as other_url, serve_app(found.api) as api_url:
        found.other_url, found.api_url = other_url, api_url
        yield found


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("client", ["sync", "async-aiohttp", "async-httpx"])
def test_clients_never_follow_a_redirect_to_another_origin(
    origins: Origins, client: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    origins.reset(status)
    if client == "sync":
        with ParallelClient(CANARY_KEY, base_url=origins.api_url, retry_policy=POLICY) as sync_client:
            result = sync_client.fetch(RUN)
    else:
        transport = httpx.AsyncHTTPTransport() if client == "async-httpx" else None

        async def fetch() -> Any:
            async with AsyncParallelClient(
                CANARY_KEY, base_url=origins.api_url, retry_policy=POLICY, transport=transport
            ) as async_client:
                return await async_client.fetch(RUN)

        result = asyncio.run(fetch())
    assert not result.ok
    origins.check(result.error, status=status)
    assert len(origins.api.requests) == 1  # a redirect is not retried either
    # Every log line, httpcore's debug trace of the response headers included (the server echoes the
    # key, upper-cased, in a header, a cookie and the Location).
    lines = [f"{record.name}: {record.getMessage()}" for record in caplog.records]
    assert any("parallel.task_run_input.failed" in line for line in lines)
    if client != "async-aiohttp":
        assert any(line.startswith("httpcore.http11: receive_response_headers.complete") for line in lines)
    assert not [line for line in lines if CANARY_KEY[:8].lower() in line.lower()]


@pytest.mark.usefixtures("prefect_harness")
def test_flows_never_follow_a_redirect_to_another_origin(origins: Origins, tmp_path: Path) -> None:
    from prefect.filesystems import LocalFileSystem

    origins.reset(307)
    credentials = save_credentials(CANARY_KEY, origins.api_url, max_retries=2)
    LocalFileSystem(basepath=str(tmp_path / "records")).save("redirect-records", overwrite=True)
    fetched = fetch_run_input(RUN, credentials_block=credentials, return_state=True)
    assert fetched.is_failed()
    origins.check(fetched.result(raise_on_failure=False), status=307)

    origins.reset(308)
    audited = audit_run_inputs(
        run_ids=[RUN, f"{RUN}b"],
        credentials_block=credentials,
        storage_block="local-file-system/redirect-records",
        return_state=True,
    )
    assert audited.is_failed() and audited.message.startswith("2 of 2 runs could not be fetched")
    assert origins.other.requests == [] and len(origins.api.requests) == 2
    for run in stored_runs(tmp_path / "records").values():
        pointer = run.pointer()
        assert pointer.status == "failed" and "redirect to http://127.0.0.2 not followed" in (pointer.error or "")
        assert CANARY_KEY not in run.latest[0].read_text()
